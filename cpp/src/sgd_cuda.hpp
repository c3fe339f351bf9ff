// Fused SGD step on a CUDA stream. Host-side entry point; the kernels live in
// sgd_cuda.cu and share clrfast/sgd_update.hpp and clrfast/schedule.hpp.
#pragma once

#include <cstdint>
#include <string>

#include "clrfast/schedule.hpp"
#include "rule_row.hpp"

namespace clrfast {

// The SGD rule's table row (momentum_buffer is s[0]).
using Segment = RuleRow<1>;

// All pointers are device pointers except `stream` (a cudaStream_t).
struct CudaStepArgs {
  const Schedule* schedule;  // the compiled schedule, copied to device memory
  int64_t* step;             // device step counter, advanced by the step itself
  Segment* segs;             // nseg rows; `fresh` is cleared on the device after a step
  int64_t nseg, max_n;       // max_n: the longest segment
  double momentum, dampening, weight_decay;
  bool nesterov, maximize;
  const float* grad_scale;  // null, or GradScaler's scale (grads are divided by it)
  const float* found_inf;   // null, or nonzero when the step must be skipped
  double* lrmom_out;        // null, or 2 doubles: lr and momentum of the next step
  void* stream;
};

// Enqueues the step; returns an error message, empty on success. Never
// synchronizes with the host, so it can be captured in a CUDA graph.
std::string sgd_step_cuda(const CudaStepArgs& a);

}  // namespace clrfast
