// The per-step revalidation of a cached fused-step plan.
//
// The torch front end builds a plan for a param group only after checking every tensor in
// Python (device, dtype, layout, element counts, state, overlaps). Each later step asks a
// StepCheck whether that plan still describes the group, and for the kernel table of this
// step. It reads, through torch's Python API and without Python bytecode, only what can
// change between steps:
//
//   - each parameter's gradient. Any gradient is checked as if new (autograd allocates a new
//     one after zero_grad(set_to_none=True), the common case): a plain tensor with exactly
//     the parameter's dtype, device, shape and layout that overlaps no memory the step
//     writes; its address goes into this step's table. Gradients are not remembered between
//     steps: a reference would keep them alive through the next backward, and a weak one
//     makes torch.utils.swap_tensors (model.to() under swap_module_params_on_conversion)
//     refuse them;
//   - the data address, shape and layout of each parameter (`p.data = t`, model.to(),
//     set_(), and a transposed or reshaped view of the same memory, which keeps the address);
//   - optimizer.state[p] and each state tensor in it: identity, address, and (as for the
//     parameter: `buf.t_()` keeps both) shape, layout and dtype;
//   - in the tensors the kernel walks, the negative-view bit (a real view of a conjugate's
//     imaginary part has it): the kernel reads memory, torch reads values.
//
// Anything else sends the step back to the full check in Python, which explains the
// problem or routes the tensor to torch's own code. The answer is exact: nothing here is
// inferred from reference counts or sampled.
//
// The dtype, device, sizes, strides and view bits of the parameters, gradients and state
// tensors cost four to six calls through torch's Python API per tensor (a shape read
// allocates). The front end may hand over a guard: one C++ call that compares all of them with
// the tensors of the step the plan was armed on (torch's TensorGuards: exact sizes, strides,
// dtype, device, dispatch keys, which hold the negative-view bit, requires_grad, and distinct
// objects), which it has seen tell such changes apart. When the guard says yes the per-tensor
// reads are skipped; when it says no they decide, and the guard is not asked again: it is
// stricter than they are (exact strides where the kernel needs a contiguous layout, distinct
// objects where two parameters may share a gradient they only read).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"

namespace py = pybind11;

namespace clrfast {
namespace {

// ---------------------------------------------------------------- reading torch tensors
// `grad`, `shape`, `dtype`, `is_cpu` and `is_cuda` are data descriptors (C getters) of
// torch's tensor type, found once per type and called directly.
class Getter {
 public:
  explicit Getter(const char* name) : name_(PyUnicode_InternFromString(name)) {}

  PyObject* operator()(PyObject* obj) {  // new reference, or nullptr with an error set
    PyTypeObject* type = Py_TYPE(obj);
    if (type != type_) {
      type_ = type;
      get_ = nullptr;
      PyObject* descr = _PyType_Lookup(type, name_);  // borrowed
      if (descr != nullptr && Py_IS_TYPE(descr, &PyGetSetDescr_Type)) {
        PyGetSetDef* def = reinterpret_cast<PyGetSetDescrObject*>(descr)->d_getset;
        get_ = def->get;
        closure_ = def->closure;
      }
    }
    return get_ != nullptr ? get_(obj, closure_) : PyObject_GetAttr(obj, name_);
  }

 private:
  PyObject* name_;
  PyTypeObject* type_ = nullptr;
  getter get_ = nullptr;
  void* closure_ = nullptr;
};

// A method called without arguments (is_contiguous, stride, data_ptr): its C function once
// per type, else a normal call.
class Method {
 public:
  explicit Method(const char* name) : name_(PyUnicode_InternFromString(name)) {}

  PyObject* operator()(PyObject* obj) {
    PyTypeObject* type = Py_TYPE(obj);
    if (type != type_) {
      type_ = type;
      fn_ = nullptr;
      PyObject* descr = _PyType_Lookup(type, name_);  // borrowed
      if (descr != nullptr && Py_IS_TYPE(descr, &PyMethodDescr_Type)) {
        PyMethodDef* def = reinterpret_cast<PyMethodDescrObject*>(descr)->d_method;
        flags_ = def->ml_flags;
        if ((flags_ & (METH_NOARGS | METH_VARARGS | METH_KEYWORDS | METH_O | METH_FASTCALL)) == METH_NOARGS ||
            (flags_ & (METH_VARARGS | METH_KEYWORDS | METH_FASTCALL)) == (METH_VARARGS | METH_KEYWORDS))
          fn_ = def->ml_meth;
      }
    }
    if (fn_ == nullptr) return PyObject_CallMethodNoArgs(obj, name_);
    if (flags_ & METH_NOARGS) return fn_(obj, nullptr);
    static PyObject* empty = PyTuple_New(0);
    return reinterpret_cast<PyCFunctionWithKeywords>(reinterpret_cast<void (*)(void)>(fn_))(obj, empty, nullptr);
  }

