// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define CLRFAST_HD __host__ __device__ inline
#else
#define CLRFAST_HD inline
#endif

// Unrolls a fixed-count loop in device code, where its iterations' loads then overlap (the host
// compiler would warn about the pragma in nvcc's host pass).
#if defined(__CUDA_ARCH__)
#define CLRFAST_UNROLL _Pragma("unroll")
#else
#define CLRFAST_UNROLL
#endif
