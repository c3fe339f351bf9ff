// pybind11 bindings for the schedule core, the batch tables and the engine
// behind the torch drop-in schedulers.
//
// Arguments are validated by the Python front end; the checks here only make
// sure that nothing passed from Python can crash the interpreter.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "tables.hpp"

namespace py = pybind11;

namespace clrfast {
namespace {

Schedule make_cyclic_schedule(double base_lr, double max_lr, double step_size_up, double step_size_down, int scale,
                     double gamma, int scale_mode, int window, bool cycle_momentum, double base_momentum,
                     double max_momentum) {
  Leaf leaf{};
  leaf.kind = Kind::Cyclic;
  leaf.cyclic = clrfast::make_cyclic(base_lr, max_lr, step_size_up, step_size_down, static_cast<ScaleKind>(scale),
                                     gamma, static_cast<ScaleMode>(scale_mode), static_cast<Window>(window),
                                     cycle_momentum, base_momentum, max_momentum);
  return single(leaf);
}

Schedule make_onecycle_schedule(double max_lr, double total_steps, double pct_start, int anneal_kind, bool three_phase,
                                double div_factor, double final_div_factor, bool cycle_momentum, double base_momentum,
                                double max_momentum) {
  Leaf leaf{};
  leaf.kind = Kind::OneCycle;
  leaf.onecycle = make_onecycle(max_lr, total_steps, pct_start, static_cast<Anneal>(anneal_kind), three_phase,
                                div_factor, final_div_factor, cycle_momentum, base_momentum, max_momentum);
  return single(leaf);
}

// One-cycle from explicit per-group values, as OneCycleLR reads them from the
// param groups (initial_lr, max_lr, min_lr, base/max momentum).
Schedule make_onecycle_groups(double initial_lr, double max_lr, double min_lr, double total_steps, double pct_start,
                              int anneal_kind, bool three_phase, bool cycle_momentum, double base_momentum,
                              double max_momentum) {
  Schedule s = make_onecycle_schedule(max_lr, total_steps, pct_start, anneal_kind, three_phase, 1.0, 1.0,
                                      cycle_momentum, base_momentum, max_momentum);
  OneCycleParams& p = s.piece[0].onecycle;
  for (int i = 0; i < 3; ++i) {
    OneCyclePhase& ph = p.phase[i];
    const bool three = p.n_phases == 3;
    // Phase endpoints in torch's table: initial -> max -> (initial ->) min.
    if (i == 0) {
      ph.start_lr = initial_lr;
      ph.end_lr = max_lr;
    } else if (i == 1 && three) {
      ph.start_lr = max_lr;
      ph.end_lr = initial_lr;
    } else if (three) {
      ph.start_lr = initial_lr;
      ph.end_lr = min_lr;
    } else {
      ph.start_lr = max_lr;
      ph.end_lr = min_lr;
    }
  }
  return s;
}

Schedule make_restarts(double base_lr, double eta_min, double T_0, double T_mult, double peak_decay, double warmup) {
  Leaf leaf{};
  leaf.kind = Kind::CosineRestarts;
  leaf.restarts = {base_lr, eta_min, T_0, T_mult, peak_decay, warmup};
  return single(leaf);
}

Schedule make_linear(double start_lr, double end_lr, double steps) {
  Leaf leaf{};
  leaf.kind = Kind::Linear;
  leaf.linear = {start_lr, end_lr, steps};
  return single(leaf);
}

Schedule make_sweep(double start_lr, double end_lr, double steps, int mode) {
  Leaf leaf{};
  leaf.kind = Kind::Sweep;
  leaf.sweep = {start_lr, end_lr, steps, static_cast<SweepMode>(mode)};
  return single(leaf);
}

Schedule make_constant(double lr) {
  Leaf leaf{};
  leaf.kind = Kind::Constant;
  leaf.constant = {lr};
  return single(leaf);
}

// Flattens nested joins: piece j of an inner join that starts at step b in
// the outer clock keeps its own clock, so its boundaries just shift by b.
Schedule make_join(const std::vector<Schedule>& parts, const std::vector<double>& boundaries) {
  if (parts.empty()) throw py::value_error("join needs at least one schedule");
  if (boundaries.size() + 1 != parts.size())
    throw py::value_error("join needs exactly one boundary fewer than schedules");
  Schedule out{};
  out.n = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const double offset = i == 0 ? 0.0 : boundaries[i - 1];
    const Schedule& part = parts[i];
    for (int j = 0; j < part.n; ++j) {
      if (out.n >= kMaxPieces)
        throw py::value_error("a joined schedule may hold at most " + std::to_string(kMaxPieces) + " pieces");
      if (out.n > 0) {
        const double b = j == 0 ? offset : offset + part.boundary[j - 1];
        // An inner piece that starts after the outer part ends never runs.
        if (i + 1 < parts.size() && b >= boundaries[i]) break;
        out.boundary[out.n - 1] = b;
      }
      out.piece[out.n++] = part.piece[j];
    }
  }
  return out;
}

bool has_momentum(const Schedule& s) {
  for (int i = 0; i < s.n; ++i) {
    const Leaf& l = s.piece[i];
    if (l.kind == Kind::Cyclic && l.cyclic.cycle_momentum) return true;
    if (l.kind == Kind::OneCycle && l.onecycle.cycle_momentum) return true;
  }
  return false;
}

template <typename T>
T* writable_data(py::array& out, py::ssize_t n, const char* what) {
  if (!py::isinstance<py::array_t<T>>(out)) throw py::type_error(std::string(what) + ": wrong dtype");
  if (out.ndim() != 1 || out.shape(0) != n) throw py::value_error(std::string(what) + ": wrong shape");
  if (!(out.flags() & py::array::c_style)) throw py::value_error(std::string(what) + ": must be C-contiguous");
  if (!out.writeable()) throw py::value_error(std::string(what) + ": is read-only");
  return static_cast<T*>(out.mutable_data());
}

// Runs fill(ptr) on `out` as float* or double*, with the GIL released.
template <typename Fill>
void with_out(py::array& out, int64_t n, Fill fill) {
  if (py::isinstance<py::array_t<float>>(out)) {
    float* p = writable_data<float>(out, n, "out");
    py::gil_scoped_release nogil;
    fill(p);
  } else {
    double* p = writable_data<double>(out, n, "out");
    py::gil_scoped_release nogil;
    fill(p);
  }
}

void table_range_py(const Schedule& s, int quantity, int64_t first, int64_t n, py::array out, int threads) {
  if (n < 0) throw py::value_error("n must be >= 0");
  const Quantity q = static_cast<Quantity>(quantity);
  with_out(out, n, [&](auto* p) { table_range(s, q, first, n, p, threads); });
}

void table_steps_py(const Schedule& s, int quantity, py::array_t<int64_t, py::array::c_style> steps, py::array out,
                    int threads) {
  if (steps.ndim() != 1) throw py::value_error("steps must be one-dimensional");
  const int64_t n = steps.shape(0);
  const int64_t* st = steps.data();
  const Quantity q = static_cast<Quantity>(quantity);
  with_out(out, n, [&](auto* p) { table_steps(s, q, st, n, p, threads); });
}

// ----------------------------------------------------------- drop-in engine

// Writes one step's values into torch param groups. Holding one schedule per
// group and doing the dict updates here keeps a scheduler step to a single
// call from Python, which is what makes the drop-ins cheap.
class GroupEngine {
 public:
  enum MomentumKey { kNone = 0, kMomentum = 1, kBetas = 2 };

