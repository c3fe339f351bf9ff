// Learning-rate and momentum schedules as plain data plus pure functions of
// the step number.
//
// Everything here is header-only, allocation-free and exception-free so that
// the same code runs in the CPU kernels, the CUDA kernel and the bindings.
// The C++ core assumes validated input: the Python front end checks arguments.
//
// Where PyTorch has the same schedule (CyclicLR, OneCycleLR,
// CosineAnnealingWarmRestarts) the arithmetic below repeats torch's Python
// expressions operation for operation, in double precision. Built without FP
// contraction, it returns the same double as torch for every step.
#pragma once

#include <cmath>
#include <cstdint>

#include "clrfast/macros.hpp"
#include "clrfast/timm_schedule.hpp"

namespace clrfast {

// Python's math.pi, spelled so that it rounds to the same double.
constexpr double kPi = 3.14159265358979323846264338327950288;

// Maximum number of pieces in a joined schedule. Nested joins are flattened,
// so this bounds the total count of leaf schedules. A fixed size keeps a
// Schedule a trivially copyable value that can be passed to a CUDA kernel.
constexpr int kMaxPieces = 16;

enum class Kind : int32_t {
  Constant = 0,
  Linear = 1,
  Sweep = 2,
  Cyclic = 3,
  OneCycle = 4,
  CosineRestarts = 5,
  // Warmup-decay families, each the lambda of one transformers factory
  // (transformers/optimization.py) times the peak lr; they share WarmupParams.
  WarmupStableDecay = 6,
  WarmupLinear = 7,
  WarmupCosine = 8,
  WarmupHardRestarts = 9,
  WarmupPolynomial = 10,
  InverseSqrt = 11,
  // timm's schedulers (timm/scheduler/*.py, see timm_schedule.hpp): cosine, tanh and
  // poly share TimmCycleParams, step and multistep TimmStepParams.
  TimmCosine = 12,
  TimmTanh = 13,
  TimmPoly = 14,
  TimmStep = 15,
  TimmMultiStep = 16,
  TimmWsd = 17,
};

// Amplitude scale of a cyclical schedule, a function of the cycle number or
// of the iteration (see ScaleMode).
enum class ScaleKind : int32_t {
  Triangular = 0,   // 1
  Triangular2 = 1,  // 1 / 2^(x - 1)
  ExpRange = 2,     // gamma^x
  Geometric = 3,    // gamma^(x - 1)
  External = 4,     // supplied by the caller (a user callable)
};
enum class ScaleMode : int32_t { Cycle = 0, Iterations = 1 };
// Window shape of one cycle (Smith 2017, section 3.3).
enum class Window : int32_t { Triangular = 0, Welch = 1, Hann = 2 };
enum class Anneal : int32_t { Cos = 0, Linear = 1 };
enum class SweepMode : int32_t { Linear = 0, Exp = 1 };
// Shape of a warmup-stable-decay ramp (both the warmup and the decay).
enum class Ramp : int32_t { Linear = 0, Cosine = 1, OneMinusSqrt = 2 };

struct ConstantParams {
  double lr;
};

// lr rises linearly from start to end over `steps`, then stays at end.
struct LinearParams {
  double start_lr, end_lr, steps;
};

// Range-test sweep from start to end over `steps` steps (last at steps - 1).
struct SweepParams {
  double start_lr, end_lr, steps;
  SweepMode mode;
};

struct CyclicParams {
  double base_lr, max_lr;
  double total_size;  // float(step_size_up) + float(step_size_down)
  double step_ratio;  // step_size_up / total_size
  double gamma;       // ExpRange and Geometric
  ScaleKind scale;
  ScaleMode scale_mode;
  Window window;
  int32_t cycle_momentum;
  double base_momentum, max_momentum;
};

struct OneCyclePhase {
  double end_step;
  double start_lr, end_lr;
  double start_momentum, end_momentum;
};

struct OneCycleParams {
  OneCyclePhase phase[3];
  int32_t n_phases;
  Anneal anneal;
  int32_t cycle_momentum;
  double total_steps;
};

struct CosineRestartsParams {
  double base_lr, eta_min;
  double T_0, T_mult;
  double peak_decay;  // the peak is base_lr * peak_decay^k in the k-th cycle
  double warmup;      // linear warmup steps at the start of every cycle
};

// lr = peak * factor(t), with factor(t) the transformers lambda of the kind.
// Step counts are whole numbers held as doubles (exact below 2^53).
struct WarmupParams {
  double peak;
  double warmup;      // num_warmup_steps
  double stable;      // WSD: num_stable_steps
  double decay;       // WSD: num_decay_steps; others: num_training_steps
  double num_cycles;  // cosine waves (WSD, cosine) or hard restarts
  double min_ratio;   // WSD min_lr_ratio, cosine min_lr_rate
  double power;       // polynomial
  double lr_end;      // polynomial end lr
  double lr_init;     // polynomial: the lr the decay is a fraction of
  double timescale;   // inverse square root
  Ramp warmup_shape;  // WSD
  Ramp decay_shape;   // WSD
};

// An affine map of a piece's clock, u -> origin + (u - from) * num / den: how a re-horizoned
// schedule stretches its remaining part in time (num and den are whole step counts, so the
// map's ends, u = from and u = from + den, land on origin and origin + num exactly).
struct ClockMap {
  double from, origin, num, den;
};

// lr -> max(lr * factor, floor), applied `times` times in a row: a group's lr scale
// (times 1, floor 0) or torch ReduceLROnPlateau's reductions (its factor and min_lr), each
// rounded as torch rounds the lr it reduces.
struct LrMap {
  double factor, floor;
  int32_t times;
};

// How many maps a piece carries: each re-horizon adds a clock map, each scale or plateau an lr
// map. A fixed count keeps the piece a trivially copyable value.
constexpr int kMaxClockMaps = 4;
constexpr int kMaxLrMaps = 4;

// One piece of a schedule: a leaf kind and its parameters, evaluated on the piece's clock
// after its clock maps, its lr then passed through its lr maps. A zero-initialised piece has
// no maps.
struct Leaf {
  Kind kind;
  union {
    ConstantParams constant;
    LinearParams linear;
    SweepParams sweep;
    CyclicParams cyclic;
    OneCycleParams onecycle;
    CosineRestartsParams restarts;
    WarmupParams warmup;
    TimmCycleParams timm_cycle;
    TimmStepParams timm_step;
    TimmWsdParams timm_wsd;
  };
  int32_t n_clock;
  int32_t n_lr;
  ClockMap clock[kMaxClockMaps];
  LrMap lr_map[kMaxLrMaps];
};

// A sequence of leaf schedules joined at step boundaries; piece i runs on its
// own clock, starting at 0 at boundary[i - 1] (as optax.join_schedules).
struct Schedule {
  int32_t n;
  Leaf piece[kMaxPieces];
  double boundary[kMaxPieces - 1];
};

// momentum is NaN where the schedule does not define one.
struct LrMom {
  double lr;
  double momentum;
};

CLRFAST_HD double nan_value() { return NAN; }

// ---------------------------------------------------------------- cyclical

// Position inside the current cycle, as torch.optim.lr_scheduler.CyclicLR:
//   cycle = floor(1 + t/total), x = 1 + t/total - cycle,
//   s = x/ratio if x <= ratio else (x - 1)/(ratio - 1).
struct CyclicPos {
  double cycle;
  double s;  // 0 at the base, 1 at the peak
};

// The triangular (Bartlett) position, before any window shape.
CLRFAST_HD CyclicPos cyclic_triangle(const CyclicParams& p, double t) {
  const double q = t / p.total_size;
  const double cycle = floor(1.0 + q);
  const double x = 1.0 + q - cycle;
  // x/ratio or (x - 1)/(ratio - 1), written as one division of selected
  // operands (x - 0 == x exactly) so that a SIMD loop divides once, not twice.
  const bool rising = x <= p.step_ratio;
  return {cycle, (x - (rising ? 0.0 : 1.0)) / (rising ? p.step_ratio : p.step_ratio - 1.0)};
}

CLRFAST_HD CyclicPos cyclic_pos(const CyclicParams& p, double t) {
  const CyclicPos tri = cyclic_triangle(p, t);
  const double cycle = tri.cycle;
  double s = tri.s;
  switch (p.window) {
    case Window::Triangular:
      break;
    case Window::Welch:  // parabolic: 1 - u^2 with u = 1 - s the distance from the peak
      s = 1.0 - (1.0 - s) * (1.0 - s);
      break;
    case Window::Hann:  // sinusoidal: (1 - cos(pi s)) / 2
      s = (1.0 - cos(kPi * s)) / 2.0;
      break;
  }
  return {cycle, s};
}

// The argument the amplitude scale is evaluated at.
CLRFAST_HD double cyclic_scale_arg(const CyclicParams& p, double t, double cycle) {
  return p.scale_mode == ScaleMode::Cycle ? cycle : t;
}

CLRFAST_HD double cyclic_scale(ScaleKind kind, double gamma, double x) {
  switch (kind) {
    case ScaleKind::Triangular2:
      return 1.0 / pow(2.0, x - 1.0);
    case ScaleKind::ExpRange:
      return pow(gamma, x);
    case ScaleKind::Geometric:
      return pow(gamma, x - 1.0);
    default:
      return 1.0;
  }
}

// lr = base + (max - base) * s * scale; momentum = max_m - (max_m - base_m) * s * scale.
CLRFAST_HD LrMom cyclic_combine(const CyclicParams& p, double s, double scale) {
  LrMom r;
  r.lr = p.base_lr + (p.max_lr - p.base_lr) * s * scale;
  r.momentum = p.cycle_momentum ? p.max_momentum - (p.max_momentum - p.base_momentum) * s * scale : nan_value();
  return r;
}

CLRFAST_HD LrMom cyclic_at(const CyclicParams& p, double t) {
  const CyclicPos pos = cyclic_pos(p, t);
  return cyclic_combine(p, pos.s, cyclic_scale(p.scale, p.gamma, cyclic_scale_arg(p, t, pos.cycle)));
}

// The cycle geometry from torch's arguments, as CyclicLR computes it:
// total = float(up) + float(down), ratio = up / total.
struct CyclicGeometry {
  double total_size, step_ratio;
};

CLRFAST_HD CyclicGeometry cyclic_geometry(double step_size_up, double step_size_down) {
  const double total = step_size_up + step_size_down;
  return {total, step_size_up / total};
}

// Builds the parameters from a geometry (CyclicLR keeps total_size and
// step_ratio as its state, so a loaded state brings its own).
CLRFAST_HD CyclicParams make_cyclic(double base_lr, double max_lr, CyclicGeometry geometry, ScaleKind scale,
                                    double gamma, ScaleMode scale_mode, Window window, bool cycle_momentum,
                                    double base_momentum, double max_momentum) {
  CyclicParams p;
  p.base_lr = base_lr;
  p.max_lr = max_lr;
  p.total_size = geometry.total_size;
  p.step_ratio = geometry.step_ratio;
  p.gamma = gamma;
  p.scale = scale;
  p.scale_mode = scale_mode;
  p.window = window;
  p.cycle_momentum = cycle_momentum ? 1 : 0;
  p.base_momentum = base_momentum;
  p.max_momentum = max_momentum;
  return p;
}

// ---------------------------------------------------------------- one-cycle

// cos: end + (start - end)/2 * (cos(pi pct) + 1); linear: (end - start) pct + start.
CLRFAST_HD double anneal(Anneal a, double start, double end, double pct) {
  if (a == Anneal::Cos) {
    const double cos_out = cos(kPi * pct) + 1.0;
    return end + (start - end) / 2.0 * cos_out;
  }
  return (end - start) * pct + start;
}

// Index of the phase that step t falls in, as OneCycleLR's search: the first
// whose end is >= t, else the last.
CLRFAST_HD int onecycle_phase(const OneCycleParams& p, double t, double* start) {
  *start = 0.0;
  int i = 0;
  for (; i < p.n_phases - 1; ++i) {
    if (t <= p.phase[i].end_step) break;
    *start = p.phase[i].end_step;
  }
  return i;
}

CLRFAST_HD LrMom onecycle_at(const OneCycleParams& p, double t) {
  double start;
  const OneCyclePhase& ph = p.phase[onecycle_phase(p, t, &start)];
  const double pct = (t - start) / (ph.end_step - start);
  LrMom r;
  r.lr = anneal(p.anneal, ph.start_lr, ph.end_lr, pct);
  r.momentum = p.cycle_momentum ? anneal(p.anneal, ph.start_momentum, ph.end_momentum, pct) : nan_value();
  return r;
}

// The phase end steps of torch.optim.lr_scheduler.OneCycleLR, in its operation
// order: two phases end at pct*T - 1 and T - 1; three phases at pct*T - 1,
// 2*pct*T - 2 and T - 1. Returns the number of phases.
CLRFAST_HD int onecycle_phase_ends(double total_steps, double pct_start, bool three_phase, double ends[3]) {
  ends[0] = pct_start * total_steps - 1.0;
  if (three_phase) {
    ends[1] = 2.0 * pct_start * total_steps - 2.0;
    ends[2] = total_steps - 1.0;
    return 3;
  }
  ends[1] = total_steps - 1.0;
  ends[2] = ends[1];
  return 2;
}

// Builds the phases exactly as torch.optim.lr_scheduler.OneCycleLR does.
CLRFAST_HD OneCycleParams make_onecycle(double max_lr, double total_steps, double pct_start, Anneal anneal_kind,
                                        bool three_phase, double div_factor, double final_div_factor,
                                        bool cycle_momentum, double base_momentum, double max_momentum) {
  OneCycleParams p;
  const double initial_lr = max_lr / div_factor;
  const double min_lr = initial_lr / final_div_factor;
  double ends[3];
  p.n_phases = onecycle_phase_ends(total_steps, pct_start, three_phase, ends);
  p.anneal = anneal_kind;
  p.cycle_momentum = cycle_momentum ? 1 : 0;
  p.total_steps = total_steps;
  if (three_phase) {
    p.phase[0] = {ends[0], initial_lr, max_lr, max_momentum, base_momentum};
    p.phase[1] = {ends[1], max_lr, initial_lr, base_momentum, max_momentum};
    p.phase[2] = {ends[2], initial_lr, min_lr, max_momentum, max_momentum};
  } else {
    p.phase[0] = {ends[0], initial_lr, max_lr, max_momentum, base_momentum};
    p.phase[1] = {ends[1], max_lr, min_lr, base_momentum, max_momentum};
    p.phase[2] = p.phase[1];
  }
  return p;
}

// ------------------------------------------------- cosine with warm restarts

// Position in the SGDR cycle structure: T_cur steps into a cycle of length T_i,
// the k-th cycle (k = 0 first).
struct RestartPos {
  double T_cur, T_i, k;
};

CLRFAST_HD double restart_cycle_start(double T_0, double T_mult, double k) {
  return T_0 * (pow(T_mult, k) - 1.0) / (T_mult - 1.0);
}

// Cycle of step t for whole-number t, as repeated torch step() calls find it:
// T_cur += 1; if T_cur >= T_i: T_cur -= T_i, T_i *= T_mult. With an integer
// T_mult every quantity stays an exact integer, so torch's values are matched.
CLRFAST_HD RestartPos restart_pos(double T_0, double T_mult, double t) {
  if (T_mult == 1.0) {
    const double k = floor(t / T_0);
    return {t - k * T_0, T_0, k};
  }
  if (T_mult == floor(T_mult)) {
    double T_cur = t, T_i = T_0, k = 0.0;
    while (T_cur >= T_i) {  // at most ~log2(t) iterations
      T_cur -= T_i;
      T_i *= T_mult;
      k += 1.0;
    }
    return {T_cur, T_i, k};
  }
  // Non-integer growth: the k-th cycle starts at S_k = T_0 (m^k - 1)/(m - 1).
  // k is the largest with S_k <= t, found from the logarithm and then moved
  // with the same rounded S_k that gives T_cur, so T_cur = t - S_k is never
  // negative (a rounded S_k can land a hair past a whole-number boundary).
  // The logarithm is off by at most one or two, so each correction loop is
  // bounded: past 2^53 a step of k by 1.0 changes nothing and an unbounded
  // loop would never end.
  double k = floor(log(t * (T_mult - 1.0) / T_0 + 1.0) / log(T_mult));
  if (!(k >= 0.0)) k = 0.0;
  for (int i = 0; i < 4 && k > 0.0 && restart_cycle_start(T_0, T_mult, k) > t; ++i) k -= 1.0;
  for (int i = 0; i < 4 && restart_cycle_start(T_0, T_mult, k + 1.0) <= t; ++i) k += 1.0;
  const double T_i = T_0 * pow(T_mult, k);
  // Where S_k has lost all precision (k near 2^53 or beyond), keep the
  // position inside the cycle rather than return a negative or infinite one.
  double T_cur = t - restart_cycle_start(T_0, T_mult, k);
  if (!(T_cur >= 0.0)) T_cur = 0.0;
  if (T_cur > T_i) T_cur = T_i;
  return {T_cur, T_i, k};
}

// torch's closed form for step(epoch) with a (possibly fractional) epoch:
//   n = int(log(epoch/T_0 (T_mult - 1) + 1, T_mult)),
//   T_cur = epoch - T_0 (T_mult^n - 1)/(T_mult - 1), T_i = T_0 T_mult^n.
// Python's log(x, base) is log(x)/log(base); int() truncates.
CLRFAST_HD RestartPos restart_pos_torch_epoch(double T_0, double T_mult, double epoch) {
  if (epoch < T_0) return {epoch, T_0, 0.0};
  if (T_mult == 1.0) return {fmod(epoch, T_0), T_0, floor(epoch / T_0)};
  const double n = trunc(log(epoch / T_0 * (T_mult - 1.0) + 1.0) / log(T_mult));
  const double mn = pow(T_mult, n);
  return {epoch - T_0 * (mn - 1.0) / (T_mult - 1.0), T_0 * mn, n};
}

// lr = eta_min + (peak - eta_min) (1 + cos(pi T_cur/T_i)) / 2, after an
// optional linear warmup from eta_min to the peak over the first `warmup` steps.
CLRFAST_HD double restarts_value(const CosineRestartsParams& p, RestartPos pos) {
  double peak = p.base_lr;
  if (p.peak_decay != 1.0) peak = p.base_lr * pow(p.peak_decay, pos.k);
  double T_cur = pos.T_cur, T_i = pos.T_i;
  if (p.warmup > 0.0) {
    if (T_cur < p.warmup) return p.eta_min + (peak - p.eta_min) * (T_cur / p.warmup);
    T_cur -= p.warmup;
    T_i -= p.warmup;
  }
  return p.eta_min + (peak - p.eta_min) * (1.0 + cos(kPi * T_cur / T_i)) / 2.0;
}

CLRFAST_HD double restarts_at(const CosineRestartsParams& p, double t) {
  return restarts_value(p, restart_pos(p.T_0, p.T_mult, t));
}

// ---------------------------------------------------------------- simple ones

CLRFAST_HD double linear_at(const LinearParams& p, double t) {
  if (t >= p.steps) return p.end_lr;
  return p.start_lr + (p.end_lr - p.start_lr) * (t / p.steps);
}

// exp: start (end/start)^(t/(N-1)); linear: start + (end - start) t/(N-1).
CLRFAST_HD double sweep_at(const SweepParams& p, double t) {
  const double last = p.steps - 1.0;
  if (t >= last) return p.end_lr;
  const double frac = last > 0.0 ? t / last : 1.0;
  if (p.mode == SweepMode::Exp) return p.start_lr * pow(p.end_lr / p.start_lr, frac);
  return p.start_lr + (p.end_lr - p.start_lr) * frac;
}

// ------------------------------------------------------------ warmup-decay
//
// Each factor repeats the float operations of the lambda behind the
// transformers factory of the same name, in order; the drop-ins multiply it by
// the group's initial lr as LambdaLR does (lr = initial_lr * factor), so they
// return the same doubles. Python's int arithmetic on step counts is exact,
// and so is this double arithmetic below 2^53. max(0.0, x) is Python's max:
// it returns the first argument unless x > 0.0, as clamp0 does.

CLRFAST_HD double clamp0(double x) { return x > 0.0 ? x : 0.0; }
CLRFAST_HD double at_least_1(double x) { return x > 1.0 ? x : 1.0; }

// float(t) / float(max(1, num_warmup_steps)): every factory's linear warmup.
CLRFAST_HD double warmup_progress(const WarmupParams& p, double t) { return t / at_least_1(p.warmup); }

// get_wsd_schedule: warmup shape mapped onto [min_lr_ratio, 1], stable 1,
// decay shape mapped the same way, then min_lr_ratio.
CLRFAST_HD double wsd_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) {
    const double progress = warmup_progress(p, t);
    double factor;
    switch (p.warmup_shape) {
      case Ramp::Cosine:
        factor = 0.5 * (1.0 - cos(kPi * progress));
        break;
      case Ramp::OneMinusSqrt:
        factor = 1.0 - sqrt(1.0 - progress);
        break;
      default:
        factor = progress;
    }
    return clamp0(factor * (1.0 - p.min_ratio) + p.min_ratio);
  }
  if (t < p.warmup + p.stable) return 1.0;
  if (t < p.warmup + p.stable + p.decay) {
    const double progress = (t - p.warmup - p.stable) / at_least_1(p.decay);
    double factor;
    switch (p.decay_shape) {
      case Ramp::Cosine:
        factor = 0.5 * (1.0 + cos(kPi * p.num_cycles * 2.0 * progress));
        break;
      case Ramp::OneMinusSqrt:
        factor = 1.0 - sqrt(progress);
        break;
      default:
        factor = 1.0 - progress;
    }
    return clamp0(factor * (1.0 - p.min_ratio) + p.min_ratio);
  }
  return p.min_ratio;
}

