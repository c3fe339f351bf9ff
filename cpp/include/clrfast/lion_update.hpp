// The Lion rule (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms"), per element, for the rule engine and the CUDA kernel.
//
// The reference is the lion-pytorch package's Lion (its default update_fn),
// with ATen's rounding of each op in the opmath type, every Python-float
// scalar (1 - lr*wd, 1 - beta in double) rounded to it first:
//   p   = p * (1 - lr * wd)                          p.mul_(1 - lr * wd)
//   u   = sign(fma(g, 1 - beta1, m * beta1))         m.clone().mul_(beta1).add(g, alpha=1 - beta1).sgn_()
//   p   = fma(u, -lr, p)                             p.add_(u, alpha=-lr)
//   m   = fma(g, 1 - beta2, m * beta2)               m.mul_(beta2).add_(g, alpha=1 - beta2)
// sign() is ATen's: +1, -1, or +0 for zeros and NaN.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "clrfast/macros.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

struct Lion {
  static constexpr const char* kName = "lion";
  static constexpr std::array<const char*, 1> kSlots = {"exp_avg"};
  enum Scalar { kLr, kBeta1, kBeta2, kWeightDecay, kScalarCount };
  static constexpr std::array<const char*, kScalarCount> kScalars = {"lr", "beta1", "beta2", "weight_decay"};
  static constexpr bool kStep = false;  // lion-pytorch keeps no step count
  static constexpr bool kRoot = false;

  static constexpr int kDecayBit = 1, kVariants = 2;
  CLRFAST_HD static int variant(const double* sc) { return sc[kWeightDecay] != 0.0 ? kDecayBit : 0; }
  static std::string invalid(const double*) { return {}; }
  CLRFAST_HD static constexpr bool uses(int, int slot) { return slot == 0; }

  template <typename Acc>
  struct Coef {
    Acc neg_lr, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_scale;
  };

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double /*step*/, double inv_scale) {
    Coef<Acc> c;
    c.neg_lr = static_cast<Acc>(-sc[kLr]);
    c.decay = static_cast<Acc>(1.0 - sc[kLr] * sc[kWeightDecay]);
    c.beta1 = static_cast<Acc>(sc[kBeta1]);
    c.one_minus_beta1 = static_cast<Acc>(1.0 - sc[kBeta1]);
    c.beta2 = static_cast<Acc>(sc[kBeta2]);
    c.one_minus_beta2 = static_cast<Acc>(1.0 - sc[kBeta2]);
    c.inv_scale = static_cast<Acc>(inv_scale);
    return c;
  }

  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc& p, Acc& g, Acc* s, const Coef<Acc>& c) {
    // 1 - lr*0 is exactly 1, so skipping the product without decay changes no bit.
    if (V & kDecayBit) p = p * c.decay;
    const Acc u = fused_madd(g, c.one_minus_beta1, s[0] * c.beta1);
    const Acc sign = static_cast<Acc>(u > Acc(0)) - static_cast<Acc>(u < Acc(0));
    p = fused_madd(sign, c.neg_lr, p);
    s[0] = fused_madd(g, c.one_minus_beta2, s[0] * c.beta2);
    return Acc(0);
  }

  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc&, Acc, Acc*, Acc, const Coef<Acc>&) {}
};

}  // namespace clrfast
