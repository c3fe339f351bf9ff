// Batch evaluation of a schedule into an array: lr or momentum at steps
// first..first+n-1, or at an arbitrary list of steps.
#pragma once

#include <cstdint>

#include "clrfast/schedule.hpp"

namespace clrfast {

enum class Quantity : int32_t { Lr = 0, Momentum = 1 };

// Below this many steps a table is filled on the calling thread only.
constexpr int64_t kParallelTableMin = 1 << 16;

template <typename T>
void table_range(const Schedule& s, Quantity q, int64_t first, int64_t n, T* out, int threads);

template <typename T>
void table_steps(const Schedule& s, Quantity q, const int64_t* steps, int64_t n, T* out, int threads);

}  // namespace clrfast
