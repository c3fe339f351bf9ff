#include "rule_emulate.hpp"

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

#include "rules.hpp"

namespace clrfast {
namespace {

// Checked memory: an access outside [0, n) of its array, or through a null address, throws.
struct Checked {
  static void check(int64_t i, int64_t n) {
    if (i < 0 || i >= n) throw std::out_of_range("index " + std::to_string(i) + " outside [0, " + std::to_string(n) + ")");
  }
  template <typename T>
  static T& elem(int64_t addr, int64_t i, int64_t n) {
    check(i, n);
    if (addr == 0) throw std::out_of_range("access through a null address at index " + std::to_string(i));
    ++accesses;
    return reinterpret_cast<T*>(addr)[i];
  }
  static thread_local int64_t accesses;
};
thread_local int64_t Checked::accesses = 0;

// The index arithmetic alone: checked and counted, then a scratch value stands in for memory.
struct Dry {
  static void check(int64_t i, int64_t n) { Checked::check(i, n); }
  template <typename T>
  static T& elem(int64_t, int64_t i, int64_t n) {
    check(i, n);
    ++Checked::accesses;
    static thread_local T scratch;
    scratch = T(1);
    return scratch;
  }
};

std::vector<int64_t> order(int64_t n, std::mt19937_64* rng) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  if (rng != nullptr) std::shuffle(v.begin(), v.end(), *rng);
  return v;
}

template <class R, class M>
void run(const launch::Args<R>& a, const EmulateOptions& o, EmulateStats* st) {
  using namespace launch;
  std::mt19937_64 gen(o.seed);
  std::mt19937_64* rng = o.seed != 0 ? &gen : nullptr;
  // A per-row kernel: its grid, every thread, in the drawn order.
  auto per_row = [&](auto body) {
    for (int64_t i : order(row_blocks(a.nrows) * kRowThreads, rng)) body(i);
  };
  prologue<R, M>(a);
  per_row([&](int64_t i) { coefs<R, M>(a, i); });
  const int64_t cap = o.max_blocks < 1 ? 1 : o.max_blocks < kMaxBlocks ? o.max_blocks : kMaxBlocks;
  const int64_t blocks = a.nchunks < 1 ? 1 : a.nchunks < cap ? a.nchunks : cap;
  st->blocks = blocks;
  std::vector<int64_t> bs = o.only_blocks.empty() ? order(blocks, rng) : o.only_blocks;
  Checked::accesses = 0;
  for (int64_t b : bs) {
    Checked::check(b, blocks);
    for (int64_t t : order(kThreads, rng)) update<R, M>(a, b, blocks, static_cast<int>(t));
  }
  st->accesses = Checked::accesses;
  per_row([&](int64_t i) { steps<R, M>(a, i); });
  clock<R, M>(a);
}

}  // namespace

template <class R>
EmulateStats emulate_step(const launch::Args<R>& a, const EmulateOptions& o) {
  EmulateStats st;
  if (o.dry)
    run<R, Dry>(a, o, &st);
  else
    run<R, Checked>(a, o, &st);
  return st;
}

// One instantiation per rule of rules.hpp (as rules_cpu.cpp's definitions).
#define CLRFAST_EMULATE(R) template EmulateStats emulate_step<R>(const launch::Args<R>&, const EmulateOptions&);
CLRFAST_FOR_EACH_RULE(CLRFAST_EMULATE)
#undef CLRFAST_EMULATE

}  // namespace clrfast
