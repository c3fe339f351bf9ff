// Shared pieces of the CPU kernels: runtime ISA selection for the element
// loops and the split of a multi-segment workload across the thread pool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "thread_pool.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// Entry points are compiled three times (AVX-512, AVX2+FMA, baseline x86-64)
// and the loader picks one from the CPU's features. flatten: GCC's inliner
// budget runs out across many loop instantiations, and a loop whose element
// update stays a call does not vectorize.
#define CLRFAST_CPU_CLONES __attribute__((flatten, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLRFAST_CPU_CLONES
#endif
#if defined(__GNUC__)
#define CLRFAST_CPU_INLINE __attribute__((always_inline)) inline
#else
#define CLRFAST_CPU_INLINE inline
#endif

namespace clrfast {

// Below this many elements per extra thread, waking a worker costs more
// than it saves.
constexpr int64_t kCpuGrain = 1 << 16;
// Range boundaries fall on multiples of this many elements, so two threads
// never write the same cache line of a float32 segment.
constexpr int64_t kCpuAlign = 64;

// Calls fn(segment, begin, end) over the concatenation of `nseg` segments of
// lengths len(i), cut into at most `threads` contiguous ranges. Every element
// is visited exactly once; a segment may be shared by two ranges.
template <typename Len, typename Fn>
void for_each_segment_range(int64_t nseg, Len len, int threads, Fn fn) {
  std::vector<int64_t> start(static_cast<size_t>(nseg) + 1, 0);
  for (int64_t i = 0; i < nseg; ++i) start[i + 1] = start[i] + len(i);
  const int64_t total = start[nseg];
  if (total == 0) return;
  auto work = [&](int64_t lo, int64_t hi) {
    int64_t i = std::upper_bound(start.begin(), start.end(), lo) - start.begin() - 1;
    for (; i < nseg && start[i] < hi; ++i) {
      const int64_t b = std::max(lo, start[i]) - start[i];
      const int64_t e = std::min(hi, start[i + 1]) - start[i];
      if (e > b) fn(i, b, e);
    }
  };
  const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, total / kCpuGrain)));
  if (parts == 1) {
    work(0, total);
    return;
  }
  const int64_t chunks = (total + kCpuAlign - 1) / kCpuAlign;
  ThreadPool::instance().run(chunks, parts, [&](int64_t b, int64_t e) {
    work(b * kCpuAlign, std::min(total, e * kCpuAlign));
  });
}

// Name of the instruction set the cloned entry points dispatch to on this machine.
inline const char* cpu_isa() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
  return "baseline";
#else
  return "baseline";
#endif
}

}  // namespace clrfast
