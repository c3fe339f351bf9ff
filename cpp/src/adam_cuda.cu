// CUDA kernels of the fused Adam / AdamW step.
//
// lr and beta1 are evaluated on the device from the device-side clock with
// the same schedule code as the CPU, and each parameter's step scalar lives
// on the device, so a step never waits for the host and can be captured in a
// CUDA graph. A skipped step (GradScaler found inf/NaN) leaves parameters,
// moments, step scalars and the clock alone.
//
// The element update is the CPU's (clrfast/adam_update.hpp) compiled without
// FMA contraction, so it rounds identically; the per-parameter bias
// corrections use the device's double pow, which is not guaranteed to be
// correctly rounded as glibc's is, so step_size can differ from the CPU's in
// the last bit of the double before it is rounded to the opmath type.
#include <cuda_runtime.h>

#include <cmath>

#include "adam_cuda.hpp"
#include "clrfast/adam_update.hpp"
#include "clrfast/schedule.hpp"

namespace clrfast {
namespace {

constexpr int kThreads = 256;

template <DType D, WdMode W, bool AMS>
__device__ void update_range(const AdamSegment& s, int64_t begin, int64_t stride,
                             const AdamCoef<typename Storage<D>::acc>& c, bool store) {
  using T = typename Storage<D>::type;
  T* p = reinterpret_cast<T*>(s.p);
  T* g = reinterpret_cast<T*>(s.g);
  T* m = reinterpret_cast<T*>(s.m);
  T* v = reinterpret_cast<T*>(s.v);
  T* vm = reinterpret_cast<T*>(s.vmax);
  for (int64_t i = begin; i < s.n; i += stride) adam_update_at<D, W, AMS>(p, g, m, v, vm, i, c, store);
}

template <DType D>
__device__ void update_typed(const AdamSegment& s, WdMode w, bool ams, int64_t begin, int64_t stride,
                             const AdamCoef<typename Storage<D>::acc>& c, bool store) {
#define CLRFAST_CASE(MODE)                                    \
  case MODE:                                                  \
    if (ams)                                                  \
      update_range<D, MODE, true>(s, begin, stride, c, store);  \
    else                                                      \
      update_range<D, MODE, false>(s, begin, stride, c, store); \
    break;
  switch (w) {
    CLRFAST_CASE(WdMode::None)
    CLRFAST_CASE(WdMode::L2)
    CLRFAST_CASE(WdMode::Decoupled)
  }
#undef CLRFAST_CASE
}

struct KernelArgs {
  const Schedule* schedule;
  const int64_t* clock;
  const AdamSegment* segs;
  int64_t nseg;
  double beta1, beta2, eps, weight_decay;
  bool decoupled, amsgrad, maximize;
  const float* grad_scale;
  const float* found_inf;
};

// The step count this step uses: the stored scalar plus one, added in the
// scalar's own dtype as torch's `step_t += 1`. finish_kernel stores it.
__device__ double next_step(const AdamSegment& s) {
  if (s.step_dtype == 1) return *reinterpret_cast<const double*>(s.step) + 1.0;
  return static_cast<double>(*reinterpret_cast<const float*>(s.step) + 1.0f);
}

__global__ void adam_kernel(KernelArgs a) {
  if (a.found_inf != nullptr && *a.found_inf != 0.0f) return;
  __shared__ AdamCoef<float> cf;
  __shared__ AdamCoef<double> cd;
  const LrMom h = schedule_at(*a.schedule, static_cast<double>(*a.clock));
  const double beta1 = isnan(h.momentum) ? a.beta1 : h.momentum;
  // Unscaling multiplies by 1/scale, as the CPU path does; GradScaler's scales
  // are powers of two, so this equals dividing by the scale exactly.
  const double inv = a.grad_scale != nullptr ? 1.0 / static_cast<double>(*a.grad_scale) : 1.0;
  const bool store = a.grad_scale != nullptr;
  const WdMode w = a.weight_decay == 0.0 ? WdMode::None : a.decoupled ? WdMode::Decoupled : WdMode::L2;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // The loop bound depends on blockIdx only, so every thread of a block
  // reaches each barrier.
  for (int64_t si = blockIdx.y; si < a.nseg; si += gridDim.y) {
    const AdamSegment& s = a.segs[si];
    const DType dt = static_cast<DType>(s.dtype);
    if (threadIdx.x == 0) {
      // One thread per block computes the segment's scalars (two double pows).
      const double t = next_step(s);
      if (dt == DType::F64)
        cd = make_adam_coef<double>(h.lr, beta1, a.beta2, a.eps, a.weight_decay, t, inv, a.maximize);
      else
        cf = make_adam_coef<float>(h.lr, beta1, a.beta2, a.eps, a.weight_decay, t, inv, a.maximize);
    }
    __syncthreads();
    switch (dt) {
      case DType::F32:
        update_typed<DType::F32>(s, w, a.amsgrad, begin, stride, cf, store);
        break;
      case DType::F64:
        update_typed<DType::F64>(s, w, a.amsgrad, begin, stride, cd, store);
        break;
      case DType::BF16:
        update_typed<DType::BF16>(s, w, a.amsgrad, begin, stride, cf, store);
        break;
      case DType::F16:
        update_typed<DType::F16>(s, w, a.amsgrad, begin, stride, cf, store);
        break;
    }
    __syncthreads();  // the shared coefficients are rewritten for the next segment
  }
}

// Runs after adam_kernel on the same stream: advances each parameter's step
// scalar (once for consecutive rows sharing one, as the CPU) and the clock,
// and records the hyperparameters the next step will use (torch's
// param_groups convention, as after scheduler.step()).
__global__ void finish_kernel(const Schedule* schedule, int64_t* clock, const AdamSegment* segs, int64_t nseg,
                              double beta1, const float* found_inf, double* hyper_out) {
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  for (int64_t i = threadIdx.x; i < nseg; i += blockDim.x) {
    const AdamSegment& s = segs[i];
    if (i > 0 && segs[i - 1].step == s.step) continue;
    if (s.step_dtype == 1) {
      double* st = reinterpret_cast<double*>(s.step);
      *st = *st + 1.0;
    } else {
      float* st = reinterpret_cast<float*>(s.step);
      *st = *st + 1.0f;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int64_t t = *clock + 1;
    if (hyper_out != nullptr) {
      const LrMom h = schedule_at(*schedule, static_cast<double>(t));
      hyper_out[0] = h.lr;
      hyper_out[1] = isnan(h.momentum) ? beta1 : h.momentum;
    }
    *clock = t;
  }
}

}  // namespace

std::string adam_step_cuda(const AdamCudaArgs& a) {
  if (a.nseg == 0) return {};
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  KernelArgs k{a.schedule, a.clock, a.segs, a.nseg, a.beta1, a.beta2, a.eps, a.weight_decay,
               a.decoupled, a.amsgrad, a.maximize, a.grad_scale, a.found_inf};
  int64_t bx = (a.max_n + kThreads - 1) / kThreads;
  if (bx < 1) bx = 1;
  if (bx > 4096) bx = 4096;
  const int64_t by = a.nseg < 65535 ? a.nseg : 65535;
  adam_kernel<<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), kThreads, 0, stream>>>(k);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return cudaGetErrorString(err);
  finish_kernel<<<1, kThreads, 0, stream>>>(a.schedule, a.clock, a.segs, a.nseg, a.beta1, a.found_inf, a.hyper_out);
  err = cudaGetLastError();
  if (err != cudaSuccess) return cudaGetErrorString(err);
  return {};
}

}  // namespace clrfast
