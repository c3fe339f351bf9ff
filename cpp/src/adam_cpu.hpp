// Fused multi-tensor Adam / AdamW step on the CPU (threads + SIMD with
// runtime ISA selection), bit-identical to torch.optim.Adam / AdamW with
// foreach=False on the CPU for float32 and float64.
#pragma once

#include <cstdint>

namespace clrfast {

// One row of the int64 segment table the Python front end builds: one
// parameter (or a contiguous piece of one) and its state, all contiguous
// storage of the same dtype with n elements.
//   p, g, m, v  addresses of param, grad, exp_avg, exp_avg_sq
//   vmax        address of max_exp_avg_sq; 0 when amsgrad is off
//   n           element count
//   dtype       0 float32, 1 float64, 2 bfloat16, 3 float16 (as the SGD table)
//   step        address of the parameter's 0-d `step` tensor (state['step'])
//   step_dtype  0 float32, 1 float64 (torch's scalar dtype follows the default dtype)
// The step scalar is incremented once per call before any element is
// updated, and the bias corrections use the incremented count. Consecutive
// rows with the same step address (one parameter cut into pieces) share one
// increment; every other row must have a step scalar of its own.
struct AdamSegment {
  int64_t p, g, m, v, vmax, n, dtype, step, step_dtype;
};

// A vector square root with MKL VML's Fortran calling convention
// (vssqrt_/vdsqrt_ with 32-bit MKL_INT): out[i] = sqrt(in[i]) for i < *n.
using VecSqrtF32 = void (*)(const int* n, const float* in, float* out);
using VecSqrtF64 = void (*)(const int* n, const double* in, double* out);

struct AdamConfig {
  double lr, beta1, beta2, eps, weight_decay;
  double inv_scale;  // GradScaler unscaling factor, 1 without it
  bool decoupled;    // AdamW's decay (p *= 1 - lr*wd) instead of Adam's L2 (g += wd*p)
  bool amsgrad, maximize;
  bool store_grad;  // write the unscaled gradient back (GradScaler's fused contract)
  // Square roots of float32 / float64 segments; null: IEEE sqrt inside the
  // fused loop. torch's CPU sqrt is MKL's where torch has MKL, and bit parity
  // with torch needs the same routine (see clrfast/adam_update.hpp).
  VecSqrtF32 sqrt_f32;
  VecSqrtF64 sqrt_f64;
  // Null, or a function that sets the calling thread's thread count of the
  // sqrt routines and returns the previous one (mkl_set_num_threads_local).
  // Each worker sets 1 around its range: the routine is called on small
  // blocks from threads of our pool, and letting it start its own OpenMP team
  // from every one of them oversubscribes the cores many times over.
  int (*sqrt_threads_local)(int);
};

// Increments every step scalar, then updates every segment, splitting the
// total element count into at most `threads` contiguous ranges.
void adam_step_cpu(const AdamSegment* segs, int64_t nseg, const AdamConfig& cfg, int threads);

}  // namespace clrfast
