// The CPU quantize kernel for AVX2 (8 float lanes): the generic kernel's per-bucket driver, norm and level
// search (quant_cpu_kernel.h) compiled a second time for AVX2 + FMA + BMI2, with Philox, the search for
// up to 16 levels and the bit packing vectorised by hand, and a one-pass decode. The same arithmetic as nuq/reference.py, so
// results agree bitwise.
//
// Philox by hand (quant_cpu_avx2_philox.h, shared with the ActNN group codec group_cpu_avx2.cpp): it
// dominates the kernel, and the compiler's vectorisation of chunk_words widens every word to 64 bits.
// quant_cpu.cpp calls this file where the CPU has AVX2, FMA and BMI2 and no AVX-512 (checked at run time),
// or when NUQ_CPU_KERNEL=avx2.
#include "quant_cpu_avx2.h"

#if NUQ_HAVE_AVX2_KERNEL
// Headers whose inline functions other files also compile come before the target pragma, so every copy
// of them is the baseline one (the linker keeps one copy of an inline function; it must run everywhere).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../common/bitpack.h"
#include "quant_common.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#include "quant_cpu_avx2_philox.h"
// The kernel header's functions (always inlined) are compiled here for AVX2, in a namespace of their own so
// that no symbol can be shared with the baseline copies in quant_cpu.cpp.
#define cpu cpu_avx2
#include "quant_cpu_kernel.h"
#undef cpu

namespace nuq {
namespace avx2 {
namespace {

using cpu_avx2::kChunk;


constexpr int kPermuteLevels = 16;  // level sets up to this: the search on permute tables of 8 or 16 (1..4 bits)

// u = clamp(x * inv) as the generic kernel computes it: max(l0, u) is `u < l0 ? l0 : u`, NaN kept.
inline __m256 normalised(const float* x, __m256 inv, __m256 lmin, __m256 lmax) {
  return _mm256_min_ps(lmax, _mm256_max_ps(lmin, _mm256_mul_ps(_mm256_loadu_ps(x), inv)));
}

// Entry i (< 8 kRegs) of a table held in kRegs (1 or 2) registers: one permute, or two and a blend on bit 3.
template <int kRegs>
inline __m256 table_at(const __m256* t, __m256i i) {
  const __m256 low = _mm256_permutevar8x32_ps(t[0], i);
  if (kRegs == 1) return low;
  return _mm256_blendv_ps(low, _mm256_permutevar8x32_ps(t[1], i), _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
}

// Snaps 8 values of a chunk for up to 8 kRegs levels: a branchless binary search (3 or 4 steps) on a permute
// table of the inner levels (padded with +inf, so `probe <= u` is false past them: j = how many inner levels
// <= u, as the generic kernel's count), the pair (l[j], l[j+1]) by two lookups, then the generic kernel's
// rounding. Returns j + up; writes the values (kIndices false).
template <bool kIndices, int kRegs>
inline __m256i snap8(const float* xc, const uint32_t* words, __m256 inv, __m256 nf, __m256 lmin, __m256 lmax,
                     const __m256* probes, const __m256* levels, float* oc) {
  const __m256 u = normalised(xc, inv, lmin, lmax);
  __m256i j = _mm256_setzero_si256();
  for (int step = 4 * kRegs; step >= 1; step /= 2) {
    const __m256 probe = table_at<kRegs>(probes, _mm256_add_epi32(j, _mm256_set1_epi32(step - 1)));
    const __m256i below = _mm256_castps_si256(_mm256_cmp_ps(probe, u, _CMP_LE_OQ));
    j = _mm256_add_epi32(j, _mm256_and_si256(below, _mm256_set1_epi32(step)));
  }
  const __m256 lo = table_at<kRegs>(levels, j);
  const __m256 hi = table_at<kRegs>(levels, _mm256_add_epi32(j, _mm256_set1_epi32(1)));
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words));
  const __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8)), _mm256_set1_ps(0x1p-24f));
  const __m256 up = _mm256_cmp_ps(_mm256_mul_ps(r, _mm256_sub_ps(hi, lo)), _mm256_sub_ps(u, lo), _CMP_LT_OQ);
  if (!kIndices) _mm256_storeu_ps(oc, _mm256_mul_ps(_mm256_blendv_ps(lo, hi, up), nf));
  return _mm256_sub_epi32(j, _mm256_castps_si256(up));  // up is -1 where true
}

