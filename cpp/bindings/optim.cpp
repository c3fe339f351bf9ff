// Bindings of the fused SGD step (CPU, and CUDA when built with it).
//
// The torch front end passes raw data pointers as integers in an int64 table,
// one row per (param, grad, buffer) segment, so this module never links
// libtorch. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "clrfast/sgd_update.hpp"
#include "sgd_cpu.hpp"
#include "thread_pool.hpp"
#ifdef CLRFAST_WITH_CUDA
#include "sgd_cuda.hpp"
#endif

namespace py = pybind11;

namespace clrfast {
namespace {

constexpr int kSegCols = static_cast<int>(sizeof(Segment) / sizeof(int64_t));

const Segment* segments_of(const py::array& table, int64_t* count, bool need_buf) {
  const Segment* segs = segment_rows<Segment>(table, count);
  for (int64_t i = 0; i < *count; ++i) {
    const Segment& s = segs[i];
    if (s.dtype < 0 || s.dtype > 3) throw py::value_error("segments: unknown dtype code");
    if (s.n < 0) throw py::value_error("segments: negative length");
    if (s.n > 0 && (s.p == 0 || s.g == 0 || (need_buf && s.buf == 0)))
      throw py::value_error("segments: null pointer in row " + std::to_string(i));
  }
  return segs;
}

// lr and momentum of step t; the schedule's momentum wins over the constant.
std::pair<double, double> hyper_at(const Schedule& s, double t, double momentum) {
  const LrMom v = schedule_at(s, t);
  return {v.lr, std::isnan(v.momentum) ? momentum : v.momentum};
}

void sgd_step(const py::array& table, double lr, double momentum, double dampening, double weight_decay,
              bool nesterov, bool maximize, double inv_scale, bool store_grad, int threads) {
  int64_t n = 0;
  const Segment* segs = segments_of(table, &n, momentum != 0.0);
  StepConfig cfg{lr, momentum, dampening, weight_decay, inv_scale, store_grad, nesterov, maximize};
  if (threads < 1) threads = 1;
  py::gil_scoped_release release;
  sgd_step_cpu(segs, n, cfg, threads);
}

// True when params[i].grad is views[i] for every i: the flat-mode check that
// no gradient was replaced, done without Python bytecode per tensor.
// p.grad for every parameter is the one per-tensor read a flat step makes, so
// it skips the generic attribute lookup: `grad` is a data descriptor of the
// tensor type (instance dicts cannot shadow it), so its getter is found once
// per type and called directly.
PyObject* read_grad(PyObject* p) {
  static PyObject* name = PyUnicode_InternFromString("grad");
  static PyTypeObject* cached_type = nullptr;
  static getter cached_get = nullptr;
  static void* cached_closure = nullptr;
  PyTypeObject* type = Py_TYPE(p);
  if (type != cached_type) {
    PyObject* descr = _PyType_Lookup(type, name);  // borrowed
    cached_type = type;
    cached_get = nullptr;
    if (descr != nullptr && Py_IS_TYPE(descr, &PyGetSetDescr_Type)) {
      PyGetSetDef* def = reinterpret_cast<PyGetSetDescrObject*>(descr)->d_getset;
      cached_get = def->get;
      cached_closure = def->closure;
    }
  }
  if (cached_get != nullptr) return cached_get(p, cached_closure);
  return PyObject_GetAttr(p, name);
}

// p.data_ptr(), through the method's C function when the type exposes it as
// a plain no-argument method (one lookup per type), else a normal call.
// A no-argument tensor method returning an int (data_ptr, numel), called through its C
// function when the type exposes it as a plain METH_NOARGS method: one lookup per type, two
// types remembered (Parameter and Tensor alternate in a plan), else a normal call.
class NoArgIntMethod {
 public:
  explicit NoArgIntMethod(const char* name) : name_(PyUnicode_InternFromString(name)) {}

  int64_t operator()(PyObject* obj) {
    PyTypeObject* type = Py_TYPE(obj);
    int slot = types_[0] == type ? 0 : types_[1] == type ? 1 : -1;
    if (slot < 0) {
      slot = next_;
      next_ ^= 1;
      types_[slot] = type;
      fns_[slot] = nullptr;
      PyObject* descr = _PyType_Lookup(type, name_);  // borrowed
      if (descr != nullptr && Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        PyMethodDef* def = reinterpret_cast<PyMethodDescrObject*>(descr)->d_method;
        if ((def->ml_flags & (METH_NOARGS | METH_O | METH_VARARGS | METH_FASTCALL | METH_KEYWORDS)) == METH_NOARGS)
          fns_[slot] = def->ml_meth;
      }
    }
    PyObject* r = fns_[slot] != nullptr ? fns_[slot](obj, nullptr) : PyObject_CallMethodNoArgs(obj, name_);
    if (r == nullptr) throw py::error_already_set();
    const int64_t v = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    return v;
  }

