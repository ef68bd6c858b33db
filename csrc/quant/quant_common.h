// Shared by the CPU (.cpp) and CUDA (.cu) kernels: the Philox4x32-10 stream and the fixed L2 summation
// shape, so both compute exactly what nuq/reference.py and nuq/philox.py compute (see their docstrings).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NUQ_HD __host__ __device__ __forceinline__
#else
#define NUQ_HD inline
#endif

namespace nuq {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kMaxLanes = 256;  // the L2 norm sums in min(256, next_pow2(bucket)) lanes
constexpr int kMaxLevels = 256; // indices are uint8

// Philox4x32-10 of counter (q & 0xffffffff, q >> 32, 0, 0) under key (k0, k1); writes the 4 words.
NUQ_HD void philox4x32_10(uint64_t q, uint32_t k0, uint32_t k1, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(q), c1 = static_cast<uint32_t>(q >> 32), c2 = 0, c3 = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// Lanes of the L2 sum for a bucket size: a power of two, at most kMaxLanes, at least the bucket when smaller.
NUQ_HD int norm_lanes(int64_t bucket) {
  int lanes = 1;
  while (lanes < kMaxLanes && lanes < bucket) lanes <<= 1;
  return lanes;
}

}  // namespace nuq
