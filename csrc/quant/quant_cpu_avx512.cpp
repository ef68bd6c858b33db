// The CPU quantize kernel hand-vectorised for AVX-512 (16 float lanes): the same arithmetic as
// quant_cpu_kernel.h and nuq/reference.py, operation for operation, so results agree bitwise.
//
// Why by hand: Philox4x32-10 costs 5 multiplies of 32x32 -> 64 bits per random word and dominates the
// kernel; the compiler's vectorisation of it widens every word to 64 bits and shifts. Here each 64-bit
// lane holds one block's (c0, c1) or (c2, c3), so a round is one vpmuludq, one masked ternary-logic op and
// one 32-bit shuffle per register, eight register pairs interleaved to hide latency. The level search is a
// branchless binary search on permute-table lookups; the L2 norm keeps its 256 float64 lanes in
// registers; the next bucket is prefetched while this one is snapped (snapping is compute-bound); big
// outputs use streaming stores. Measured in bench/bench_kernel.py. quant_cpu.cpp calls this file where the
// CPU has AVX-512 (checked at run time), else the generic kernel.
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,bmi2")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positives in avx512fintrin.h

#include "../common/bitpack.h"
#include "quant_cpu_kernel.h"

namespace nuq {
namespace avx512 {
namespace {

constexpr int kGroups = 8;                // Philox groups of 8 blocks computed together
constexpr int kWords = 32 * kGroups;      // random words per chunk: 256 elements
constexpr int kMaxSteps = 4;              // binary search steps: up to 15 inner levels, so 16 levels
constexpr int64_t kStreamValues = 1 << 21; // outputs this big (8 MiB) bypass the cache: streaming stores
                                           // skip reading each line before writing it (+12% at 64 MiB)

struct RoundKeys {
  uint32_t k0[10], k1[10];
};

RoundKeys round_keys(uint32_t k0, uint32_t k1) {
  RoundKeys keys;
  for (int r = 0; r < 10; ++r) {
    keys.k0[r] = k0;
    keys.k1[r] = k1;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return keys;
}

// The kWords words of Philox blocks q, q+1, .. in stream order (block b's word w at 4 b + w), as
// quant_common.h's philox4x32_10 computes them one block at a time. Each 64-bit lane holds one block's
// (c0, c1) in register a and (c2, c3) in register b, so vpmuludq multiplies c0 and c2 in place; a round
// is then p = c * M, the high word xored with the other word and the key (one masked ternary logic op),
// and a swap of the 32-bit halves that brings the new c0 (c2) back to the low half.
inline void philox_words(uint64_t q, const RoundKeys& keys, uint32_t* __restrict out) {
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0), m1 = _mm512_set1_epi64(kPhiloxM1);
  const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  __m512i a[kGroups], b[kGroups];  // b (c2, c3) starts at zero
  for (int g = 0; g < kGroups; ++g) {  // the 64-bit counter q + i is exactly (c0, c1) = (low, high) words
    a[g] = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(q + 8 * static_cast<uint64_t>(g))), lane);
  }
  {  // round 0, where c2 = c3 = 0: c0 = c1 ^ k0, c1 = 0 need no multiply
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(keys.k0[0]));
    const __m512i k1 = _mm512_set1_epi32(static_cast<int>(keys.k1[0]));
    for (int g = 0; g < kGroups; ++g) {
      const __m512i p0 = _mm512_mul_epu32(a[g], m0);
      b[g] = _mm512_shuffle_epi32(_mm512_mask_xor_epi32(p0, 0xAAAA, p0, k1), _MM_PERM_CDAB);
      a[g] = _mm512_maskz_xor_epi32(0x5555, _mm512_shuffle_epi32(a[g], _MM_PERM_CDAB), k0);
    }
  }
  for (int r = 1; r < 10; ++r) {
    const __m512i k0 = _mm512_set1_epi32(static_cast<int>(keys.k0[r]));
    const __m512i k1 = _mm512_set1_epi32(static_cast<int>(keys.k1[r]));
    for (int g = 0; g < kGroups; ++g) {
      const __m512i p0 = _mm512_mul_epu32(a[g], m0), p1 = _mm512_mul_epu32(b[g], m1);
      // high halves: hi(p1) ^ c1 ^ k0 and hi(p0) ^ c3 ^ k1; low halves keep lo(p1), lo(p0); then swap halves
      // (the swap is a 32-bit shuffle, not a 64-bit rotate: rotates compete with vpmuludq for one pipe)
      a[g] = _mm512_shuffle_epi32(_mm512_mask_ternarylogic_epi32(p1, 0xAAAA, a[g], k0, 0x96), _MM_PERM_CDAB);
      b[g] = _mm512_shuffle_epi32(_mm512_mask_ternarylogic_epi32(p0, 0xAAAA, b[g], k1, 0x96), _MM_PERM_CDAB);
    }
  }
  const __m512i first = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), second = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  for (int g = 0; g < kGroups; ++g) {  // blocks as (c0 c1 | c2 c3) 128-bit units in counter order
    _mm512_storeu_si512(out + 32 * g, _mm512_permutex2var_epi64(a[g], first, b[g]));
    _mm512_storeu_si512(out + 32 * g + 16, _mm512_permutex2var_epi64(a[g], second, b[g]));
  }
}

