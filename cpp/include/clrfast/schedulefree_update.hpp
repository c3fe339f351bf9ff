// The schedule-free rules (Defazio et al. 2024, "The Road Less Scheduled"), per element,
// for the rule engine (cpp/src/rule_cpu.hpp).
//
// The reference is the schedulefree package's AdamWScheduleFree and SGDScheduleFree
// (their for-loop path; the foreach path rounds alike on the CPU), with ATen's rounding of
// each op (see clrfast/adam_update.hpp) in the opmath type, every Python-float scalar
// rounded to it first. The parameter holds y, the state z; x (the average) is never
// stored in train mode. Per element, AdamW:
//   v   = fma((1 - beta2) * g, g, v * beta2)       exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
//   d   = sqrt(v / bc2) + eps                      exp_avg_sq.div(bc2).sqrt_().add_(eps)
//   g   = g / d                                    grad.div_(denom)
//   g   = fma(y, wd, g)            if wd != 0      grad.add_(y, alpha=wd)
//   y   = lerp(y, z, ckp1)                         y.lerp_(end=z, weight=ckp1)
//   y   = fma(g, lr * (beta1 * (1 - ckp1) - 1), y) y.add_(g, alpha=...)
//   z   = fma(g, -lr, z)                           z.sub_(g, alpha=lr)
// and SGD the same without the first three lines (beta1 is its momentum). The package
// leaves the final g in p.grad (it normalises and decays the gradient in place): so does
// the kernel (writes_grad). The per-group scalars (the scheduled lr, ckp1 = weight /
// weight_sum, the bias correction bc2 = 1 - beta2**(k+1)) are computed by the front end in
// double exactly as the package's Python computes them; the y coefficient is computed here
// in double from them, as the package does. The engine's per-parameter step counter is
// not used: the package counts steps per group (k).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "clrfast/macros.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

// The scalars both rules share, rounded to the opmath type.
template <typename Acc>
struct ScheduleFreeCoef {
  Acc neg_lr, y_coef, wd, lerp_w, inv_scale;
  bool lerp_small;  // ATen's lerp branch for weight ckp1
  Acc beta2, one_minus_beta2, bc2, eps;  // AdamW only
};

template <typename Acc>
CLRFAST_HD ScheduleFreeCoef<Acc> schedulefree_coef(double lr, double beta1, double wd, double ckp1, double inv_scale) {
  ScheduleFreeCoef<Acc> c{};
  c.neg_lr = static_cast<Acc>(-lr);
  c.y_coef = static_cast<Acc>(lr * (beta1 * (1.0 - ckp1) - 1.0));
  c.wd = static_cast<Acc>(wd);
  const Acc w = static_cast<Acc>(ckp1);
  c.lerp_small = (w < Acc(0) ? -w : w) < Acc(0.5);
  c.lerp_w = c.lerp_small ? w : w - Acc(1);
  c.inv_scale = static_cast<Acc>(inv_scale);
  return c;
}

// The part both rules share: decay at y, the y interpolation and step, the z step.
template <bool DECAY, typename Acc>
CLRFAST_HD void schedulefree_apply(Acc& y, Acc& g, Acc& z, const ScheduleFreeCoef<Acc>& c) {
  if (DECAY) g = fused_madd(y, c.wd, g);
  y = fused_madd(c.lerp_w, z - y, c.lerp_small ? y : z);
  y = fused_madd(g, c.y_coef, y);
  z = fused_madd(g, c.neg_lr, z);
}

struct ScheduleFreeAdamW {
  static constexpr const char* kName = "schedulefree_adamw";
  static constexpr std::array<const char*, 2> kSlots = {"z", "exp_avg_sq"};
  enum Scalar { kLr, kBeta1, kBeta2, kEps, kWeightDecay, kCkp1, kBiasCorrection2, kScalarCount };
  static constexpr std::array<const char*, kScalarCount> kScalars = {
      "lr", "beta1", "beta2", "eps", "weight_decay", "ckp1", "bias_correction2"};
  static constexpr bool kStep = false;
  static constexpr bool kRoot = true;

  static constexpr int kDecayBit = 1, kVariants = 2;
  CLRFAST_HD static int variant(const double* sc) { return sc[kWeightDecay] != 0.0 ? kDecayBit : 0; }
  static std::string invalid(const double*) { return {}; }
  CLRFAST_HD static constexpr bool uses(int, int) { return true; }
  CLRFAST_HD static constexpr bool writes_grad(int) { return true; }  // the normalised gradient

  template <typename Acc>
  using Coef = ScheduleFreeCoef<Acc>;

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double /*step*/, double inv_scale) {
    Coef<Acc> c = schedulefree_coef<Acc>(sc[kLr], sc[kBeta1], sc[kWeightDecay], sc[kCkp1], inv_scale);
    c.beta2 = static_cast<Acc>(sc[kBeta2]);
    c.one_minus_beta2 = static_cast<Acc>(1.0 - sc[kBeta2]);
    c.bc2 = static_cast<Acc>(sc[kBiasCorrection2]);
    c.eps = static_cast<Acc>(sc[kEps]);
    return c;
  }

  // s: z, exp_avg_sq. Returns what the root is taken of.
  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc&, Acc& g, Acc* s, const Coef<Acc>& c) {
    s[1] = fused_madd(c.one_minus_beta2 * g, g, s[1] * c.beta2);
    return s[1] / c.bc2;
  }

  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc& p, Acc& g, Acc* s, Acc root, const Coef<Acc>& c) {
    g = g / (root + c.eps);
    schedulefree_apply<(V & kDecayBit) != 0>(p, g, s[0], c);
  }
};

struct ScheduleFreeSgd {
  static constexpr const char* kName = "schedulefree_sgd";
  static constexpr std::array<const char*, 1> kSlots = {"z"};
  enum Scalar { kLr, kMomentum, kWeightDecay, kCkp1, kScalarCount };
  static constexpr std::array<const char*, kScalarCount> kScalars = {"lr", "momentum", "weight_decay", "ckp1"};
  static constexpr bool kStep = false;
  static constexpr bool kRoot = false;

  static constexpr int kDecayBit = 1, kVariants = 2;
  CLRFAST_HD static int variant(const double* sc) { return sc[kWeightDecay] != 0.0 ? kDecayBit : 0; }
  static std::string invalid(const double*) { return {}; }
  CLRFAST_HD static constexpr bool uses(int, int slot) { return slot == 0; }
  // The decayed gradient; without decay the gradient is left as it is, as the package leaves it.
  CLRFAST_HD static constexpr bool writes_grad(int v) { return (v & kDecayBit) != 0; }

  template <typename Acc>
  using Coef = ScheduleFreeCoef<Acc>;

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double /*step*/, double inv_scale) {
    return schedulefree_coef<Acc>(sc[kLr], sc[kMomentum], sc[kWeightDecay], sc[kCkp1], inv_scale);
  }

  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc& p, Acc& g, Acc* s, const Coef<Acc>& c) {
    schedulefree_apply<(V & kDecayBit) != 0>(p, g, s[0], c);
    return Acc(0);
  }

  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc&, Acc&, Acc*, Acc, const Coef<Acc>&) {}
};

}  // namespace clrfast
