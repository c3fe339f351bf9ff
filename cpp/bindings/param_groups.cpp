// Bindings for the torch drop-in schedulers (python/clrfast/torch/schedulers.py):
// one call computes a step's values for every param group with the schedule
// core and writes them into torch's param-group dicts.
//
// The scheduler state (last_epoch, T_cur, ...) and torch's step logic live in
// Python; this file only converts: core values into dict entries (a float, a
// tensor filled in place, a betas tuple), and core statuses into the
// exceptions torch raises (OverflowError, ZeroDivisionError). Every value is
// computed and checked before the first group is written, so a raising call
// leaves the groups as they were.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"

namespace py = pybind11;
using namespace py::literals;

namespace clrfast {
namespace {

enum class MomentumKey : int32_t { None = 0, Momentum = 1, Betas = 2 };

[[noreturn]] void raise_status(Status status, double t) {
  const std::string at = "at step " + py::repr(py::float_(t)).cast<std::string>();
  if (status == Status::ZeroDivision) {
    PyErr_SetString(PyExc_ZeroDivisionError,
                    ("float division by zero " + at + " (a phase or half-cycle of zero length)").c_str());
    throw py::error_already_set();
  }
  throw std::overflow_error("the schedule's values overflow a double " + at +
                           " (Python's float ** raises (34, 'Numerical result out of range') there)");
}

class GroupWriter {
 public:
  // `fallback_momentum` (one per group, or empty) is written where a
  // schedule defines no momentum at the step (a joined piece without one), so
  // a group never keeps a stale value from another piece. `as_torch` checks
  // values as torch computes them (a scale power that overflows raises even
  // where the scale's limit is finite); off, as the clrfast schedules do.
  GroupWriter(std::vector<Schedule> schedules, MomentumKey key, std::vector<double> fallback_momentum, bool as_torch)
      : schedules_(std::move(schedules)), key_(key), fallback_(std::move(fallback_momentum)), as_torch_(as_torch) {
    if (!fallback_.empty() && fallback_.size() != schedules_.size())
      throw py::value_error("fallback_momentum needs one value per schedule");
  }

  // Values at step t for every group, checked.
  const std::vector<LrMom>& compute(double t) {
    values_.resize(schedules_.size());
    for (size_t i = 0; i < schedules_.size(); ++i) {
      const Schedule& s = schedules_[i];
      const Status st = as_torch_ ? leaf_status(s.piece[0], t, true) : status_between(s, t, t);
      if (st != Status::Ok) raise_status(st, t);
      values_[i] = schedule_at(s, t);
      if (!fallback_.empty() && std::isnan(values_[i].momentum)) values_[i].momentum = fallback_[i];
    }
    return values_;
  }

  py::list write(double t, const py::list& groups) {
    check_groups(groups);
    return write_all(compute(t), groups);
  }

  // Cyclic values with scales supplied by a Python scale_fn: one per group for
  // the lr and one per group for the momentum, as torch calls it.
  py::list write_scaled(double t, const std::vector<double>& lr_scales, const std::vector<double>& momentum_scales,
                        const py::list& groups) {
    check_groups(groups);
    const size_t n = schedules_.size();
    if (lr_scales.size() != n || (key_ != MomentumKey::None && momentum_scales.size() != n))
      throw py::value_error("one scale per param group is needed");
    values_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const CyclicParams& p = schedules_[i].piece[0].cyclic;
      const Status st = cyclic_status(p, t, true);
      if (st != Status::Ok) raise_status(st, t);
      const CyclicPos pos = cyclic_pos(p, t);
      values_[i] = cyclic_combine(p, pos.s, lr_scales[i]);
      if (key_ != MomentumKey::None) values_[i].momentum = cyclic_combine(p, pos.s, momentum_scales[i]).momentum;
      if (!std::isfinite(values_[i].lr) || (key_ != MomentumKey::None && !std::isfinite(values_[i].momentum)))
        throw std::overflow_error("scale_fn gives a non-finite learning rate or momentum at step " +
                                 py::repr(py::float_(t)).cast<std::string>());
    }
    return write_all(values_, groups);
  }

