// The per-element Adam / AdamW update shared by the CPU kernels and the CUDA
// kernel.
//
// It reproduces torch.optim.Adam / AdamW's single-tensor path (foreach=False)
// on the CPU, which applies one ATen op after another to whole tensors. How
// ATen rounds each of those ops (measured, identical in the vectorized body
// and in the scalar tail of every kernel, float32 and float64):
//   lerp_(end, w)             |w| < 0.5: fma(w, end - self, self)
//                             else:      fma(w - 1, end - self, end)
//   addcmul_(t1, t2, value=c) fma(c * t1, t2, self)
//   add(other, alpha=a)       fma(other, a, self)
//   addcdiv_(t1, t2, value=c) self + (c * t1) / t2
//   t / scalar                a true division (not a reciprocal product)
//   t * scalar, t + scalar    one rounding each
//   sqrt()                    NOT IEEE where torch is built with MKL (the x86
//                             wheels): ATen calls MKL VML's vsSqrt/vdSqrt,
//                             which is faithfully rounded (within 1 ulp), so
//                             about 1 float32 root in 6 and 1 float64 root in
//                             70 differ from sqrt by one ulp
// Python-float scalars are rounded to the tensor's type before use.
// The kernels therefore take the square root as a parameter: IEEE sqrt by
// default (CUDA, bfloat16/float16, torch without MKL), or the very routine
// torch calls (its address handed over by the front end) for bit parity.
//
// So one element of one step is, in the opmath type (float for float32,
// bfloat16 and float16 storage, double for float64):
//   g  = grad * inv_scale                   GradScaler unscaling (1 without it)
//   g  = -g                                 if maximize
//   g  = fma(p, wd, g)                      Adam (L2), if wd != 0
//   p  = p * (1 - lr*wd)                    AdamW (decoupled), if wd != 0
//   m  = lerp(m, g, 1 - beta1)              exp_avg
//   v  = fma((1 - beta2) * g, g, v * beta2) exp_avg_sq
//   vm = max(vm, v)  (NaN wins)             amsgrad; vm is used below instead of v
//   p  = p + (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)
// with the per-parameter scalars computed in double exactly as torch's Python:
//   bc1 = 1 - beta1**step, bc2 = 1 - beta2**step, step_size = lr / bc1,
//   bc2_sqrt = bc2**0.5,
// where beta1 is the current (possibly cycled) value and step the parameter's
// count after this step's increment. A tensor lr makes torch compute
// lr*wd, 1 - lr*wd and lr / bc1 as 0-d tensor ops in lr's dtype instead
// (measured: in its opmath type, float unless it is float64, with the Python
// scalar converted to that type and each result rounded to lr's dtype), so a
// float32 lr gives other decay and step-size values than double arithmetic.
// Half-precision storage is loaded once and rounded once on store, as torch's
// fused kernel. The FMAs are written out because the project is compiled
// without FP contraction.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "clrfast/macros.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

// How weight decay enters: none, L2 (Adam: added to the gradient) or
// decoupled (AdamW: shrinks the parameter first).
enum class WdMode : int32_t { None = 0, L2 = 1, Decoupled = 2 };

// Scalars of one parameter's step, already rounded to the opmath type.
template <typename Acc>
struct AdamCoef {
  Acc lerp_w;       // 1 - beta1, or (1 - beta1) - 1 when lerp_small is false
  Acc lerp_rest;    // 1 - (1 - beta1): the fused kernel's scalar tail (-lerp_w but for a zero's sign)
  bool lerp_small;  // ATen's lerp branch: |1 - beta1| < 0.5
  Acc beta2, one_minus_beta2;
  Acc bc2_sqrt, eps, neg_step_size;
  Acc wd;     // L2 coefficient
  Acc decay;  // 1 - lr*wd, the decoupled shrink factor
  Acc inv_scale;
  // maximize: the sign bit, else 0. torch's for-loop negates, flipping a NaN's sign bit too. (Its
  // fused kernel's NaN signs are its compiler's: it folds (-g) * (-g) to g * g in the vector body.)
  typename SignBits<Acc>::type sign;
};

// The scalars torch's Python computes for one parameter at (already
// incremented) step `step`: in double for a Python-float lr (and a float64
// tensor, whose 0-d ops round alike), else as 0-d ops of the lr's dtype.
struct AdamScalars {
  double step_size, bc2_sqrt, decay;
};

