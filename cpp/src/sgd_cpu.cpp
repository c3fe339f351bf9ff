// CPU kernels of the fused SGD step.
//
// Each loop is a template instantiation with the momentum variant, weight
// decay and gradient store-back fixed at compile time, so the body is
// branch-free and the compiler vectorizes it. The per-dtype entry points are
// compiled three times (AVX-512, AVX2+FMA, baseline x86-64) with
// target_clones; the loader picks one at run time from the CPU's features.
// The FMAs of the update are explicit (fmaf), so every clone rounds exactly
// as the others and as torch.
#include "sgd_cpu.hpp"

#include <algorithm>
#include <vector>

#include "clrfast/sgd_update.hpp"
#include "thread_pool.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// flatten: GCC's inliner budget runs out across the many instantiations below,
// and a loop whose element update stays a call does not vectorize.
#define CLRFAST_CLONES __attribute__((flatten, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLRFAST_CLONES
#endif
#if defined(__GNUC__)
#define CLRFAST_INLINE __attribute__((always_inline)) inline
#else
#define CLRFAST_INLINE inline
#endif

namespace clrfast {
namespace {

template <DType D, bool WD, MomMode M, bool STORE>
CLRFAST_INLINE void update_loop(typename Storage<D>::type* __restrict p, typename Storage<D>::type* __restrict g,
                                typename Storage<D>::type* __restrict buf, int64_t n,
                                const SgdCoef<typename Storage<D>::acc>& coef) {
  using Acc = typename Storage<D>::acc;
  const SgdCoef<Acc> c = coef;  // a local copy: provably not aliased by the stores, so the loop vectorizes
  for (int64_t i = 0; i < n; ++i) sgd_update_at<D, WD, M>(p, g, buf, i, c, STORE);
}

template <DType D, bool WD, bool STORE>
CLRFAST_INLINE void dispatch_mom(MomMode m, typename Storage<D>::type* p, typename Storage<D>::type* g,
                                 typename Storage<D>::type* buf, int64_t n,
                                 const SgdCoef<typename Storage<D>::acc>& c) {
  switch (m) {
    case MomMode::None:
      return update_loop<D, WD, MomMode::None, STORE>(p, g, buf, n, c);
    case MomMode::First:
      return update_loop<D, WD, MomMode::First, STORE>(p, g, buf, n, c);
    case MomMode::FirstNesterov:
      return update_loop<D, WD, MomMode::FirstNesterov, STORE>(p, g, buf, n, c);
    case MomMode::Normal:
      return update_loop<D, WD, MomMode::Normal, STORE>(p, g, buf, n, c);
    case MomMode::Nesterov:
      return update_loop<D, WD, MomMode::Nesterov, STORE>(p, g, buf, n, c);
  }
}

template <DType D>
CLRFAST_INLINE void run_typed(MomMode m, bool wd, bool store, void* p, void* g, void* buf, int64_t n,
                              const SgdCoef<typename Storage<D>::acc>& c) {
  using T = typename Storage<D>::type;
  T* pp = static_cast<T*>(p);
  T* gp = static_cast<T*>(g);
  T* bp = static_cast<T*>(buf);
  if (wd) {
    if (store) return dispatch_mom<D, true, true>(m, pp, gp, bp, n, c);
    return dispatch_mom<D, true, false>(m, pp, gp, bp, n, c);
  }
  if (store) return dispatch_mom<D, false, true>(m, pp, gp, bp, n, c);
  return dispatch_mom<D, false, false>(m, pp, gp, bp, n, c);
}

CLRFAST_CLONES void run_f32(MomMode m, bool wd, bool store, void* p, void* g, void* b, int64_t n,
                            const SgdCoef<float>& c) {
  run_typed<DType::F32>(m, wd, store, p, g, b, n, c);
}
CLRFAST_CLONES void run_f64(MomMode m, bool wd, bool store, void* p, void* g, void* b, int64_t n,
                            const SgdCoef<double>& c) {
  run_typed<DType::F64>(m, wd, store, p, g, b, n, c);
}
CLRFAST_CLONES void run_bf16(MomMode m, bool wd, bool store, void* p, void* g, void* b, int64_t n,
                             const SgdCoef<float>& c) {
  run_typed<DType::BF16>(m, wd, store, p, g, b, n, c);
}
CLRFAST_CLONES void run_f16(MomMode m, bool wd, bool store, void* p, void* g, void* b, int64_t n,
                            const SgdCoef<float>& c) {
  run_typed<DType::F16>(m, wd, store, p, g, b, n, c);
}

MomMode mom_mode(const StepConfig& cfg, bool first) {
  if (cfg.momentum == 0.0) return MomMode::None;
  if (first) return cfg.nesterov ? MomMode::FirstNesterov : MomMode::First;
  return cfg.nesterov ? MomMode::Nesterov : MomMode::Normal;
}

struct Coefs {
  SgdCoef<float> f;
  SgdCoef<double> d;
};

void run_segment(const Segment& s, int64_t begin, int64_t end, const StepConfig& cfg, const Coefs& c) {
  const MomMode m = mom_mode(cfg, s.first != 0);
  const bool wd = cfg.weight_decay != 0.0;
  const int64_t n = end - begin;
  const DType dt = static_cast<DType>(s.dtype);
  const int64_t es = dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : 2;
  char* p = reinterpret_cast<char*>(s.p) + begin * es;
  char* g = reinterpret_cast<char*>(s.g) + begin * es;
  char* b = s.buf ? reinterpret_cast<char*>(s.buf) + begin * es : nullptr;
  switch (dt) {
    case DType::F32:
      return run_f32(m, wd, cfg.store_grad, p, g, b, n, c.f);
    case DType::F64:
      return run_f64(m, wd, cfg.store_grad, p, g, b, n, c.d);
    case DType::BF16:
      return run_bf16(m, wd, cfg.store_grad, p, g, b, n, c.f);
    case DType::F16:
      return run_f16(m, wd, cfg.store_grad, p, g, b, n, c.f);
  }
}

// Below this many elements per extra thread, waking a worker costs more
// than it saves.
constexpr int64_t kGrain = 1 << 16;
// Range boundaries fall on multiples of this many elements, so two threads
// never write the same cache line of a float32 segment.
constexpr int64_t kAlign = 64;

}  // namespace

void sgd_step_cpu(const Segment* segs, int64_t nseg, const StepConfig& cfg, int threads) {
  Coefs c;
  c.f = make_coef<float>(cfg.lr, cfg.momentum, cfg.dampening, cfg.weight_decay, cfg.inv_scale, cfg.maximize);
  c.d = make_coef<double>(cfg.lr, cfg.momentum, cfg.dampening, cfg.weight_decay, cfg.inv_scale, cfg.maximize);
  std::vector<int64_t> start(static_cast<size_t>(nseg) + 1, 0);
  for (int64_t i = 0; i < nseg; ++i) start[i + 1] = start[i] + segs[i].n;
  const int64_t total = start[nseg];
  if (total == 0) return;
  const int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, total / kGrain)));
  auto work = [&](int64_t lo, int64_t hi) {
    // [lo, hi) indexes the concatenation of all segments.
    int64_t i = std::upper_bound(start.begin(), start.end(), lo) - start.begin() - 1;
    for (; i < nseg && start[i] < hi; ++i) {
      const int64_t b = std::max(lo, start[i]) - start[i];
      const int64_t e = std::min(hi, start[i + 1]) - start[i];
      if (e > b) run_segment(segs[i], b, e, cfg, c);
    }
  };
  if (parts == 1) {
    work(0, total);
    return;
  }
  const int64_t chunks = (total + kAlign - 1) / kAlign;
  ThreadPool::instance().run(chunks, parts, [&](int64_t b, int64_t e) {
    work(b * kAlign, std::min(total, e * kAlign));
  });
}

const char* sgd_cpu_isa() {
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
