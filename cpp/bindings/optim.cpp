// Bindings of the fused SGD step (CPU, and CUDA when built with it).
//
// The torch front end passes raw data pointers as integers in an int64 table,
// one row per (param, grad, buffer) segment, so this module never links
// libtorch. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstddef>
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
  m.attr("sgd_segment_cols") = kSegCols;
  // The columns of a Segment row, the one source of the front end's (python/clrfast/torch/optim.py).
  py::dict cols;
  cols["p"] = static_cast<int>(offsetof(Segment, p) / sizeof(int64_t));
  cols["g"] = static_cast<int>(offsetof(Segment, g) / sizeof(int64_t));
  cols["momentum_buffer"] = static_cast<int>(offsetof(Segment, buf) / sizeof(int64_t));
  cols["n"] = static_cast<int>(offsetof(Segment, n) / sizeof(int64_t));
  cols["dtype"] = static_cast<int>(offsetof(Segment, dtype) / sizeof(int64_t));
  cols["first"] = static_cast<int>(offsetof(Segment, first) / sizeof(int64_t));
  m.attr("sgd_segment_layout") = cols;
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
