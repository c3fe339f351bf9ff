// The CUDA step of every declared rule as host+device code: the launch geometry, the chunk
// table and the five kernel bodies. rule_cuda.cu wraps the bodies in __global__ functions;
// rule_emulate.cpp runs the very same bodies on the CPU over the launch grid, so everything
// here but the hardware is tested without a GPU. No CUDA header is needed.
//
// One step is five launches on one stream, each reading what the previous one wrote:
//   prologue (1 thread)      found_inf -> skip; 1/grad_scale; the scalars with lr and momentum
//                            from hyper_out (the values the group shows), else from the schedule
//                            at *clock; the variant. Written to the workspace.
//   coefs (one per row)      each row's Coef from the step it is about to take (its counter + 1)
//   update (the grid)        a block per chunk of kChunk elements (a grid-stride loop over the
//                            chunk table), threads kThreads apart, so loads coalesce
//   steps (one per row)      each step counter + 1 (once per run of rows sharing one), fresh = 0
//   clock (1 thread)         *clock + 1 and the next step's lr and momentum
// A skipped step (GradScaler's found_inf) changes nothing, clocks included, as torch's fused
// optimizers. No kernel reads a host value that changes between steps, so a step can be
// captured in a CUDA graph and replayed. Element indices are int64 throughout: a segment may
// exceed 2^31 elements and the table 65,535 rows.
//
// Memory is reached through a policy M: M::elem<T>(addr, i, n) is element i of the n-element
// array at addr, M::check(i, n) guards a table index; the device's is a plain access, the
// emulator's checks every index and can run the index arithmetic without memory.
#pragma once

#include <cstdint>
#include <utility>

#include "clrfast/adam_update.hpp"
#include "clrfast/macros.hpp"
#include "clrfast/schedule.hpp"
#include "clrfast/sgd_update.hpp"
#include "rule_row.hpp"
#include "rule_traits.hpp"