// get_linear_schedule_with_warmup: max(0, (N - t) / max(1, N - W)).
CLRFAST_HD double warmup_linear_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) return warmup_progress(p, t);
  return clamp0((p.decay - t) / at_least_1(p.decay - p.warmup));
}

CLRFAST_HD double warmup_cosine_progress(const WarmupParams& p, double t) {
  return (t - p.warmup) / at_least_1(p.decay - p.warmup);
}

// get_cosine_with_min_lr_schedule_with_warmup (get_cosine_schedule_with_warmup
// is the same with min_lr_rate 0: f*(1 - 0) + 0 == f for the f >= 0 it has):
// f = 0.5 (1 + cos(pi * num_cycles * 2 * progress)), max(0, f (1 - r) + r).
CLRFAST_HD double warmup_cosine_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) return warmup_progress(p, t);
  const double progress = warmup_cosine_progress(p, t);
  const double factor = 0.5 * (1.0 + cos(kPi * p.num_cycles * 2.0 * progress));
  return clamp0(factor * (1.0 - p.min_ratio) + p.min_ratio);
}

// get_cosine_with_hard_restarts_schedule_with_warmup: 0 from progress 1 on,
// else 0.5 (1 + cos(pi * ((num_cycles * progress) % 1))). Python's % of
// non-negative operands is fmod (exact), with +0.0 for a zero remainder.
CLRFAST_HD double warmup_restarts_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) return warmup_progress(p, t);
  const double progress = warmup_cosine_progress(p, t);
  if (progress >= 1.0) return 0.0;
  const double frac = fmod(p.num_cycles * progress, 1.0);
  return clamp0(0.5 * (1.0 + cos(kPi * (frac == 0.0 ? 0.0 : frac))));
}