 private:
  PyObject* name_;
  PyTypeObject* type_ = nullptr;
  PyCFunction fn_ = nullptr;
  int flags_ = 0;
};

// torch exports (for inductor's generated wrappers) a C function returning a tensor's data
// address without a Python call; the front end hands it over when this torch has it.
using DataPtrFn = void* (*)(PyObject*);
DataPtrFn g_data_ptr_fn = nullptr;

// The data address of a tensor; false (no error set) when it cannot be read cheaply.
bool data_ptr(PyObject* t, int64_t* out) {
  if (g_data_ptr_fn != nullptr) {
    try {
      *out = static_cast<int64_t>(reinterpret_cast<intptr_t>(g_data_ptr_fn(t)));
      return true;
    } catch (...) {  // a tensor without storage: the full check reports it
      return false;
    }
  }
  static Method method("data_ptr");
  PyObject* r = method(t);
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  *out = PyLong_AsLongLong(r);
  Py_DECREF(r);
  if (*out == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    return false;
  }
  return true;
}

// True when calling `m` on `t` returns True; false on False or any error (cleared).
bool returns_true(Method& m, PyObject* t) {
  PyObject* r = m(t);
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  const bool yes = r == Py_True;
  Py_DECREF(r);
  return yes;
}

// True when getter/method result `r` (new reference, may be nullptr) equals `want`.
bool equals(PyObject* r, PyObject* want) {
  if (r == nullptr) {
    PyErr_Clear();
    return false;
  }
  const int eq = r == want ? 1 : PyObject_RichCompareBool(r, want, Py_EQ);
  Py_DECREF(r);
  if (eq < 0) PyErr_Clear();
  return eq == 1;
}

// Python's cyclic collector paused for the duration of a refresh: each shape read allocates a
// (GC-tracked) torch.Size, thousands per step, and every 700 allocations would run a collection
// over all live objects' youngest generation, now and then an older one. Paused, the count only
// grows, and one collection at most follows.
class GcPause {
 public:
#if PY_VERSION_HEX >= 0x030A0000
  GcPause() : was_enabled_(PyGC_Disable() == 1) {}
  ~GcPause() {
    if (was_enabled_) PyGC_Enable();
  }

 private:
  bool was_enabled_;
#endif
};

// ---------------------------------------------------------------- the plan's spec
// Per parameter, in group order (columns of `spec`; kBufs + k: address of state tensor k).
enum Col : int { kPtr = 0, kNumel, kRow, kFlags, kHash, kItem, kBufs };
constexpr int64_t kNoGrad = -1;  // had no gradient when the plan was built
constexpr int64_t kSlow = -2;    // updated by torch's code (layouts checked exactly, no table row)
// kContiguous / kStrided: the kernel walks this row in memory order, so the parameter and its
// gradient must keep that layout (contiguous, or the recorded strides). kExact (torch's code
// updates the parameter): shapes and strides exactly as checked, so that code cannot fail halfway.
enum Flag : int64_t { kContiguous = 1, kStrided = 2, kHasState = 4, kExact = 8 };

// What a StepCheck compares, recorded from a plan once its first step committed: the plan's
// kernel table and its layout, then per parameter (in group order, one add_* call each) what
// the step read, and the extents of the memory the step writes.
class StepCheckSpec {
 public:
  StepCheckSpec(py::array_t<int64_t, py::array::c_style> table, py::tuple keys, int slots, int grad_col, int n_col,
                std::vector<int> ptr_cols, bool merge, int device_index)
      : keys_(std::move(keys)), grad_col_(grad_col), n_col_(n_col), merge_(merge), device_index_(device_index) {
    if (table.ndim() != 2) throw py::value_error("StepCheckSpec: table must be 2-D");
    rows_ = table.shape(0);
    cols_ = table.shape(1);
    if (grad_col_ < 0 || grad_col_ >= cols_ || n_col_ < 0 || n_col_ >= cols_)
      throw py::value_error("StepCheckSpec: column out of range");
    is_ptr_.assign(static_cast<size_t>(cols_), false);
    for (int c : ptr_cols) {
      if (c < 0 || c >= cols_) throw py::value_error("StepCheckSpec: pointer column out of range");
      is_ptr_[static_cast<size_t>(c)] = true;
    }
    for (py::ssize_t k = 0; k < PyTuple_GET_SIZE(keys_.ptr()); ++k)
      if (!PyUnicode_Check(PyTuple_GET_ITEM(keys_.ptr(), k))) throw py::type_error("StepCheckSpec: keys must be str");
    nkeys_ = static_cast<int64_t>(PyTuple_GET_SIZE(keys_.ptr()));
    if (slots < 0 || slots > nkeys_) throw py::value_error("StepCheckSpec: slots out of range");
    nslots_ = slots;
    template_.assign(table.data(), table.data() + table.size());
  }