// The L2 norm of a bucket with kMaxLanes (256) lanes, as cpu::bucket_norm sums it: lane k adds the squares of
// elements k, k + 256, .. in order (in float64), then the lanes are added as a pairwise tree. Each half of
// the lanes is summed in 16 registers over all rows, so the accumulators never leave registers.
inline float l2_norm_256(const float* x, int64_t len) {
  alignas(64) double acc[kMaxLanes];
  const int64_t rows = len / kMaxLanes;
  for (int half = 0; half < 2; ++half) {
    __m512d a[16];
    for (int k = 0; k < 16; ++k) a[k] = _mm512_setzero_pd();
    const float* col = x + half * (kMaxLanes / 2);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = col + r * kMaxLanes;
      for (int k = 0; k < 16; ++k) {
        const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(row + 8 * k));
        a[k] = _mm512_fmadd_pd(v, v, a[k]);  // v*v is exact in float64, so fused or not rounds the same
      }
    }
    for (int k = 0; k < 16; ++k) _mm512_store_pd(acc + half * (kMaxLanes / 2) + 8 * k, a[k]);
  }
  const float* tail = x + rows * kMaxLanes;
  for (int64_t k = 0; k < len - rows * kMaxLanes; ++k) {
    const double v = tail[k];
    acc[k] += v * v;
  }
  for (int w = kMaxLanes / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) acc[i] = acc[2 * i] + acc[2 * i + 1];
  }
  return static_cast<float>(std::sqrt(acc[0]));
}

// The level set as permute tables: levels[j], and gap[j] = (levels[j + 1] - levels[j]) * 2^-32 so that
// r * gap, r = (w >> 8) * 2^-24, is one multiply ((w >> 8) << 8) * gap[j] with the same rounding (every
// factor is exact, so both round the same real product once, given that no scaled gap is subnormal: see
// `handles`). Masking the low byte instead of shifting keeps the shift pipe free for Philox's multiplies. For the binary
// search step s (of `steps`), probe[s][j] = inner[j + 2^(steps-1-s) - 1], inner = levels[1..K-2] padded
// with +inf; the first step's probe is the same for every lane.
struct LevelTables {
  __m512 levels, gap, lmin, lmax, first_probe;
  __m512 probe[kMaxSteps];
  int steps;
};

LevelTables level_tables(const float* lv, int k) {
  LevelTables t;
  alignas(64) float levels[16], gap[16], inner[32];
  for (int j = 0; j < 16; ++j) {
    levels[j] = lv[std::min(j, k - 1)];
    gap[j] = j + 1 < k ? (lv[j + 1] - lv[j]) * 0x1p-32f : 0.0f;
  }
  const int n_inner = k - 2;
  for (int j = 0; j < 32; ++j) inner[j] = j < n_inner ? lv[j + 1] : std::numeric_limits<float>::infinity();
  t.levels = _mm512_load_ps(levels);
  t.gap = _mm512_load_ps(gap);
  t.lmin = _mm512_set1_ps(lv[0]);
  t.lmax = _mm512_set1_ps(lv[k - 1]);
  t.steps = 0;
  while ((1 << t.steps) - 1 < n_inner) ++t.steps;  // 2^steps - 1 probes cover every count 0..n_inner
  for (int s = 0; s < t.steps; ++s) t.probe[s] = _mm512_loadu_ps(inner + (1 << (t.steps - 1 - s)) - 1);
  t.first_probe = _mm512_set1_ps(t.steps ? inner[(1 << (t.steps - 1)) - 1] : 0.0f);
  return t;
}

