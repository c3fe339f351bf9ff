// The CUDA step of every declared rule (rule_launch.hpp's kernels, compiled in rule_cuda.cu).
#pragma once

#include <string>

#include "rule_launch.hpp"

namespace clrfast {

// Enqueues one step of rule R on `stream` (a cudaStream_t); every pointer in `a` is device
// memory. Returns an error message, empty on success. Never synchronizes with the host.
template <class R>
std::string rule_step_cuda(const launch::Args<R>& a, void* stream);

}  // namespace clrfast