  // The cycle index at step t (torch passes it to scale_fn in "cycle" mode).
  double cycle(double t) const { return cyclic_triangle(schedules_.at(0).piece[0].cyclic, t).cycle; }

  // CosineAnnealingWarmRestarts: values at an explicit (T_cur, T_i).
  const std::vector<LrMom>& compute_restarts(double T_cur, double T_i) {
    values_.resize(schedules_.size());
    for (size_t i = 0; i < schedules_.size(); ++i)
      values_[i] = {restarts_value(schedules_[i].piece[0].restarts, {T_cur, T_i, 0.0}), nan_value()};
    return values_;
  }

  py::list write_restarts(double T_cur, double T_i, const py::list& groups) {
    check_groups(groups);
    return write_all(compute_restarts(T_cur, T_i), groups);
  }

  // torch's common step() (no epoch, not the first) in one call: the values at t = last_epoch + 1
  // into `sched.optimizer.param_groups`, then last_epoch, _step_count and _last_lr updated in the
  // scheduler's __dict__, where torch keeps them. Returns false, having changed nothing, wherever
  // the Python step must decide: the first step (a warning), counters that are not plain ints, a
  // step past max_step (torch's error), a writer built with fast = false.
  bool step(py::handle sched) {
    py::dict d = instance_dict(sched);
    const Keys& k = keys();
    int64_t count = 0, last = 0;
    if (!exact_int(d, k.step_count, &count) || count == 1 || !exact_int(d, k.last_epoch, &last)) return false;
    if (last >= (int64_t{1} << 53) || last < -(int64_t{1} << 53)) return false;  // t exact as a double
    const int64_t t = last + 1;
    if (static_cast<double>(t) > max_step) return false;
    const std::optional<py::list> groups = param_groups(d);
    if (!groups) return false;
    py::list lrs = write(static_cast<double>(t), *groups);
    set(d, k.last_lr, lrs);
    set(d, k.last_epoch, py::int_(t));
    set(d, k.step_count, py::int_(count + 1));
    return true;
  }

  // CosineAnnealingWarmRestarts' common step (no epoch, last_epoch >= 0), torch's counter update
  // in integers: T_cur + 1, wrapped at T_i (then T_i * T_mult). Returns false, changing nothing,
  // where the counters are not plain ints (a fractional epoch made them floats).
  bool step_restarts(py::handle sched) {
    py::dict d = instance_dict(sched);
    const Keys& k = keys();
    int64_t last = 0, cur = 0, len = 0, mult = 0;
    constexpr int64_t kMax = int64_t{1} << 40;  // far from overflow in T_i * T_mult
    if (!exact_int(d, k.last_epoch, &last) || last < 0 || last > kMax || !exact_int(d, k.T_cur, &cur) ||
        !exact_int(d, k.T_i, &len) || !exact_int(d, k.T_mult, &mult) || cur < -1 || cur > kMax || len < 1 ||
        len > kMax || mult < 1 || mult > kMax)
      return false;
    const std::optional<py::list> groups = param_groups(d);
    if (!groups) return false;
    ++cur;
    const bool wrapped = cur >= len;
    if (wrapped) {
      cur %= len;
      len *= mult;
    }
    py::list lrs = write_restarts(static_cast<double>(cur), static_cast<double>(len), *groups);
    set(d, k.last_lr, lrs);
    if (wrapped) set(d, k.T_i, py::int_(len));  // torch assigns T_i only at a restart
    set(d, k.T_cur, py::int_(cur));
    set(d, k.last_epoch, py::int_(last + 1));
    return true;
  }

  // The common step of the scheduler this writer belongs to; false where Python must take it.
  bool common_step(py::handle sched) {
    if (!fast) return false;
    return restarts ? step_restarts(sched) : step(sched);
  }

