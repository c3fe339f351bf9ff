// The CPU engine every declared update rule runs on: the segment table, the
// per-parameter step counters, the split across threads, the dtype and
// variant dispatch, GradScaler's unscaling and the external square root.
//
// A rule is a struct (clrfast/rmsprop_update.hpp, clrfast/lion_update.hpp)
// with, all usable on the device too:
//   kName                   the binding's name: "<kName>_step", _core.rules[kName]
//   kSlots                  its per-element state tensors, torch's names, in row order (1 to 3)
//   kScalars                its per-group scalars, in the order the binding takes them
//   kStep                   it keeps torch's per-parameter 0-d `step` counter
//   kRoot                   its update takes one square root per element
//   kVariants, variant(sc)  the loop variants (the flags fixed at compile time) and the
//                           one a step's scalars select
//   uses(V, k)              whether variant V reads and writes slot k
//   invalid(sc)             empty, or why these scalars cannot run (the binding raises it)
//   Coef<Acc>, coef<Acc>(sc, step, inv_scale)
//                           the scalars of one segment, rounded to the opmath type; a
//                           Coef has `inv_scale`
//   pre<V>(p, g, s, c)      the update up to the square root: may change p, g (to the
//                           gradient the rest of the update reads) and the slots s;
//                           returns the value to take the root of (anything when !kRoot)
//   post<V>(p, g, s, root, c)  the rest of the update (may change g too)
//   writes_grad(V)          optional (default: never): the gradient the update ends with is
//                           stored back into the gradient (schedulefree normalises p.grad
//                           in place)
//   kFreshBit               optional (default: none): the variant bit the engine adds for
//                           the rows whose state holds no history yet (RuleRow::fresh)
// Everything a rule does not declare is the engine's, so a rule's CPU
// kernel is instantiated from the rule list (CLRFAST_FOR_EACH_RULE in rules_cpu.cpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "clrfast/adam_update.hpp"
#include "cpu_dispatch.hpp"
#include "rule_row.hpp"
#include "rule_traits.hpp"