 private:
  PyObject* name_;
  PyTypeObject* types_[2] = {nullptr, nullptr};
  PyCFunction fns_[2] = {nullptr, nullptr};
  int next_ = 0;
};

int64_t read_data_ptr(PyObject* t) {
  static NoArgIntMethod method("data_ptr");
  return method(t);
}

int64_t read_numel(PyObject* t) {
  static NoArgIntMethod method("numel");
  return method(t);
}

// True when the cached plan of a param group still describes it: every
// parameter has the gradient object it was validated with (None included),
// parameter and gradient keep their data address and element count
// (`p.data = t`, `model.to()`, `g.set_(t)` and `resize_` change one of them),
// and `state[p][key]` is still the validated buffer wherever there was one (`sdicts[i]` is
// state[p], passed in so no tensor is hashed here: a tensor's __hash__ is Python code).
// It costs a few attribute reads per tensor and no allocation, so a step
// whose tensors did not change pays no revalidation.
bool plan_current(const py::list& params, const py::list& grads, const py::list& bufs, const py::list& sdicts,
                  const py::str& key, const py::array_t<int64_t, py::array::c_style>& expect) {
  const Py_ssize_t n = PyList_GET_SIZE(params.ptr());
  if (PyList_GET_SIZE(grads.ptr()) != n || PyList_GET_SIZE(bufs.ptr()) != n ||
      PyList_GET_SIZE(sdicts.ptr()) != n || expect.ndim() != 2 ||
      expect.shape(0) != n || expect.shape(1) != 4)
    return false;
  const int64_t* e = expect.data();
  for (Py_ssize_t i = 0; i < n; ++i, e += 4) {
    PyObject* p = PyList_GET_ITEM(params.ptr(), i);
    PyObject* g = read_grad(p);
    if (g == nullptr) throw py::error_already_set();
    const bool same = g == PyList_GET_ITEM(grads.ptr(), i);
    if (!same || g == Py_None) {
      Py_DECREF(g);
      if (!same) return false;
      continue;
    }
    const bool ok = read_data_ptr(g) == e[1] && read_numel(g) == e[2];
    Py_DECREF(g);
    if (!ok || read_data_ptr(p) != e[0] || read_numel(p) != e[2]) return false;
    PyObject* want = PyList_GET_ITEM(bufs.ptr(), i);
    if (want == Py_None) continue;
    PyObject* st = PyList_GET_ITEM(sdicts.ptr(), i);
    PyObject* have = PyDict_Check(st) ? PyDict_GetItem(st, key.ptr()) : nullptr;  // borrowed
    if (have != want || read_data_ptr(want) != e[3]) return false;
  }
  return true;
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_step", &sgd_step, py::arg("segments"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"), py::arg("inv_scale"),
        py::arg("store_grad"), py::arg("threads"),
        "Fused SGD step over an int64 segment table (rows p, g, buf, n, dtype, first) on the CPU.");
  m.def("sgd_hyper", [](const Schedule& s, int64_t step, double momentum) {
    const auto hm = hyper_at(s, static_cast<double>(step), momentum);
    return py::make_tuple(hm.first, hm.second);
  }, py::arg("schedule"), py::arg("step"), py::arg("momentum"),
     "(lr, momentum) of `step`; the schedule's momentum, else `momentum`.");
  m.def("sgd_cpu_isa", &sgd_cpu_isa, "Instruction set the CPU kernels dispatch to.");
  m.def("hardware_threads", &ThreadPool::hardware_threads);
  m.def("plan_current", &plan_current, py::arg("params"), py::arg("grads"), py::arg("buffers"), py::arg("state_dicts"),
        py::arg("key"), py::arg("expect"),
        "True when no parameter's .grad object, data address or size, nor any state buffer, changed since the "
        "plan was validated.");
  m.attr("sgd_segment_cols") = kSegCols;
  m.def("schedule_bytes", [](const Schedule& s) {
    return py::bytes(reinterpret_cast<const char*>(&s), sizeof(Schedule));
  }, "The compiled schedule's raw bytes (copied to device memory for the CUDA kernel).");
#ifdef CLRFAST_WITH_CUDA
  m.def(
      "sgd_step_cuda",
      [](uintptr_t schedule, uintptr_t step, uintptr_t segs, int64_t nseg, int64_t max_n, double momentum,
         double dampening, double weight_decay, bool nesterov, bool maximize, uintptr_t grad_scale,
         uintptr_t found_inf, uintptr_t lrmom_out, uintptr_t stream) {
        CudaStepArgs a{};
        a.schedule = reinterpret_cast<const Schedule*>(schedule);
        a.step = reinterpret_cast<int64_t*>(step);
        a.segs = reinterpret_cast<Segment*>(segs);
        a.nseg = nseg;
        a.max_n = max_n;
        a.momentum = momentum;
        a.dampening = dampening;
        a.weight_decay = weight_decay;
        a.nesterov = nesterov;
        a.maximize = maximize;
        a.grad_scale = reinterpret_cast<const float*>(grad_scale);
        a.found_inf = reinterpret_cast<const float*>(found_inf);
        a.lrmom_out = reinterpret_cast<double*>(lrmom_out);
        a.stream = reinterpret_cast<void*>(stream);
        std::string err;
        {
          py::gil_scoped_release release;
          err = sgd_step_cuda(a);
        }
        if (!err.empty()) throw std::runtime_error("CUDA SGD step: " + err);
      },
      "Fused SGD step on the caller's CUDA stream; lr/momentum computed on the device from *step, which the "
      "kernel advances unless *found_inf is nonzero. No host synchronization.");
#endif
}

}  // namespace clrfast
