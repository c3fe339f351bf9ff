// The RMSprop rule: torch.optim.RMSprop's update, per element, for the rule
// engine (cpu/rule_cpu.hpp) and the CUDA kernel.
//
// torch's single-tensor path (foreach=False; foreach=True rounds alike on the
// CPU), with ATen's rounding of each op (see clrfast/adam_update.hpp), in the
// opmath type, every Python-float scalar rounded to it first:
//   g   = -g                                  if maximize
//   g   = fma(p, wd, g)                       if wd != 0      grad.add(param, alpha=wd)
//   sq  = fma((1 - alpha) * g, g, sq * alpha)                  square_avg.mul_(alpha).addcmul_(g, g, 1 - alpha)
//   ga  = lerp(ga, g, 1 - alpha)              if centered
//   avg = sqrt(fma(-ga, ga, sq)) or sqrt(sq), + eps            addcmul(ga, ga, value=-1).sqrt_().add_(eps)
//   buf = buf * momentum + g / avg, p = fma(buf, -lr, p)      if momentum > 0
//   p   = p + (-lr * g) / avg                                  otherwise (addcdiv_(g, avg, value=-lr))
// sqrt is torch's (MKL's, on x86 wheels) when the engine is handed it.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "clrfast/adam_update.hpp"
#include "clrfast/macros.hpp"
#include "clrfast/sgd_update.hpp"

namespace clrfast {

struct Rmsprop {
  static constexpr const char* kName = "rmsprop";
  static constexpr std::array<const char*, 3> kSlots = {"square_avg", "momentum_buffer", "grad_avg"};
  enum Scalar { kLr, kAlpha, kEps, kWeightDecay, kMomentum, kCentered, kMaximize, kScalarCount };
  static constexpr std::array<const char*, kScalarCount> kScalars = {
      "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"};
  static constexpr bool kStep = true;  // torch keeps state['step'] (read only with capturable=True)
  static constexpr bool kRoot = true;

  // Variant bits: torch's branches, fixed per loop.
  static constexpr int kCenteredBit = 1, kMomentumBit = 2, kDecayBit = 4, kVariants = 8;
  CLRFAST_HD static int variant(const double* sc) {
    return (sc[kCentered] != 0.0 ? kCenteredBit : 0) | (sc[kMomentum] > 0.0 ? kMomentumBit : 0) |
           (sc[kWeightDecay] != 0.0 ? kDecayBit : 0);
  }
  static std::string invalid(const double*) { return {}; }
  CLRFAST_HD static constexpr bool uses(int v, int slot) {
    return slot == 0 || (slot == 1 && (v & kMomentumBit)) || (slot == 2 && (v & kCenteredBit));
  }

  template <typename Acc>
  struct Coef {
    Acc neg_lr, alpha, one_minus_alpha, lerp_w, eps, wd, momentum, inv_scale;
    bool lerp_small;                    // ATen's lerp branch for weight 1 - alpha
    typename SignBits<Acc>::type sign;  // maximize: the sign bit, else 0
  };

  template <typename Acc>
  CLRFAST_HD static Coef<Acc> coef(const double* sc, double /*step*/, double inv_scale) {
    Coef<Acc> c;
    c.neg_lr = static_cast<Acc>(-sc[kLr]);
    c.alpha = static_cast<Acc>(sc[kAlpha]);
    c.one_minus_alpha = static_cast<Acc>(1.0 - sc[kAlpha]);
    const Acc w = c.one_minus_alpha;
    c.lerp_small = (w < Acc(0) ? -w : w) < Acc(0.5);
    c.lerp_w = c.lerp_small ? w : w - Acc(1);
    c.eps = static_cast<Acc>(sc[kEps]);
    c.wd = static_cast<Acc>(sc[kWeightDecay]);
    c.momentum = static_cast<Acc>(sc[kMomentum]);
    c.inv_scale = static_cast<Acc>(inv_scale);
    c.sign = sc[kMaximize] != 0.0 ? SignBits<Acc>::sign : 0;
    return c;
  }

  // s: square_avg, momentum_buffer, grad_avg. Returns what the root is taken of.
  template <int V, typename Acc>
  CLRFAST_HD static Acc pre(Acc& p, Acc& g, Acc* s, const Coef<Acc>& c) {
    g = xor_sign(g, c.sign);  // torch negates, flipping a NaN's sign bit too
    if (V & kDecayBit) g = fused_madd(p, c.wd, g);
    s[0] = fused_madd(c.one_minus_alpha * g, g, s[0] * c.alpha);
    if (!(V & kCenteredBit)) return s[0];
    s[2] = fused_madd(c.lerp_w, g - s[2], c.lerp_small ? s[2] : g);
    return fused_madd(-s[2], s[2], s[0]);
  }

  template <int V, typename Acc>
  CLRFAST_HD static void post(Acc& p, Acc g, Acc* s, Acc root, const Coef<Acc>& c) {
    const Acc avg = root + c.eps;
    if (V & kMomentumBit) {
      s[1] = s[1] * c.momentum + g / avg;
      p = fused_madd(s[1], c.neg_lr, p);
    } else {
      p = p + (c.neg_lr * g) / avg;
    }
  }
};

}  // namespace clrfast
