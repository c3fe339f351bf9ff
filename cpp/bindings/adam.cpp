// Binding of the fused Adam / AdamW step on CUDA. (The CPU step is the declared rule
// "adam" of the engine: _core.adam_step, cpp/bindings/rules.cpp.)
//
// Type conversion only: the table arrives as device addresses, so this module never links
// libtorch. The kernel is enqueued with the GIL released.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings.hpp"
#ifdef CLRFAST_WITH_CUDA
#include "adam_cuda.hpp"
#endif

namespace py = pybind11;

namespace clrfast {

void bind_adam([[maybe_unused]] py::module_& m) {
#ifdef CLRFAST_WITH_CUDA
  m.def(
      "adam_step_cuda",
      [](uintptr_t schedule, uintptr_t clock, uintptr_t segs, int64_t nseg, int64_t max_n, double beta1,
         double beta2, double eps, double weight_decay, bool decoupled, bool amsgrad, bool maximize,
         uintptr_t grad_scale, uintptr_t found_inf, uintptr_t hyper_out, uintptr_t stream) {
        AdamCudaArgs a{};
        a.schedule = reinterpret_cast<const Schedule*>(schedule);
        a.clock = reinterpret_cast<int64_t*>(clock);
        a.segs = reinterpret_cast<const AdamSegment*>(segs);
        a.nseg = nseg;
        a.max_n = max_n;
        a.beta1 = beta1;
        a.beta2 = beta2;
        a.eps = eps;
        a.weight_decay = weight_decay;
        a.decoupled = decoupled;
        a.amsgrad = amsgrad;
        a.maximize = maximize;
        a.grad_scale = reinterpret_cast<const float*>(grad_scale);
        a.found_inf = reinterpret_cast<const float*>(found_inf);
        a.hyper_out = reinterpret_cast<double*>(hyper_out);
        a.stream = reinterpret_cast<void*>(stream);
        std::string err;
        {
          py::gil_scoped_release release;
          err = adam_step_cuda(a);
        }
        if (!err.empty()) throw std::runtime_error("CUDA Adam step: " + err);
      },
      "Fused Adam/AdamW step on the caller's CUDA stream over a device copy of the segment table; lr and beta1 "
      "computed on the device from *clock (the schedule's momentum, else beta1). Each row's step scalar and the "
      "clock advance unless *found_inf is nonzero. No host synchronization.");
#endif
}

}  // namespace clrfast