// 32 indices of kBits (1..6) bits each -> their 4 kBits bytes of bit stream (csrc/common/bitpack.h's
// squeeze, in vector lanes): pairs of bytes, then pairs of 16-bit lanes joined by multiply-adds, pairs of
// 32-bit lanes by a shift, then the kBits bytes of each 64-bit lane gathered by a byte shuffle. (No BMI2
// pext: it is microcoded and far slower on Zen 2, an AVX2-only CPU this kernel is for.)
template <int kBits>
inline void squeeze32(const uint8_t* idx, uint8_t* dst) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx));
  const __m256i s16 = _mm256_maddubs_epi16(v, _mm256_set1_epi16(static_cast<int16_t>((1 << kBits) << 8 | 1)));
  const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi32((1 << (2 * kBits)) << 16 | 1));
  const __m256i s64 = _mm256_or_si256(_mm256_and_si256(s32, _mm256_set1_epi64x(0xFFFFFFFF)),
                                      _mm256_slli_epi64(_mm256_srli_epi64(s32, 32), 4 * kBits));
  alignas(16) int8_t order[16];
  for (int i = 0; i < 16; ++i) order[i] = static_cast<int8_t>(i < kBits ? i : i < 2 * kBits ? 8 + i - kBits : -1);
  const __m256i shuffle = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(order)));
  alignas(32) uint8_t halves[32];  // 2 kBits bytes at the start of each 128-bit half
  _mm256_store_si256(reinterpret_cast<__m256i*>(halves), _mm256_shuffle_epi8(s64, shuffle));
  std::memcpy(dst, halves, 2 * kBits);
  std::memcpy(dst + 2 * kBits, halves + 16, 2 * kBits);
}

template <int kBits>
inline void pack_bits(const uint8_t* idx, int64_t m, uint8_t* dst) {
  const int64_t full = m / 32 * 32;
  for (int64_t e = 0; e < full; e += 32) squeeze32<kBits>(idx + e, dst + e / 8 * kBits);
  if (full < m) bitpack::pack<kBits>(idx + full, m - full, dst + full / 8 * kBits);
}

// A chunk's steps (quant_cpu_kernel.h's GenericChunk interface), vectorised by hand: Philox always, the
// search for up to kPermuteLevels levels (the generic search, compiled for AVX2, for more), the packing
// of 1..6-bit indices.
struct Avx2Chunk {
  static void words(uint64_t g, uint32_t key0, uint32_t key1, uint32_t* __restrict words) {
    static_assert(kChunkWords == kChunk, "one Philox chunk per snapped chunk");
    philox_chunk(g, round_keys(key0, key1), words);
  }

  template <bool kIndices>
  static void snap(const float* xc, int m, float inv, float nf, const cpu_avx2::Levels& lv, const uint32_t* words,
                   float* oc, uint8_t* ic) {
    if (lv.k <= 8) return snap_tables<kIndices, 1>(xc, m, inv, nf, lv, words, oc, ic);
    if (lv.k <= kPermuteLevels) return snap_tables<kIndices, 2>(xc, m, inv, nf, lv, words, oc, ic);
    cpu_avx2::snap_chunk<kIndices>(xc, m, inv, nf, lv, words, oc, ic);
  }

  template <bool kIndices, int kRegs>
  static void snap_tables(const float* xc, int m, float inv, float nf, const cpu_avx2::Levels& lv,
                          const uint32_t* words, float* oc, uint8_t* ic) {
    alignas(32) float probe[8 * kRegs], level[8 * kRegs];
    for (int i = 0; i < 8 * kRegs; ++i) {
      probe[i] = i < lv.k - 2 ? lv.v[i + 1] : std::numeric_limits<float>::infinity();
      level[i] = lv.v[std::min(i, lv.k - 1)];
    }
    __m256 probes[kRegs], levels[kRegs];
    for (int r = 0; r < kRegs; ++r) {
      probes[r] = _mm256_load_ps(probe + 8 * r);
      levels[r] = _mm256_load_ps(level + 8 * r);
    }
    const __m256 vinv = _mm256_set1_ps(inv), vnf = _mm256_set1_ps(nf);
    const __m256 lmin = _mm256_set1_ps(lv.v[0]), lmax = _mm256_set1_ps(lv.v[lv.k - 1]);
    const int full = m / 8 * 8;
    for (int e = 0; e < full; e += 8) {
      const __m256i j = snap8<kIndices, kRegs>(xc + e, words + e, vinv, vnf, lmin, lmax, probes, levels,
                                               oc ? oc + e : nullptr);
      if (kIndices) {  // 8 indices (< 256) to bytes
        const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(j), _mm256_extracti128_si256(j, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(ic + e), _mm_packus_epi16(w16, w16));
      }
    }
    if (full < m) {
      cpu_avx2::snap_chunk<kIndices>(xc + full, m - full, inv, nf, lv, words + full, oc ? oc + full : nullptr,
                                     ic ? ic + full : nullptr);
    }
  }