// get_polynomial_decay_schedule_with_warmup: lr_end/lr_init past N, else
// ((lr_init - lr_end) * (1 - (t - W)/(N - W))**power + lr_end) / lr_init.
CLRFAST_HD double warmup_polynomial_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) return warmup_progress(p, t);
  if (t > p.decay) return p.lr_end / p.lr_init;
  const double lr_range = p.lr_init - p.lr_end;
  const double pct_remaining = 1.0 - (t - p.warmup) / (p.decay - p.warmup);
  return (lr_range * pow(pct_remaining, p.power) + p.lr_end) / p.lr_init;
}

// get_inverse_sqrt_schedule: 1 / sqrt((t + timescale - W) / timescale).
CLRFAST_HD double inverse_sqrt_factor(const WarmupParams& p, double t) {
  if (t < p.warmup) return warmup_progress(p, t);
  const double shift = p.timescale - p.warmup;
  return 1.0 / sqrt((t + shift) / p.timescale);
}

CLRFAST_HD double warmup_factor(Kind kind, const WarmupParams& p, double t) {
  switch (kind) {
    case Kind::WarmupStableDecay:
      return wsd_factor(p, t);
    case Kind::WarmupLinear:
      return warmup_linear_factor(p, t);
    case Kind::WarmupCosine:
      return warmup_cosine_factor(p, t);
    case Kind::WarmupHardRestarts:
      return warmup_restarts_factor(p, t);
    case Kind::WarmupPolynomial:
      return warmup_polynomial_factor(p, t);
    default:
      return inverse_sqrt_factor(p, t);
  }
}

