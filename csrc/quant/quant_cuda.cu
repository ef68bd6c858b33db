// CUDA quantize kernels: the same arithmetic and Philox stream as nuq/reference.py and the CPU kernel.
// The build passes --use_fast_math, so every float op whose rounding matters is an explicit IEEE
// round-to-nearest intrinsic (__fmul_rn, __fsub_rn, __frcp_rn, __dsqrt_rn, ...): no approximate division,
// no contraction into FMA. (Fast-math still flushes float32 denormals to zero; |u| < 1.2e-38 is the only
// case where CUDA and CPU results can differ.)
// Free of torch headers (quant.cpp holds the torch glue), so `nvcc -c` checks it on any machine with nvcc.
#include <cuda_runtime.h>

#include <algorithm>

#include "quant_common.h"
#include "quant_cuda.h"

namespace nuq {
namespace {

constexpr int kThreads = 256;  // == kMaxLanes: one thread per L2 lane
static_assert(kThreads == kMaxLanes, "the norm kernel maps one thread to one lane");

// Max that keeps a NaN (fmaxf drops it), like torch.amax and the CPU kernel: a NaN bucket gives NaNs.
__device__ __forceinline__ float nan_max(float m, float a) { return (a > m || a != a) ? a : m; }

// One block per bucket: lane t sums the squares of elements t, t+L, t+2L, ... in order (coalesced), then
// the L lane sums are added as a pairwise tree, exactly as the CPU kernel and the reference do.
__global__ void bucket_norms_kernel(const float* __restrict__ x, int64_t n, int64_t bucket, int lanes, bool linf,
                                    float* __restrict__ norms) {
  __shared__ double a[kThreads];
  __shared__ double b[kThreads];
  __shared__ float m[kThreads];
  const int64_t start = static_cast<int64_t>(blockIdx.x) * bucket;
  const int64_t len = min(bucket, n - start);
  const int t = threadIdx.x;
  if (linf) {
    float mx = 0.0f;
    for (int64_t i = t; i < len; i += kThreads) mx = nan_max(mx, fabsf(x[start + i]));
    m[t] = mx;
    __syncthreads();
    for (int w = kThreads / 2; w >= 1; w /= 2) {
      if (t < w) m[t] = nan_max(m[t], m[t + w]);
      __syncthreads();
    }
    if (t == 0) norms[blockIdx.x] = m[0];
    return;
  }
  double acc = 0.0;
  if (t < lanes) {
    for (int64_t i = t; i < len; i += lanes) {
      const double v = static_cast<double>(x[start + i]);
      acc = __dadd_rn(acc, __dmul_rn(v, v));
    }
  }
  a[t] = acc;
  __syncthreads();
  double* src = a;
  double* dst = b;
  for (int w = lanes / 2; w >= 1; w /= 2) {
    if (t < w) dst[t] = __dadd_rn(src[2 * t], src[2 * t + 1]);
    __syncthreads();
    double* tmp = src;
    src = dst;
    dst = tmp;
  }
  if (t == 0) norms[blockIdx.x] = l2_norm_float(__dsqrt_rn(src[0]));  // rounds as __double2float_rn
}

// One thread per Philox block q: it snaps the (up to 4) elements whose stream positions are 4q .. 4q+3.
template <bool kIndices>
__global__ void snap_kernel(const float* __restrict__ x, int64_t n, int64_t bucket, const float* __restrict__ norms,
                            const float* __restrict__ levels, int k, uint64_t offset, uint32_t k0, uint32_t k1,
                            float* __restrict__ out, uint8_t* __restrict__ idx) {
  __shared__ float lv[kMaxLevels];
  for (int i = threadIdx.x; i < k; i += blockDim.x) lv[i] = levels[i];
  __syncthreads();
  const uint64_t first = offset >> 2;
  const uint64_t blocks = ((offset + static_cast<uint64_t>(n) - 1) >> 2) - first + 1;
  const float lmin = lv[0], lmax = lv[k - 1];
  const int inner = k - 2;
  for (uint64_t q = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; q < blocks;
       q += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    uint32_t words[4];
    philox4x32_10(first + q, k0, k1, words);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t g = 4 * (first + q) + w;
      if (g < offset || g >= offset + static_cast<uint64_t>(n)) continue;
      const int64_t i = static_cast<int64_t>(g - offset);
      const float nf = norms[i / bucket];
      const float inv = nf > 0.0f ? __frcp_rn(nf) : 0.0f;
      float u = __fmul_rn(x[i], inv);
      u = u < lmin ? lmin : u;
      u = u > lmax ? lmax : u;
      int base = 0, len = inner;  // upper bound: the count of inner levels <= u
      while (len > 0) {
        const int half = len / 2;
        if (lv[1 + base + half] <= u) {
          base += half + 1;
          len -= half + 1;
        } else {
          len = half;
        }
      }
      const float lo = lv[base], hi = lv[base + 1];
      const float r = __fmul_rn(__uint2float_rn(words[w] >> 8), 0x1p-24f);
      const bool up = __fmul_rn(r, __fsub_rn(hi, lo)) < __fsub_rn(u, lo);
      if (kIndices) {
        idx[i] = static_cast<uint8_t>(base + (up ? 1 : 0));
      } else {
        out[i] = __fmul_rn(up ? hi : lo, nf);
      }
    }
  }
}

__global__ void dequantize_kernel(const uint8_t* __restrict__ idx, int64_t n, int64_t bucket,
                                  const float* __restrict__ norms, const float* __restrict__ levels,
                                  float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __fmul_rn(levels[idx[i]], norms[i / bucket]);
  }
}

int grid_for(uint64_t work) {
  const uint64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<uint64_t>(std::max<uint64_t>(blocks, 1), 65535ull * 8));
}

const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* cuda_quantize(const float* x, int64_t n, int64_t bucket, bool linf, const float* levels, int k,
                          uint64_t seed, uint64_t offset, float* norms, float* out, uint8_t* idx, void* stream) {
  if (n == 0) return nullptr;  // (a launch of no blocks is an error)
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t nb = num_buckets(n, bucket);
  if (nb > 0x7fffffff) return "too many buckets for one CUDA launch (more than 2^31 - 1)";
  bucket_norms_kernel<<<static_cast<unsigned>(nb), kThreads, 0, s>>>(x, n, bucket, norm_lanes(bucket), linf, norms);
  if (const char* err = last_error()) return err;
  const uint64_t blocks = ((offset + n - 1) >> 2) - (offset >> 2) + 1;
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  if (idx) {
    snap_kernel<true><<<grid_for(blocks), kThreads, 0, s>>>(x, n, bucket, norms, levels, k, offset, k0, k1,
                                                             nullptr, idx);
  } else {
    snap_kernel<false><<<grid_for(blocks), kThreads, 0, s>>>(x, n, bucket, norms, levels, k, offset, k0, k1,
                                                              out, nullptr);
  }
  return last_error();
}

const char* cuda_dequantize(const uint8_t* idx, int64_t n, int64_t bucket, const float* norms, const float* levels,
                            float* out, void* stream) {
  if (n == 0) return nullptr;
  dequantize_kernel<<<grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(idx, n, bucket, norms, levels,
                                                                                      out);
  return last_error();
}

}  // namespace nuq
