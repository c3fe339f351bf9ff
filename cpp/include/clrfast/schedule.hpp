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

namespace clrfast {

// Python's math.pi, spelled so that it rounds to the same double.
constexpr double kPi = 3.14159265358979323846264338327950288;

// Maximum number of pieces in a joined schedule. Nested joins are flattened,
// so this bounds the total count of leaf schedules. A fixed size keeps a
// Schedule a trivially copyable value that can be passed to a CUDA kernel.
constexpr int kMaxPieces = 16;

enum class Kind : int32_t { Constant = 0, Linear = 1, Sweep = 2, Cyclic = 3, OneCycle = 4, CosineRestarts = 5 };

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

struct Leaf {
  Kind kind;
  union {
    ConstantParams constant;
    LinearParams linear;
    SweepParams sweep;
    CyclicParams cyclic;
    OneCycleParams onecycle;
    CosineRestartsParams restarts;
  };
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

// Builds the parameters from torch's arguments: total = float(up) + float(down),
// ratio = up / total, exactly as CyclicLR computes them.
CLRFAST_HD CyclicParams make_cyclic(double base_lr, double max_lr, double step_size_up, double step_size_down,
                                    ScaleKind scale, double gamma, ScaleMode scale_mode, Window window,
                                    bool cycle_momentum, double base_momentum, double max_momentum) {
  CyclicParams p;
  p.base_lr = base_lr;
  p.max_lr = max_lr;
  p.total_size = step_size_up + step_size_down;
  p.step_ratio = step_size_up / p.total_size;
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

CLRFAST_HD LrMom onecycle_at(const OneCycleParams& p, double t) {
  double start = 0.0;
  int i = 0;
  for (; i < p.n_phases - 1; ++i) {
    if (t <= p.phase[i].end_step) break;
    start = p.phase[i].end_step;
  }
  const OneCyclePhase& ph = p.phase[i];
  const double pct = (t - start) / (ph.end_step - start);
  LrMom r;
  r.lr = anneal(p.anneal, ph.start_lr, ph.end_lr, pct);
  r.momentum = p.cycle_momentum ? anneal(p.anneal, ph.start_momentum, ph.end_momentum, pct) : nan_value();
  return r;
}

// Builds the phases exactly as torch.optim.lr_scheduler.OneCycleLR does.
CLRFAST_HD OneCycleParams make_onecycle(double max_lr, double total_steps, double pct_start, Anneal anneal_kind,
                                        bool three_phase, double div_factor, double final_div_factor,
                                        bool cycle_momentum, double base_momentum, double max_momentum) {
  OneCycleParams p;
  const double initial_lr = max_lr / div_factor;
  const double min_lr = initial_lr / final_div_factor;
  p.anneal = anneal_kind;
  p.cycle_momentum = cycle_momentum ? 1 : 0;
  p.total_steps = total_steps;
  if (three_phase) {
    p.n_phases = 3;
    p.phase[0] = {pct_start * total_steps - 1.0, initial_lr, max_lr, max_momentum, base_momentum};
    p.phase[1] = {2.0 * pct_start * total_steps - 2.0, max_lr, initial_lr, base_momentum, max_momentum};
    p.phase[2] = {total_steps - 1.0, initial_lr, min_lr, max_momentum, max_momentum};
  } else {
    p.n_phases = 2;
    p.phase[0] = {pct_start * total_steps - 1.0, initial_lr, max_lr, max_momentum, base_momentum};
    p.phase[1] = {total_steps - 1.0, max_lr, min_lr, base_momentum, max_momentum};
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
  double k = floor(log(t * (T_mult - 1.0) / T_0 + 1.0) / log(T_mult));
  if (!(k >= 0.0)) k = 0.0;
  while (k > 0.0 && restart_cycle_start(T_0, T_mult, k) > t) k -= 1.0;
  while (restart_cycle_start(T_0, T_mult, k + 1.0) <= t) k += 1.0;
  return {t - restart_cycle_start(T_0, T_mult, k), T_0 * pow(T_mult, k), k};
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
    default:
      return {leaf.constant.lr, nan_value()};
  }
}

// Index of the piece that step t falls in and t on that piece's clock.
CLRFAST_HD int locate(const Schedule& s, double* t) {
  int i = 0;
  while (i < s.n - 1 && *t >= s.boundary[i]) ++i;
  if (i > 0) *t -= s.boundary[i - 1];
  return i;
}

CLRFAST_HD LrMom schedule_at(const Schedule& s, double t) {
  const int i = locate(s, &t);
  return leaf_at(s.piece[i], t);
}

CLRFAST_HD double lr_at(const Schedule& s, double t) { return schedule_at(s, t).lr; }
CLRFAST_HD double momentum_at(const Schedule& s, double t) { return schedule_at(s, t).momentum; }

CLRFAST_HD Schedule single(const Leaf& leaf) {
  Schedule s{};
  s.n = 1;
  s.piece[0] = leaf;
  return s;
}

}  // namespace clrfast