  GroupEngine(std::vector<Schedule> schedules, int momentum_key, py::object scale_fn)
      : schedules_(std::move(schedules)),
        momentum_key_(static_cast<MomentumKey>(momentum_key)),
        scale_fn_(std::move(scale_fn)) {}

  // Computes the values at step t and writes them into `groups`; returns the
  // list of learning rates (copies, as torch's get_last_lr()).
  // All values are computed before any group is written, so an error (a
  // OneCycle past its total, a raising scale_fn) leaves the groups untouched.
  py::list apply(const py::object& t_obj, const py::list& groups) {
    const double t = t_obj.cast<double>();
    check_groups(groups);
    std::vector<LrMom>& values = scratch_;  // reused: no allocation per step
    values.resize(schedules_.size());
    for (size_t i = 0; i < schedules_.size(); ++i) {
      const Schedule& s = schedules_[i];
      check_total(s, t, t_obj);
      if (!scale_fn_.is_none()) {
        const CyclicParams& p = s.piece[0].cyclic;
        const CyclicPos pos = cyclic_pos(p, t);
        py::object arg = p.scale_mode == ScaleMode::Cycle ? py::object(py::int_(static_cast<int64_t>(pos.cycle)))
                                                          : t_obj;
        // torch calls scale_fn once for the lr and once more for the momentum.
        values[i] = cyclic_combine(p, pos.s, scale_fn_(arg).cast<double>());
        if (p.cycle_momentum) values[i].momentum = cyclic_combine(p, pos.s, scale_fn_(arg).cast<double>()).momentum;
      } else {
        values[i] = schedule_at(s, t);
      }
    }
    py::list lrs(schedules_.size());
    for (size_t i = 0; i < schedules_.size(); ++i) write(groups[i], values[i], lrs, i);
    return lrs;
  }

