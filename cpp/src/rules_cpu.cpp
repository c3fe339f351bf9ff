// The CPU kernels of the declared rules (rules.hpp), instantiated by the engine.
#include "rule_cpu.hpp"
#include "rules.hpp"

namespace clrfast {

CLRFAST_FOR_EACH_RULE(CLRFAST_DEFINE_RULE_CPU)

}  // namespace clrfast
