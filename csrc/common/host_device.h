// SEQOPS_HOST_DEVICE marks the small helpers that host and device code share.
#pragma once

#if defined(__CUDACC__)
#define SEQOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEQOPS_HOST_DEVICE inline
#endif