  double max_step = std::numeric_limits<double>::infinity();
  bool fast = false;  // each scheduler opts in once its _write is only the write
  bool restarts = false;  // CosineAnnealingWarmRestarts' counters

  py::list lrs(const std::vector<LrMom>& v) const {
    py::list out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = py::float_(v[i].lr);
    return out;
  }

  py::list values(double t) { return lrs(compute(t)); }
  py::list values_restarts(double T_cur, double T_i) { return lrs(compute_restarts(T_cur, T_i)); }

 private:
  void check_groups(const py::list& groups) const {
    if (groups.size() != schedules_.size())
      throw py::value_error("the optimizer has " + std::to_string(groups.size()) + " param groups, the scheduler " +
                            std::to_string(schedules_.size()));
    for (const py::handle g : groups)
      if (!PyDict_Check(g.ptr())) throw py::type_error("param_groups must hold dicts");
  }

  static py::dict instance_dict(py::handle obj) {
    PyObject* d = PyObject_GenericGetDict(obj.ptr(), nullptr);
    if (d == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::dict>(d);
  }

  // An entry that is exactly a Python int (not a bool, not a subclass) within int64.
  static bool exact_int(const py::dict& d, const py::str& key, int64_t* out) {
    PyObject* v = PyDict_GetItemWithError(d.ptr(), key.ptr());  // borrowed
    if (v == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      return false;
    }
    if (!PyLong_CheckExact(v)) return false;
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow != 0 || (x == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return false;
    }
    *out = x;
    return true;
  }

  static void set(const py::dict& d, const py::str& key, const py::handle& v) {
    if (PyDict_SetItem(d.ptr(), key.ptr(), v.ptr()) != 0) throw py::error_already_set();
  }

  // The optimizer's param_groups, or nothing where they are not a plain list on a plain attribute.
  static std::optional<py::list> param_groups(const py::dict& d) {
    const Keys& k = keys();
    PyObject* opt = PyDict_GetItemWithError(d.ptr(), k.optimizer.ptr());  // borrowed
    if (opt == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      return std::nullopt;
    }
    py::object groups = py::reinterpret_borrow<py::object>(opt).attr(k.param_groups);
    if (!PyList_CheckExact(groups.ptr())) return std::nullopt;
    return py::reinterpret_borrow<py::list>(groups);
  }

  // Writes the checked values; returns the lrs as torch's _last_lr (a clone
  // where the group's lr is a tensor).
  py::list write_all(const std::vector<LrMom>& v, const py::list& groups) {
    const Keys& k = keys();
    if (group_scales) {
      read_scales(groups);
      for (size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i].lr * scales_[i]))
          throw std::overflow_error("param_groups[" + std::to_string(i) + "]: the lr times its lr_scale overflows a double");
    }
    py::list lrs(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      PyObject* group = groups[i].ptr();
      const double lr_i = group_scales ? v[i].lr * scales_[i] : v[i].lr;
      // The C API directly: this runs once per group per training step and
      // pybind11's accessors would double its cost.
      PyObject* current = PyDict_GetItemWithError(group, k.lr.ptr());  // borrowed
      if (current == nullptr && PyErr_Occurred()) throw py::error_already_set();
      if (current == nullptr || PyFloat_Check(current) || PyLong_Check(current)) {
        py::float_ lr(lr_i);
        if (PyDict_SetItem(group, k.lr.ptr(), lr.ptr()) != 0) throw py::error_already_set();
        lrs[i] = lr;
      } else {  // a tensor lr is updated in place, as torch does
        py::handle cur(current);
        cur.attr(k.fill)(lr_i);
        lrs[i] = cur.attr(k.clone)();
      }
      if (key_ == MomentumKey::Momentum) {
        py::float_ m(v[i].momentum);
        if (PyDict_SetItem(group, k.momentum.ptr(), m.ptr()) != 0) throw py::error_already_set();
      } else if (key_ == MomentumKey::Betas) {
        // (momentum, *betas[1:]), as torch builds it: any sequence, any length.
        py::object old = py::reinterpret_borrow<py::object>(groups[i])[k.betas];
        py::object rest = py::reinterpret_steal<py::object>(PySequence_GetSlice(old.ptr(), 1, PY_SSIZE_T_MAX));
        if (!rest) throw py::error_already_set();
        py::tuple tail = py::tuple(rest);
        py::tuple betas(tail.size() + 1);
        betas[0] = py::float_(v[i].momentum);
        for (size_t j = 0; j < tail.size(); ++j) betas[j + 1] = tail[j];
        if (PyDict_SetItem(group, k.betas.ptr(), betas.ptr()) != 0) throw py::error_already_set();
      }
    }
    return lrs;
  }

