// Bindings shared by the fused optimizers (schedule values, threads, ISA) and the CUDA SGD step.
// The CPU steps of every rule, SGD included, are cpp/bindings/rules.cpp's.
//
// The torch front end passes raw data pointers as integers in an int64 table, so this
// module never links libtorch. Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bindings.hpp"
#include "clrfast/schedule.hpp"
#include "clrfast/sgd_update.hpp"
#include "cpu_dispatch.hpp"
#include "thread_pool.hpp"
#ifdef CLRFAST_WITH_CUDA
#include "sgd_cuda.hpp"
#endif

namespace py = pybind11;

namespace clrfast {

void bind_optim(py::module_& m) {
  m.def("sgd_hyper", [](const Schedule& s, int64_t step, double momentum) {
    const LrMom v = group_values_at(s, static_cast<double>(step), momentum);
    return py::make_tuple(v.lr, v.momentum);
  }, py::arg("schedule"), py::arg("step"), py::arg("momentum"),
     "(lr, momentum) of `step`; the schedule's momentum, else `momentum`.");
  m.def("cpu_isa", &cpu_isa, "Instruction set the CPU kernels dispatch to.");
  m.def("hardware_threads", &ThreadPool::hardware_threads);
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
