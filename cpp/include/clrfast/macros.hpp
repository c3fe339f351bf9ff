// Portability macros shared by host and device code.
#pragma once

#if defined(__CUDACC__)
#define CLRFAST_HD __host__ __device__ inline
#else
#define CLRFAST_HD inline
#endif