  void add_row(py::handle p, int64_t row, py::handle grad, py::handle state) {
    if (row < 0 || row >= rows_) throw py::value_error("StepCheckSpec.add_row: row index out of range");
    add(p, row, grad, state);
  }
  void add_slow(py::handle p, py::handle grad, py::handle state) { add(p, kSlow, grad, state); }
  void add_without_grad(py::handle p, py::handle state) { add(p, kNoGrad, py::none(), state); }
  void add_written(int64_t start, int64_t end) {
    if (end < start) throw py::value_error("StepCheckSpec.add_written: end < start");
    if (end > start) written_.emplace_back(start, end);
  }
  // make_guard(*tensors) -> a guard over them (or None); tensors: per parameter that had a
  // gradient, in group order, the parameter, its gradient and its state tensors in key order.
  // Called once every parameter was added.
  void set_guard(py::handle make_guard) {
    guard_ = py::none();
    if (!make_guard.is_none()) {
      py::object guard = make_guard(*py::tuple(guard_tensors_));
      if (!guard.is_none() && !PyCallable_Check(guard.ptr())) throw py::type_error("StepCheckSpec: a guard must be callable");
      guard_ = std::move(guard);
    }
    guard_tensors_ = py::list();  // the step's gradients are the caller's
  }

 protected:
  // The spec row of parameter p (state: its optimizer.state dict, or None when it has none).
  void add(py::handle p, int64_t row, py::handle grad, py::handle state) {
    if (tensor_type() == nullptr) throw py::value_error("StepCheckSpec: set_tensor_api was not called");
    if (!PyObject_TypeCheck(p.ptr(), tensor_type())) throw py::type_error("StepCheckSpec: parameters must be tensors");
    if (!state.is_none() && !PyDict_Check(state.ptr())) throw py::type_error("StepCheckSpec: state must be a dict or None");
    int64_t flags = kExact;
    if (row >= 0) flags = p.attr("is_contiguous")().cast<bool>() ? kContiguous : kStrided;
    if (!state.is_none()) flags |= kHasState;
    spec_.insert(spec_.end(), {p.attr("data_ptr")().cast<int64_t>(), p.attr("numel")().cast<int64_t>(), row, flags,
                               static_cast<int64_t>(py::hash(p)), p.attr("element_size")().cast<int64_t>()});
    for (int64_t k = 0; k < nkeys_; ++k) {
      py::object v = py::none();
      if (!state.is_none()) {
        PyObject* have = PyDict_GetItemWithError(state.ptr(), PyTuple_GET_ITEM(keys_.ptr(), k));  // borrowed
        if (have == nullptr && PyErr_Occurred()) throw py::error_already_set();
        if (have != nullptr) v = py::reinterpret_borrow<py::object>(have);
      }
      const bool tensor = PyObject_TypeCheck(v.ptr(), tensor_type());
      spec_.push_back(tensor ? v.attr("data_ptr")().cast<int64_t>() : 0);
      bufs_.append(v);
      buf_dtypes_.append(tensor ? py::object(v.attr("dtype")) : py::object(py::none()));
    }
    params_.append(p);
    if (row != kNoGrad) {
      guard_tensors_.append(p);
      guard_tensors_.append(grad);
      for (int64_t k = 0; k < nkeys_; ++k) {
        py::handle v = PyList_GET_ITEM(bufs_.ptr(), PyList_GET_SIZE(bufs_.ptr()) - nkeys_ + k);
        if (PyObject_TypeCheck(v.ptr(), tensor_type())) guard_tensors_.append(v);
      }
    }
    shapes_.append(p.attr("shape"));
    strides_.append(py::tuple(p.attr("stride")()));
    grad_strides_.append(grad.is_none() ? py::object(py::none()) : py::object(py::tuple(grad.attr("stride")())));
    dtypes_.append(p.attr("dtype"));
    sdicts_.append(state);
  }