enum class Output { kValues, kIndices, kPacked };

// Snap 16 elements of one bucket (kFull), or the lanes in `mask` of a partial vector, and write them as
// dequantized values (`scaled` = levels * norm), uint8 indices, or indices packed kBits bits each
// (csrc/common/bitpack.h; `dst` then points at the group's first byte; kOverwrite: one 8-byte store whose
// extra bytes the next group overwrites). Full vectors use plain loads and stores (masked stores are slow
// on some CPUs), or streaming stores (kStream: 64-byte aligned `dst` only).
template <int kSteps, Output kOut, int kBits, bool kFull, bool kStream = false, bool kOverwrite = false>
inline void snap16(const float* x, const uint32_t* words, __mmask16 mask, __m512 inv, __m512 scaled,
                   const LevelTables& t, void* dst) {
  const __m512 xv = kFull ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(mask, x);
  // clamp(x * inv, lmin, lmax) with NaN kept, as `u < l0 ? l0 : u` then `u > lmax ? lmax : u`
  const __m512 u = _mm512_min_ps(t.lmax, _mm512_max_ps(t.lmin, _mm512_mul_ps(xv, inv)));
  __m512i j = _mm512_setzero_si512();
  for (int s = 0; s < kSteps; ++s) {  // j = number of inner levels <= u
    const __m512 probe = s == 0 ? t.first_probe : _mm512_permutexvar_ps(j, t.probe[s]);
    const __mmask16 le = _mm512_cmp_ps_mask(probe, u, _CMP_LE_OQ);
    j = _mm512_mask_add_epi32(j, le, j, _mm512_set1_epi32(1 << (kSteps - 1 - s)));
  }
  const __m512 lo = _mm512_permutexvar_ps(j, t.levels), gap = _mm512_permutexvar_ps(j, t.gap);
  const __m512i w = kFull ? _mm512_loadu_si512(words) : _mm512_maskz_loadu_epi32(mask, words);
  const __m512i top24 = _mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xFFFFFF00u)));  // (w >> 8) << 8
  const __m512 r_gap = _mm512_mul_ps(_mm512_cvtepu32_ps(top24), gap);
  const __mmask16 up = _mm512_cmp_ps_mask(r_gap, _mm512_sub_ps(u, lo), _CMP_LT_OQ);
  const __m512i index = _mm512_mask_add_epi32(j, up, j, _mm512_set1_epi32(1));
  if (kOut == Output::kValues) {
    float* out = static_cast<float*>(dst);
    const __m512 value = _mm512_permutexvar_ps(index, scaled);
    if (kStream) {
      _mm512_stream_ps(out, value);
    } else if (kFull) {
      _mm512_storeu_ps(out, value);
    } else {
      _mm512_mask_storeu_ps(out, mask, value);
    }
  } else if (kOut == Output::kIndices) {
    uint8_t* idx = static_cast<uint8_t*>(dst);
    if (kFull) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(idx), _mm512_cvtepi32_epi8(index));
    } else {
      _mm512_mask_cvtepi32_storeu_epi8(idx, mask, index);
    }
  } else {
    uint8_t* packed = static_cast<uint8_t*>(dst);
    if (kFull) {  // 16 values -> 2 * kBits bytes
      static_assert(kBits <= 4 || !kFull, "16 values of more than 4 bits do not fit one 64-bit word");
      // pairs of neighbours into the low byte of each 64-bit lane (lo | hi << kBits: the high lane's bits
      // sit above the byte and are dropped by the narrowing), then one bit-extract (BMI2 pext) of the 8 bytes
      const __m512i pairs = _mm512_or_si512(index, _mm512_srli_epi64(index, 32 - kBits));
      constexpr uint64_t kFields = ((uint64_t{1} << (2 * kBits)) - 1) * 0x0101010101010101ull;
      const uint64_t word = _pext_u64(static_cast<uint64_t>(_mm_cvtsi128_si64(_mm512_cvtepi64_epi8(pairs))), kFields);
      std::memcpy(packed, &word, kOverwrite ? 8 : 2 * kBits);  // kOverwrite: bytes past the group are written next
    } else {
      alignas(16) uint8_t tmp[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(mask, index)));
      bitpack::pack<kBits>(tmp, __builtin_popcount(mask), packed);
    }
  }
}