namespace clrfast {

// A vector square root with MKL VML's Fortran calling convention (vssqrt_/vdsqrt_, 32-bit
// MKL_INT): out[i] = sqrt(in[i]) for i < *n. torch's CPU sqrt is MKL's where torch has MKL,
// and bit parity with torch needs the same routine (see clrfast/adam_update.hpp).
using VecSqrtF32 = void (*)(const int* n, const float* in, float* out);
using VecSqrtF64 = void (*)(const int* n, const double* in, double* out);

// How one call runs, besides the rule's scalars.
struct RuleRun {
  double inv_scale = 1.0;   // GradScaler's unscaling factor
  bool store_grad = false;  // write the unscaled gradient back (GradScaler's fused contract)
  // With store_grad: inv_scale holds the scale itself and gradients are divided by it, as
  // torch's fused CPU kernels unscale (for-loop code multiplies by the reciprocal).
  bool divide_scale = false;
  int threads = 1;
  // The square roots of float32 / float64 segments (null: IEEE sqrt in the loop), and null or
  // a function that sets the calling thread's thread count of those routines and returns the
  // previous one (mkl_set_num_threads_local): each worker sets 1 around its range, since the
  // routine is called on small blocks from the pool's threads and an OpenMP team started from
  // every one of them would oversubscribe the cores many times over.
  VecSqrtF32 sqrt_f32 = nullptr;
  VecSqrtF64 sqrt_f64 = nullptr;
  int (*sqrt_threads_local)(int) = nullptr;
};

template <class R>
using RuleRowOf = RuleRow<static_cast<int>(R::kSlots.size())>;

// The CPU step of rule R over `nseg` rows: every step counter advances once,
// then every element is updated. Instantiated by CLRFAST_DEFINE_RULE_CPU.
template <class R>
void rule_step_cpu(const RuleRowOf<R>* rows, int64_t nseg, const double* scalars, const RuleRun& run);

namespace rule_detail {

// Whether some variant of R writes its gradient (the front end then treats gradients as written memory).
template <class R>
constexpr bool writes_any_grad() {
  for (int v = 0; v < R::kVariants; ++v)
    if (GradOut<R>::at(v)) return true;
  return false;
}

constexpr int64_t kBlock = 512;  // elements per external-root block: they stay in L1

// How a loop unscales the gradient (template argument U): times the factor, not stored back;
// times the factor and stored; divided by the scale and stored (RuleRun::divide_scale).
enum Unscale : int { kMul = 0, kMulStore = 1, kDivStore = 2 };

template <int U, typename Acc>
CLRFAST_CPU_INLINE Acc unscaled(Acc g, Acc factor) {
  return U == kDivStore ? g / factor : g * factor;
}

template <class R, int V, DType D, int U, int K = static_cast<int>(R::kSlots.size())>
CLRFAST_CPU_INLINE void loop(typename Storage<D>::type* __restrict p, typename Storage<D>::type* __restrict g,
                             typename Storage<D>::type* __restrict s0, typename Storage<D>::type* __restrict s1,
                             typename Storage<D>::type* __restrict s2, int64_t n,
                             const typename R::template Coef<typename Storage<D>::acc>& coef) {
  using S = Storage<D>;
  using Acc = typename S::acc;
  const auto c = coef;  // a local copy: provably not aliased by the stores, so the loop vectorizes
  for (int64_t i = 0; i < n; ++i) {
    Acc pv = S::load(p[i]);
    Acc gv = unscaled<U>(S::load(g[i]), c.inv_scale);
    if (U != kMul) g[i] = S::store(gv);
    Acc sv[3] = {Acc(0), Acc(0), Acc(0)};
    if (R::uses(V, 0)) sv[0] = S::load(s0[i]);
    if (K > 1 && R::uses(V, 1)) sv[1] = S::load(s1[i]);
    if (K > 2 && R::uses(V, 2)) sv[2] = S::load(s2[i]);
    const Acc x = R::template pre<V>(pv, gv, sv, c);
    R::template post<V>(pv, gv, sv, R::kRoot ? ieee_sqrt(x) : x, c);
    if (GradOut<R>::at(V)) g[i] = S::store(gv);
    if (R::uses(V, 0)) s0[i] = S::store(sv[0]);
    if (K > 1 && R::uses(V, 1)) s1[i] = S::store(sv[1]);
    if (K > 2 && R::uses(V, 2)) s2[i] = S::store(sv[2]);
    p[i] = S::store(pv);
  }
}

// The same update with the roots taken by an external vector routine (float32 / float64,
// whose storage is the opmath type): per block, `pre` leaves p, the slots, the gradient it
// ends with and the values to root in memory, the routine roots them, `post` finishes.
template <class R, int V, DType D, int U, typename T, int K = static_cast<int>(R::kSlots.size())>
CLRFAST_CPU_INLINE void loop_ext(T* __restrict p, T* __restrict g, T* __restrict s0, T* __restrict s1,
                                 T* __restrict s2, int64_t n, const typename R::template Coef<T>& coef,
                                 void (*root)(const int*, const T*, T*)) {
  const auto c = coef;
  alignas(64) T in[kBlock];
  alignas(64) T out[kBlock];
  alignas(64) T gs[kBlock];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kBlock, n - b));
    T* __restrict pb = p + b;
    T* __restrict gb = g + b;
    T* __restrict sb0 = R::uses(V, 0) ? s0 + b : nullptr;
    T* __restrict sb1 = K > 1 && R::uses(V, 1) ? s1 + b : nullptr;
    T* __restrict sb2 = K > 2 && R::uses(V, 2) ? s2 + b : nullptr;
    for (int j = 0; j < nb; ++j) {
      T pv = pb[j];
      T gv = unscaled<U>(gb[j], c.inv_scale);
      if (U != kMul) gb[j] = gv;
      T sv[3] = {T(0), T(0), T(0)};
      if (R::uses(V, 0)) sv[0] = sb0[j];
      if (K > 1 && R::uses(V, 1)) sv[1] = sb1[j];
      if (K > 2 && R::uses(V, 2)) sv[2] = sb2[j];
      in[j] = R::template pre<V>(pv, gv, sv, c);
      gs[j] = gv;
      if (R::uses(V, 0)) sb0[j] = sv[0];
      if (K > 1 && R::uses(V, 1)) sb1[j] = sv[1];
      if (K > 2 && R::uses(V, 2)) sb2[j] = sv[2];
      pb[j] = pv;
    }
    root(&nb, in, out);
    for (int j = 0; j < nb; ++j) {
      T pv = pb[j];
      T sv[3] = {T(0), T(0), T(0)};
      if (R::uses(V, 0)) sv[0] = sb0[j];
      if (K > 1 && R::uses(V, 1)) sv[1] = sb1[j];
      if (K > 2 && R::uses(V, 2)) sv[2] = sb2[j];
      R::template post<V>(pv, gs[j], sv, out[j], c);
      if (GradOut<R>::at(V)) gb[j] = gs[j];
      if (R::uses(V, 0)) sb0[j] = sv[0];
      if (K > 1 && R::uses(V, 1)) sb1[j] = sv[1];
      if (K > 2 && R::uses(V, 2)) sb2[j] = sv[2];
      pb[j] = pv;
    }
  }
}

