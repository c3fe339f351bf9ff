// The declared update rules: adding one is its header under clrfast/ and its
// name in CLRFAST_FOR_EACH_RULE. The bindings export each rule's layout from
// here, and the CPU kernels, the CUDA kernels and the emulator are
// instantiated from the same list.
#pragma once

#include "clrfast/adam_update.hpp"
#include "clrfast/lion_update.hpp"
#include "clrfast/rmsprop_update.hpp"
#include "clrfast/schedulefree_update.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

#define CLRFAST_FOR_EACH_RULE(X) X(Sgd) X(Adam) X(Rmsprop) X(Lion) X(ScheduleFreeAdamW) X(ScheduleFreeSgd)

template <class... R>
struct RuleList {};

namespace rules_detail {
template <class First, class... R>
using Tail = RuleList<R...>;
}  // namespace rules_detail

#define CLRFAST_RULE_ARG(R) , R
using Rules = rules_detail::Tail<void CLRFAST_FOR_EACH_RULE(CLRFAST_RULE_ARG)>;
#undef CLRFAST_RULE_ARG

}  // namespace clrfast