  // One scheduler step() of the common kind (no epoch argument): the counters
  // live here so that a step is a single call from Python. They change only
  // when the step succeeds. Returns true when torch would check the call
  // order (the first step after construction).
  bool step(const py::list& groups) {
    py::object next = py::reinterpret_steal<py::object>(PyNumber_Add(last_epoch_.ptr(), one().ptr()));
    if (!next) throw py::error_already_set();
    py::list lrs = apply(next, groups);
    const bool check_order = step_count_ == 1;
    ++step_count_;
    last_epoch_ = std::move(next);
    last_lr_ = std::move(lrs);
    return check_order;
  }

  // CosineAnnealingWarmRestarts' step(): T_cur += 1; on T_cur >= T_i,
  // T_cur %= T_i and T_i *= T_mult. The counters are held as doubles (exact
  // below 2^53) with a flag that remembers whether Python gave an int, so the
  // attributes read back with torch's types. Returns false, doing nothing,
  // before the first step (torch then takes the epoch=0 path, done in Python).
  bool step_restarts(const py::list& groups) {
    if (restart_epoch_ < 0) return false;
    restart_epoch_ += 1;
    last_epoch_ = py::int_(restart_epoch_);
    T_cur_.value += 1.0;
    if (T_cur_.value >= T_i_.value) {
      T_cur_.value = std::fmod(T_cur_.value, T_i_.value);  // Python's % for positive operands
      T_i_.value *= T_mult_.value;
      T_i_.is_int = T_i_.is_int && T_mult_.is_int;
    }
    last_lr_ = apply_restarts(T_cur_.value, T_i_.value, groups);
    return true;
  }

  // A Python int or float held natively.
  struct Number {
    double value = 0.0;
    bool is_int = true;
    py::object get() const {
      if (is_int) return py::int_(static_cast<int64_t>(value));
      return py::float_(value);
    }
    void set(const py::object& v) {
      is_int = PyLong_Check(v.ptr()) != 0;
      value = v.cast<double>();
    }
  };

  py::object get_last_epoch() const { return last_epoch_; }
  void set_last_epoch(const py::object& v) {
    last_epoch_ = v;
    restart_epoch_ = PyLong_Check(v.ptr()) ? v.cast<int64_t>() : static_cast<int64_t>(std::floor(v.cast<double>()));
  }

  Number T_cur_, T_i_, T_mult_;
  int64_t restart_epoch_ = -1;

  py::object last_epoch_ = py::int_(-1);
  int64_t step_count_ = 0;
  py::object last_lr_ = py::list();

  // CosineAnnealingWarmRestarts keeps T_cur and T_i as state; the value at a
  // given (T_cur, T_i) is the core's formula.
  py::list apply_restarts(double T_cur, double T_i, const py::list& groups) {
    check_groups(groups);
    py::list lrs(schedules_.size());
    for (size_t i = 0; i < schedules_.size(); ++i) {
      const LrMom r{restarts_value(schedules_[i].piece[0].restarts, {T_cur, T_i, 0.0}), nan_value()};
      write(groups[i], r, lrs, i);
    }
    return lrs;
  }

  py::list values(const py::object& t_obj) const {
    const double t = t_obj.cast<double>();
    py::list out;
    for (const Schedule& s : schedules_) {
      check_total(s, t, t_obj);
      out.append(schedule_at(s, t).lr);
    }
    return out;
  }

  py::list values_restarts(double T_cur, double T_i) const {
    py::list out;
    for (const Schedule& s : schedules_) out.append(restarts_value(s.piece[0].restarts, {T_cur, T_i, 0.0}));
    return out;
  }

 private:
  // Leaked on purpose: Python objects must not be destroyed after the
  // interpreter has shut down.
  static const py::object& one() {
    static const py::object* v = new py::object(py::int_(1));
    return *v;
  }