// LambdaLR's base_lr * lmbda(t).
CLRFAST_HD double warmup_at(Kind kind, const WarmupParams& p, double t) { return p.peak * warmup_factor(kind, p, t); }

CLRFAST_HD bool is_warmup_kind(Kind kind) {
  return kind >= Kind::WarmupStableDecay && kind <= Kind::InverseSqrt;
}

// ---------------------------------------------------------------- dispatch

CLRFAST_HD LrMom leaf_at(const Leaf& leaf, double t) {
  switch (leaf.kind) {
    case Kind::Cyclic:
      return cyclic_at(leaf.cyclic, t);
    case Kind::OneCycle:
      return onecycle_at(leaf.onecycle, t);
    case Kind::CosineRestarts:
      return {restarts_at(leaf.restarts, t), nan_value()};
    case Kind::Linear:
      return {linear_at(leaf.linear, t), nan_value()};
    case Kind::Sweep:
      return {sweep_at(leaf.sweep, t), nan_value()};
    case Kind::Constant:
      return {leaf.constant.lr, nan_value()};
    case Kind::TimmCosine:
    case Kind::TimmTanh:
    case Kind::TimmPoly:
      return {timm_cycle_eval(leaf.timm_cycle, t).lr, nan_value()};
    case Kind::TimmStep:
    case Kind::TimmMultiStep:
      return {timm_step_eval(leaf.timm_step, t, leaf.kind == Kind::TimmMultiStep).lr, nan_value()};
    case Kind::TimmWsd:
      return {timm_wsd_eval(leaf.timm_wsd, t).lr, nan_value()};
    default:
      return {warmup_at(leaf.kind, leaf.warmup, t), nan_value()};
  }
}

