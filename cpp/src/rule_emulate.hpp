// The CUDA step (rule_launch.hpp) executed on the CPU: the same kernel bodies, run over the same
// grid one block and one thread at a time, in an order drawn from a seed, with every element
// and table index checked against its row's extent. Kernels in one stream run one after the
// other, as on the device; within a kernel no order is assumed, so a result that depends on
// the order (a race) differs between seeds.
#pragma once

#include <cstdint>
#include <vector>

#include "rule_launch.hpp"

namespace clrfast {

struct EmulateOptions {
  uint64_t seed = 0;  // 0: blocks and threads in index order; else a permutation drawn from it
  // Only the index arithmetic: every access is checked and counted but reads and writes a
  // scratch value, so a row may describe more memory than exists (a segment of 2^31 elements).
  bool dry = false;
  int64_t max_blocks = launch::kMaxBlocks;  // the update grid's cap (smaller: more chunks per block)
  std::vector<int64_t> only_blocks;         // non-empty: run only these update blocks
};

struct EmulateStats {
  int64_t blocks = 0;    // the update grid
  int64_t accesses = 0;  // element accesses of the update kernel
};

// Runs the five kernels of one step of rule R. Throws std::out_of_range on an index outside
// its row or table.
template <class R>
EmulateStats emulate_step(const launch::Args<R>& a, const EmulateOptions& o);

}  // namespace clrfast
