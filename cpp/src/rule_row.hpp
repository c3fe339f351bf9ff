// The row of a rule's int64 segment table, shared by the CPU engine (rule_cpu.hpp), the
// bindings that export its columns and the CUDA kernels.
#pragma once

#include <cstdint>

namespace clrfast {

// One row (a parameter or a contiguous piece of one; every tensor of the row dense, of the
// row's dtype, n elements):
//   p, g        addresses of the parameter and its gradient
//   s[K]        addresses of the state slots in R::kSlots order; 0 for a slot the
//               step's variant does not use
//   n, dtype    element count; DType code
//   step        address of the 0-d step counter (R::kStep; else 0)
//   step_dtype  0 float32, 1 float64
//   fresh       1 when the row's state holds no history yet (a rule with kFreshBit, SGD's
//               first update, initialises it from the gradient); else 0
// Consecutive rows with one step address (a parameter cut into pieces) share
// one increment.
template <int K>
struct RuleRow {
  int64_t p, g, s[K], n, dtype, step, step_dtype, fresh;
};

// Column indices of a RuleRow, the one source of the Python front end's.
template <int K>
struct RuleCols {
  static constexpr int p = 0, g = 1, s = 2, n = 2 + K, dtype = 3 + K, step = 4 + K, step_dtype = 5 + K,
                       fresh = 6 + K, count = 7 + K;
  static_assert(sizeof(RuleRow<K>) == count * sizeof(int64_t), "RuleRow must be a plain int64 row");
};

}  // namespace clrfast
