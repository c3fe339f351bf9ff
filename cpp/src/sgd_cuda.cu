// CUDA kernels of the fused SGD step.
//
// lr and momentum are evaluated on the device from a device-side step
// counter, with the same schedule code as the CPU, so a step never waits for
// the host and can be captured in a CUDA graph. A skipped step (GradScaler
// found inf/NaN) leaves the parameters, the buffers and the counter alone.
#include <cuda_runtime.h>

#include <cmath>

#include "clrfast/schedule.hpp"
#include "clrfast/sgd_update.hpp"
#include "sgd_cuda.hpp"

namespace clrfast {
namespace {

constexpr int kThreads = 256;

template <DType D, bool WD, MomMode M>
__device__ void update_range(const Segment& s, int64_t begin, int64_t stride, const SgdCoef<typename Storage<D>::acc>& c,
                             typename Storage<D>::acc inv_scale, bool store) {
  using T = typename Storage<D>::type;
  T* p = reinterpret_cast<T*>(s.p);
  T* g = reinterpret_cast<T*>(s.g);
  T* b = reinterpret_cast<T*>(s.s[0]);
  SgdCoef<typename Storage<D>::acc> cc = c;
  cc.inv_scale = inv_scale;  // read from the device-side grad_scale by the caller
  for (int64_t i = begin; i < s.n; i += stride) sgd_update_at<D, WD, M>(p, g, b, i, cc, store);
}

template <DType D>
__device__ void update_typed(const Segment& s, MomMode m, bool wd, int64_t begin, int64_t stride,
                             const SgdCoef<typename Storage<D>::acc>& c, typename Storage<D>::acc inv, bool store) {
#define CLRFAST_CASE(MODE)                                                    \
  case MODE:                                                                  \
    if (wd)                                                                   \
      update_range<D, true, MODE>(s, begin, stride, c, inv, store);           \
    else                                                                      \
      update_range<D, false, MODE>(s, begin, stride, c, inv, store);          \
    break;
  switch (m) {
    CLRFAST_CASE(MomMode::None)
    CLRFAST_CASE(MomMode::First)
    CLRFAST_CASE(MomMode::FirstNesterov)
    CLRFAST_CASE(MomMode::Normal)
    CLRFAST_CASE(MomMode::Nesterov)
  }
#undef CLRFAST_CASE
}

struct KernelArgs {
  const Schedule* schedule;
  const int64_t* step;
  const Segment* segs;
  int64_t nseg;
  double momentum, dampening, weight_decay;
  bool nesterov, maximize;
  const float* grad_scale;
  const float* found_inf;
};

__global__ void sgd_kernel(KernelArgs a) {
  if (a.found_inf != nullptr && *a.found_inf != 0.0f) return;
  const LrMom v = schedule_at(*a.schedule, static_cast<double>(*a.step));
  const double mom = isnan(v.momentum) ? a.momentum : v.momentum;
  // Unscaling multiplies by 1/scale, as the CPU path does; GradScaler's scales
  // are powers of two, so this equals dividing by the scale exactly.
  const double inv = a.grad_scale != nullptr ? 1.0 / static_cast<double>(*a.grad_scale) : 1.0;
  const bool store = a.grad_scale != nullptr;
  const SgdCoef<float> cf = make_coef<float>(v.lr, mom, a.dampening, a.weight_decay, 1.0, a.maximize);
  const SgdCoef<double> cd = make_coef<double>(v.lr, mom, a.dampening, a.weight_decay, 1.0, a.maximize);
  const bool wd = a.weight_decay != 0.0;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t si = blockIdx.y; si < a.nseg; si += gridDim.y) {
    const Segment& s = a.segs[si];
    MomMode m = MomMode::None;
    if (mom != 0.0) {
      if (s.fresh) m = a.nesterov ? MomMode::FirstNesterov : MomMode::First;
      else m = a.nesterov ? MomMode::Nesterov : MomMode::Normal;
    }
    switch (static_cast<DType>(s.dtype)) {
      case DType::F32:
        update_typed<DType::F32>(s, m, wd, begin, stride, cf, static_cast<float>(inv), store);
        break;
      case DType::F64:
        update_typed<DType::F64>(s, m, wd, begin, stride, cd, inv, store);
        break;
      case DType::BF16:
        update_typed<DType::BF16>(s, m, wd, begin, stride, cf, static_cast<float>(inv), store);
        break;
      case DType::F16:
        update_typed<DType::F16>(s, m, wd, begin, stride, cf, static_cast<float>(inv), store);
        break;
    }
  }
}

// Runs after sgd_kernel on the same stream: advances the clock, marks the
// buffers initialised and records the hyperparameters the next step will use
// (torch's param_groups convention, as after scheduler.step()).
__global__ void finish_kernel(const Schedule* schedule, int64_t* step, Segment* segs, int64_t nseg, double momentum,
                              const float* found_inf, double* lrmom_out) {
  if (found_inf != nullptr && *found_inf != 0.0f) return;
  const int64_t t = *step + 1;
  for (int64_t i = threadIdx.x; i < nseg; i += blockDim.x) segs[i].fresh = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    if (lrmom_out != nullptr) {
      const LrMom v = schedule_at(*schedule, static_cast<double>(t));
      lrmom_out[0] = v.lr;
      lrmom_out[1] = isnan(v.momentum) ? momentum : v.momentum;
    }
    *step = t;
  }
}

}  // namespace

std::string sgd_step_cuda(const CudaStepArgs& a) {
  if (a.nseg == 0) return {};
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  KernelArgs k{a.schedule, a.step, a.segs, a.nseg, a.momentum, a.dampening, a.weight_decay,
               a.nesterov, a.maximize, a.grad_scale, a.found_inf};
  int64_t bx = (a.max_n + kThreads - 1) / kThreads;
  if (bx < 1) bx = 1;
  if (bx > 4096) bx = 4096;
  const int64_t by = a.nseg < 65535 ? a.nseg : 65535;
  sgd_kernel<<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by)), kThreads, 0, stream>>>(k);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return cudaGetErrorString(err);
  finish_kernel<<<1, kThreads, 0, stream>>>(a.schedule, a.step, a.segs, a.nseg, a.momentum, a.found_inf,
                                            a.lrmom_out);
  err = cudaGetLastError();
  if (err != cudaSuccess) return cudaGetErrorString(err);
  return {};
}

}  // namespace clrfast
