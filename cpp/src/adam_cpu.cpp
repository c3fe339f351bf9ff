// CPU kernels of the fused Adam / AdamW step.
//
// Each loop is a template instantiation with the weight-decay mode, amsgrad
// and gradient store-back fixed at compile time, so the body is branch-free
// and the compiler vectorizes it; the per-dtype entry points are cloned per
// instruction set (cpu_dispatch.hpp). The FMAs of the update are explicit, so
// every clone rounds exactly as the others and as torch.
#include "adam_cpu.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "clrfast/adam_update.hpp"
#include "cpu_dispatch.hpp"

namespace clrfast {
namespace {

template <DType D, WdMode W, bool AMS, bool STORE>
CLRFAST_CPU_INLINE void adam_loop(typename Storage<D>::type* __restrict p, typename Storage<D>::type* __restrict g,
                                  typename Storage<D>::type* __restrict m, typename Storage<D>::type* __restrict v,
                                  typename Storage<D>::type* __restrict vm, int64_t n,
                                  const AdamCoef<typename Storage<D>::acc>& coef) {
  using Acc = typename Storage<D>::acc;
  const AdamCoef<Acc> c = coef;  // a local copy: provably not aliased by the stores, so the loop vectorizes
  for (int64_t i = 0; i < n; ++i) adam_update_at<D, W, AMS>(p, g, m, v, vm, i, c, STORE);
}

// The same update with the square roots taken by an external vector routine
// (float32 / float64 only, where storage and opmath types agree): per block,
// a moments loop leaves the decayed parameter, m, v and the moment to root in
// memory, the routine takes the roots, an apply loop finishes. A block stays
// in L1, so the arrays are still read and written once from memory.
constexpr int64_t kSqrtBlock = 512;

template <DType D, WdMode W, bool AMS, bool STORE, typename T>
CLRFAST_CPU_INLINE void adam_loop_ext(T* __restrict p, T* __restrict g, T* __restrict m, T* __restrict v,
                                      T* __restrict vm, int64_t n, const AdamCoef<T>& coef,
                                      void (*root)(const int*, const T*, T*)) {
  static_assert(std::is_same<typename Storage<D>::acc, T>::value, "external sqrt needs opmath storage");
  const AdamCoef<T> c = coef;
  alignas(64) T in[kSqrtBlock];
  alignas(64) T out[kSqrtBlock];
  for (int64_t b = 0; b < n; b += kSqrtBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kSqrtBlock, n - b));
    T* __restrict pb = p + b;
    T* __restrict gb = g + b;
    T* __restrict mb = m + b;
    T* __restrict vb = v + b;
    T* __restrict vmb = AMS ? vm + b : nullptr;
    for (int j = 0; j < nb; ++j) {
      T pv = pb[j];
      const T gv = gb[j] * c.inv_scale;
      if (STORE) gb[j] = gv;
      T mv = mb[j], vv = vb[j], vmv = AMS ? vmb[j] : T(0);
      in[j] = adam_moments<W, AMS>(pv, gv, mv, vv, vmv, c);
      if (AMS) vmb[j] = vmv;
      vb[j] = vv;
      mb[j] = mv;
      pb[j] = pv;
    }
    root(&nb, in, out);
    for (int j = 0; j < nb; ++j) {
      T pv = pb[j];
      adam_apply(pv, mb[j], out[j], c);
      pb[j] = pv;
    }
  }
}

template <DType D, WdMode W>
CLRFAST_CPU_INLINE void dispatch_flags(bool ams, bool store, void* p, void* g, void* m, void* v, void* vm, int64_t n,
                                       const AdamCoef<typename Storage<D>::acc>& c,
                                       void (*root)(const int*, const typename Storage<D>::acc*,
                                                    typename Storage<D>::acc*)) {
  using T = typename Storage<D>::type;
  T* pp = static_cast<T*>(p);
  T* gp = static_cast<T*>(g);
  T* mp = static_cast<T*>(m);
  T* vp = static_cast<T*>(v);
  T* vmp = static_cast<T*>(vm);
  if constexpr (std::is_same<T, typename Storage<D>::acc>::value) {
    if (root != nullptr) {
      if (ams) {
        if (store) return adam_loop_ext<D, W, true, true>(pp, gp, mp, vp, vmp, n, c, root);
        return adam_loop_ext<D, W, true, false>(pp, gp, mp, vp, vmp, n, c, root);
      }
      if (store) return adam_loop_ext<D, W, false, true>(pp, gp, mp, vp, vmp, n, c, root);
      return adam_loop_ext<D, W, false, false>(pp, gp, mp, vp, vmp, n, c, root);
    }
  }
  if (ams) {
    if (store) return adam_loop<D, W, true, true>(pp, gp, mp, vp, vmp, n, c);
    return adam_loop<D, W, true, false>(pp, gp, mp, vp, vmp, n, c);
  }
  if (store) return adam_loop<D, W, false, true>(pp, gp, mp, vp, vmp, n, c);
  return adam_loop<D, W, false, false>(pp, gp, mp, vp, vmp, n, c);
}

template <DType D>
CLRFAST_CPU_INLINE void run_typed(WdMode w, bool ams, bool store, void* p, void* g, void* m, void* v, void* vm,
                                  int64_t n, const AdamCoef<typename Storage<D>::acc>& c,
                                  void (*root)(const int*, const typename Storage<D>::acc*,
                                               typename Storage<D>::acc*)) {
  switch (w) {
    case WdMode::None:
      return dispatch_flags<D, WdMode::None>(ams, store, p, g, m, v, vm, n, c, root);
    case WdMode::L2:
      return dispatch_flags<D, WdMode::L2>(ams, store, p, g, m, v, vm, n, c, root);
    case WdMode::Decoupled:
      return dispatch_flags<D, WdMode::Decoupled>(ams, store, p, g, m, v, vm, n, c, root);
  }
}