  py::list params_, shapes_, strides_, grad_strides_, dtypes_, sdicts_, bufs_, buf_dtypes_;
  py::tuple keys_;
  py::list guard_tensors_;         // what set_guard describes
  py::object guard_ = py::none();  // guard(*tensors in guard_tensors_' order) -> bool
  std::vector<int64_t> spec_, template_;
  std::vector<std::pair<int64_t, int64_t>> written_;
  std::vector<bool> is_ptr_;
  int64_t nkeys_ = 0, nslots_ = 0, rows_ = 0, cols_ = 0;  // keys: nslots_ per-element slots, then scalars
  int grad_col_, n_col_;
  bool merge_;
  int device_index_;  // -1: the CPU

  static PyTypeObject* tensor_type();
};

// The check holds its own copy of the record (the template row flags change as rows gain history).
class StepCheck : private StepCheckSpec {
 public:
  explicit StepCheck(const StepCheckSpec& spec) : StepCheckSpec(spec) {
    n_ = static_cast<int64_t>(PyList_GET_SIZE(params_.ptr()));
    width_ = kBufs + nkeys_;
    std::sort(written_.begin(), written_.end());
    out_ = py::array_t<int64_t>({rows_, cols_});
    emitted_ = py::array_t<bool>(rows_);
    use_guard_ = !guard_.is_none();
  }

  ~StepCheck() { release(); }
  StepCheck(const StepCheck&) = delete;
  StepCheck& operator=(const StepCheck&) = delete;

  // This step's table into the first rows of `out`; -1 when the full check must run.
  int64_t refresh(py::handle state, py::handle live, bool grads_written) {
    const GcPause pause;
    PyObject* st = state.ptr();
    PyObject* group = live.ptr();
    release();
    if (!PyDict_Check(st) || !PyList_Check(group) || PyList_GET_SIZE(group) != n_) return -1;
    for (int64_t i = 0; i < n_; ++i)  // group["params"] edited in place
      if (PyList_GET_ITEM(group, i) != PyList_GET_ITEM(params_.ptr(), i)) return -1;
    int64_t* out = out_.mutable_data();
    bool* emitted = emitted_.mutable_data();
    std::fill(emitted, emitted + rows_, false);
    int64_t nout = 0;
    grad_spans_.clear();
    // every parameter that had a gradient has one: the guard can be asked
    bool complete = use_guard_;
    for (int64_t i = 0; i < n_; ++i) {
      const int64_t* s = &spec_[i * width_];
      PyObject* p = PyList_GET_ITEM(params_.ptr(), i);
      PyObject* g = grad_(p);
      if (g == nullptr) return fail();
      held_.push_back(g);  // held_[i]: the table points into it until release()
      const int64_t row = s[kRow];
      if (g == Py_None) {
        // torch skips a parameter without a gradient: its row is left out
        if (row == kSlow) return fail();
        complete = complete && row == kNoGrad;
        continue;
      }
      if (row == kNoGrad) return fail();  // needs state and the checks of the full path
      int64_t pptr = 0, gptr = 0;
      if (!data_ptr(p, &pptr) || pptr != s[kPtr] || !grad_ok(g, s, &gptr) || !state_ok(st, p, i, s)) return fail();
      if (grads_written && s[kNumel] > 0) grad_spans_.emplace_back(gptr, gptr + s[kNumel] * s[kItem]);
      if (row == kSlow) continue;
      const int64_t* t = &template_[row * cols_];
      if (merge_ && nout > 0 && continues(&out[(nout - 1) * cols_], t, gptr, s[kItem])) {
        out[(nout - 1) * cols_ + n_col_] += t[n_col_];
      } else {
        std::memcpy(&out[nout * cols_], t, sizeof(int64_t) * static_cast<size_t>(cols_));
        out[nout * cols_ + grad_col_] = gptr;
        ++nout;
      }
      emitted[row] = true;
    }
    if (!(complete && guard_passes()) && !layouts_ok()) return fail();
    // GradScaler's fused path writes each gradient back unscaled: two parameters sharing one
    // would have it unscaled twice, by two threads at once.
    if (grads_written) {
      std::sort(grad_spans_.begin(), grad_spans_.end());
      for (size_t k = 1; k < grad_spans_.size(); ++k)
        if (grad_spans_[k].first < grad_spans_[k - 1].second) return fail();
    }
    return nout;
  }

