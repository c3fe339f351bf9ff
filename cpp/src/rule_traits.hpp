// The optional members of a rule's declaration with their defaults, usable on the device too
// (shared by rule_cpu.hpp and rule_launch.hpp).
#pragma once

#include <cstdint>
#include <type_traits>

#include "clrfast/macros.hpp"

namespace clrfast {
namespace rule_detail {

// R::writes_grad(V) where the rule declares it, else false.
template <class R, class = void>
struct GradOut {
  CLRFAST_HD static constexpr bool at(int) { return false; }
};
template <class R>
struct GradOut<R, std::void_t<decltype(R::writes_grad(0))>> {
  CLRFAST_HD static constexpr bool at(int v) { return R::writes_grad(v); }
};

// R::kFreshBit where the rule declares it, else 0.
template <class R, class = void>
struct FreshBit {
  static constexpr int bit = 0;
};
template <class R>
struct FreshBit<R, std::void_t<decltype(R::kFreshBit)>> {
  static constexpr int bit = R::kFreshBit;
};

// The rule's tail (R::kTailOffset, R::tail_width) where it declares one: the last
// n % tail_width(sc, element bytes) elements of each row run variant v + kTailOffset. Else none.
template <class R, class = void>
struct Tail {
  static constexpr int offset = 0;
  static int64_t width(const double*, int64_t) { return 0; }
};
template <class R>
struct Tail<R, std::void_t<decltype(R::kTailOffset)>> {
  static constexpr int offset = R::kTailOffset;
  static int64_t width(const double* sc, int64_t elem_bytes) { return R::tail_width(sc, elem_bytes); }
};

// The variants the device kernels instantiate: R::kDeviceVariants where declared (the CPU-only
// tail variants above it), else all.
template <class R, class = void>
struct DeviceVariants {
  static constexpr int count = R::kVariants;
};
template <class R>
struct DeviceVariants<R, std::void_t<decltype(R::kDeviceVariants)>> {
  static constexpr int count = R::kDeviceVariants;
};

// The variant row r runs: the step's, plus the fresh bit for a row whose state is new.
template <class R, class Row>
CLRFAST_HD int row_variant(int v, const Row& r) {
  return r.fresh != 0 ? v | FreshBit<R>::bit : v;
}

}  // namespace rule_detail
}  // namespace clrfast
