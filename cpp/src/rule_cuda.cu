// The kernels of rule_launch.hpp as __global__ functions, one instantiation per declared rule.
// Compiled with --fmad=false: the element update rounds as the CPU's. Each rule's Coef uses the
// device's pow (Adam's bias corrections), which is not guaranteed to round as glibc's does.
#include <cuda_runtime.h>

#include "rule_cuda.hpp"
#include "rules.hpp"

namespace clrfast {
namespace {

struct DeviceMem {
  static __device__ void check(int64_t, int64_t) {}
  template <typename T>
  static __device__ T& elem(int64_t addr, int64_t i, int64_t) {
    return reinterpret_cast<T*>(addr)[i];
  }
};

__device__ int64_t global_thread() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }

template <class R>
__global__ void prologue_kernel(launch::Args<R> a) {
  launch::prologue<R, DeviceMem>(a);
}
template <class R>
__global__ void coefs_kernel(launch::Args<R> a) {
  launch::coefs<R, DeviceMem>(a, global_thread());
}
template <class R>
__global__ void __launch_bounds__(launch::kThreads) update_kernel(launch::Args<R> a) {
  launch::update<R, DeviceMem>(a, blockIdx.x, gridDim.x, static_cast<int>(threadIdx.x));
}
template <class R>
__global__ void steps_kernel(launch::Args<R> a) {
  launch::steps<R, DeviceMem>(a, global_thread());
}
template <class R>
__global__ void clock_kernel(launch::Args<R> a) {
  launch::clock<R, DeviceMem>(a);
}

}  // namespace

template <class R>
std::string rule_step_cuda(const launch::Args<R>& a, void* stream) {
  using namespace launch;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const unsigned rb = static_cast<unsigned>(row_blocks(a.nrows));
  prologue_kernel<R><<<1, 1, 0, s>>>(a);
  coefs_kernel<R><<<rb, kRowThreads, 0, s>>>(a);
  update_kernel<R><<<static_cast<unsigned>(update_blocks(a.nchunks)), kThreads, 0, s>>>(a);
  steps_kernel<R><<<rb, kRowThreads, 0, s>>>(a);
  clock_kernel<R><<<1, 1, 0, s>>>(a);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return cudaGetErrorString(err);
  return {};
}

// One instantiation per rule of rules.hpp (as rules_cpu.cpp's definitions).
#define CLRFAST_STEP_CUDA(R) template std::string rule_step_cuda<R>(const launch::Args<R>&, void*);
CLRFAST_FOR_EACH_RULE(CLRFAST_STEP_CUDA)
#undef CLRFAST_STEP_CUDA

}  // namespace clrfast