  void check_groups(const py::list& groups) const {
    if (groups.size() != schedules_.size())
      throw py::value_error("the optimizer has " + std::to_string(groups.size()) + " param groups, the scheduler " +
                            std::to_string(schedules_.size()));
  }

  static void check_total(const Schedule& s, double t, const py::object& t_obj) {
    const Leaf& l = s.piece[0];
    if (l.kind == Kind::OneCycle && t > l.onecycle.total_steps) {
      throw py::value_error("Tried to step " + py::str(t_obj).cast<std::string>() +
                            " times. The specified number of total steps is " +
                            std::to_string(static_cast<int64_t>(l.onecycle.total_steps)));
    }
  }

  // Uses the C API directly: this runs once per group per training step and
  // pybind11's accessors would double its cost.
  void write(py::handle group_h, const LrMom& r, py::list& lrs, size_t i) const {
    static const Keys& k = *new Keys();
    if (!PyDict_Check(group_h.ptr())) throw py::type_error("param_groups must hold dicts");
    PyObject* group = group_h.ptr();
    PyObject* current = PyDict_GetItemWithError(group, k.lr.ptr());  // borrowed
    if (current == nullptr && PyErr_Occurred()) throw py::error_already_set();
    if (current == nullptr || PyFloat_Check(current) || PyLong_Check(current)) {
      set_item(group, k.lr.ptr(), r.lr);
      PyObject* v = PyDict_GetItem(group, k.lr.ptr());
      Py_INCREF(v);
      PyList_SET_ITEM(lrs.ptr(), static_cast<Py_ssize_t>(i), v);  // steals; the slot was empty
    } else {  // a tensor lr is updated in place, as torch does
      py::handle cur(current);
      cur.attr(k.fill)(r.lr);
      lrs[i] = cur.attr(k.clone)();
    }
    if (momentum_key_ == kMomentum) {
      set_item(group, k.momentum.ptr(), r.momentum);
    } else if (momentum_key_ == kBetas) {
      py::dict g = py::reinterpret_borrow<py::dict>(group_h);
      py::tuple old = g[k.betas].cast<py::tuple>();
      py::tuple betas(old.size());
      betas[0] = py::float_(r.momentum);
      for (size_t j = 1; j < old.size(); ++j) betas[j] = old[j];
      g[k.betas] = betas;
    }
  }

  static void set_item(PyObject* dict, PyObject* key, double value) {
    PyObject* v = PyFloat_FromDouble(value);
    if (v == nullptr) throw py::error_already_set();
    const int rc = PyDict_SetItem(dict, key, v);
    Py_DECREF(v);
    if (rc != 0) throw py::error_already_set();
  }

  struct Keys {
    py::str lr{"lr"}, momentum{"momentum"}, betas{"betas"}, fill{"fill_"}, clone{"clone"};
  };