// Index of the piece that step t falls in and t on that piece's clock.
CLRFAST_HD int locate(const Schedule& s, double* t) {
  int i = 0;
  while (i < s.n - 1 && *t >= s.boundary[i]) ++i;
  if (i > 0) *t -= s.boundary[i - 1];
  return i;
}

// The leaf's time at step u of the piece's clock: the clock maps in order. Each map is monotone
// in u, so a range of u maps onto the range between its ends' images.
CLRFAST_HD double piece_time(const Leaf& l, double u) {
  for (int k = 0; k < l.n_clock; ++k) {
    const ClockMap& m = l.clock[k];
    u = m.origin + (u - m.from) * m.num / m.den;
  }
  return u;
}

// The lr maps in order; max is Python's: the product unless the floor is greater.
CLRFAST_HD double piece_lr(const Leaf& l, double lr) {
  for (int k = 0; k < l.n_lr; ++k) {
    const LrMap& m = l.lr_map[k];
    for (int32_t j = 0; j < m.times; ++j) {
      const double x = lr * m.factor;
      lr = m.floor > x ? m.floor : x;
    }
  }
  return lr;
}

CLRFAST_HD bool is_plain(const Leaf& l) { return l.n_clock == 0 && l.n_lr == 0; }

CLRFAST_HD LrMom piece_at(const Leaf& l, double u) {
  LrMom v = leaf_at(l, piece_time(l, u));
  v.lr = piece_lr(l, v.lr);
  return v;
}

