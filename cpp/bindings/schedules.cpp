// Bindings of the schedule core (cpp/include/clrfast/schedule.hpp) and the
// batch tables (cpp/src/tables.hpp): type conversion, GIL release around the
// table kernels, registration.
//
// Arguments are validated by the Python front end (python/clrfast/schedules.py);
// the checks here only keep anything passed from Python from crashing the
// interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "tables.hpp"

namespace py = pybind11;
using namespace py::literals;

namespace clrfast {
namespace {

template <typename Set>
Schedule leaf_schedule(Kind kind, const Set& set) {
  Leaf leaf{};
  leaf.kind = kind;
  set(leaf);
  return single(leaf);
}

Schedule make_join(const std::vector<Schedule>& parts, const std::vector<double>& boundaries) {
  if (parts.empty()) throw py::value_error("join needs at least one schedule");
  if (boundaries.size() + 1 != parts.size())
    throw py::value_error("join needs exactly one boundary fewer than schedules");
  // Flattens nested joins: piece j of an inner join that starts at step b in
  // the outer clock keeps its own clock, so its boundaries just shift by b.
  Schedule out{};
  out.n = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const double offset = i == 0 ? 0.0 : boundaries[i - 1];
    const Schedule& part = parts[i];
    for (int j = 0; j < part.n; ++j) {
      const double b = j == 0 ? offset : offset + part.boundary[j - 1];
      // An inner piece that starts after the outer part ends never runs.
      if (j > 0 && i + 1 < parts.size() && b >= boundaries[i]) break;
      if (out.n >= kMaxPieces)
        throw py::value_error("a joined schedule may hold at most " + std::to_string(kMaxPieces) + " pieces");
      if (out.n > 0) out.boundary[out.n - 1] = b;
      out.piece[out.n++] = part.piece[j];
    }
  }
  return out;
}

template <typename T>
T* writable_data(py::array& out, py::ssize_t n) {
  if (out.ndim() != 1 || out.shape(0) != n) throw py::value_error("out: wrong shape");
  if (!(out.flags() & py::array::c_style)) throw py::value_error("out: must be C-contiguous");
  if (!out.writeable()) throw py::value_error("out: is read-only");
  return static_cast<T*>(out.mutable_data());
}

// Runs fill(ptr) on `out` as float* or double*, with the GIL released.
template <typename Fill>
void with_out(py::array& out, int64_t n, Fill fill) {
  if (py::isinstance<py::array_t<float>>(out)) {
    float* p = writable_data<float>(out, n);
    py::gil_scoped_release nogil;
    fill(p);
  } else if (py::isinstance<py::array_t<double>>(out)) {
    double* p = writable_data<double>(out, n);
    py::gil_scoped_release nogil;
    fill(p);
  } else {
    throw py::type_error("out: must be float32 or float64");
  }
}

void table_range_py(const Schedule& s, Quantity q, int64_t first, int64_t n, py::array out, int threads) {
  if (n < 0 || first < 0) throw py::value_error("first and n must be >= 0");
  with_out(out, n, [&](auto* p) { table_range(s, q, first, n, p, threads); });
}

void table_steps_py(const Schedule& s, Quantity q, py::array_t<int64_t, py::array::c_style> steps, py::array out,
                    int threads) {
  if (steps.ndim() != 1) throw py::value_error("steps must be one-dimensional");
  const int64_t n = steps.shape(0);
  const int64_t* st = steps.data();
  with_out(out, n, [&](auto* p) { table_steps(s, q, st, n, p, threads); });
}

// The value of a timm leaf and what timm's Python does at t.
TimmValue timm_leaf_eval(const Leaf& leaf, double t) {
  switch (leaf.kind) {
    case Kind::TimmCosine:
    case Kind::TimmTanh:
    case Kind::TimmPoly:
      return timm_cycle_eval(leaf.timm_cycle, t);
    case Kind::TimmStep:
    case Kind::TimmMultiStep:
      return timm_step_eval(leaf.timm_step, t, leaf.kind == Kind::TimmMultiStep);
    case Kind::TimmWsd:
      return timm_wsd_eval(leaf.timm_wsd, t);
    default:
      throw py::value_error("not a timm schedule");
  }
}

// Raises the Python exception timm raises (or would have to: a complex or non-finite lr).
void raise_timm(TimmError err, double t, const char* what) {
  const std::string at = std::string(what) + " at t=" + py::repr(py::float_(t)).cast<std::string>();
  switch (err) {
    case TimmError::Ok:
      return;
    case TimmError::Overflow:
      throw std::overflow_error(at + " overflows a double (timm's float arithmetic raises OverflowError there)");
    case TimmError::ZeroDivision:
      PyErr_SetString(PyExc_ZeroDivisionError, (at + " divides by zero (timm raises ZeroDivisionError there)").c_str());
      throw py::error_already_set();
    case TimmError::Domain:
      throw py::value_error(at + ": math domain error (timm's math.log, math.cos or math.floor raises ValueError there;"
                                 " with cycle_mul < 1 the cycles end at t_initial / (1 - cycle_mul))");
    case TimmError::Complex:
      throw py::value_error(at + " is a complex number in timm (a negative float to a fractional power)");
    default:
      throw py::value_error(at + " is not a finite number (timm gives inf or nan there)");
  }
}

std::vector<double> timm_values(const std::vector<const Schedule*>& schedules, double t) {
  std::vector<double> out;
  out.reserve(schedules.size());
  for (const Schedule* s : schedules) {
    const TimmValue v = timm_leaf_eval(s->piece[0], t);
    raise_timm(v.err, t, "the lr");
    out.push_back(v.lr);
  }
  return out;
}

}  // namespace

