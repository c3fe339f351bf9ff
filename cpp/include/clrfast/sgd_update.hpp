// The per-element SGD update shared by the CPU kernels and the CUDA kernel.
//
// Order of operations, as torch.optim.SGD's for-loop and foreach paths on
// the CPU (each `a + alpha*b` there is one fused multiply-add in ATen's
// vectorized add, and `buf.mul_(m)` a plain product):
//   g   = grad * inv_scale                  (GradScaler unscaling; 1 without it)
//   g   = -g                                if maximize
//   g   = fma(p, wd, g)                     if wd != 0
//   buf = g                                 first step (torch clones the gradient)
//   buf = fma(g, 1 - dampening, buf * m)    later steps
//   g   = fma(buf, m, g) if nesterov else buf
//   p   = fma(g, -lr, p)
// Arithmetic runs in the "opmath" type: float for float32, bfloat16 and
// float16 storage (loaded once, rounded once on store, as torch's fused
// kernel), double for float64. Scalars are rounded to that type first, as
// ATen does with `alpha`. The FMAs are written out because the project is
// compiled without FP contraction.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "clrfast/macros.hpp"

namespace clrfast {

// Codes shared with the Python front end.
enum class DType : int32_t { F32 = 0, F64 = 1, BF16 = 2, F16 = 3 };

CLRFAST_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
CLRFAST_HD float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// bfloat16 <-> float, round to nearest even; NaN stays a quiet NaN (as c10::BFloat16).
CLRFAST_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }
CLRFAST_HD uint16_t float_to_bf16(float f) {
  if (f != f) return 0x7FC0;
  const uint32_t u = float_bits(f);
  return static_cast<uint16_t>((u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16);
}

// IEEE half <-> float, round to nearest even with subnormals (the bit tricks
// of c10::Half's fp16_ieee_{to,from}_fp32_value, so results agree with torch).
CLRFAST_HD float f16_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = bits_float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t r = sign | (two_w < (1u << 27) ? float_bits(denormalized) : float_bits(normalized));
  return bits_float(r);
}
CLRFAST_HD uint16_t float_to_f16(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = float_bits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_float((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = float_bits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// Explicit fused multiply-adds (one rounding), for float and double alike.
CLRFAST_HD float fused_madd(float a, float b, float c) { return fmaf(a, b, c); }
CLRFAST_HD double fused_madd(double a, double b, double c) { return fma(a, b, c); }

// x with its sign bit XORed with `mask` (0 or the sign bit): maximize's negation as an integer
// operation. Written as -x the compiler folds it into the following multiply-add (a negated
// fma), which returns a NaN input with its sign unflipped; torch negates the gradient first.
template <typename Acc>
struct SignBits;
template <>
struct SignBits<float> {
  using type = uint32_t;
  static constexpr type sign = 0x80000000u;
};
template <>
struct SignBits<double> {
  using type = uint64_t;
  static constexpr type sign = 0x8000000000000000ull;
};

template <typename Acc>
CLRFAST_HD Acc xor_sign(Acc x, typename SignBits<Acc>::type mask) {
  typename SignBits<Acc>::type u;
  memcpy(&u, &x, sizeof u);
  u ^= mask;
  memcpy(&x, &u, sizeof x);
  return x;
}

// Storage type <-> opmath type.
template <DType D>
struct Storage;
template <>
struct Storage<DType::F32> {
  using type = float;
  using acc = float;
  CLRFAST_HD static float load(float v) { return v; }
  CLRFAST_HD static float store(float v) { return v; }
};
template <>
struct Storage<DType::F64> {
  using type = double;
  using acc = double;
  CLRFAST_HD static double load(double v) { return v; }
  CLRFAST_HD static double store(double v) { return v; }
};
template <>
struct Storage<DType::BF16> {
  using type = uint16_t;
  using acc = float;
  CLRFAST_HD static float load(uint16_t v) { return bf16_to_float(v); }
  CLRFAST_HD static uint16_t store(float v) { return float_to_bf16(v); }
};
template <>
struct Storage<DType::F16> {
  using type = uint16_t;
  using acc = float;
  CLRFAST_HD static float load(uint16_t v) { return f16_to_float(v); }
  CLRFAST_HD static uint16_t store(float v) { return float_to_f16(v); }
};

// Coefficients of one step, already rounded to the opmath type.
template <typename Acc>
struct SgdCoef {
  Acc neg_lr, momentum, one_minus_damp, wd, inv_scale;
  typename SignBits<Acc>::type sign;  // maximize: the sign bit, else 0
};

template <typename Acc>
CLRFAST_HD SgdCoef<Acc> make_coef(double lr, double momentum, double dampening, double wd, double inv_scale,
                                  bool maximize) {
  SgdCoef<Acc> c;
  c.neg_lr = static_cast<Acc>(-lr);
  c.momentum = static_cast<Acc>(momentum);
  c.one_minus_damp = static_cast<Acc>(1.0 - dampening);
  c.wd = static_cast<Acc>(wd);
  c.inv_scale = static_cast<Acc>(inv_scale);
  c.sign = maximize ? SignBits<Acc>::sign : 0;
  return c;
}

// Which momentum variant a loop runs; a template argument so every loop is
// branch-free and vectorizes.
enum class MomMode : int32_t { None = 0, First = 1, FirstNesterov = 2, Normal = 3, Nesterov = 4 };

// One element. `g` is the unscaled gradient (g = grad * inv_scale, computed
// by the caller so it can store it back for GradScaler); returns nothing,
// updates p and buf in place.
template <bool WD, MomMode M, typename Acc>
CLRFAST_HD void sgd_element(Acc& p, Acc g, Acc& buf, const SgdCoef<Acc>& c) {
  g = xor_sign(g, c.sign);  // torch negates, flipping a NaN's sign bit too
  if (WD) g = fused_madd(p, c.wd, g);
  if (M == MomMode::First || M == MomMode::FirstNesterov) {
    buf = g;
  } else if (M == MomMode::Normal || M == MomMode::Nesterov) {
    buf = fused_madd(g, c.one_minus_damp, buf * c.momentum);
  }
  if (M == MomMode::FirstNesterov || M == MomMode::Nesterov) {
    g = fused_madd(buf, c.momentum, g);
  } else if (M != MomMode::None) {
    g = buf;
  }
  p = fused_madd(g, c.neg_lr, p);
}

// The whole update of element i as stored in memory: load to the opmath type,
// unscale, optionally store the unscaled gradient back (GradScaler's fused
// contract), update, round once on store. The CPU loops and the CUDA kernel
// both run exactly this.
template <DType D, bool WD, MomMode M>
CLRFAST_HD void sgd_update_at(typename Storage<D>::type* p, typename Storage<D>::type* g,
                              typename Storage<D>::type* buf, int64_t i,
                              const SgdCoef<typename Storage<D>::acc>& c, bool store_grad) {
  using S = Storage<D>;
  using Acc = typename S::acc;
  Acc pv = S::load(p[i]);
  const Acc gv = S::load(g[i]) * c.inv_scale;
  if (store_grad) g[i] = S::store(gv);
  Acc bv = Acc(0);
  if (M == MomMode::Normal || M == MomMode::Nesterov) bv = S::load(buf[i]);
  sgd_element<WD, M>(pv, gv, bv, c);
  if (M != MomMode::None) buf[i] = S::store(bv);
  p[i] = S::store(pv);
}

// The SGD rule for the engine (cpp/src/rule_cpu.hpp) and the CUDA kernel: torch.optim.SGD,
// per element as sgd_element above. Flags travel as scalars (0 or 1) and select the loop.
struct Sgd {
  static constexpr const char* kName = "sgd";
  static constexpr std::array<const char*, 1> kSlots = {"momentum_buffer"};
  enum Scalar { kLr, kMomentum, kDampening, kWeightDecay, kNesterov, kMaximize, kScalarCount };
  static constexpr std::array<const char*, kScalarCount> kScalars = {"lr",           "momentum", "dampening",
                                                                     "weight_decay", "nesterov", "maximize"};
  static constexpr bool kStep = false;  // torch's SGD keeps no step count
  static constexpr bool kRoot = false;

  // A row whose buffer holds no history copies the gradient into it (torch clones the first
  // gradient): the engine adds kFreshBit for such rows.
  static constexpr int kMomentumBit = 1, kNesterovBit = 2, kDecayBit = 4, kFreshBit = 8, kVariants = 16;
  CLRFAST_HD static int variant(const double* sc) {
    // Nesterov at momentum 0 is plain SGD, as in torch (its check is the constructor's).
    const bool mom = sc[kMomentum] != 0.0;
    return (mom ? kMomentumBit : 0) | (mom && sc[kNesterov] != 0.0 ? kNesterovBit : 0) |
           (sc[kWeightDecay] != 0.0 ? kDecayBit : 0);
  }
  static std::string invalid(const double* sc) {
    if (sc[kNesterov] != 0.0 && sc[kMomentum] != 0.0 && sc[kDampening] != 0.0)
      return "Nesterov momentum requires zero dampening";
    return {};
  }
  CLRFAST_HD static constexpr bool uses(int v, int slot) { return slot == 0 && (v & kMomentumBit); }

  template <int V>
  static constexpr MomMode mode() {
    if (!(V & kMomentumBit)) return MomMode::None;
    if (V & kFreshBit) return (V & kNesterovBit) ? MomMode::FirstNesterov : MomMode::First;
    return (V & kNesterovBit) ? MomMode::Nesterov : MomMode::Normal;
  }

  template <typename Acc>
  using Coef = SgdCoef<Acc>;

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double /*step*/, double inv_scale) {
    return make_coef<Acc>(sc[kLr], sc[kMomentum], sc[kDampening], sc[kWeightDecay], inv_scale,
                          sc[kMaximize] != 0.0);
  }

  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc& p, Acc& g, Acc* s, const Coef<Acc>& c) {
    sgd_element<(V & kDecayBit) != 0, mode<V>()>(p, g, s[0], c);
    return Acc(0);
  }

  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc&, Acc, Acc*, Acc, const Coef<Acc>&) {}
};

}  // namespace clrfast