CLRFAST_HD LrMom schedule_at(const Schedule& s, double t) {
  const int i = locate(s, &t);
  return piece_at(s.piece[i], t);
}

CLRFAST_HD double lr_at(const Schedule& s, double t) { return schedule_at(s, t).lr; }
CLRFAST_HD double momentum_at(const Schedule& s, double t) { return schedule_at(s, t).momentum; }

// What an optimizer group applies at step t: the schedule's lr, and its momentum where it
// defines one, else the group's constant `momentum`.
CLRFAST_HD LrMom group_values_at(const Schedule& s, double t, double momentum) {
  LrMom v = schedule_at(s, t);
  if (v.momentum != v.momentum) v.momentum = momentum;
  return v;
}

// ---------------------------------------------------------------- defined steps

// Whether a schedule has a finite value at a step, and if not why. The values
// are finite for validated parameters except where something grows with the
// step: a cyclic scale gamma^x (torch's Python raises OverflowError when that
// power overflows), the cycle height that the scale multiplies, or a decaying
// peak with peak_decay > 1. torch divides by zero (ZeroDivisionError) in a
// one-cycle phase of zero length and in a cycle whose rising part is empty.
enum class Status : int32_t { Ok = 0, Overflow = 1, ZeroDivision = 2 };

// pow overflows the way Python's float ** reports it: finite operands, an
// infinite result.
CLRFAST_HD bool cyclic_scale_overflows(ScaleKind kind, double gamma, double x) {
  switch (kind) {
    case ScaleKind::Triangular2:
      return std::isinf(pow(2.0, x - 1.0));
    case ScaleKind::ExpRange:
      return std::isinf(pow(gamma, x));
    case ScaleKind::Geometric:
      return std::isinf(pow(gamma, x - 1.0));
    default:
      return false;
  }
}

