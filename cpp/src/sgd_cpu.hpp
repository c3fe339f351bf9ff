// Fused multi-tensor SGD step on the CPU: threads over one flat workload,
// SIMD with runtime ISA selection.
#pragma once

#include <cstdint>

namespace clrfast {

// One (param, grad, momentum buffer) triple of n elements; pointers are raw
// addresses of contiguous storage of the same dtype. buf is 0 without momentum.
// The layout is the row of the int64 table the Python front end builds.
struct Segment {
  int64_t p, g, buf, n, dtype, first;  // first: 1 when buf is still to be initialised
};

struct StepConfig {
  double lr, momentum, dampening, weight_decay;
  double inv_scale;     // GradScaler unscaling factor, 1 without it
  bool store_grad;      // write the unscaled gradient back (GradScaler's fused contract)
  bool nesterov, maximize;
};

// Applies the update to every segment, splitting the total element count
// into `threads` contiguous ranges (fewer for small workloads).
void sgd_step_cpu(const Segment* segs, int64_t nseg, const StepConfig& cfg, int threads);

// Name of the instruction set the kernels dispatch to on this machine.
const char* sgd_cpu_isa();

}  // namespace clrfast