CLRFAST_CPU_CLONES void run_f32(WdMode w, bool ams, bool store, void* p, void* g, void* m, void* v, void* vm,
                                int64_t n, const AdamCoef<float>& c, VecSqrtF32 root) {
  run_typed<DType::F32>(w, ams, store, p, g, m, v, vm, n, c, root);
}
CLRFAST_CPU_CLONES void run_f64(WdMode w, bool ams, bool store, void* p, void* g, void* m, void* v, void* vm,
                                int64_t n, const AdamCoef<double>& c, VecSqrtF64 root) {
  run_typed<DType::F64>(w, ams, store, p, g, m, v, vm, n, c, root);
}
CLRFAST_CPU_CLONES void run_bf16(WdMode w, bool ams, bool store, void* p, void* g, void* m, void* v, void* vm,
                                 int64_t n, const AdamCoef<float>& c) {
  run_typed<DType::BF16>(w, ams, store, p, g, m, v, vm, n, c, nullptr);
}
CLRFAST_CPU_CLONES void run_f16(WdMode w, bool ams, bool store, void* p, void* g, void* m, void* v, void* vm,
                                int64_t n, const AdamCoef<float>& c) {
  run_typed<DType::F16>(w, ams, store, p, g, m, v, vm, n, c, nullptr);
}

// The coefficients of one segment, in the opmath type of its dtype.
struct SegCoef {
  AdamCoef<float> f;
  AdamCoef<double> d;
};

// Adds one to a step scalar in its own dtype (torch's `step_t += 1`) and
// returns the new count as the double torch's Python reads with .item().
double increment_step(int64_t addr, int64_t step_dtype) {
  if (step_dtype == 1) {
    double* s = reinterpret_cast<double*>(addr);
    *s = *s + 1.0;
    return *s;
  }
  float* s = reinterpret_cast<float*>(addr);
  *s = *s + 1.0f;
  return static_cast<double>(*s);
}

}  // namespace

// adam_step_cpu with the dtype code of a tensor lr (DType::F64 for a Python
// float), whose 0-d ops torch's decay and step size follow. The bindings
// declare it themselves: adam_cpu.hpp keeps the CUDA build's interface.
void adam_step_cpu_lr(const AdamSegment* segs, int64_t nseg, const AdamConfig& cfg, int32_t lr_dtype, int threads) {
  // Serial first pass: every step scalar is advanced exactly once before any
  // thread starts, so no two threads touch one counter.
  std::vector<SegCoef> coef(static_cast<size_t>(nseg));
  const double wd = cfg.weight_decay;
  const DType lr_dt = static_cast<DType>(lr_dtype);
  double step = 0.0;
  for (int64_t i = 0; i < nseg; ++i) {
    const AdamSegment& s = segs[i];
    if (i == 0 || s.step != segs[i - 1].step) step = increment_step(s.step, s.step_dtype);
    if (s.dtype == static_cast<int64_t>(DType::F64))
      coef[i].d = make_adam_coef<double>(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, wd, step, cfg.inv_scale, cfg.maximize,
                                         lr_dt);
    else
      coef[i].f = make_adam_coef<float>(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, wd, step, cfg.inv_scale, cfg.maximize,
                                        lr_dt);
  }
  const WdMode w = wd == 0.0 ? WdMode::None : cfg.decoupled ? WdMode::Decoupled : WdMode::L2;
  for_each_segment_range(
      nseg, [&](int64_t i) { return segs[i].n; }, threads,
      [&](int64_t i, int64_t begin, int64_t end) {
        struct SerialSqrt {  // restores the routine's thread count on every exit path
          int (*set)(int);
          int prev;
          ~SerialSqrt() {
            if (set != nullptr) set(prev);
          }
        } serial{cfg.sqrt_threads_local, cfg.sqrt_threads_local ? cfg.sqrt_threads_local(1) : 0};
        const AdamSegment& s = segs[i];
        const DType dt = static_cast<DType>(s.dtype);
        const int64_t es = dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : 2;
        auto at = [&](int64_t a) { return a ? reinterpret_cast<char*>(a) + begin * es : nullptr; };
        char* p = at(s.p);
        char* g = at(s.g);
        char* m = at(s.m);
        char* v = at(s.v);
        char* vm = cfg.amsgrad ? at(s.vmax) : nullptr;
        const int64_t n = end - begin;
        switch (dt) {
          case DType::F32:
            return run_f32(w, cfg.amsgrad, cfg.store_grad, p, g, m, v, vm, n, coef[i].f, cfg.sqrt_f32);
          case DType::F64:
            return run_f64(w, cfg.amsgrad, cfg.store_grad, p, g, m, v, vm, n, coef[i].d, cfg.sqrt_f64);
          case DType::BF16:
            return run_bf16(w, cfg.amsgrad, cfg.store_grad, p, g, m, v, vm, n, coef[i].f);
          case DType::F16:
            return run_f16(w, cfg.amsgrad, cfg.store_grad, p, g, m, v, vm, n, coef[i].f);
        }
      });
}

void adam_step_cpu(const AdamSegment* segs, int64_t nseg, const AdamConfig& cfg, int threads) {
  adam_step_cpu_lr(segs, nseg, cfg, static_cast<int32_t>(DType::F64), threads);
}

}  // namespace clrfast