void bind_schedules(py::module_& m) {
  py::enum_<ScaleKind>(m, "ScaleKind", "Amplitude scale of a cyclical schedule.")
      .value("triangular", ScaleKind::Triangular)
      .value("triangular2", ScaleKind::Triangular2)
      .value("exp_range", ScaleKind::ExpRange)
      .value("geometric", ScaleKind::Geometric)
      .value("external", ScaleKind::External);
  py::enum_<ScaleMode>(m, "ScaleMode", "What the scale is evaluated at.")
      .value("cycle", ScaleMode::Cycle)
      .value("iterations", ScaleMode::Iterations);
  py::enum_<Window>(m, "Window", "Shape of one cycle.")
      .value("triangular", Window::Triangular)
      .value("welch", Window::Welch)
      .value("hann", Window::Hann);
  py::enum_<Anneal>(m, "Anneal", "One-cycle annealing.").value("cos", Anneal::Cos).value("linear", Anneal::Linear);
  py::enum_<SweepMode>(m, "SweepMode", "Range-test sweep.")
      .value("linear", SweepMode::Linear)
      .value("exp", SweepMode::Exp);
  py::enum_<Ramp>(m, "Ramp", "Shape of a warmup-stable-decay ramp.")
      .value("linear", Ramp::Linear)
      .value("cosine", Ramp::Cosine)
      .value("one_minus_sqrt", Ramp::OneMinusSqrt);
  py::enum_<Kind>(m, "Kind", "Kind of a leaf schedule.")
      .value("constant", Kind::Constant)
      .value("linear", Kind::Linear)
      .value("sweep", Kind::Sweep)
      .value("cyclic", Kind::Cyclic)
      .value("onecycle", Kind::OneCycle)
      .value("cosine_restarts", Kind::CosineRestarts)
      .value("warmup_stable_decay", Kind::WarmupStableDecay)
      .value("warmup_linear", Kind::WarmupLinear)
      .value("warmup_cosine", Kind::WarmupCosine)
      .value("warmup_hard_restarts", Kind::WarmupHardRestarts)
      .value("warmup_polynomial", Kind::WarmupPolynomial)
      .value("inverse_sqrt", Kind::InverseSqrt)
      .value("timm_cosine", Kind::TimmCosine)
      .value("timm_tanh", Kind::TimmTanh)
      .value("timm_poly", Kind::TimmPoly)
      .value("timm_step", Kind::TimmStep)
      .value("timm_multistep", Kind::TimmMultiStep)
      .value("timm_wsd", Kind::TimmWsd);
  py::enum_<TimmCurve>(m, "TimmCurve", "Curve of a timm cycle schedule.")
      .value("cosine", TimmCurve::Cosine)
      .value("tanh", TimmCurve::Tanh)
      .value("poly", TimmCurve::Poly);
  py::enum_<TimmStable>(m, "TimmStable", "Stable function of timm's WSD schedule (rsqrt is power 0.5).")
      .value("constant", TimmStable::Constant)
      .value("power", TimmStable::Power);
  py::enum_<TimmDecay>(m, "TimmDecay", "Decay function of timm's WSD schedule.")
      .value("linear", TimmDecay::Linear)
      .value("one_minus_sqrt", TimmDecay::OneMinusSqrt)
      .value("cosine", TimmDecay::Cosine)
      .value("power", TimmDecay::Power)
      .value("exp", TimmDecay::Exp);
  py::enum_<Quantity>(m, "Quantity", "What a table holds.")
      .value("lr", Quantity::Lr)
      .value("momentum", Quantity::Momentum);
  py::enum_<Status>(m, "Status", "Whether a schedule has finite values at some steps.")
      .value("ok", Status::Ok)
      .value("overflow", Status::Overflow)
      .value("zero_division", Status::ZeroDivision);

  py::class_<Schedule>(m, "Schedule", "A compiled schedule: leaf pieces and join boundaries.")
      .def(
          "at",
          [](const Schedule& s, double t) {
            const LrMom r = schedule_at(s, t);
            return py::make_tuple(r.lr, r.momentum);
          },
          "t"_a, "(lr, momentum) at step t; momentum is NaN where undefined.")
      .def("lr", &lr_at, "t"_a)
      .def("momentum", &momentum_at, "t"_a, "Momentum at step t; NaN where undefined.")
      .def_property_readonly("has_momentum", &has_momentum)
      .def("status_between", &status_between, "first"_a, "last"_a,
           "Whether every step first..last has finite values (checked at both ends; overflow is monotone).")
      .def("table_range", &table_range_py, "quantity"_a, "first"_a, "n"_a, "out"_a, "threads"_a = 0,
           "Values at steps first..first+n-1 into out (float32 or float64), GIL released.")
      .def("table_steps", &table_steps_py, "quantity"_a, "steps"_a, "out"_a, "threads"_a = 0,
           "Values at each int64 step into out, GIL released.");

  m.def(
      "cyclic",
      [](double base_lr, double max_lr, double total_size, double step_ratio, ScaleKind scale, double gamma,
         ScaleMode scale_mode, Window window, bool cycle_momentum, double base_momentum, double max_momentum) {
        return leaf_schedule(Kind::Cyclic, [&](Leaf& l) {
          l.cyclic = make_cyclic(base_lr, max_lr, {total_size, step_ratio}, scale, gamma, scale_mode, window,
                                 cycle_momentum, base_momentum, max_momentum);
        });
      },
      py::kw_only(), "base_lr"_a, "max_lr"_a, "total_size"_a, "step_ratio"_a, "scale"_a, "gamma"_a, "scale_mode"_a,
      "window"_a, "cycle_momentum"_a, "base_momentum"_a, "max_momentum"_a);
  m.def(
      "cyclic_geometry",
      [](double step_size_up, double step_size_down) {
        const CyclicGeometry g = cyclic_geometry(step_size_up, step_size_down);
        return std::make_tuple(g.total_size, g.step_ratio);
      },
      "step_size_up"_a, "step_size_down"_a, "(total_size, step_ratio) as torch's CyclicLR computes them.");
  m.def(
      "onecycle",
      [](double max_lr, double total_steps, double pct_start, Anneal anneal, bool three_phase, double div_factor,
         double final_div_factor, bool cycle_momentum, double base_momentum, double max_momentum) {
        return leaf_schedule(Kind::OneCycle, [&](Leaf& l) {
          l.onecycle = make_onecycle(max_lr, total_steps, pct_start, anneal, three_phase, div_factor,
                                     final_div_factor, cycle_momentum, base_momentum, max_momentum);
        });
      },
      py::kw_only(), "max_lr"_a, "total_steps"_a, "pct_start"_a, "anneal"_a, "three_phase"_a, "div_factor"_a,
      "final_div_factor"_a, "cycle_momentum"_a, "base_momentum"_a, "max_momentum"_a);
  m.def(
      "onecycle_phases",
      [](const std::vector<std::tuple<double, double, double, double, double>>& phases, double total_steps,
         Anneal anneal, bool cycle_momentum) {
        if (phases.empty() || phases.size() > 3) throw py::value_error("one-cycle takes 1 to 3 phases");
        return leaf_schedule(Kind::OneCycle, [&](Leaf& l) {
          OneCycleParams& p = l.onecycle;
          p.n_phases = static_cast<int32_t>(phases.size());
          for (size_t i = 0; i < 3; ++i) {
            const auto& ph = phases[i < phases.size() ? i : phases.size() - 1];
            p.phase[i] = {std::get<0>(ph), std::get<1>(ph), std::get<2>(ph), std::get<3>(ph), std::get<4>(ph)};
          }
          p.anneal = anneal;
          p.cycle_momentum = cycle_momentum ? 1 : 0;
          p.total_steps = total_steps;
        });
      },
      py::kw_only(), "phases"_a, "total_steps"_a, "anneal"_a, "cycle_momentum"_a,
      "One-cycle from explicit phases (end_step, start_lr, end_lr, start_momentum, end_momentum).");
  m.def(
      "onecycle_phase_ends",
      [](double total_steps, double pct_start, bool three_phase) {
        double ends[3];
        const int n = onecycle_phase_ends(total_steps, pct_start, three_phase, ends);
        return std::vector<double>(ends, ends + n);
      },
      "total_steps"_a, "pct_start"_a, "three_phase"_a, "The phase end steps of torch's OneCycleLR.");
  m.def(
      "cosine_restarts",
      [](double base_lr, double eta_min, double T_0, double T_mult, double peak_decay, double warmup_steps) {
        return leaf_schedule(Kind::CosineRestarts, [&](Leaf& l) {
          l.restarts = {base_lr, eta_min, T_0, T_mult, peak_decay, warmup_steps};
        });
      },
      py::kw_only(), "base_lr"_a, "eta_min"_a, "T_0"_a, "T_mult"_a, "peak_decay"_a, "warmup_steps"_a);
  m.def(
      "restart_pos_torch_epoch",
      [](double T_0, double T_mult, double epoch) {
        const RestartPos p = restart_pos_torch_epoch(T_0, T_mult, epoch);
        return std::make_tuple(p.T_cur, p.T_i);
      },
      "T_0"_a, "T_mult"_a, "epoch"_a, "(T_cur, T_i) from torch's closed form for step(epoch).");
  m.def(
      "linear",
      [](double start_lr, double end_lr, double steps) {
        return leaf_schedule(Kind::Linear, [&](Leaf& l) { l.linear = {start_lr, end_lr, steps}; });
      },
      py::kw_only(), "start_lr"_a, "end_lr"_a, "steps"_a);
  m.def(
      "sweep",
      [](double start_lr, double end_lr, double num_steps, SweepMode mode) {
        return leaf_schedule(Kind::Sweep, [&](Leaf& l) { l.sweep = {start_lr, end_lr, num_steps, mode}; });
      },
      py::kw_only(), "start_lr"_a, "end_lr"_a, "num_steps"_a, "mode"_a);
  m.def(
      "constant", [](double lr) { return leaf_schedule(Kind::Constant, [&](Leaf& l) { l.constant = {lr}; }); },
      py::kw_only(), "lr"_a);
  m.def(
      "warmup_decay",
      [](Kind kind, double peak, double warmup, double stable, double decay, double num_cycles, double min_ratio,
         double power, double lr_end, double lr_init, double timescale, Ramp warmup_shape, Ramp decay_shape) {
        if (!is_warmup_kind(kind)) throw py::value_error("warmup_decay: kind must be a warmup-decay kind");
        return leaf_schedule(kind, [&](Leaf& l) {
          l.warmup = {peak,   warmup, stable,  decay,     num_cycles,   min_ratio,
                      power, lr_end, lr_init, timescale, warmup_shape, decay_shape};
        });
      },
      py::kw_only(), "kind"_a, "peak"_a, "warmup"_a, "stable"_a = 0.0, "decay"_a = 0.0, "num_cycles"_a = 0.5,
      "min_ratio"_a = 0.0, "power"_a = 1.0, "lr_end"_a = 0.0, "lr_init"_a = 1.0, "timescale"_a = 1.0,
      "warmup_shape"_a = Ramp::Linear, "decay_shape"_a = Ramp::Linear,
      "A warmup-decay leaf: lr = peak * factor(t), factor the transformers lambda of `kind`.");
  m.def(
      "timm_cycle",
      [](TimmCurve curve, double base, double lr_min, double t_initial, double cycle_mul, double cycle_decay,
         double cycle_limit, double k_decay, double power, double lb, double ub, double warmup_t,
         double warmup_lr_init, double warmup_step, bool warmup_prefix) {
        TimmError err = TimmError::Ok;
        const TimmCycleParams p = make_timm_cycle(curve, base, lr_min, t_initial, cycle_mul, cycle_decay, cycle_limit,
                                                  k_decay, power, lb, ub, warmup_t, warmup_lr_init, warmup_step,
                                                  warmup_prefix, &err);
        raise_timm(err, warmup_t, "the warmup target _get_lr(warmup_t)");
        const Kind kind = curve == TimmCurve::Cosine ? Kind::TimmCosine
                          : curve == TimmCurve::Tanh ? Kind::TimmTanh
                                                     : Kind::TimmPoly;
        return leaf_schedule(kind, [&](Leaf& l) { l.timm_cycle = p; });
      },
      py::kw_only(), "curve"_a, "base"_a, "lr_min"_a, "t_initial"_a, "cycle_mul"_a, "cycle_decay"_a, "cycle_limit"_a,
      "k_decay"_a, "power"_a, "lb"_a, "ub"_a, "warmup_t"_a, "warmup_lr_init"_a, "warmup_step"_a, "warmup_prefix"_a,
      "A timm cosine, tanh or poly leaf for one group; warmup_step nan: timm's (target - warmup_lr_init) / warmup_t.");
  m.def(
      "timm_step",
      [](double base, double decay_t, double decay_rate, const std::vector<double>& milestones, bool multi,
         double warmup_t, double warmup_lr_init, double warmup_step, bool warmup_prefix) {
        if (milestones.size() > static_cast<size_t>(kTimmMaxMilestones))
          throw py::value_error("a timm multistep schedule holds at most " + std::to_string(kTimmMaxMilestones) +
                                " milestones");
        return leaf_schedule(multi ? Kind::TimmMultiStep : Kind::TimmStep, [&](Leaf& l) {
          TimmStepParams& p = l.timm_step;
          p.base = base;
          p.decay_t = decay_t;
          p.decay_rate = decay_rate;
          p.warmup = make_timm_warmup(warmup_t, warmup_lr_init, warmup_step, warmup_prefix, base);
          p.n_milestones = static_cast<int32_t>(milestones.size());
          for (size_t i = 0; i < milestones.size(); ++i) p.milestones[i] = milestones[i];
        });
      },
      py::kw_only(), "base"_a, "decay_t"_a, "decay_rate"_a, "milestones"_a, "multi"_a, "warmup_t"_a,
      "warmup_lr_init"_a, "warmup_step"_a, "warmup_prefix"_a,
      "A timm step (decay_t) or multistep (milestones) leaf for one group.");
  m.def(
      "timm_wsd",
      [](double base, double t_initial, double decay_t, double lr_min, TimmStable stable_fn, double stable_timescale,
         double stable_power, TimmDecay decay_fn, double decay_power, double decay_ratio, double warmup_t,
         double warmup_lr_init, double warmup_step) {
        return leaf_schedule(Kind::TimmWsd, [&](Leaf& l) {
          l.timm_wsd = {base,        t_initial,   decay_t,
                        lr_min,      stable_timescale,
                        stable_power, decay_power, decay_ratio,
                        make_timm_warmup(warmup_t, warmup_lr_init, warmup_step, true, base),
                        stable_fn,   decay_fn};
        });
      },
      py::kw_only(), "base"_a, "t_initial"_a, "decay_t"_a, "lr_min"_a, "stable_fn"_a, "stable_timescale"_a,
      "stable_power"_a, "decay_fn"_a, "decay_power"_a, "decay_ratio"_a, "warmup_t"_a, "warmup_lr_init"_a,
      "warmup_step"_a, "A timm warmup-stable-decay leaf for one group.");
  m.def("timm_values", &timm_values, "schedules"_a, "t"_a,
        "Each one-leaf timm schedule's lr at step t, or the exception timm's Python raises there.");
  m.def(
      "timm_error",
      [](const Schedule& s, double t) { return static_cast<int>(timm_leaf_eval(s.piece[0], t).err); }, "schedule"_a,
      "t"_a, "What timm's Python does at step t: 0 a float lr, else the TimmError code.");
  m.def("join", &make_join, py::kw_only(), "schedules"_a, "boundaries"_a,
        "Schedules joined at step boundaries (nested joins flattened; at most 16 pieces).");
  m.def(
      "rehorizon",
      [](const Schedule& s, double at, double last, double new_last) {
        if (!(at >= 0.0 && last >= at && new_last > at))
          throw py::value_error("rehorizon needs 0 <= at <= last and new_last > at");
        Schedule out;
        if (!rehorizon(s, at, last, new_last, &out))
          throw py::value_error("a re-horizoned schedule may hold at most " + std::to_string(kMaxPieces) +
                                " pieces, each re-horizoned at most " + std::to_string(kMaxClockMaps) + " times");
        return out;
      },
      py::kw_only(), "schedule"_a, "at"_a, "last"_a, "new_last"_a,
      "The schedule up to `at`, its steps at..last stretched onto at..new_last.");
  m.def(
      "scale_lr",
      [](const Schedule& s, double factor, double floor, int32_t times) {
        if (times < 0) throw py::value_error("times must be >= 0");
        Schedule out;
        if (!scale_lr(s, LrMap{factor, floor, times}, &out))
          throw py::value_error("a schedule's lr may be scaled at most " + std::to_string(kMaxLrMaps) +
                                " times over (a plateau's reductions count once)");
        return out;
      },
      py::kw_only(), "schedule"_a, "factor"_a, "floor"_a = 0.0, "times"_a = 1,
      "The schedule with its lr passed `times` times through max(lr * factor, floor).");
  m.def(
      "cyclic_scale",
      [](ScaleKind kind, double gamma, double x) {
        if (cyclic_scale_overflows(kind, gamma, x))
          throw std::overflow_error("(34, 'Numerical result out of range')");  // Python's own message
        return cyclic_scale(kind, gamma, x);
      },
      "kind"_a, "gamma"_a, "x"_a, "The amplitude scale at x; OverflowError where its power overflows.");
}

}  // namespace clrfast