// Overflow is monotone in t for every kind (the scale argument and the cycle
// index only grow with t, and a power is monotone in its exponent), so a range
// of steps is defined when both of its ends are. With `as_torch`, a power that
// overflows is an error even where the scale is finite (1/2^(c-1) past cycle
// 1024 is 0, but torch's 2.0 ** (c - 1) raises there); the drop-ins use that,
// the schedules return the limit.
CLRFAST_HD Status cyclic_status(const CyclicParams& p, double t, bool as_torch) {
  const double q = t / p.total_size;
  if (!std::isfinite(q)) return Status::Overflow;
  const CyclicPos tri = cyclic_triangle(p, t);
  if (std::isnan(tri.s)) return Status::ZeroDivision;  // 0/0 on an empty rising part
  if (p.scale == ScaleKind::External) return Status::Ok;
  const double x = cyclic_scale_arg(p, t, tri.cycle);
  if (as_torch && cyclic_scale_overflows(p.scale, p.gamma, x)) return Status::Overflow;
  // The cycle's height at this scale: what s in [0, 1] multiplies.
  const double scale = cyclic_scale(p.scale, p.gamma, x);
  if (!std::isfinite(scale)) return Status::Overflow;
  if (!std::isfinite(p.base_lr + (p.max_lr - p.base_lr) * scale)) return Status::Overflow;
  if (p.cycle_momentum && !std::isfinite(p.max_momentum - (p.max_momentum - p.base_momentum) * scale))
    return Status::Overflow;
  return Status::Ok;
}

CLRFAST_HD Status onecycle_status(const OneCycleParams& p, double t) {
  double start;
  const OneCyclePhase& ph = p.phase[onecycle_phase(p, t, &start)];
  if (ph.end_step - start == 0.0) return Status::ZeroDivision;
  // pct grows past 1 only in the last phase, and linearly: the value is
  // finite up to t when it is finite at t.
  const LrMom r = onecycle_at(p, t);
  if (!std::isfinite(r.lr) || (p.cycle_momentum && !std::isfinite(r.momentum))) return Status::Overflow;
  return Status::Ok;
}

// The cosine computes (peak - eta_min) * 2 on the way to a value between eta_min and
// the peak. With peak_decay == 1 the front end has checked that for the fixed peak.
CLRFAST_HD Status restarts_status(const CosineRestartsParams& p, double t) {
  if (p.peak_decay == 1.0) return Status::Ok;
  const double decay = pow(p.peak_decay, restart_pos(p.T_0, p.T_mult, t).k);
  const double peak = p.base_lr * decay;
  return std::isfinite(decay) && std::isfinite((peak - p.eta_min) * 2.0) ? Status::Ok : Status::Overflow;
}

CLRFAST_HD Status leaf_status(const Leaf& leaf, double t, bool as_torch) {
  switch (leaf.kind) {
    case Kind::Cyclic:
      return cyclic_status(leaf.cyclic, t, as_torch);
    case Kind::OneCycle:
      return onecycle_status(leaf.onecycle, t);
    case Kind::CosineRestarts:
      return restarts_status(leaf.restarts, t);
    case Kind::TimmCosine:
    case Kind::TimmTanh:
    case Kind::TimmPoly:
      return static_cast<Status>(timm_cycle_status(leaf.timm_cycle, t, as_torch));
    case Kind::TimmStep:
    case Kind::TimmMultiStep:
      return static_cast<Status>(timm_step_status(leaf.timm_step, t, leaf.kind == Kind::TimmMultiStep, as_torch));
    case Kind::TimmWsd:
      return static_cast<Status>(timm_wsd_status(leaf.timm_wsd, t, as_torch));
    default:  // constant, linear, sweep and warmup-decay values lie between validated finite bounds
      return Status::Ok;
  }
}

// A piece's status at step u of its clock. An lr map with a factor above 1 (a group's lr scale)
// can overflow a finite lr; the reductions of a plateau cannot.
CLRFAST_HD Status piece_status(const Leaf& l, double u) {
  const Status st = leaf_status(l, piece_time(l, u), false);
  if (st != Status::Ok || l.n_lr == 0) return st;
  return std::isfinite(piece_at(l, u).lr) ? Status::Ok : Status::Overflow;
}

// Status of the steps first..last (first <= last): the worst over the pieces
// the range touches, each checked at both ends of its part of the range.
CLRFAST_HD Status status_between(const Schedule& s, double first, double last) {
  Status worst = Status::Ok;
  for (int i = 0; i < s.n; ++i) {
    const double begin = i == 0 ? 0.0 : s.boundary[i - 1];
    const double end = i == s.n - 1 ? INFINITY : s.boundary[i];  // exclusive
    if (last < begin || first >= end) continue;
    const double lo = (first > begin ? first : begin) - begin;
    const double hi = (last < end - 1.0 ? last : end - 1.0) - begin;
    const Status a = piece_status(s.piece[i], lo);
    const Status b = piece_status(s.piece[i], hi);
    if (static_cast<int32_t>(a) > static_cast<int32_t>(worst)) worst = a;
    if (static_cast<int32_t>(b) > static_cast<int32_t>(worst)) worst = b;
  }
  return worst;
}