// Where group e (an element offset in the bucket) of the output goes.
template <Output kOut, int kBits>
inline void* group_dst(void* dst, int64_t e) {
  if (kOut == Output::kValues) return static_cast<float*>(dst) + e;
  if (kOut == Output::kIndices) return static_cast<uint8_t*>(dst) + e;
  return static_cast<uint8_t*>(dst) + e * kBits / 8;  // e is a multiple of 8 (16, or the bucket's end)
}

// Snap a bucket whose stream starts at g0 into `dst` (values, indices or packed bytes of this bucket),
// in chunks of kWords elements: one vectorised Philox call gives the chunk's words when g0 is a multiple
// of 4; otherwise the chunk also needs the first words of the next block, one scalar Philox call.
template <int kSteps, Output kOut, int kBits>
void snap_bucket(const float* x, int64_t len, float norm, uint64_t g0, const LevelTables& t,
                 const RoundKeys& keys, void* dst, const float* next, int64_t next_len, bool stream) {
  const float inv_s = norm > 0.0f ? 1.0f / norm : 0.0f;
  const __m512 inv = _mm512_set1_ps(inv_s), scaled = _mm512_mul_ps(t.levels, _mm512_set1_ps(norm));
  alignas(64) uint32_t words[kWords + 4];
  const int64_t shift = static_cast<int64_t>(g0 & 3);  // every chunk starts kWords later: the same shift
  for (int64_t c = 0; c < len; c += kWords) {
    const int64_t m = std::min<int64_t>(len - c, kWords);
    const uint64_t block = (g0 + static_cast<uint64_t>(c)) >> 2;
    philox_words(block, keys, words);
    if (shift + m > kWords) philox4x32_10(block + kWords / 4, keys.k0[0], keys.k1[0], words + kWords);
    const uint32_t* w = words + shift;
    int64_t e = 0;
    for (; e + 16 <= m; e += 16) {
      // fetch the next bucket into cache meanwhile, two lines per step so it has arrived well before its
      // norm pass: the snapping is compute-bound, so this hides the memory latency entirely
      const int64_t ahead = 2 * (c + e);
      if (ahead < next_len) {
        _mm_prefetch(reinterpret_cast<const char*>(next + ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(next + ahead + 16), _MM_HINT_T0);
      }
      void* group = group_dst<kOut, kBits>(dst, c + e);
      if (kOut == Output::kValues && stream && (reinterpret_cast<uintptr_t>(group) & 63) == 0) {
        snap16<kSteps, kOut, kBits, true, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, group);
      } else if (kOut == Output::kPacked && (c + e) * kBits + 64 <= len * kBits) {  // 8 bytes inside the bucket
        snap16<kSteps, kOut, kBits, true, false, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, group);
      } else {
        snap16<kSteps, kOut, kBits, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, group);
      }
    }
    if (e < m) {
      snap16<kSteps, kOut, kBits, false>(x + c + e, w + e, __mmask16((1u << (m - e)) - 1), inv, scaled, t,
                                         group_dst<kOut, kBits>(dst, c + e));
    }
  }
}

// snap_bucket with the level set's search steps and (packed output) index bits as compile-time constants.
template <Output kOut, typename... Args>
void snap_bucket_any(const LevelTables& t, int bits, Args... args) {
  if (kOut != Output::kPacked) {
    switch (t.steps) {
      case 0: return snap_bucket<0, kOut, 0>(args...);
      case 1: return snap_bucket<1, kOut, 0>(args...);
      case 2: return snap_bucket<2, kOut, 0>(args...);
      case 3: return snap_bucket<3, kOut, 0>(args...);
      default: return snap_bucket<4, kOut, 0>(args...);
    }
  }
  switch (t.steps * 8 + bits) {  // bits = ceil(log2(levels)) fixes the steps to one or two values
    case 0 * 8 + 1: return snap_bucket<0, kOut, 1>(args...);
    case 1 * 8 + 2: return snap_bucket<1, kOut, 2>(args...);
    case 2 * 8 + 2: return snap_bucket<2, kOut, 2>(args...);
    case 2 * 8 + 3: return snap_bucket<2, kOut, 3>(args...);
    case 3 * 8 + 3: return snap_bucket<3, kOut, 3>(args...);
    case 3 * 8 + 4: return snap_bucket<3, kOut, 4>(args...);
    default: return snap_bucket<4, kOut, 4>(args...);
  }
}

}  // namespace