template <typename Acc>
using Root = void (*)(const int*, const Acc*, Acc*);

template <class R, int V, DType D, int U>
CLRFAST_CPU_INLINE void run_loop(void* const* a, int64_t n,
                                 const typename R::template Coef<typename Storage<D>::acc>& c,
                                 Root<typename Storage<D>::acc> root) {
  using T = typename Storage<D>::type;
  T* p = static_cast<T*>(a[0]);
  T* g = static_cast<T*>(a[1]);
  T* s0 = static_cast<T*>(a[2]);
  T* s1 = static_cast<T*>(a[3]);
  T* s2 = static_cast<T*>(a[4]);
  if constexpr (R::kRoot && std::is_same<T, typename Storage<D>::acc>::value) {
    if (root != nullptr) return loop_ext<R, V, D, U>(p, g, s0, s1, s2, n, c, root);
  }
  loop<R, V, D, U>(p, g, s0, s1, s2, n, c);
}

// The loop of variant V (a compile-time constant from here on) and of the unscaling mode.
template <class R, DType D, int V>
CLRFAST_CPU_INLINE void run_variant(int unscale, void* const* a, int64_t n,
                                    const typename R::template Coef<typename Storage<D>::acc>& c,
                                    Root<typename Storage<D>::acc> root) {
  if (unscale == kDivStore) return run_loop<R, V, D, kDivStore>(a, n, c, root);
  if (unscale == kMulStore) return run_loop<R, V, D, kMulStore>(a, n, c, root);
  run_loop<R, V, D, kMul>(a, n, c, root);
}

template <class R, DType D, int... V>
CLRFAST_CPU_INLINE void run_variants(std::integer_sequence<int, V...>, int v, int unscale, void* const* a, int64_t n,
                                     const typename R::template Coef<typename Storage<D>::acc>& c,
                                     Root<typename Storage<D>::acc> root) {
  ((v == V ? run_variant<R, D, V>(unscale, a, n, c, root) : void()), ...);
}

// The body of one dtype's ISA-cloned entry point.
template <class R, DType D>
CLRFAST_CPU_INLINE void run_typed(int v, int unscale, void* const* a, int64_t n,
                                  const typename R::template Coef<typename Storage<D>::acc>& c,
                                  Root<typename Storage<D>::acc> root) {
  run_variants<R, D>(std::make_integer_sequence<int, R::kVariants>{}, v, unscale, a, n, c, root);
}

// The per-dtype entry points of one rule (ISA clones, defined by CLRFAST_DEFINE_RULE_CPU).
template <class R>
struct Entries {
  void (*f32)(int, int, void* const*, int64_t, const typename R::template Coef<float>&, Root<float>);
  void (*f64)(int, int, void* const*, int64_t, const typename R::template Coef<double>&, Root<double>);
  void (*bf16)(int, int, void* const*, int64_t, const typename R::template Coef<float>&, Root<float>);
  void (*f16)(int, int, void* const*, int64_t, const typename R::template Coef<float>&, Root<float>);
};

// Adds one to a step counter in its own dtype (torch's `step_t += 1`) and returns the new
// count as the double torch's Python reads.
inline double increment_step(int64_t addr, int64_t step_dtype) {
  if (step_dtype == 1) {
    double* s = reinterpret_cast<double*>(addr);
    *s = *s + 1.0;
    return *s;
  }
  float* s = reinterpret_cast<float*>(addr);
  *s = *s + 1.0f;
  return static_cast<double>(*s);
}