// True when some piece defines a momentum (cyclic or one-cycle with cycling on).
CLRFAST_HD bool has_momentum(const Schedule& s) {
  for (int i = 0; i < s.n; ++i) {
    const Leaf& l = s.piece[i];
    if (l.kind == Kind::Cyclic && l.cyclic.cycle_momentum) return true;
    if (l.kind == Kind::OneCycle && l.onecycle.cycle_momentum) return true;
  }
  return false;
}

// ---------------------------------------------------------------- derived schedules

// Appends a piece that starts at step `begin` of the result (a piece starting where the last one
// did replaces it: the last one would run for no step). False when the schedule is full.
CLRFAST_HD bool push_piece(Schedule* out, const Leaf& piece, double begin) {
  if (out->n > 0) {
    const double last_begin = out->n == 1 ? 0.0 : out->boundary[out->n - 2];
    if (begin <= last_begin) {
      out->piece[out->n - 1] = piece;
      return true;
    }
    if (out->n >= kMaxPieces) return false;
    out->boundary[out->n - 1] = begin;
  }
  out->piece[out->n++] = piece;
  return true;
}

// `piece` with the map u -> origin + (u - from) * num / den applied before its own maps.
CLRFAST_HD bool prepend_clock(Leaf* piece, ClockMap m) {
  if (piece->n_clock >= kMaxClockMaps) return false;
  for (int k = piece->n_clock; k > 0; --k) piece->clock[k] = piece->clock[k - 1];
  piece->clock[0] = m;
  ++piece->n_clock;
  return true;
}

// s up to step `at`; from there on s's steps at..last stretched (or compressed) onto at..new_last,
// and the steps after `last` (a hold, or an endless tail) on the same clock:
// step t >= at is s at time T = at + (t - at) * num / den, with num = last - at and
// den = new_last - at (whole numbers, den >= 1), so T(at) = at and T(new_last) = last exactly.
// T falls in the piece of s that starts at b_j <= T: that piece runs on the clock
// (at - b_j) + (t - at) * num / den, the expression that decides which piece T falls in, so a
// piece never starts before its own time 0. Returns false when the result would hold more
// pieces or clock maps than a schedule can.
CLRFAST_HD bool rehorizon(const Schedule& s, double at, double last, double new_last, Schedule* out) {
  const double num = last - at, den = new_last - at;
  *out = Schedule{};
  for (int j = 0; j < s.n; ++j) {
    const double b = j == 0 ? 0.0 : s.boundary[j - 1];
    const double e = j == s.n - 1 ? INFINITY : s.boundary[j];
    if (e <= at) {  // wholly before the re-horizon: kept as it is
      if (!push_piece(out, s.piece[j], b)) return false;
      continue;
    }
    double begin = at;
    if (b < at) {
      if (!push_piece(out, s.piece[j], b)) return false;  // its part before `at`
    } else if (b > at) {
      if (num == 0.0) break;  // the remaining part is step `last` alone: no later piece is reached
      // The first whole step whose time reaches b: estimated, then moved to the exact one.
      const auto reaches = [&](double t) { return (at - b) + (t - at) * num / den >= 0.0; };
      begin = at + ceil((b - at) * den / num);
      for (int i = 0; i < 4 && begin - 1.0 > at && reaches(begin - 1.0); ++i) begin -= 1.0;
      for (int i = 0; i < 4 && !reaches(begin); ++i) begin += 1.0;
    }
    Leaf piece = s.piece[j];
    if (!prepend_clock(&piece, ClockMap{at - begin, at - b, num, den})) return false;
    if (!push_piece(out, piece, begin)) return false;
  }
  return true;
}

// s with every lr passed through max(lr * factor, floor), `times` times. Consecutive maps with
// the same factor and floor merge (a plateau's reductions add up in one). False when a piece
// holds as many lr maps as it can.
CLRFAST_HD bool scale_lr(const Schedule& s, LrMap m, Schedule* out) {
  *out = s;
  for (int j = 0; j < out->n; ++j) {
    Leaf& l = out->piece[j];
    if (l.n_lr > 0 && l.lr_map[l.n_lr - 1].factor == m.factor && l.lr_map[l.n_lr - 1].floor == m.floor) {
      l.lr_map[l.n_lr - 1].times += m.times;
      continue;
    }
    if (l.n_lr >= kMaxLrMaps) return false;
    l.lr_map[l.n_lr++] = m;
  }
  return true;
}

CLRFAST_HD Schedule single(const Leaf& leaf) {
  Schedule s{};
  s.n = 1;
  s.piece[0] = leaf;
  return s;
}

}  // namespace clrfast