namespace clrfast {
namespace launch {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
// Elements a thread loads before it updates them (a divisor of kPerThread). Measured on an H200
// (bench/bench_cuda.py, GPT-2 small's 124 M parameters): SGD's step moves from 1.35x to 1.28x the
// bandwidth floor with 4; Adam's, with its root and division per element, from 1.25x to 1.76x,
// so the rules with a root load one element at a time.
template <class R>
constexpr int ilp() {
  return R::kRoot ? 1 : 4;
}
constexpr int64_t kChunk = int64_t{kThreads} * kPerThread;  // elements per chunk
constexpr int64_t kMaxBlocks = int64_t{1} << 20;            // the update grid's cap (x is 2^31 - 1)
constexpr int kRowThreads = 256;                            // threads per block of the per-row kernels

// A chunk: rows[seg], elements [chunk * kChunk, min(n, (chunk + 1) * kChunk)).
struct Chunk {
  int32_t seg, chunk;
};

template <class R>
using Row = RuleRow<static_cast<int>(R::kSlots.size())>;

// The workspace the prologue and coefs kernels write, one per plan in device memory.
template <class R>
struct State {
  double sc[R::kScalars.size()];  // this step's scalars
  double inv_scale;
  int32_t variant;
  int32_t skip;
};
template <class R>
struct CoefPair {
  typename R::template Coef<float> f;
  typename R::template Coef<double> d;
};

// What one step reads; every pointer is device memory.
template <class R>
struct Args {
  Row<R>* rows;                   // nrows rows (fresh is cleared after the step)
  int64_t nrows;
  const Chunk* chunks;            // nchunks chunks (chunk_table)
  int64_t nchunks;
  const double* scalars;          // the rule's scalars (lr and momentum: see lr_index)
  const Schedule* schedule;       // null: scalars' lr and momentum are used as they are
  int64_t* clock;                 // the group's step count (with a schedule): lr(t) at t = *clock
  int32_t lr_index;               // the scalar the schedule's lr replaces (-1: none)
  int32_t momentum_index;         // the scalar its momentum replaces, where it defines one (-1: none)
  double inv_scale;               // used without grad_scale
  const float* grad_scale;        // null, or GradScaler's scale: gradients are multiplied by 1 / scale
  const float* found_inf;         // null, or nonzero to skip the step
  bool store_grad;                // store the unscaled gradient back
  double* hyper_out;              // null, or 2 doubles: this step's lr and momentum, then the next one's
  State<R>* state;                // workspace
  CoefPair<R>* coefs;             // workspace, nrows entries
};

// The workspace of `nrows` rows: a State, then the rows' coefficients.
template <class R>
constexpr int64_t coefs_offset() {
  return (static_cast<int64_t>(sizeof(State<R>)) + 63) / 64 * 64;
}
template <class R>
constexpr int64_t workspace_bytes(int64_t nrows) {
  return coefs_offset<R>() + nrows * static_cast<int64_t>(sizeof(CoefPair<R>));
}

// Blocks of the update grid and of a per-row kernel.
inline int64_t update_blocks(int64_t nchunks) { return nchunks < 1 ? 1 : nchunks < kMaxBlocks ? nchunks : kMaxBlocks; }
inline int64_t row_blocks(int64_t nrows) {
  const int64_t b = (nrows + kRowThreads - 1) / kRowThreads;
  return b < 1 ? 1 : b;
}

// The chunks of rows of these lengths. Returns false when a row or a chunk index would not fit
// in int32 (2^31 rows, or a row of 2^43 elements).
template <class Push>
bool chunk_table(const int64_t* n, int64_t nrows, Push push) {
  if (nrows > INT32_MAX) return false;
  for (int64_t i = 0; i < nrows; ++i) {
    const int64_t c = (n[i] + kChunk - 1) / kChunk;
    if (c > INT32_MAX) return false;
    for (int64_t k = 0; k < c; ++k) push(Chunk{static_cast<int32_t>(i), static_cast<int32_t>(k)});
  }
  return true;
}

// The step count a row's coefficients use: its counter plus one in the counter's dtype
// (torch's `step_t += 1`); 0 for a rule without counters, as the CPU engine.
template <class R, class M>
CLRFAST_HD double next_count(const Row<R>& r) {
  if (!R::kStep) return 0.0;
  if (r.step_dtype == 1) return M::template elem<double>(r.step, 0, 1) + 1.0;
  return static_cast<double>(M::template elem<float>(r.step, 0, 1) + 1.0f);
}

template <class R, class M>
CLRFAST_HD void prologue(const Args<R>& a) {
  State<R>& s = *a.state;
  s.skip = a.found_inf != nullptr && *a.found_inf != 0.0f;
  if (s.skip) return;
  // GradScaler's scales are powers of two, so 1 / scale times g is g / scale exactly.
  s.inv_scale = a.grad_scale != nullptr ? 1.0 / static_cast<double>(*a.grad_scale) : a.inv_scale;
  for (int k = 0; k < static_cast<int>(R::kScalars.size()); ++k) s.sc[k] = a.scalars[k];
  if (a.schedule != nullptr) {
    // With hyper_out the step applies the values it holds, the ones the group shows: written by the
    // previous step's clock kernel (from the schedule then in place) or by the host. So a schedule
    // swapped in between steps takes over from the next value on, as on the CPU.
    const LrMom h = a.hyper_out != nullptr ? LrMom{a.hyper_out[0], a.hyper_out[1]}
                                           : schedule_at(*a.schedule, static_cast<double>(*a.clock));
    if (a.lr_index >= 0) s.sc[a.lr_index] = h.lr;
    if (a.momentum_index >= 0 && h.momentum == h.momentum) s.sc[a.momentum_index] = h.momentum;
  }
  s.variant = R::variant(s.sc);
}

// Row i's coefficients (thread i of the grid).
template <class R, class M>
CLRFAST_HD void coefs(const Args<R>& a, int64_t i) {
  const State<R>& s = *a.state;
  if (s.skip || i >= a.nrows) return;
  const Row<R>& r = a.rows[i];
  const double t = next_count<R, M>(r);
  if (r.dtype == static_cast<int64_t>(DType::F64))
    a.coefs[i].d = R::template coef<double>(s.sc, t, s.inv_scale);
  else
    a.coefs[i].f = R::template coef<float>(s.sc, t, s.inv_scale);
}

// One element's values in registers: the parameter, the (unscaled) gradient, the state slots used,
// and the unscaled gradient as loaded where the step stores it back.
template <class R, DType D>
struct Lane {
  using Acc = typename Storage<D>::acc;
  Acc p, g, g0, s[3];
};

// Elements [base, base + ilp<R>() * kThreads) of row r, kThreads apart, below `end`: all loads first,
// then the updates, then the stores, so the loads of a thread are in flight together (the
// pointers of one row never alias, but the compiler cannot know it). Each element is updated as
// the CPU engine's loop (rule_cpu.hpp) updates it, with the IEEE root.
template <class R, int V, DType D, bool STORE, class M>
CLRFAST_HD void lanes(const Row<R>& r, int64_t base, int64_t end,
                      const typename R::template Coef<typename Storage<D>::acc>& c) {
  using S = Storage<D>;
  using T = typename S::type;
  constexpr int K = static_cast<int>(R::kSlots.size());
  constexpr int kIlp = ilp<R>();
  Lane<R, D> e[kIlp] = {};  // zeroed: lanes past `end` are never read, but the compiler cannot tell
  CLRFAST_UNROLL
  for (int j = 0; j < kIlp; ++j) {
    const int64_t i = base + int64_t{j} * kThreads;
    if (i >= end) break;
    e[j].p = S::load(M::template elem<T>(r.p, i, r.n));
    e[j].g0 = S::load(M::template elem<T>(r.g, i, r.n)) * c.inv_scale;
    e[j].g = e[j].g0;
    for (int k = 0; k < 3; ++k) e[j].s[k] = 0;
    for (int k = 0; k < K; ++k)
      if (R::uses(V, k)) e[j].s[k] = S::load(M::template elem<T>(r.s[k], i, r.n));
  }
  CLRFAST_UNROLL
  for (int j = 0; j < kIlp; ++j) {
    if (base + int64_t{j} * kThreads >= end) break;
    const auto x = R::template pre<V>(e[j].p, e[j].g, e[j].s, c);
    R::template post<V>(e[j].p, e[j].g, e[j].s, R::kRoot ? ieee_sqrt(x) : x, c);
  }
  CLRFAST_UNROLL
  for (int j = 0; j < kIlp; ++j) {
    const int64_t i = base + int64_t{j} * kThreads;
    if (i >= end) break;
    if constexpr (rule_detail::GradOut<R>::at(V))
      M::template elem<T>(r.g, i, r.n) = S::store(e[j].g);
    else if (STORE)
      M::template elem<T>(r.g, i, r.n) = S::store(e[j].g0);
    for (int k = 0; k < K; ++k)
      if (R::uses(V, k)) M::template elem<T>(r.s[k], i, r.n) = S::store(e[j].s[k]);
    M::template elem<T>(r.p, i, r.n) = S::store(e[j].p);
  }
}

// Thread `t`'s elements of chunk [begin, end) of row r.
template <class R, int V, DType D, bool STORE, class M>
CLRFAST_HD void chunk_range(const Row<R>& r, int64_t begin, int64_t end, int t,
                            const typename R::template Coef<typename Storage<D>::acc>& c) {
  for (int64_t base = begin + t; base < end; base += int64_t{ilp<R>()} * kThreads)
    lanes<R, V, D, STORE, M>(r, base, end, c);
}

template <class R, DType D, bool STORE, class M, int... V>
CLRFAST_HD void chunk_variants(std::integer_sequence<int, V...>, int v, const Row<R>& r, int64_t begin, int64_t end,
                               int t, const typename R::template Coef<typename Storage<D>::acc>& c) {
  ((v == V ? chunk_range<R, V, D, STORE, M>(r, begin, end, t, c) : void()), ...);
}

template <class R, DType D, class M>
CLRFAST_HD void chunk_typed(bool store, int v, const Row<R>& r, int64_t begin, int64_t end, int t,
                            const typename R::template Coef<typename Storage<D>::acc>& c) {
  constexpr auto vs = std::make_integer_sequence<int, rule_detail::DeviceVariants<R>::count>{};
  if (store)
    chunk_variants<R, D, true, M>(vs, v, r, begin, end, t, c);
  else
    chunk_variants<R, D, false, M>(vs, v, r, begin, end, t, c);
}

// Thread t of block b of a grid of `blocks`: its share of chunks b, b + blocks, ...
template <class R, class M>
CLRFAST_HD void update(const Args<R>& a, int64_t b, int64_t blocks, int t) {
  const State<R>& s = *a.state;
  if (s.skip) return;
  for (int64_t k = b; k < a.nchunks; k += blocks) {
    const Chunk ch = a.chunks[k];
    M::check(ch.seg, a.nrows);
    const Row<R>& r = a.rows[ch.seg];
    const int64_t begin = static_cast<int64_t>(ch.chunk) * kChunk;
    const int64_t end = r.n - begin < kChunk ? r.n : begin + kChunk;
    M::check(begin, r.n);
    const int v = rule_detail::row_variant<R>(s.variant, r);
    const CoefPair<R>& c = a.coefs[ch.seg];
    switch (static_cast<DType>(r.dtype)) {
      case DType::F32:
        chunk_typed<R, DType::F32, M>(a.store_grad, v, r, begin, end, t, c.f);
        break;
      case DType::F64:
        chunk_typed<R, DType::F64, M>(a.store_grad, v, r, begin, end, t, c.d);
        break;
      case DType::BF16:
        chunk_typed<R, DType::BF16, M>(a.store_grad, v, r, begin, end, t, c.f);
        break;
      case DType::F16:
        chunk_typed<R, DType::F16, M>(a.store_grad, v, r, begin, end, t, c.f);
        break;
    }
  }
}

// Row i's counter (thread i of the grid): rows sharing one counter are consecutive, and the
// first of them advances it. Runs after update, which reads fresh.
template <class R, class M>
CLRFAST_HD void steps(const Args<R>& a, int64_t i) {
  if (a.state->skip || i >= a.nrows) return;
  Row<R>& r = a.rows[i];
  r.fresh = 0;
  if (!R::kStep || (i > 0 && a.rows[i - 1].step == r.step)) return;
  if (r.step_dtype == 1) {
    double& c = M::template elem<double>(r.step, 0, 1);
    c = c + 1.0;
  } else {
    float& c = M::template elem<float>(r.step, 0, 1);
    c = c + 1.0f;
  }
}

template <class R, class M>
CLRFAST_HD void clock(const Args<R>& a) {
  if (a.state->skip || a.schedule == nullptr) return;
  const int64_t t = *a.clock + 1;
  if (a.hyper_out != nullptr) {
    const double mom = a.momentum_index >= 0 ? a.scalars[a.momentum_index] : nan_value();
    const LrMom h = group_values_at(*a.schedule, static_cast<double>(t), mom);
    a.hyper_out[0] = h.lr;
    a.hyper_out[1] = h.momentum;
  }
  *a.clock = t;
}

}  // namespace launch
}  // namespace clrfast