  // Drops the references refresh() took to this step's gradients (after the kernel ran).
  void release() {
    for (PyObject* g : held_) Py_DECREF(g);
    held_.clear();
  }

  py::array_t<int64_t> out() const { return out_; }
  bool guarded() const { return use_guard_; }
  py::array_t<bool> emitted() const { return emitted_; }

  // A column of a template row (the rule clears "state holds no history" once the kernel ran).
  void set(int64_t row, int col, int64_t value) {
    if (row < 0 || row >= rows_ || col < 0 || col >= cols_) throw py::index_error("StepCheck.set: out of range");
    template_[row * cols_ + col] = value;
  }

  static void set_tensor_api(py::handle tensor_type, uintptr_t data_ptr_fn) {
    if (!PyType_Check(tensor_type.ptr())) throw py::type_error("tensor_type must be a type");
    Py_XDECREF(reinterpret_cast<PyObject*>(tensor_type_));
    tensor_type_ = reinterpret_cast<PyTypeObject*>(tensor_type.inc_ref().ptr());
    g_data_ptr_fn = reinterpret_cast<DataPtrFn>(data_ptr_fn);
  }

 private:
  int64_t fail() {
    PyErr_Clear();
    release();
    return -1;
  }

  // The kernel walks the tensor in memory order: it must keep the shape and the dense layout the
  // plan was built with (a resize_, or `.data` set to a transposed or reshaped view of the same
  // memory, keeps the address).
  bool layout_ok(PyObject* t, int64_t i, int64_t flags, const py::list& strides) {
    if (!equals(shape_(t), PyList_GET_ITEM(shapes_.ptr(), i))) return false;
    if (flags & kContiguous) return returns_true(is_contiguous_, t);
    return equals(stride_(t), PyList_GET_ITEM(strides.ptr(), i));
  }

  // The gradient: a plain tensor whose memory (as laid out like the parameter, which
  // layouts_ok or the guard checks) meets no memory the step writes.
  bool grad_ok(PyObject* g, const int64_t* s, int64_t* gptr) {
    if (Py_TYPE(g) != tensor_type_) return false;  // subclasses (DTensor, ...) take the full check
    if (!data_ptr(g, gptr)) return false;
    const int64_t n = s[kNumel];
    if (n == 0) return true;
    return *gptr != 0 && !overlaps_written(*gptr, *gptr + n * s[kItem]);
  }

  // The guard says yes: the parameters, this step's gradients and the state tensors (the
  // recorded objects, which state_ok found in the state) have the dtypes, devices, sizes,
  // strides and view bits they had when the plan was armed. Asked no more once it says no.
  bool guard_passes() {
    std::vector<PyObject*>& args = guard_args_;
    args.clear();
    for (int64_t i = 0; i < n_; ++i) {
      PyObject* g = held_[static_cast<size_t>(i)];
      if (g == Py_None) continue;
      args.push_back(PyList_GET_ITEM(params_.ptr(), i));
      args.push_back(g);
      for (int64_t k = 0; k < nkeys_; ++k) {
        PyObject* v = PyList_GET_ITEM(bufs_.ptr(), i * nkeys_ + k);
        if (PyObject_TypeCheck(v, tensor_type_)) args.push_back(v);
      }
    }
    PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(args.size()));
    if (tuple == nullptr) {
      PyErr_Clear();
      return false;
    }
    for (size_t k = 0; k < args.size(); ++k) {
      Py_INCREF(args[k]);
      PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(k), args[k]);
    }
    PyObject* r = PyObject_Call(guard_.ptr(), tuple, nullptr);
    Py_DECREF(tuple);
    const bool yes = r == Py_True;
    Py_XDECREF(r);
    if (r == nullptr) PyErr_Clear();
    use_guard_ = use_guard_ && yes;
    return yes;
  }

