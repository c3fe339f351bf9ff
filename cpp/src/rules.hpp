// The declared update rules: adding one is its header under clrfast/ and its
// name in this list (plus one CLRFAST_DEFINE_RULE_CPU line in rules_cpu.cpp).
// The bindings export each rule's layout from here.
#pragma once

#include "clrfast/adam_update.hpp"
#include "clrfast/lion_update.hpp"
#include "clrfast/rmsprop_update.hpp"
#include "clrfast/schedulefree_update.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

template <class... R>
struct RuleList {};

using Rules = RuleList<Sgd, Adam, Rmsprop, Lion, ScheduleFreeAdamW, ScheduleFreeSgd>;

}  // namespace clrfast