// A float result of a 0-d op rounded to a tensor lr's dtype (not float64).
CLRFAST_HD float round_to_lr_dtype(float x, DType lr_dtype) {
  if (lr_dtype == DType::BF16) return bf16_to_float(float_to_bf16(x));
  if (lr_dtype == DType::F16) return f16_to_float(float_to_f16(x));
  return x;
}

CLRFAST_HD AdamScalars adam_scalars(double lr, double beta1, double beta2, double wd, double step,
                                    DType lr_dtype = DType::F64) {
  AdamScalars s;
  const double bc1 = 1.0 - pow(beta1, step);
  const double bc2 = 1.0 - pow(beta2, step);
  if (lr_dtype == DType::F64) {
    s.step_size = lr / bc1;
    s.decay = 1.0 - lr * wd;
  } else {
    // lr holds a value of its dtype, so the cast to float is exact.
    const float l = static_cast<float>(lr);
    s.step_size = round_to_lr_dtype(l / static_cast<float>(bc1), lr_dtype);
    s.decay = round_to_lr_dtype(1.0f - round_to_lr_dtype(l * static_cast<float>(wd), lr_dtype), lr_dtype);
  }
  // Python's `bc2 ** 0.5` is C pow(bc2, 0.5); both it and sqrt are correctly
  // rounded in glibc, so sqrt gives the same double (and is exact on CUDA too).
  s.bc2_sqrt = sqrt(bc2);
  return s;
}

template <typename Acc>
CLRFAST_HD AdamCoef<Acc> make_adam_coef(double lr, double beta1, double beta2, double eps, double wd, double step,
                                        double inv_scale, bool maximize, DType lr_dtype = DType::F64) {
  const AdamScalars s = adam_scalars(lr, beta1, beta2, wd, step, lr_dtype);
  AdamCoef<Acc> c;
  const Acc w = static_cast<Acc>(1.0 - beta1);
  c.lerp_small = (w < Acc(0) ? -w : w) < Acc(0.5);
  c.lerp_w = c.lerp_small ? w : w - Acc(1);
  c.lerp_rest = Acc(1) - w;
  c.beta2 = static_cast<Acc>(beta2);
  c.one_minus_beta2 = static_cast<Acc>(1.0 - beta2);
  c.bc2_sqrt = static_cast<Acc>(s.bc2_sqrt);
  c.eps = static_cast<Acc>(eps);
  c.neg_step_size = static_cast<Acc>(-s.step_size);
  c.wd = static_cast<Acc>(wd);
  c.decay = static_cast<Acc>(s.decay);
  c.inv_scale = static_cast<Acc>(inv_scale);
  c.sign = maximize ? SignBits<Acc>::sign : 0;
  return c;
}

// IEEE square root in the opmath type (a float root of a float, never via double).
CLRFAST_HD float ieee_sqrt(float x) { return sqrtf(x); }
CLRFAST_HD double ieee_sqrt(double x) { return sqrt(x); }

// torch.maximum: NaN in either operand gives NaN.
template <typename Acc>
CLRFAST_HD Acc nan_max(Acc a, Acc b) {
  return (a != a || a > b) ? a : b;
}

// The first half of one element: everything up to the square root. `g` is
// the unscaled gradient; updates p (weight decay only), m, v and (amsgrad)
// vm, and returns the second moment the denominator is built from. TAIL: the
// rounding of the scalar tail of torch's fused CPU kernel (its last
// numel % vector-width elements, compiled with FP contraction):
//   m  = fma(-(g - m), 1 - w, g)             (w = 1 - beta1 >= 0.5: g - (g - m)(1 - w))
//   v  = fma(v, beta2, ((1 - beta2) * g) * g)
//   vm = vm < v ? v : vm                     (std::max: a NaN v loses)
// where its vector body rounds as torch's for-loop does.
template <WdMode W, bool AMS, bool TAIL = false, typename Acc>
CLRFAST_HD Acc adam_moments(Acc& p, Acc g, Acc& m, Acc& v, Acc& vm, const AdamCoef<Acc>& c) {
  g = xor_sign(g, c.sign);
  if (W == WdMode::L2) g = fused_madd(p, c.wd, g);
  if (W == WdMode::Decoupled) p = p * c.decay;
  // lerp(m, g, w): the branch is per step, not per element, but written as a
  // select so the loop stays branch-free.
  if (TAIL && !c.lerp_small)
    m = fused_madd(-(g - m), c.lerp_rest, g);
  else
    m = fused_madd(c.lerp_w, g - m, c.lerp_small ? m : g);
  if (TAIL)
    v = fused_madd(v, c.beta2, (c.one_minus_beta2 * g) * g);
  else
    v = fused_madd(c.one_minus_beta2 * g, g, v * c.beta2);
  if (!AMS) return v;
  vm = TAIL ? (vm < v ? v : vm) : nan_max(vm, v);
  return vm;
}