  // Per tensor: each parameter keeps its shape and layout, each gradient has exactly its
  // parameter's dtype, device, shape and layout (torch's code, for slow rows, the layout it was
  // checked with), each per-element state tensor the parameter's shape (and, in kernel rows, its
  // dtype and layout), each scalar one (a step counter) its dtype. A sparse or other non-strided
  // gradient fails (is_contiguous/stride raise). The kernel reads memory as values: no tensor of
  // its rows may carry the negative-view bit.
  bool layouts_ok() {
    for (int64_t i = 0; i < n_; ++i) {
      PyObject* g = held_[static_cast<size_t>(i)];
      if (g == Py_None) continue;
      PyObject* p = PyList_GET_ITEM(params_.ptr(), i);
      const int64_t flags = spec_[i * width_ + kFlags];
      const bool row = !(flags & kExact);
      if (!layout_ok(p, i, flags, strides_) || !equals(dtype_(g), PyList_GET_ITEM(dtypes_.ptr(), i)) ||
          !on_device(g) || !layout_ok(g, i, flags, grad_strides_) || (row && (is_neg(p) || is_neg(g))))
        return false;
      for (int64_t k = 0; k < nkeys_; ++k) {
        PyObject* v = PyList_GET_ITEM(bufs_.ptr(), i * nkeys_ + k);
        if (!PyObject_TypeCheck(v, tensor_type_)) continue;
        const bool slot = k < nslots_;
        if (slot && !(row ? layout_ok(v, i, flags, strides_) : equals(shape_(v), PyList_GET_ITEM(shapes_.ptr(), i))))
          return false;
        if ((row || !slot) && !equals(dtype_(v), PyList_GET_ITEM(buf_dtypes_.ptr(), i * nkeys_ + k))) return false;
        if (row && is_neg(v)) return false;
      }
    }
    return true;
  }

  bool is_neg(PyObject* t) { return !equals(is_neg_(t), Py_False); }

  // On the plan's device: the CPU, or the CUDA device of that index.
  bool on_device(PyObject* t) {
    if (device_index_ < 0) return equals(is_cpu_(t), Py_True);
    if (!equals(is_cuda_(t), Py_True)) return false;
    PyObject* index = PyLong_FromLong(device_index_);
    const bool same = index != nullptr && equals(get_device_(t), index);
    Py_XDECREF(index);
    return same;
  }

  // The written extents (parameters and state tensors) are sorted and disjoint, so [a, b)
  // meets one of them exactly when the last one starting before b ends after a.
  bool overlaps_written(int64_t a, int64_t b) const {
    auto it = std::lower_bound(written_.begin(), written_.end(), std::make_pair(b, INT64_MIN));
    return it != written_.begin() && std::prev(it)->second > a;
  }

  bool state_ok(PyObject* state, PyObject* p, int64_t i, const int64_t* s) {
    PyObject* sd = lookup(state, p, s[kHash]);  // borrowed
    if (sd == nullptr && PyErr_Occurred()) return false;
    if (!(s[kFlags] & kHasState)) {
      // no state when the plan was built, and none may have appeared since
      return sd == nullptr || (PyDict_Check(sd) && PyDict_GET_SIZE(sd) == 0);
    }
    if (sd != PyList_GET_ITEM(sdicts_.ptr(), i) || !PyDict_Check(sd)) return false;
    for (int64_t k = 0; k < nkeys_; ++k) {
      PyObject* expect = PyList_GET_ITEM(bufs_.ptr(), i * nkeys_ + k);
      PyObject* have = PyDict_GetItemWithError(sd, PyTuple_GET_ITEM(keys_.ptr(), k));  // borrowed
      if (have == nullptr && PyErr_Occurred()) return false;
      if (expect == Py_None) {
        if (have != nullptr && have != Py_None) return false;
        continue;
      }
      int64_t ptr = 0;
      if (have != expect || !data_ptr(have, &ptr) || ptr != s[kBufs + k]) return false;
    }
    return true;
  }

  // state[p] without calling the tensor's __hash__ (Python code): the plan recorded hash(p).
  static PyObject* lookup(PyObject* state, PyObject* p, int64_t hash) {
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_GetItem_KnownHash(state, p, static_cast<Py_hash_t>(hash));
#else
    (void)hash;
    return PyDict_GetItemWithError(state, p);
#endif
  }