  // Each group's 'lr_scale' (1 where it has none), all checked before a group is written: timm's
  // per-group multiplier, applied as timm applies it (lr = value * lr_scale, one rounding).
  void read_scales(const py::list& groups) {
    const Keys& k = keys();
    scales_.assign(groups.size(), 1.0);
    for (size_t i = 0; i < scales_.size(); ++i) {
      PyObject* v = PyDict_GetItemWithError(groups[i].ptr(), k.lr_scale.ptr());  // borrowed
      if (v == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        continue;
      }
      const bool real = (PyFloat_Check(v) || PyLong_Check(v)) && !PyBool_Check(v);
      const double x = real ? PyFloat_AsDouble(v) : 0.0;
      if (real && x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();  // an int too large for a double
        throw py::value_error("param_groups[" + std::to_string(i) + "]['lr_scale'] must be a finite number >= 0, got " +
                              py::repr(v).cast<std::string>());
      }
      if (!real)
        throw py::type_error("param_groups[" + std::to_string(i) + "]['lr_scale'] must be a number, got " +
                             py::repr(v).cast<std::string>());
      if (!(x >= 0.0 && std::isfinite(x)))
        throw py::value_error("param_groups[" + std::to_string(i) + "]['lr_scale'] must be a finite number >= 0, got " +
                              py::repr(v).cast<std::string>());
      scales_[i] = x;
    }
  }

  // Interned, as Python's own attribute names and literal keys are: a dict lookup then matches
  // the key by identity instead of comparing the characters.
  static py::str interned(const char* s) { return py::reinterpret_steal<py::str>(PyUnicode_InternFromString(s)); }
  struct Keys {
    py::str lr = interned("lr"), lr_scale = interned("lr_scale"), momentum = interned("momentum"), betas = interned("betas");
    py::str fill = interned("fill_"), clone = interned("clone");
    py::str step_count = interned("_step_count"), last_epoch = interned("last_epoch"), last_lr = interned("_last_lr");
    py::str optimizer = interned("optimizer"), param_groups = interned("param_groups");
    py::str T_cur = interned("T_cur"), T_i = interned("T_i"), T_mult = interned("T_mult");
  };
  static const Keys& keys() {
    static const Keys& k = *new Keys();  // leaked: must outlive the interpreter's teardown
    return k;
  }

  std::vector<Schedule> schedules_;
  MomentumKey key_;
  std::vector<double> fallback_;
  bool as_torch_;
  std::vector<LrMom> values_;  // reused: no allocation per step
  std::vector<double> scales_;

 public:
  bool group_scales = false;  // ScheduleLR: multiply each group's lr by its 'lr_scale'
};

