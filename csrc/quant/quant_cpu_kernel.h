// The CPU quantize kernel proper, free of torch so it can be compiled and timed on its own. The arithmetic
// is exactly that of nuq/reference.py (its docstring lists it step by step), so results agree bitwise.
//
// Speed: each bucket is processed in chunks of kChunk elements; every inner loop runs over the elements of
// a chunk with no branches (Philox over a structure of arrays, a compare-and-select scan over the levels),
// so the compiler vectorises it. quant_cpu.cpp compiles these helpers for AVX2 and baseline x86-64 (picked
// at load time, since the build's baseline flags cannot assume AVX) and quant_cpu_avx512.cpp reuses the
// norm under AVX-512.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../common/bitpack.h"
#include "quant_common.h"
#include "quant_cpu_avx512.h"  // BucketJob

#if defined(__GNUC__)
#define NUQ_CPU_INLINE inline __attribute__((always_inline))
#else
#define NUQ_CPU_INLINE inline
#endif

namespace nuq {
namespace cpu {

constexpr int kChunk = 256;                  // elements snapped per inner pass (stack buffers)
constexpr int kBlocks = kChunk / 4 + 1;      // Philox blocks covering a chunk at any alignment
constexpr int kScanMax = 32;                 // inner levels up to this: vectorised scan; beyond: binary search

struct Levels {
  const float* v;
  int k;  // count, 2..256
};

NUQ_CPU_INLINE float bucket_norm(const float* __restrict x, int64_t len, int64_t bucket, bool linf) {
  if (linf) {
    // Lane-wise maxima (a max is exact, so lane order cannot change the result) vectorise where a single
    // running max does not; a NaN anywhere makes the norm NaN (as torch.amax), so its bucket gives NaNs.
    constexpr int kLinfLanes = 16;
    float m[kLinfLanes] = {};
    bool nan = false;
    const int64_t full = len / kLinfLanes * kLinfLanes;
    for (int64_t r = 0; r < full; r += kLinfLanes) {
      for (int k = 0; k < kLinfLanes; ++k) {
        const float a = std::fabs(x[r + k]);
        nan |= a != a;
        m[k] = a > m[k] ? a : m[k];
      }
    }
    for (int64_t i = full; i < len; ++i) {
      const float a = std::fabs(x[i]);
      nan |= a != a;
      m[0] = a > m[0] ? a : m[0];
    }
    float best = 0.0f;
    for (int k = 0; k < kLinfLanes; ++k) best = m[k] > best ? m[k] : best;
    return nan ? std::numeric_limits<float>::quiet_NaN() : best;
  }
  const int lanes = norm_lanes(bucket);
  double acc[kMaxLanes];
  for (int k = 0; k < lanes; ++k) acc[k] = 0.0;
  const int64_t full = len / lanes * lanes;
  for (int64_t r = 0; r < full; r += lanes) {
    const float* __restrict row = x + r;
    for (int k = 0; k < lanes; ++k) {
      const double v = row[k];
      acc[k] += v * v;  // v*v is exact in double, so a fused multiply-add would round identically
    }
  }
  for (int64_t k = 0; k < len - full; ++k) {
    const double v = x[full + k];
    acc[k] += v * v;
  }
  for (int w = lanes / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) acc[i] = acc[2 * i] + acc[2 * i + 1];
  }
  return l2_norm_float(std::sqrt(acc[0]));
}

// Random words of elements g .. g+kChunk-1 (words[e] belongs to element g + e): Philox blocks first .. first+kBlocks-1
// computed as a structure of arrays so the rounds vectorise across blocks, then interleaved.
NUQ_CPU_INLINE void chunk_words(uint64_t g, uint32_t key0, uint32_t key1, uint32_t* __restrict words) {
  const uint64_t first = g >> 2;
  uint32_t c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    const uint64_t q = first + static_cast<uint64_t>(b);
    c0[b] = static_cast<uint32_t>(q);
    c1[b] = static_cast<uint32_t>(q >> 32);
    c2[b] = 0;
    c3[b] = 0;
  }
  uint32_t k0 = key0, k1 = key1;
  for (int r = 0; r < 10; ++r) {
    for (int b = 0; b < kBlocks; ++b) {
      const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0[b];
      const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2[b];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[b] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[b] ^ k1;
      c1[b] = static_cast<uint32_t>(p1);
      c3[b] = static_cast<uint32_t>(p0);
      c0[b] = n0;
      c2[b] = n2;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  uint32_t buf[4 * kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    buf[4 * b] = c0[b];
    buf[4 * b + 1] = c1[b];
    buf[4 * b + 2] = c2[b];
    buf[4 * b + 3] = c3[b];
  }
  std::memcpy(words, buf + (g - 4 * first), sizeof(uint32_t) * kChunk);
}

// Snap one chunk with a compile-time number of inner levels: the level scan unrolls and every element stays
// in registers from load to store, so the loop vectorises as one pass.
template <int kInner, bool kIndices>
NUQ_CPU_INLINE void snap_chunk_fixed(const float* __restrict xc, int m, float inv, float nf, const float* lv,
                                     const uint32_t* __restrict words, float* __restrict oc,
                                     uint8_t* __restrict ic) {
  float l[kInner + 2];
  for (int k = 0; k < kInner + 2; ++k) l[k] = lv[k];
  alignas(64) int32_t jc[kIndices ? kChunk : 1];  // indices stay 32-bit in the vector loop, narrowed after
  for (int e = 0; e < m; ++e) {
    float u = xc[e] * inv;
    u = u < l[0] ? l[0] : u;
    u = u > l[kInner + 1] ? l[kInner + 1] : u;
    float lo = l[0], hi = l[1];
    int32_t j = 0;
    if (kIndices && kInner > 6) {  // many levels: count, then look the pair up (fewer live registers)
      for (int k = 1; k <= kInner; ++k) j += l[k] <= u ? 1 : 0;
      lo = l[j];
      hi = l[j + 1];
    } else {
      for (int k = 1; k <= kInner; ++k) {
        const bool b = l[k] <= u;
        lo = b ? l[k] : lo;
        hi = b ? l[k + 1] : hi;
        j += b ? 1 : 0;  // dead (and dropped) when only values are written
      }
    }
    const float r = static_cast<float>(static_cast<int32_t>(words[e] >> 8)) * 0x1p-24f;
    const bool up = r * (hi - lo) < u - lo;
    if (kIndices) {
      jc[e] = j + (up ? 1 : 0);
    } else {
      oc[e] = (up ? hi : lo) * nf;
    }
  }
  if (kIndices) {
    for (int e = 0; e < m; ++e) ic[e] = static_cast<uint8_t>(jc[e]);
  }
}

// Snap one chunk for any number of levels: a vectorised scan over the levels (few) or a binary search (many).
NUQ_CPU_INLINE void snap_chunk_any(const float* __restrict xc, int m, float inv, float nf, const Levels& lv,
                                   const uint32_t* __restrict words, float* __restrict oc, uint8_t* __restrict ic) {
  const float lmin = lv.v[0], lmax = lv.v[lv.k - 1], l1 = lv.v[1];
  const int inner = lv.k - 2;
  alignas(64) float u[kChunk], lo[kChunk], hi[kChunk];
  alignas(64) int32_t j[kChunk];
  for (int e = 0; e < m; ++e) {
    float v = xc[e] * inv;
    v = v < lmin ? lmin : v;
    v = v > lmax ? lmax : v;
    u[e] = v;
    lo[e] = lmin;
    hi[e] = l1;
    j[e] = 0;
  }
  if (inner <= kScanMax) {
    for (int k = 1; k <= inner; ++k) {
      const float lk = lv.v[k], lk1 = lv.v[k + 1];
      for (int e = 0; e < m; ++e) {
        const bool b = lk <= u[e];
        lo[e] = b ? lk : lo[e];
        hi[e] = b ? lk1 : hi[e];
        j[e] += b ? 1 : 0;
      }
    }
  } else {
    // Binary search with the same steps for every element (the inner levels padded with +inf to 2^steps - 1
    // probes, so `probe <= u` is false past them), one step at a time over the chunk, so the loads of one step
    // are independent (a per-element search is a chain of dependent loads). GCC 12 does not vectorise the
    // step loop ("data ref analysis failed" on probe[j[e] + step - 1]): it runs scalar, ~13 ns per value.
    alignas(64) float probe[kMaxLevels];
    int steps = 0;
    while ((1 << steps) - 1 < inner) ++steps;
    for (int k = 0; k < (1 << steps) - 1; ++k) probe[k] = k < inner ? lv.v[k + 1] : std::numeric_limits<float>::infinity();
    for (int s = steps - 1; s >= 0; --s) {
      const int step = 1 << s;
      for (int e = 0; e < m; ++e) j[e] += probe[j[e] + step - 1] <= u[e] ? step : 0;
    }
    for (int e = 0; e < m; ++e) {
      lo[e] = lv.v[j[e]];
      hi[e] = lv.v[j[e] + 1];
    }
  }
  for (int e = 0; e < m; ++e) {
    const float r = static_cast<float>(static_cast<int32_t>(words[e] >> 8)) * 0x1p-24f;
    const bool up = r * (hi[e] - lo[e]) < u[e] - lo[e];
    if (oc) {
      oc[e] = (up ? hi[e] : lo[e]) * nf;
    } else {
      ic[e] = static_cast<uint8_t>(j[e] + (up ? 1 : 0));
    }
  }
}

template <bool kIndices>
NUQ_CPU_INLINE void snap_chunk(const float* xc, int m, float inv, float nf, const Levels& lv, const uint32_t* words,
                               float* oc, uint8_t* ic) {
  switch (lv.k) {  // the common level counts: trn (3), 1..4 bits
    case 2: return snap_chunk_fixed<0, kIndices>(xc, m, inv, nf, lv.v, words, oc, ic);
    case 3: return snap_chunk_fixed<1, kIndices>(xc, m, inv, nf, lv.v, words, oc, ic);
    case 4: return snap_chunk_fixed<2, kIndices>(xc, m, inv, nf, lv.v, words, oc, ic);
    case 8: return snap_chunk_fixed<6, kIndices>(xc, m, inv, nf, lv.v, words, oc, ic);
    case 16: return snap_chunk_fixed<14, kIndices>(xc, m, inv, nf, lv.v, words, oc, ic);
    default: return snap_chunk_any(xc, m, inv, nf, lv, words, oc, ic);
  }
}

// Packs the m indices of a chunk (m a multiple of 8 unless it ends the bucket) `bits` bits each at dst.
NUQ_CPU_INLINE void pack_chunk(const uint8_t* idx, int64_t m, int bits, uint8_t* dst) {
  bitpack::pack_bits(idx, m, bits, dst);
}

// The steps of a chunk: its random words (chunk_words), the snapping (snap_chunk) and the packing of its
// indices (pack_chunk). quant_cpu_avx2.cpp passes its own, vectorised by hand.
struct GenericChunk {
  static NUQ_CPU_INLINE void words(uint64_t g, uint32_t key0, uint32_t key1, uint32_t* __restrict out) {
    chunk_words(g, key0, key1, out);
  }
  template <bool kIndices>
  static NUQ_CPU_INLINE void snap(const float* xc, int m, float inv, float nf, const Levels& lv, const uint32_t* words,
                                  float* oc, uint8_t* ic) {
    snap_chunk<kIndices>(xc, m, inv, nf, lv, words, oc, ic);
  }
  static NUQ_CPU_INLINE void pack(const uint8_t* idx, int64_t m, int bits, uint8_t* dst) { pack_chunk(idx, m, bits, dst); }
};

// Snap one bucket of normalisation `nf`: writes dequantized values (out), level indices (idx) or indices
// packed `bits` bits each (packed: this bucket's first byte), whichever is non-null. g0 is the stream
// position of x[0]; Chunk (GenericChunk's interface) computes each chunk's random words and snaps it.
template <class Chunk = GenericChunk>
NUQ_CPU_INLINE void snap_bucket(const float* __restrict x, int64_t len, float nf, uint64_t g0, const Levels& lv,
                                uint32_t k0, uint32_t k1, float* __restrict out, uint8_t* __restrict idx,
                                uint8_t* __restrict packed = nullptr, int bits = 0) {
  const float inv = nf > 0.0f ? 1.0f / nf : 0.0f;
  alignas(64) uint32_t words[kChunk];
  alignas(64) uint8_t chunk_idx[kChunk];
  for (int64_t c = 0; c < len; c += kChunk) {
    const int m = static_cast<int>(std::min<int64_t>(kChunk, len - c));
    Chunk::words(g0 + static_cast<uint64_t>(c), k0, k1, words);
    if (out) {
      Chunk::template snap<false>(x + c, m, inv, nf, lv, words, out + c, nullptr);
    } else if (idx || bits == 8) {  // 8-bit packing is the indices themselves
      Chunk::template snap<true>(x + c, m, inv, nf, lv, words, nullptr, idx ? idx + c : packed + c);
    } else {
      Chunk::template snap<true>(x + c, m, inv, nf, lv, words, nullptr, chunk_idx);
      Chunk::pack(chunk_idx, m, bits, packed + c / 8 * bits);  // c is a multiple of kChunk: a whole byte
    }
  }
}

// Bucket b of a job end to end: norm (stored to bucket b of job.norms when non-null), then snapping into
// the job's output. The per-bucket driver of the generic kernel (quant_cpu.cpp) and of the AVX2 one.
template <class Chunk = GenericChunk>
NUQ_CPU_INLINE void process_bucket(const BucketJob& job, int64_t b) {
  const int64_t start = b * job.bucket;
  const int64_t len = std::min(job.bucket, job.n - start);
  const float* x = job.x + start;
  const float nf = bucket_norm(x, len, job.bucket, job.linf);
  if (job.norms) std::memcpy(static_cast<uint8_t*>(job.norms) + 4 * b, &nf, 4);
  snap_bucket<Chunk>(x, len, nf, job.offset + static_cast<uint64_t>(start), Levels{job.levels, job.num_levels},
                      job.key0, job.key1, job.out ? job.out + start : nullptr, job.idx ? job.idx + start : nullptr,
                      job.packed ? job.packed + start / 8 * job.bits : nullptr, job.bits);
}

}  // namespace cpu
}  // namespace nuq
