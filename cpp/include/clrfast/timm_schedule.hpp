// timm's learning-rate schedulers (timm/scheduler/*.py) as plain data plus
// pure functions of the step number.
//
// Each function repeats the Python expression of timm's `_get_lr` operation
// for operation in double precision, so that (built without FP contraction,
// with libm's cos/tanh/pow/log) it returns the same double as timm for every
// step. Python's float semantics are spelled out where they differ from the
// plain C operator: `//` is CPython's fmod-based floor division, `**` is C pow
// behind CPython's special cases, `math.log(x, b)` is log(x)/log(b), and
// `max(a, b)` / `min(a, b)` return the first argument unless the second is
// strictly greater / smaller.
//
// Steps are whole numbers held as doubles. timm steps with Python ints; every
// int operation it does (t // t_initial, t - t_initial * i, t + 1, t * s, t / n)
// has the same result as the double operation below 2^53.
//
// Where timm's Python raises (OverflowError from a float power, ZeroDivisionError,
// ValueError from math.log/math.cos/math.floor, a complex number from a negative
// float to a fractional power) the evaluation reports it as a TimmError, the
// first one in timm's order of evaluation, so that a drop-in can refuse that
// step instead of returning a number timm never gives.
#pragma once

#include <cmath>
#include <cstdint>

#include "clrfast/macros.hpp"