template <class R>
void step(const RuleRowOf<R>* rows, int64_t nseg, const double* sc, const RuleRun& run, const Entries<R>& fn) {
  constexpr int K = static_cast<int>(R::kSlots.size());
  static_assert(K >= 1 && K <= 3, "the engine passes one to three state slots");
  struct SegCoef {
    typename R::template Coef<float> f;
    typename R::template Coef<double> d;
  };
  // Serial first pass: each counter advances exactly once before any thread starts.
  std::vector<SegCoef> coef(static_cast<size_t>(nseg));
  double count = 0.0;
  for (int64_t i = 0; i < nseg; ++i) {
    const auto& r = rows[i];
    if (R::kStep && (i == 0 || r.step != rows[i - 1].step)) count = increment_step(r.step, r.step_dtype);
    if (r.dtype == static_cast<int64_t>(DType::F64))
      coef[i].d = R::template coef<double>(sc, count, run.inv_scale);
    else
      coef[i].f = R::template coef<float>(sc, count, run.inv_scale);
  }
  const int v = R::variant(sc);
  const int unscale = !run.store_grad ? kMul : run.divide_scale ? kDivStore : kMulStore;
  for_each_segment_range(
      nseg, [&](int64_t i) { return rows[i].n; }, run.threads,
      [&](int64_t i, int64_t begin, int64_t end) {
        struct SerialRoot {  // restores the routine's thread count on every exit path
          int (*set)(int);
          int prev;
          ~SerialRoot() {
            if (set != nullptr) set(prev);
          }
        } serial{R::kRoot ? run.sqrt_threads_local : nullptr,
                 R::kRoot && run.sqrt_threads_local ? run.sqrt_threads_local(1) : 0};
        const auto& r = rows[i];
        const DType dt = static_cast<DType>(r.dtype);
        const int64_t es = dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : 2;
        const int vr = row_variant<R>(v, r);
        // Elements [b, e) of the row with variant `var`.
        auto run_range = [&](int64_t b, int64_t e, int var) {
          auto at = [&](int64_t addr) -> void* { return addr ? reinterpret_cast<char*>(addr) + b * es : nullptr; };
          void* a[5] = {at(r.p), at(r.g), at(r.s[0]), K > 1 ? at(r.s[K > 1 ? 1 : 0]) : nullptr,
                        K > 2 ? at(r.s[K > 2 ? 2 : 0]) : nullptr};
          const int64_t n = e - b;
          switch (dt) {
            case DType::F32:
              return fn.f32(var, unscale, a, n, coef[i].f, run.sqrt_f32);
            case DType::F64:
              return fn.f64(var, unscale, a, n, coef[i].d, run.sqrt_f64);
            case DType::BF16:
              return fn.bf16(var, unscale, a, n, coef[i].f, nullptr);
            case DType::F16:
              return fn.f16(var, unscale, a, n, coef[i].f, nullptr);
          }
        };
        const int64_t w = Tail<R>::width(sc, es);
        const int64_t body_end = w > 0 ? r.n - r.n % w : r.n;
        if (begin < body_end) run_range(begin, std::min(end, body_end), vr);
        if (end > body_end) run_range(std::max(begin, body_end), end, vr + Tail<R>::offset);
      });
}

}  // namespace rule_detail

// Defines rule R's CPU kernel: four entry points cloned per instruction set (one per storage
// dtype) and rule_step_cpu<R>. Used once per rule, inside namespace clrfast.
#define CLRFAST_DEFINE_RULE_CPU(R)                                                                                 \
  namespace {                                                                                                      \
  CLRFAST_CPU_CLONES void R##_f32(int v, int u, void* const* a, int64_t n, const R::Coef<float>& c,             \
                                  rule_detail::Root<float> root) {                                                 \
    rule_detail::run_typed<R, DType::F32>(v, u, a, n, c, root);                                                   \
  }                                                                                                                \
  CLRFAST_CPU_CLONES void R##_f64(int v, int u, void* const* a, int64_t n, const R::Coef<double>& c,            \
                                  rule_detail::Root<double> root) {                                                \
    rule_detail::run_typed<R, DType::F64>(v, u, a, n, c, root);                                                   \
  }                                                                                                                \
  CLRFAST_CPU_CLONES void R##_bf16(int v, int u, void* const* a, int64_t n, const R::Coef<float>& c,            \
                                   rule_detail::Root<float>) {                                                     \
    rule_detail::run_typed<R, DType::BF16>(v, u, a, n, c, nullptr);                                               \
  }                                                                                                                \
  CLRFAST_CPU_CLONES void R##_f16(int v, int u, void* const* a, int64_t n, const R::Coef<float>& c,             \
                                  rule_detail::Root<float>) {                                                      \
    rule_detail::run_typed<R, DType::F16>(v, u, a, n, c, nullptr);                                                \
  }                                                                                                                \
  }                                                                                                                \
  template <>                                                                                                      \
  void rule_step_cpu<R>(const RuleRowOf<R>* rows, int64_t nseg, const double* sc, const RuleRun& run) {           \
    rule_detail::step<R>(rows, nseg, sc, run, rule_detail::Entries<R>{R##_f32, R##_f64, R##_bf16, R##_f16});       \
  }

}  // namespace clrfast
