// Bindings of the fused Adam / AdamW step (CPU, and CUDA when built with it).
//
// Type conversion only: the table arrives as an int64 array of raw addresses
// (see AdamSegment in adam_cpu.hpp), so this module never links libtorch.
// Kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "adam_cpu.hpp"
#include "bindings.hpp"
#ifdef CLRFAST_WITH_CUDA
#include "adam_cuda.hpp"
#endif

namespace py = pybind11;

namespace clrfast {

// Defined in adam_cpu.cpp: adam_step_cpu with a tensor lr's dtype code.
void adam_step_cpu_lr(const AdamSegment* segs, int64_t nseg, const AdamConfig& cfg, int32_t lr_dtype, int threads);

namespace {

constexpr int kAdamCols = static_cast<int>(sizeof(AdamSegment) / sizeof(int64_t));

const AdamSegment* adam_segments_of(const py::array& table, int64_t* count, bool amsgrad) {
  const AdamSegment* segs = segment_rows<AdamSegment>(table, count);
  for (int64_t i = 0; i < *count; ++i) {
    const AdamSegment& s = segs[i];
    const std::string row = " in row " + std::to_string(i);
    if (s.dtype < 0 || s.dtype > 3) throw py::value_error("segments: unknown dtype code" + row);
    if (s.step_dtype < 0 || s.step_dtype > 1) throw py::value_error("segments: unknown step dtype code" + row);
    if (s.n < 0) throw py::value_error("segments: negative length" + row);
    // The step scalar is advanced even for an empty parameter, as torch does.
    if (s.step == 0) throw py::value_error("segments: null step pointer" + row);
    if (s.n > 0 && (s.p == 0 || s.g == 0 || s.m == 0 || s.v == 0 || (amsgrad && s.vmax == 0)))
      throw py::value_error("segments: null pointer" + row);
  }
  return segs;
}

void adam_step(const py::array& table, double lr, double beta1, double beta2, double eps, double weight_decay,
               bool decoupled, bool amsgrad, bool maximize, double inv_scale, bool store_grad, int threads,
               uintptr_t sqrt_f32, uintptr_t sqrt_f64, uintptr_t sqrt_threads_local, int lr_dtype) {
  if (lr_dtype < 0 || lr_dtype > 3) throw py::value_error("lr_dtype: unknown dtype code " + std::to_string(lr_dtype));
  int64_t n = 0;
  const AdamSegment* segs = adam_segments_of(table, &n, amsgrad);
  AdamConfig cfg{lr,
                 beta1,
                 beta2,
                 eps,
                 weight_decay,
                 inv_scale,
                 decoupled,
                 amsgrad,
                 maximize,
                 store_grad,
                 reinterpret_cast<VecSqrtF32>(sqrt_f32),
                 reinterpret_cast<VecSqrtF64>(sqrt_f64),
                 reinterpret_cast<int (*)(int)>(sqrt_threads_local)};
  if (threads < 1) threads = 1;
  py::gil_scoped_release release;
  adam_step_cpu_lr(segs, n, cfg, static_cast<int32_t>(lr_dtype), threads);
}

}  // namespace

void bind_adam(py::module_& m) {
  m.def("adam_step", &adam_step, py::arg("segments"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("amsgrad"), py::arg("maximize"),
        py::arg("inv_scale"), py::arg("store_grad"), py::arg("threads"), py::arg("sqrt_f32") = 0,
        py::arg("sqrt_f64") = 0, py::arg("sqrt_threads_local") = 0, py::arg("lr_dtype") = 1,
        "Fused Adam (decoupled=False) / AdamW (decoupled=True) step on the CPU over an int64 segment table "
        "(rows p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, n, dtype, step, step_dtype). Increments each row's "
        "step scalar, then updates. sqrt_f32/sqrt_f64: 0 for IEEE sqrt, or the address of a vector square root "
        "with MKL VML's Fortran convention (vssqrt_/vdsqrt_), e.g. the one torch's sqrt uses, for bit parity "
        "with torch's foreach=False/True paths on float32/float64. sqrt_threads_local: 0, or the address of "
        "mkl_set_num_threads_local, so each worker calls the routine single-threaded. lr_dtype: the dtype code of a "
        "tensor lr (0 float32, 2 bfloat16, 3 float16), whose 0-d ops torch computes lr*weight_decay, "
        "1 - lr*weight_decay and lr / (1 - beta1**step) in; 1 (float64, the default) for a Python-float lr.");
  m.attr("adam_segment_cols") = kAdamCols;
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