namespace clrfast {

// Python's math.pi (the same double as kPi in schedule.hpp).
constexpr double kTimmPi = 3.14159265358979323846264338327950288;

// Maximum number of MultiStepLRScheduler milestones held in a leaf.
constexpr int kTimmMaxMilestones = 16;

// What timm's Python would do instead of returning a float lr.
enum class TimmError : int32_t {
  Ok = 0,
  Overflow = 1,      // OverflowError: a float power (or math.floor of inf) overflows
  ZeroDivision = 2,  // ZeroDivisionError: float division by zero, 0.0 ** negative
  Domain = 3,        // ValueError: math.log of x <= 0, math.cos of inf, math.floor of nan
  Complex = 4,       // a negative float to a fractional power: a complex lr (or TypeError in math.cos)
  NonFinite = 5,     // no exception, but an inf or nan lr
};

// The curve of a cycle schedule (cosine_lr.py, tanh_lr.py, poly_lr.py).
enum class TimmCurve : int32_t { Cosine = 0, Tanh = 1, Poly = 2 };

// The stable and decay functions of WSDLRScheduler (wsd_lr.py).
enum class TimmStable : int32_t { Constant = 0, Power = 1 };  // rsqrt is Power with stable_power 0.5
enum class TimmDecay : int32_t { Linear = 0, OneMinusSqrt = 1, Cosine = 2, Power = 3, Exp = 4 };

// Linear warmup shared by every timm scheduler: for t < warmup_t the lr is
// warmup_lr_init + t * warmup_step, with warmup_step = (target - warmup_lr_init) / warmup_t
// as timm stores it (target the base lr; TanhLRScheduler without a warmup prefix
// aims at its own value at warmup_t).
struct TimmWarmup {
  double t;
  double lr_init;
  double step;
  int32_t prefix;  // warmup_prefix: the schedule's clock starts after the warmup
};

struct TimmCycleParams {
  double base;  // the group's initial lr (timm's base_values[i])
  double lr_min;
  double t_initial;
  double cycle_mul, cycle_decay, cycle_limit;
  double k_decay;  // cosine and poly
  double power;    // poly
  double lb, ub;   // tanh
  TimmWarmup warmup;
  TimmCurve curve;
};

// StepLRScheduler (decay_t the interval) and MultiStepLRScheduler (the milestones).
struct TimmStepParams {
  double base;
  double decay_t;
  double decay_rate;
  TimmWarmup warmup;
  int32_t n_milestones;
  double milestones[kTimmMaxMilestones];
};

struct TimmWsdParams {
  double base;
  double t_initial, decay_t, lr_min;
  double stable_timescale;
  double stable_power;  // 0.5 for rsqrt, as timm's _stable resolves it
  double decay_power, decay_ratio;
  TimmWarmup warmup;
  TimmStable stable_fn;
  TimmDecay decay_fn;
};

// A value and what timm's Python does at that step.
struct TimmValue {
  double lr;
  TimmError err;
};

// ------------------------------------------------------------- Python float semantics

CLRFAST_HD void timm_fail(TimmError* err, TimmError e) {
  if (*err == TimmError::Ok) *err = e;
}

// CPython's float_floor_div (Objects/floatobject.c, _float_div_mod).
CLRFAST_HD double py_floordiv(double vx, double wx, TimmError* err) {
  if (wx == 0.0) {
    timm_fail(err, TimmError::ZeroDivision);
    return nan("");
  }
  double mod = fmod(vx, wx);
  double div = (vx - mod) / wx;
  if (mod != 0.0) {
    if ((wx < 0.0) != (mod < 0.0)) div -= 1.0;
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = copysign(0.0, vx / wx);
  }
  return floordiv;
}

CLRFAST_HD double py_div(double a, double b, TimmError* err) {
  if (b == 0.0) timm_fail(err, TimmError::ZeroDivision);
  return a / b;
}

// CPython's float_pow: its special cases, then C pow; an infinite result from
// finite operands is an OverflowError, an underflow is not an error.
CLRFAST_HD double py_pow(double x, double y, TimmError* err) {
  if (y == 0.0) return 1.0;
  if (std::isnan(x)) return x;
  if (std::isnan(y)) return x == 1.0 ? 1.0 : y;
  if (std::isinf(y) || std::isinf(x)) return pow(x, y);
  if (x == 0.0) {
    if (y < 0.0) timm_fail(err, TimmError::ZeroDivision);
    return pow(x, y);
  }
  if (x < 0.0 && y != floor(y)) {
    timm_fail(err, TimmError::Complex);
    return nan("");
  }
  if (x == 1.0) return 1.0;
  const double r = pow(x, y);
  if (std::isinf(r)) timm_fail(err, TimmError::Overflow);
  return r;
}

// math.log(x): a ValueError for x <= 0 (nan passes through).
CLRFAST_HD double py_log(double x, TimmError* err) {
  if (x <= 0.0) timm_fail(err, TimmError::Domain);
  return log(x);
}

// math.floor(x): OverflowError for an infinity, ValueError for nan.
CLRFAST_HD double py_floor(double x, TimmError* err) {
  if (std::isinf(x)) timm_fail(err, TimmError::Overflow);
  if (std::isnan(x)) timm_fail(err, TimmError::Domain);
  return floor(x);
}

// math.cos(x): a ValueError for an infinite x (nan passes through).
CLRFAST_HD double py_cos(double x, TimmError* err) {
  if (std::isinf(x)) timm_fail(err, TimmError::Domain);
  return cos(x);
}

// math.sqrt(x): a ValueError for x < 0.
CLRFAST_HD double py_sqrt(double x, TimmError* err) {
  if (x < 0.0) timm_fail(err, TimmError::Domain);
  return sqrt(x);
}

CLRFAST_HD TimmValue timm_result(double lr, TimmError err) {
  if (err == TimmError::Ok && !std::isfinite(lr)) err = TimmError::NonFinite;
  return {lr, err};
}

// ------------------------------------------------------------- cycle schedules

// timm's cycle position (the same code in cosine_lr.py, tanh_lr.py and poly_lr.py):
//   cycle_mul != 1: i = floor(log(1 - t / t_initial * (1 - cycle_mul), cycle_mul)),
//                   t_i = cycle_mul ** i * t_initial,
//                   t_curr = t - (1 - cycle_mul ** i) / (1 - cycle_mul) * t_initial
//   cycle_mul == 1: i = t // t_initial, t_i = t_initial, t_curr = t - t_initial * i
struct TimmCyclePos {
  double i, t_i, t_curr;
};

CLRFAST_HD TimmCyclePos timm_cycle_pos(const TimmCycleParams& p, double t, TimmError* err) {
  TimmCyclePos r;
  if (p.cycle_mul != 1.0) {
    const double x = 1.0 - t / p.t_initial * (1.0 - p.cycle_mul);
    const double lx = py_log(x, err);
    const double lb = py_log(p.cycle_mul, err);
    r.i = py_floor(py_div(lx, lb, err), err);
    const double mi = py_pow(p.cycle_mul, r.i, err);
    r.t_i = mi * p.t_initial;
    r.t_curr = t - (1.0 - py_pow(p.cycle_mul, r.i, err)) / (1.0 - p.cycle_mul) * p.t_initial;
  } else {
    r.i = py_floordiv(t, p.t_initial, err);
    r.t_i = p.t_initial;
    r.t_curr = t - p.t_initial * r.i;
  }
  return r;
}

// The curve at step t of the schedule's own clock (after any warmup prefix), i < cycle_limit:
//   cosine: lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * t_curr ** k / t_i ** k))
//   tanh:   lr_min + 0.5 * (lr_max - lr_min) * (1 - tanh(lb * (1. - tr) + ub * tr)), tr = t_curr / t_i
//   poly:   lr_min + (lr_max - lr_min) * (1 - t_curr ** k / t_i ** k) ** power
// with lr_max = base * cycle_decay ** i; lr_min from cycle cycle_limit on. Cosine and
// poly compute cycle_decay ** i before the limit test (an overflow there raises in
// timm), tanh after it.
CLRFAST_HD double timm_curve(const TimmCycleParams& p, double t, TimmError* err) {
  const TimmCyclePos pos = timm_cycle_pos(p, t, err);
  double gamma = 1.0;
  if (p.curve != TimmCurve::Tanh) gamma = py_pow(p.cycle_decay, pos.i, err);
  if (!(pos.i < p.cycle_limit)) return p.lr_min;
  if (p.curve == TimmCurve::Tanh) gamma = py_pow(p.cycle_decay, pos.i, err);
  const double lr_max = p.base * gamma;
  switch (p.curve) {
    case TimmCurve::Tanh: {
      const double tr = py_div(pos.t_curr, pos.t_i, err);
      return p.lr_min + 0.5 * (lr_max - p.lr_min) * (1.0 - tanh(p.lb * (1. - tr) + p.ub * tr));
    }
    case TimmCurve::Poly: {
      const double a = py_pow(pos.t_curr, p.k_decay, err);
      const double b = py_pow(pos.t_i, p.k_decay, err);
      const double q = py_div(a, b, err);
      return p.lr_min + (lr_max - p.lr_min) * py_pow(1.0 - q, p.power, err);
    }
    default: {
      const double a = py_pow(pos.t_curr, p.k_decay, err);
      const double b = py_pow(pos.t_i, p.k_decay, err);
      const double arg = py_div(kTimmPi * a, b, err);
      return p.lr_min + 0.5 * (lr_max - p.lr_min) * (1.0 + py_cos(arg, err));
    }
  }
}

// _get_lr(t): warmup_lr_init + t * warmup_step for t < warmup_t, else the curve at
// t - warmup_t (warmup_prefix) or t.
CLRFAST_HD TimmValue timm_cycle_eval(const TimmCycleParams& p, double t) {
  if (t < p.warmup.t) return timm_result(p.warmup.lr_init + t * p.warmup.step, TimmError::Ok);
  if (p.warmup.prefix) t = t - p.warmup.t;
  TimmError err = TimmError::Ok;
  const double lr = timm_curve(p, t, &err);
  return timm_result(lr, err);
}

// The cycle index i of step t (on the schedule's clock), as timm_cycle_pos finds it.
CLRFAST_HD double timm_cycle_index(const TimmCycleParams& p, double t) {
  TimmError err = TimmError::Ok;
  if (t < p.warmup.t) return 0.0;
  if (p.warmup.prefix) t = t - p.warmup.t;
  return timm_cycle_pos(p, t, &err).i;
}

// Whether the schedule value is defined at t: its value is finite and so is the peak
// of every cycle before the limit up to t (a growing peak, cycle_decay > 1, overflows
// for good once it does; the steps past the limit hold lr_min, but a range check reads
// both ends only, so the overflow is kept from the first bad cycle on).
CLRFAST_HD bool timm_cycle_defined(const TimmCycleParams& p, double t) {
  const TimmValue v = timm_cycle_eval(p, t);
  if (!std::isfinite(v.lr) || v.err == TimmError::NonFinite) return false;
  if (p.cycle_decay > 1.0 && p.cycle_limit >= 1.0) {
    double i = timm_cycle_index(p, t);
    if (i > p.cycle_limit - 1.0) i = p.cycle_limit - 1.0;
    const double gamma = pow(p.cycle_decay, i);
    const double lr_max = p.base * gamma;
    if (!std::isfinite(gamma) || !std::isfinite(0.5 * (lr_max - p.lr_min) * 2.0)) return false;
  }
  return true;
}

// ------------------------------------------------------------- step schedules

// bisect.bisect_right(milestones, x), its loop as written (so an unsorted list
// gives what bisect gives).
CLRFAST_HD double timm_bisect_right(const TimmStepParams& p, double x) {
  int lo = 0, hi = p.n_milestones;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (x < p.milestones[mid]) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return static_cast<double>(lo);
}

// StepLRScheduler: base * (decay_rate ** (t // decay_t));
// MultiStepLRScheduler: base * (decay_rate ** bisect_right(decay_t, t + 1)).
CLRFAST_HD TimmValue timm_step_eval(const TimmStepParams& p, double t, bool multi) {
  if (t < p.warmup.t) return timm_result(p.warmup.lr_init + t * p.warmup.step, TimmError::Ok);
  if (p.warmup.prefix) t = t - p.warmup.t;
  TimmError err = TimmError::Ok;
  const double e = multi ? timm_bisect_right(p, t + 1.0) : py_floordiv(t, p.decay_t, &err);
  const double lr = p.base * py_pow(p.decay_rate, e, &err);
  return timm_result(lr, err);
}

// ------------------------------------------------------------- warmup-stable-decay

// WSDLRScheduler._get_lr, with t_s = t - warmup_t:
//   stable = max(base * stable(t_s), lr_min), stable(t_s) = 1 or (1. + t_s / timescale) ** -power;
//   t_decay = t_s - (t_initial - decay_t); stable while t_decay <= 0, then
//   lr_min + (stable - lr_min) * decay(min(t_decay / decay_t, 1.)).
CLRFAST_HD double timm_wsd_decay(const TimmWsdParams& p, double frac, TimmError* err) {
  switch (p.decay_fn) {
    case TimmDecay::Linear:
      return 1. - frac;
    case TimmDecay::OneMinusSqrt:
      return 1. - py_sqrt(frac, err);
    case TimmDecay::Cosine:
      return 0.5 * (1. + py_cos(kTimmPi * frac, err));
    case TimmDecay::Power:
      return 1. - py_pow(frac, p.decay_power, err);
    default: {
      const double r = p.decay_ratio;
      return (py_pow(r, frac, err) - r) / (1. - r);
    }
  }
}

CLRFAST_HD TimmValue timm_wsd_eval(const TimmWsdParams& p, double t) {
  if (t < p.warmup.t) return timm_result(p.warmup.lr_init + t * p.warmup.step, TimmError::Ok);
  TimmError err = TimmError::Ok;
  const double t_s = t - p.warmup.t;
  double stable = 1.;
  if (p.stable_fn == TimmStable::Power) stable = py_pow(1. + py_div(t_s, p.stable_timescale, &err), -p.stable_power, &err);
  const double v = p.base * stable;
  const double lr = p.lr_min > v ? p.lr_min : v;
  const double t_decay = t_s - (p.t_initial - p.decay_t);
  if (t_decay <= 0) return timm_result(lr, err);
  const double q = py_div(t_decay, p.decay_t, &err);
  const double frac = 1. < q ? 1. : q;
  const double decay = timm_wsd_decay(p, frac, &err);
  return timm_result(p.lr_min + (lr - p.lr_min) * decay, err);
}

// ------------------------------------------------------------- status

// Codes of clrfast::Status (schedule.hpp): Ok 0, Overflow 1, ZeroDivision 2. With
// `as_torch` (a drop-in) the code says what timm raises at t: a division by zero as
// such, any other refusal as an overflow; without it (a schedule value) whether the
// value is defined at t.
CLRFAST_HD int32_t timm_status_code(TimmError err, bool defined, bool as_torch) {
  if (as_torch) {
    if (err == TimmError::Ok) return 0;
    return err == TimmError::ZeroDivision ? 2 : 1;
  }
  return defined ? 0 : 1;
}

CLRFAST_HD int32_t timm_cycle_status(const TimmCycleParams& p, double t, bool as_torch) {
  return timm_status_code(timm_cycle_eval(p, t).err, timm_cycle_defined(p, t), as_torch);
}

CLRFAST_HD int32_t timm_step_status(const TimmStepParams& p, double t, bool multi, bool as_torch) {
  const TimmError err = timm_step_eval(p, t, multi).err;
  return timm_status_code(err, err == TimmError::Ok, as_torch);
}

CLRFAST_HD int32_t timm_wsd_status(const TimmWsdParams& p, double t, bool as_torch) {
  const TimmError err = timm_wsd_eval(p, t).err;
  return timm_status_code(err, err == TimmError::Ok, as_torch);
}

// ------------------------------------------------------------- builders

// warmup_step as timm computes it, (target - warmup_lr_init) / warmup_t, when the
// caller passes nan (a drop-in passes the warmup_steps[i] its state holds).
CLRFAST_HD TimmWarmup make_timm_warmup(double warmup_t, double lr_init, double step, bool prefix, double target) {
  TimmWarmup w;
  w.t = warmup_t;
  w.lr_init = lr_init;
  w.prefix = prefix ? 1 : 0;
  if (step == step) {
    w.step = step;
  } else if (warmup_t != 0.0) {
    w.step = (target - lr_init) / warmup_t;
  } else {
    w.step = 1.0;  // timm's [1 for _ in base_values]; never read for t >= 0
  }
  return w;
}

// TanhLRScheduler without a warmup prefix warms up to its own value at warmup_t:
// t_v = self._get_lr(self.warmup_t), the curve at warmup_t itself.
CLRFAST_HD TimmCycleParams make_timm_cycle(TimmCurve curve, double base, double lr_min, double t_initial,
                                           double cycle_mul, double cycle_decay, double cycle_limit, double k_decay,
                                           double power, double lb, double ub, double warmup_t, double warmup_lr_init,
                                           double warmup_step, bool warmup_prefix, TimmError* err) {
  TimmCycleParams p;
  p.curve = curve;
  p.base = base;
  p.lr_min = lr_min;
  p.t_initial = t_initial;
  p.cycle_mul = cycle_mul;
  p.cycle_decay = cycle_decay;
  p.cycle_limit = cycle_limit;
  p.k_decay = k_decay;
  p.power = power;
  p.lb = lb;
  p.ub = ub;
  double target = base;
  if (curve == TimmCurve::Tanh && !warmup_prefix && warmup_t != 0.0 && warmup_step != warmup_step)
    target = timm_curve(p, warmup_t, err);
  p.warmup = make_timm_warmup(warmup_t, warmup_lr_init, warmup_step, warmup_prefix, target);
  return p;
}

}  // namespace clrfast