  static void pack(const uint8_t* idx, int64_t m, int bits, uint8_t* dst) {
    switch (bits) {
      case 1: return pack_bits<1>(idx, m, dst);
      case 2: return pack_bits<2>(idx, m, dst);
      case 3: return pack_bits<3>(idx, m, dst);
      case 4: return pack_bits<4>(idx, m, dst);
      case 5: return pack_bits<5>(idx, m, dst);
      case 6: return pack_bits<6>(idx, m, dst);
      default: return cpu_avx2::pack_chunk(idx, m, bits, dst);  // 7 bits: 2^7 overflows maddubs' signed bytes
    }
  }
};

// levels * norm at 8 indices: permutes of the table up to 16 entries (1..4 bits), a gather beyond.
template <int kBits>
inline __m256 lookup(const float* scaled, __m256i index) {
  if (kBits <= 3) return _mm256_permutevar8x32_ps(_mm256_load_ps(scaled), index);
  if (kBits == 4) {
    const __m256 low = _mm256_permutevar8x32_ps(_mm256_load_ps(scaled), index);
    const __m256 high = _mm256_permutevar8x32_ps(_mm256_load_ps(scaled + 8), index);  // uses index bits 0-2
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(index, 28));  // bit 3 to the sign bit
    return _mm256_blendv_ps(low, high, upper);
  }
  return _mm256_i32gather_ps(scaled, index, 4);
}

// decode_buckets for kBits-bit indices: 8 values (kBits bytes, one 8-byte load) spread to one byte each,
// then levels[index] * norm looked up in the bucket's levels * norm, padded to a table of 2^kBits entries
// (at least 8).
template <int kBits>
void decode_bits(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index) {
  constexpr int kTable = (1 << kBits) < 8 ? 8 : 1 << kBits;
  constexpr uint64_t kStream = kBits == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * kBits)) - 1;
  alignas(32) float padded[kTable], scaled[kTable];  // scaled: levels * this bucket's norm
  for (int j = 0; j < kTable; ++j) padded[j] = job.levels[std::min(j, job.num_levels - 1)];
  __m256i seen = _mm256_setzero_si256();  // lane-wise maximum index: one out of range fails the call
  for (int64_t b = first; b < last; ++b) {
    const int64_t start = b * job.bucket;
    const int64_t len = std::min(job.bucket, job.n - start);
    float norm;
    std::memcpy(&norm, job.norms + 4 * b, 4);
    for (int j = 0; j < kTable; ++j) scaled[j] = padded[j] * norm;  // a product stored, never fused with the add
    const uint8_t* src = job.packed + start / 8 * kBits;
    float* out = job.out + start;
    for (int64_t e = 0; e < len; e += 8) {
      const int64_t count = std::min<int64_t>(8, len - e);
      const uint8_t* at = src + e / 8 * kBits;
      uint64_t w = 0;
      if (at + 8 <= job.end) {
        std::memcpy(&w, at, 8);
      } else {  // the message's last bytes: only those that exist
        std::memcpy(&w, at, static_cast<size_t>(job.end - at));
      }
      uint64_t bytes = bitpack::spread<kBits>(w & kStream);
      if (count < 8) bytes &= (uint64_t{1} << (8 * count)) - 1;  // padding bits of a corrupt message
      const __m256i index = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(bytes)));
      seen = _mm256_max_epu32(seen, index);
      __m256 value = lookup<kBits>(scaled, index);
      if (count == 8) {
        if (job.accumulate) value = _mm256_add_ps(_mm256_loadu_ps(out + e), value);
        _mm256_storeu_ps(out + e, value);
      } else {
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        if (job.accumulate) value = _mm256_add_ps(_mm256_maskload_ps(out + e, mask), value);
        _mm256_maskstore_ps(out + e, mask, value);
      }
    }
  }
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), seen);
  *max_index = std::max(*max_index, *std::max_element(lanes, lanes + 8));
}

}  // namespace

void run_buckets(const BucketJob& job, int64_t first, int64_t last) {
  for (int64_t b = first; b < last; ++b) cpu_avx2::process_bucket<Avx2Chunk>(job, b);
}

void decode_buckets(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index) {
  bitpack::with_bits(job.bits, [&](auto b) { decode_bits<b()>(job, first, last, max_index); });
}

}  // namespace avx2
}  // namespace nuq

#pragma GCC pop_options

namespace nuq {
namespace avx2 {

bool cpu_supported() {  // compiled for the baseline: it runs on every x86 CPU
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
}

}  // namespace avx2
}  // namespace nuq
#endif  // NUQ_HAVE_AVX2_KERNEL