  // True when `row` (with gradient address gptr) continues `prev` in every address column.
  bool continues(const int64_t* prev, const int64_t* row, int64_t gptr, int64_t item) const {
    const int64_t step = prev[n_col_] * item;
    for (int64_t c = 0; c < cols_; ++c) {
      if (c == n_col_) continue;
      const int64_t v = c == grad_col_ ? gptr : row[c];
      if (is_ptr_[static_cast<size_t>(c)] ? v != prev[c] + step : v != prev[c]) return false;
    }
    return true;
  }

  int64_t n_ = 0, width_ = 0;
  bool use_guard_ = false;
  std::vector<PyObject*> guard_args_;  // borrowed, for one guard call
  std::vector<PyObject*> held_;  // this step's gradient (or None) per parameter, held until release()
  std::vector<std::pair<int64_t, int64_t>> grad_spans_;  // this step's gradients, when they are written
  py::array_t<int64_t> out_;
  py::array_t<bool> emitted_;

  friend class StepCheckSpec;
  static inline PyTypeObject* tensor_type_ = nullptr;
  static inline Getter grad_{"grad"}, dtype_{"dtype"}, is_cpu_{"is_cpu"}, is_cuda_{"is_cuda"}, shape_{"shape"};
  static inline Method is_contiguous_{"is_contiguous"}, stride_{"stride"}, get_device_{"get_device"}, is_neg_{"is_neg"};
};

PyTypeObject* StepCheckSpec::tensor_type() { return StepCheck::tensor_type_; }

}  // namespace

void bind_step_check(py::module_& m) {
  py::class_<StepCheckSpec>(m, "StepCheckSpec",
                            "What a StepCheck compares: a plan's kernel table and layout, then one add_* call "
                            "per parameter in group order, and the extents of the memory the step writes.")
      .def(py::init<py::array_t<int64_t, py::array::c_style>, py::tuple, int, int, int, std::vector<int>, bool, int>(),
           py::arg("table"), py::arg("keys"), py::arg("slots"), py::arg("grad_col"), py::arg("n_col"), py::arg("ptr_cols"),
           py::arg("merge"), py::arg("device_index"))
      .def("add_row", &StepCheckSpec::add_row, py::arg("param"), py::arg("row"), py::arg("grad"), py::arg("state"),
           "A parameter the kernel updates as template row `row` (state: its state dict or None).")
      .def("add_slow", &StepCheckSpec::add_slow, py::arg("param"), py::arg("grad"), py::arg("state"),
           "A parameter torch's code updates (its layouts are then compared exactly).")
      .def("add_without_grad", &StepCheckSpec::add_without_grad, py::arg("param"), py::arg("state"),
           "A parameter that had no gradient when the plan was built.")
      .def("add_written", &StepCheckSpec::add_written, py::arg("start"), py::arg("end"),
           "A byte range [start, end) the step writes (a parameter or a state tensor).")
      .def("set_guard", &StepCheckSpec::set_guard, py::arg("make_guard"),
           "make_guard(*tensors) -> guard or None, called once after the last add_*: tensors are, per parameter "
           "that had a gradient in group order, the parameter, its gradient and its state tensors in key order. "
           "guard(*successors) -> True only while each keeps its dtype, device, sizes, strides and view bits.");
  py::class_<StepCheck>(m, "StepCheck",
                        "Revalidates a cached fused-step plan each step and yields that step's kernel table.")
      .def(py::init<const StepCheckSpec&>(), py::arg("spec"))
      .def("refresh", &StepCheck::refresh, py::arg("state"), py::arg("params"), py::arg("grads_written"),
           "The number of rows of this step's table (the first rows of `out`), or -1 when the plan no longer "
           "describes the group.")
      .def_property_readonly("out", &StepCheck::out)
      .def_property_readonly("emitted", &StepCheck::emitted, "Template rows the last refresh put in the table.")
      .def_property_readonly("guarded", &StepCheck::guarded,
                             "Whether refresh asks the guard first (it has one, and it never said no).")
      .def("release", &StepCheck::release, "Drops the references to this step's gradients.")
      .def("set", &StepCheck::set, py::arg("row"), py::arg("col"), py::arg("value"),
           "Sets a column of a template row.");
  m.def("set_tensor_api", &StepCheck::set_tensor_api, py::arg("tensor_type"), py::arg("data_ptr_fn"),
        "torch.Tensor and torch's C function returning a tensor's data address (0: call data_ptr).");
}

}  // namespace clrfast
