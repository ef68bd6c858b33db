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
// The largest bucket the kernels take (nuq/limits.py's MAX_BUCKET_SIZE): a CUDA block sums one bucket with
// int lane strides, and every size computed from a bucket (bucket + n, pointers a bucket ahead) stays far
// from int64 overflow.
constexpr int64_t kMaxBucket = 2147483647;
constexpr float kMaxFloat = 3.40282346638528859812e+38f;  // FLT_MAX

// ceil(n / bucket) without forming n + bucket - 1 (which overflows for buckets near 2^63).
NUQ_HD int64_t num_buckets(int64_t n, int64_t bucket) { return n / bucket + (n % bucket != 0 ? 1 : 0); }

// The float32 L2 norm of a bucket from its float64 root: rounded once, saturated at FLT_MAX where the root
// of finite values exceeds float32 (values near 3e38: the float64 sum cannot overflow, its float32 root
// can), so a finite bucket keeps a finite norm and finite outputs; an infinite or NaN root stays as it is.
NUQ_HD float l2_norm_float(double root) {
  constexpr double kMaxDouble = 1.7976931348623157e+308;  // DBL_MAX: only inf is above it
  return static_cast<float>(root > static_cast<double>(kMaxFloat) && root <= kMaxDouble ? kMaxFloat : root);
}

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
