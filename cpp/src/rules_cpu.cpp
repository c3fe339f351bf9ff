// The CPU kernels of the declared rules (rules.hpp), instantiated by the engine.
#include "rule_cpu.hpp"
#include "rules.hpp"

namespace clrfast {

CLRFAST_DEFINE_RULE_CPU(Sgd)
CLRFAST_DEFINE_RULE_CPU(Adam)
CLRFAST_DEFINE_RULE_CPU(Rmsprop)
CLRFAST_DEFINE_RULE_CPU(Lion)
CLRFAST_DEFINE_RULE_CPU(ScheduleFreeAdamW)
CLRFAST_DEFINE_RULE_CPU(ScheduleFreeSgd)

}  // namespace clrfast