// The second half: the parameter update from the square root of the moment
// adam_moments returned.
template <typename Acc>
CLRFAST_HD void adam_apply(Acc& p, Acc m, Acc root, const AdamCoef<Acc>& c) {
  const Acc denom = root / c.bc2_sqrt + c.eps;
  p = p + (c.neg_step_size * m) / denom;
}

// The Adam family as a declared rule of the engine (cpp/src/rule_cpu.hpp): torch's
// Adam (decoupled = 0, L2 decay) and AdamW (decoupled = 1). lr_dtype is the DType code of a
// tensor lr (F64 for a Python float), which torch's lr-derived scalars round in. vec_bytes:
// 0 for the rounding of torch's for-loop and foreach paths; 32 or 64 for its fused CPU kernel
// built for vectors of that many bytes (AVX2, AVX-512), whose last numel % (vec_bytes /
// element size) elements of each parameter take the scalar tail's rounding.
struct Adam {
  static constexpr const char* kName = "adam";
  static constexpr std::array<const char*, 3> kSlots = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  enum Scalar {
    kLr,
    kBeta1,
    kBeta2,
    kEps,
    kWeightDecay,
    kDecoupled,
    kAmsgrad,
    kMaximize,
    kLrDtype,
    kVecBytes,
    kScalarCount
  };
  static constexpr std::array<const char*, kScalarCount> kScalars = {
      "lr", "beta1", "beta2", "eps", "weight_decay", "decoupled", "amsgrad", "maximize", "lr_dtype", "vec_bytes"};
  static constexpr bool kStep = true;
  static constexpr bool kRoot = true;

  // Variant: the weight-decay mode times two, plus one with amsgrad; plus kTailOffset in the
  // fused kernel's scalar tail, which only the CPU runs.
  static constexpr int kVariants = 12;
  static constexpr int kDeviceVariants = 6;
  static constexpr int kTailOffset = 6;
  CLRFAST_HD static int variant(const double* sc) {
    const WdMode w = sc[kWeightDecay] == 0.0 ? WdMode::None : sc[kDecoupled] != 0.0 ? WdMode::Decoupled : WdMode::L2;
    return static_cast<int>(w) * 2 + (sc[kAmsgrad] != 0.0 ? 1 : 0);
  }
  CLRFAST_HD static constexpr bool uses(int v, int slot) { return slot < 2 || (v & 1); }
  // Elements per vector of torch's fused kernel for a dtype of `elem_bytes` (0: no tail).
  static int64_t tail_width(const double* sc, int64_t elem_bytes) {
    return static_cast<int64_t>(sc[kVecBytes]) / elem_bytes;
  }
  static std::string invalid(const double* sc) {
    const double vb = sc[kVecBytes];
    if (vb != 0.0 && vb != 32.0 && vb != 64.0)
      return "vec_bytes: expected 0, 32 or 64, got " + std::to_string(vb);
    const double code = sc[kLrDtype];
    if (code == 0.0 || code == 1.0 || code == 2.0 || code == 3.0) return {};
    const bool whole = std::fabs(code) < 1e15 && code == std::trunc(code);  // a cast of anything else is UB
    return "lr_dtype: unknown dtype code " +
           (whole ? std::to_string(static_cast<int64_t>(code)) : std::to_string(code));
  }

  template <typename Acc>
  using Coef = AdamCoef<Acc>;

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double step, double inv_scale) {
    return make_adam_coef<Acc>(sc[kLr], sc[kBeta1], sc[kBeta2], sc[kEps], sc[kWeightDecay], step, inv_scale,
                               sc[kMaximize] != 0.0, static_cast<DType>(static_cast<int>(sc[kLrDtype])));
  }

  // s: exp_avg, exp_avg_sq, max_exp_avg_sq.
  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc& p, Acc& g, Acc* s, const Coef<Acc>& c) {
    constexpr int B = V % kTailOffset;
    return adam_moments<static_cast<WdMode>(B / 2), (B & 1) != 0, (V >= kTailOffset)>(p, g, s[0], s[1], s[2], c);
  }
  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc& p, Acc, Acc* s, Acc root, const Coef<Acc>& c) {
    adam_apply(p, s[0], root, c);
  }
};

}  // namespace clrfast
