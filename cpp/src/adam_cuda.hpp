// Fused Adam / AdamW step on a CUDA stream. Host-side entry point; the
// kernels live in adam_cuda.cu and share clrfast/adam_update.hpp and
// clrfast/schedule.hpp with the CPU.
#pragma once

#include <cstdint>
#include <string>

#include "clrfast/schedule.hpp"

namespace clrfast {

// One row of the device segment table: the CPU table's row (RuleRow<3> of the Adam rule,
// cpp/src/rule_cpu.hpp), copied to the device: p, g, exp_avg, exp_avg_sq, max_exp_avg_sq
// (0 without amsgrad), n, dtype, step address, step dtype.
struct AdamSegment {
  int64_t p, g, m, v, vmax, n, dtype, step, step_dtype;
};

// All pointers are device pointers except `stream` (a cudaStream_t). The
// segment rows hold device addresses, step scalars included.
struct AdamCudaArgs {
  const Schedule* schedule;  // the compiled schedule, copied to device memory
  int64_t* clock;            // the optimizer's step counter: lr(t), beta1(t) are read at t = *clock
  const AdamSegment* segs;   // nseg rows
  int64_t nseg, max_n;       // max_n: the longest segment
  double beta1;              // used when the schedule defines no momentum
  double beta2, eps, weight_decay;
  bool decoupled, amsgrad, maximize;
  const float* grad_scale;  // null, or GradScaler's scale (grads are divided by it and stored back)
  const float* found_inf;   // null, or nonzero when the step must be skipped
  double* hyper_out;        // null, or 2 doubles: lr and beta1 of the next step
  void* stream;
};

// Enqueues the step; returns an error message, empty on success. Never
// synchronizes with the host, so it can be captured in a CUDA graph.
std::string adam_step_cuda(const AdamCudaArgs& a);

}  // namespace clrfast