// The drop-ins' step(self, epoch=None), as a C function bound like a method: the common call
// (no argument) goes to the scheduler's writer in one step, without a Python frame or
// pybind11's dispatch (a training loop makes it once per batch); every other call, and a
// common one the writer declines, goes to the Python implementation, self._step(...).
PyObject* scheduler_step(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  static PyObject* const writer_name = PyUnicode_InternFromString("_writer");
  static PyObject* const slow_name = PyUnicode_InternFromString("_step");
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "step() needs the scheduler");
    return nullptr;
  }
  if (nargs == 1 && kwnames == nullptr) {
    try {
      PyObject* w = PyObject_GetAttr(args[0], writer_name);
      if (w == nullptr) return nullptr;
      py::object writer = py::reinterpret_steal<py::object>(w);
      // The writer's exact type, its pybind11 record looked up once: py::isinstance and cast
      // would each look it up by typeid, a large share of a step that costs a few hundred ns.
      static const py::detail::type_info* const writer_type = py::detail::get_type_info(typeid(GroupWriter));
      if (writer_type != nullptr && Py_TYPE(w) == writer_type->type) {
        auto* inst = reinterpret_cast<py::detail::instance*>(w);
        auto* gw = static_cast<GroupWriter*>(inst->get_value_and_holder(writer_type, false).value_ptr());
        if (gw != nullptr && gw->common_step(args[0])) Py_RETURN_NONE;
      }
    } catch (py::error_already_set& e) {
      e.restore();
      return nullptr;
    } catch (py::builtin_exception& e) {
      e.set_error();
      return nullptr;
    } catch (const std::overflow_error& e) {
      PyErr_SetString(PyExc_OverflowError, e.what());
      return nullptr;
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      return nullptr;
    }
  }
  return PyObject_VectorcallMethod(slow_name, args, nargsf, kwnames);
}

PyMethodDef scheduler_step_def = {
    "step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&scheduler_step)),
    METH_FASTCALL | METH_KEYWORDS,
    "step($self, /, epoch=None)\n--\n\nAdvance one step (or jump to ``epoch``, deprecated as in torch) and write "
    "the groups' lr and momentum."};

}  // namespace

void bind_param_groups(py::module_& m) {
  py::enum_<MomentumKey>(m, "MomentumKey", "Which param-group entry a scheduler's momentum goes to.")
      .value("none", MomentumKey::None)
      .value("momentum", MomentumKey::Momentum)
      .value("betas", MomentumKey::Betas);

  py::class_<GroupWriter>(m, "GroupWriter",
                          "Writes one step's lr and momentum, from one compiled schedule per param group.")
      .def(py::init<std::vector<Schedule>, MomentumKey, std::vector<double>, bool>(), py::kw_only(), "schedules"_a,
           "momentum_key"_a, "fallback_momentum"_a = std::vector<double>(), "as_torch"_a = true)
      .def("write", &GroupWriter::write, "t"_a, "groups"_a,
           "Values at step t into the groups; returns the lrs. Raises before writing anything.")
      .def("write_scaled", &GroupWriter::write_scaled, "t"_a, "lr_scales"_a, "momentum_scales"_a, "groups"_a,
           "Cyclic values with scales from a Python scale_fn.")
      .def("write_restarts", &GroupWriter::write_restarts, "T_cur"_a, "T_i"_a, "groups"_a)
      .def_readwrite("max_step", &GroupWriter::max_step, "The common step leaves a step past this to Python (its error).")
      .def_readwrite("fast", &GroupWriter::fast, "Whether scheduler_step may take the common step here (false: always self._step).")
      .def_readwrite("group_scales", &GroupWriter::group_scales,
                     "Whether each group's lr is multiplied by its 'lr_scale' (timm's key), checked before any write.")
      .def_readwrite("restarts", &GroupWriter::restarts, "Whether the common step is CosineAnnealingWarmRestarts' (T_cur, T_i).")
      .def("cycle", &GroupWriter::cycle, "t"_a)
      .def("values", &GroupWriter::values, "t"_a)
      .def("values_restarts", &GroupWriter::values_restarts, "T_cur"_a, "T_i"_a);

  PyObject* f = PyCFunction_NewEx(&scheduler_step_def, nullptr, nullptr);
  if (f == nullptr) throw py::error_already_set();
  PyObject* method = PyInstanceMethod_New(f);  // binds like a function defined in the class
  Py_DECREF(f);
  if (method == nullptr) throw py::error_already_set();
  m.attr("scheduler_step") = py::reinterpret_steal<py::object>(method);
}

}  // namespace clrfast