  std::vector<Schedule> schedules_;
  std::vector<LrMom> scratch_;
  MomentumKey momentum_key_;
  py::object scale_fn_;
};

// ------------------------------------------------------- fast step entry

// A scheduler step is ~0.3 us, and pybind11's generic dispatch is a third of
// it. The step methods are therefore also offered as plain CPython METH_O
// functions bound to a capsule that holds the engine (and a reference to its
// Python object, so the engine outlives the function).
constexpr const char* kEngineCapsule = "clrfast.GroupEngine";

GroupEngine* capsule_engine(PyObject* capsule) {
  return static_cast<GroupEngine*>(PyCapsule_GetPointer(capsule, kEngineCapsule));
}

template <bool Restarts>
PyObject* fast_step(PyObject* capsule, PyObject* groups) {
  GroupEngine* e = capsule_engine(capsule);
  if (e == nullptr) return nullptr;
  if (!PyList_Check(groups)) {
    PyErr_SetString(PyExc_TypeError, "param_groups must be a list");
    return nullptr;
  }
  try {
    const py::list g = py::reinterpret_borrow<py::list>(groups);
    const bool r = Restarts ? e->step_restarts(g) : e->step(g);
    return PyBool_FromLong(r ? 1 : 0);
  } catch (py::error_already_set& err) {
    err.restore();
  } catch (py::builtin_exception& err) {
    err.set_error();
  } catch (const std::exception& err) {
    PyErr_SetString(PyExc_RuntimeError, err.what());
  }
  return nullptr;
}

PyMethodDef kFastStep = {"step", reinterpret_cast<PyCFunction>(&fast_step<false>), METH_O,
                         "One scheduler step; returns True when torch would check the call order."};
PyMethodDef kFastStepRestarts = {"step_restarts", reinterpret_cast<PyCFunction>(&fast_step<true>), METH_O,
                                 "One CosineAnnealingWarmRestarts step; False before the first."};

py::object make_fast_step(const py::object& engine_obj, bool restarts) {
  GroupEngine* e = engine_obj.cast<GroupEngine*>();
  PyObject* capsule = PyCapsule_New(e, kEngineCapsule, [](PyObject* c) {
    Py_XDECREF(static_cast<PyObject*>(PyCapsule_GetContext(c)));
  });
  if (capsule == nullptr) throw py::error_already_set();
  Py_INCREF(engine_obj.ptr());
  PyCapsule_SetContext(capsule, engine_obj.ptr());
  PyObject* fn = PyCFunction_New(restarts ? &kFastStepRestarts : &kFastStep, capsule);
  Py_DECREF(capsule);  // the function holds it now
  if (fn == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(fn);
}

}  // namespace

void bind_schedules(py::module_& m) {
  py::class_<Schedule>(m, "Schedule", "A compiled schedule: leaf pieces and join boundaries.")
      .def("at", [](const Schedule& s, double t) {
        const LrMom r = schedule_at(s, t);
        return py::make_tuple(r.lr, r.momentum);
      })
      .def("lr", [](const Schedule& s, double t) { return lr_at(s, t); })
      .def("momentum", [](const Schedule& s, double t) { return momentum_at(s, t); })
      .def_property_readonly("n_pieces", [](const Schedule& s) { return s.n; })
      .def_property_readonly("has_momentum", &has_momentum)
      .def("table_range", &table_range_py, py::arg("quantity"), py::arg("first"), py::arg("n"), py::arg("out"),
           py::arg("threads") = 0)
      .def("table_steps", &table_steps_py, py::arg("quantity"), py::arg("steps"), py::arg("out"),
           py::arg("threads") = 0);

  m.def("cyclic", &make_cyclic_schedule);
  m.def("onecycle", &make_onecycle_schedule);
  m.def("onecycle_groups", &make_onecycle_groups);
  m.def("cosine_restarts", &make_restarts);
  m.def("linear", &make_linear);
  m.def("sweep", &make_sweep);
  m.def("constant", &make_constant);
  m.def("join", &make_join);
  m.def("cyclic_scale", [](int kind, double gamma, double x) {
    return cyclic_scale(static_cast<ScaleKind>(kind), gamma, x);
  });
  m.def("restart_pos_torch_epoch", [](double T_0, double T_mult, double epoch) {
    const RestartPos p = restart_pos_torch_epoch(T_0, T_mult, epoch);
    return py::make_tuple(p.T_cur, p.T_i);
  });

  py::class_<GroupEngine>(m, "GroupEngine")
      .def(py::init<std::vector<Schedule>, int, py::object>(), py::arg("schedules"), py::arg("momentum_key"),
           py::arg("scale_fn") = py::none())
      .def("apply", &GroupEngine::apply)
      .def("apply_restarts", &GroupEngine::apply_restarts)
      .def("fast_step", &make_fast_step, py::arg("restarts") = false,
           "A plain CPython function doing step (or step_restarts) with less call overhead.")
      .def_property("last_epoch", &GroupEngine::get_last_epoch, &GroupEngine::set_last_epoch)
      .def_readwrite("step_count", &GroupEngine::step_count_)
      .def_readwrite("last_lr", &GroupEngine::last_lr_)
      .def_property(
          "T_cur", [](const GroupEngine& e) { return e.T_cur_.get(); },
          [](GroupEngine& e, const py::object& v) { e.T_cur_.set(v); })
      .def_property(
          "T_i", [](const GroupEngine& e) { return e.T_i_.get(); },
          [](GroupEngine& e, const py::object& v) { e.T_i_.set(v); })
      .def_property(
          "T_mult", [](const GroupEngine& e) { return e.T_mult_.get(); },
          [](GroupEngine& e, const py::object& v) { e.T_mult_.set(v); })
      .def("values", &GroupEngine::values)
      .def("values_restarts", &GroupEngine::values_restarts);
}

}  // namespace clrfast