bool handles(const float* levels, int num_levels) {
  if (num_levels < 2 || num_levels > kMaxAvx512Levels) return false;
  for (int j = 0; j + 1 < num_levels; ++j) {  // the scaled gaps of LevelTables must be exact
    const float gap = levels[j + 1] - levels[j];
    if (gap != 0.0f && !(gap >= 0x1p-90f)) return false;
  }
  return true;
}

void run_buckets(const BucketJob& job, int64_t first, int64_t last) {
  const LevelTables t = level_tables(job.levels, job.num_levels);
  const RoundKeys keys = round_keys(job.key0, job.key1);
  const bool stream = job.out && job.n >= kStreamValues;
  for (int64_t b = first; b < last; ++b) {
    const int64_t start = b * job.bucket;
    const int64_t len = std::min(job.bucket, job.n - start);
    const float* x = job.x + start;
    const float norm = !job.linf && norm_lanes(job.bucket) == kMaxLanes ? l2_norm_256(x, len)
                                                                        : cpu::bucket_norm(x, len, job.bucket, job.linf);
    if (job.norms) std::memcpy(static_cast<uint8_t*>(job.norms) + 4 * b, &norm, 4);
    const uint64_t g0 = job.offset + static_cast<uint64_t>(start);
    const float* next = x + job.bucket;
    const int64_t next_len = b + 1 < last ? std::min(job.bucket, job.n - start - job.bucket) : 0;
    if (job.out) {
      snap_bucket_any<Output::kValues>(t, 0, x, len, norm, g0, t, keys, static_cast<void*>(job.out + start), next,
                                       next_len, stream);
    } else if (job.idx) {
      snap_bucket_any<Output::kIndices>(t, 0, x, len, norm, g0, t, keys, static_cast<void*>(job.idx + start), next,
                                        next_len, false);
    } else {
      snap_bucket_any<Output::kPacked>(t, job.bits, x, len, norm, g0, t, keys,
                                       static_cast<void*>(job.packed + start / 8 * job.bits), next, next_len, false);
    }
  }
  if (stream) _mm_sfence();  // streaming stores are weakly ordered: make them visible before returning
}

void decode_buckets(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index) {
  alignas(64) float padded[16];
  for (int j = 0; j < 16; ++j) padded[j] = job.levels[std::min(j, job.num_levels - 1)];
  const __m512 levels = _mm512_load_ps(padded);
  __m512i seen = _mm512_setzero_si512();  // lane-wise maximum index: one out of range fails the call
  const int bits = job.bits;
  const uint64_t fields = ((uint64_t{1} << bits) - 1) * 0x0101010101010101ull;
  for (int64_t b = first; b < last; ++b) {
    const int64_t start = b * job.bucket;
    const int64_t len = std::min(job.bucket, job.n - start);
    float norm;
    std::memcpy(&norm, job.norms + 4 * b, 4);
    const __m512 scaled = _mm512_mul_ps(levels, _mm512_set1_ps(norm));
    const uint8_t* src = job.packed + start / 8 * bits;
    float* out = job.out + start;
    for (int64_t e = 0; e < len; e += 16) {
      const int64_t count = std::min<int64_t>(16, len - e);
      const uint8_t* at = src + e / 8 * bits;
      uint64_t word = 0;  // 16 values are 2 * bits <= 8 bytes: one 8-byte load, masked, where 8 bytes exist
      if (at + 8 <= job.end) {  // (a partial load into a word would stall store-to-load forwarding)
        std::memcpy(&word, at, 8);
        word &= count * bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << (count * bits)) - 1;
      } else {
        std::memcpy(&word, at, static_cast<size_t>((count * bits + 7) / 8));
      }
      const uint64_t low = _pdep_u64(word, fields), high = _pdep_u64(word >> (8 * bits), fields);
      const __m512i index = _mm512_cvtepu8_epi32(_mm_set_epi64x(static_cast<int64_t>(high), static_cast<int64_t>(low)));
      const __mmask16 mask = count == 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
      seen = _mm512_mask_max_epu32(seen, mask, seen, index);
      const __m512 value = _mm512_permutexvar_ps(index, scaled);
      if (count == 16) {
        _mm512_storeu_ps(out + e, value);
      } else {
        _mm512_mask_storeu_ps(out + e, mask, value);
      }
    }
  }
  *max_index = std::max(*max_index, static_cast<uint32_t>(_mm512_reduce_max_epu32(seen)));
}

}  // namespace avx512
}  // namespace nuq

#pragma GCC pop_options
#endif  // NUQ_HAVE_AVX512_KERNEL
