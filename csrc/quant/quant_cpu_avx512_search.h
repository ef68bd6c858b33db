// The level search of the AVX-512 kernel: which level pair brackets each scaled value u, and whether it
// rounds up (nuq/reference.py steps 4-6). Up to 16 levels: a branchless binary search on permute tables
// (LevelTables, snap_index16); 17..256 levels: the "wide" search on bit-reversed probe tables (WideTables,
// snap_wide16). `lookup` reads tables of up to 256 floats, also for the decode. Part of
// quant_cpu_avx512.cpp (the driver), its only includer; compiled for AVX-512 (NUQ_AVX512_BEGIN).
#pragma once
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

NUQ_AVX512_BEGIN
#include "quant_cpu_kernel.h"  // NUQ_CPU_INLINE, kMaxLevels (compiled under the target, as in the driver)

namespace nuq {
namespace avx512 {
namespace {  // included by quant_cpu_avx512.cpp only

constexpr int kMaxPermuteLevels = 16;     // level sets up to this: levels and gaps in one permute table
constexpr int kMaxSteps = 4;              // their binary search steps: up to 15 inner levels

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

// The level indices of 16 elements of one bucket (kFull), or of the lanes in `mask` of a partial vector
// (other lanes: some valid index).
template <int kSteps, bool kFull>
NUQ_CPU_INLINE __m512i snap_index16(const float* x, const uint32_t* words, __mmask16 mask, __m512 inv, const LevelTables& t) {
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
  return _mm512_mask_add_epi32(j, up, j, _mm512_set1_epi32(1));
}

// Level sets of 17..256 values ("wide"): the binary search looks up step s's 2^s probes by the step's
// outcomes so far, r = sum of (probe t <= u) << t over steps t < s, in a table stored in that bit-reversed
// order: r's low bits are what a permute reads, so r grows by one masked add per step (no shifts) and the
// bits above 5 (tables of 64 and 128) are the compare masks of steps 5 and 6 themselves. The bracketing
// levels need no lookup: lo is the last probe accepted (lmin if none) and hi the last one rejected (lmax
// if none; the +inf padding capped at lmax), since the probes accepted rise and those rejected fall.
constexpr int kMaxWideSteps = 8;  // up to 254 inner levels
constexpr int wide_probe_offset(int s) { return s <= 4 ? 16 * s : (1 << s) + 48; }  // tables of max(16, 2^s)
constexpr int kWideProbes = wide_probe_offset(kMaxWideSteps);

struct WideTables {
  alignas(64) float probe[kWideProbes];
  __m512 lmin, lmax, first_probe;
  __m512i reverse_low, reverse_high;  // j from r: see wide_index16
  __m512i reverse_low_bytes, reverse_high_bytes;  // the same as bytes in each 128-bit lane: snap_wide64
  int steps;
};

WideTables wide_tables(const float* lv, int k) {
  WideTables t;
  const int n_inner = k - 2;
  t.steps = 0;
  while ((1 << t.steps) - 1 < n_inner) ++t.steps;
  const int steps = t.steps;
  auto inner = [&](int i) { return i < n_inner ? lv[i + 1] : std::numeric_limits<float>::infinity(); };
  std::fill(t.probe, t.probe + kWideProbes, std::numeric_limits<float>::infinity());
  auto reverse = [](int r, int bits) {
    int m = 0;
    for (int b = 0; b < bits; ++b) m |= ((r >> b) & 1) << (bits - 1 - b);
    return m;
  };
  for (int s = 1; s < steps; ++s) {
    for (int r = 0; r < (1 << s); ++r) {  // the prefix of j found so far is r reversed
      t.probe[wide_probe_offset(s) + r] = inner(reverse(r, s) * (1 << (steps - s)) + (1 << (steps - 1 - s)) - 1);
    }
  }
  alignas(64) int32_t low[16], high[16];  // steps >= 4: r's low 4 bits go to j's top 4, the rest to j's bottom
  for (int i = 0; i < 16; ++i) {
    low[i] = reverse(i, 4) << (steps - 4);
    high[i] = reverse(i, steps - 4);
  }
  t.reverse_low = _mm512_load_si512(low);
  t.reverse_high = _mm512_load_si512(high);
  alignas(16) int8_t low_bytes[16], high_bytes[16];
  for (int i = 0; i < 16; ++i) {
    low_bytes[i] = static_cast<int8_t>(low[i]);
    high_bytes[i] = static_cast<int8_t>(high[i]);
  }
  t.reverse_low_bytes = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(low_bytes)));
  t.reverse_high_bytes = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(high_bytes)));
  t.lmin = _mm512_set1_ps(lv[0]);
  t.lmax = _mm512_set1_ps(lv[k - 1]);
  t.first_probe = _mm512_set1_ps(inner((1 << (steps - 1)) - 1));
  return t;
}

// table[index] for a table of kEntries (a power of two, up to 256) floats at 64-byte aligned `table`, by
// the low log2(kEntries) bits of each index lane; high[i] holds lanes whose index bit 5 + i is set.
template <int kEntries>
NUQ_CPU_INLINE __m512 lookup(__m512i index, const float* table, const __mmask16* high) {
  if constexpr (kEntries <= 16) {
    return _mm512_permutexvar_ps(index, _mm512_load_ps(table));
  } else if constexpr (kEntries == 32) {
    return _mm512_permutex2var_ps(_mm512_load_ps(table), index, _mm512_load_ps(table + 16));
  } else {
    constexpr int kBit = kEntries == 64 ? 0 : kEntries == 128 ? 1 : 2;
    static_assert(kEntries <= 256, "tables of at most 256 entries");
    const __m512 low = lookup<kEntries / 2>(index, table, high);
    const __m512 up = lookup<kEntries / 2>(index, table + kEntries / 2, high);
    return _mm512_mask_blend_ps(high[kBit], low, up);
  }
}

// Step kS.. of the wide search (see WideTables) for 16 lanes at u.
template <int kS, int kSteps>
NUQ_CPU_INLINE void wide_search(__m512 u, const WideTables& t, __m512i& r, __m512& lo, __m512& hi, __mmask16* le) {
  if constexpr (kS < kSteps) {
    const __m512 probe = kS == 0 ? t.first_probe : lookup<(1 << kS)>(r, t.probe + wide_probe_offset(kS), le + 5);
    le[kS] = _mm512_cmp_ps_mask(probe, u, _CMP_LE_OQ);
    lo = _mm512_mask_mov_ps(lo, le[kS], probe);
    hi = _mm512_mask_blend_ps(le[kS], probe, hi);
    r = _mm512_mask_add_epi32(r, le[kS], r, _mm512_set1_epi32(1 << kS));  // (dropped after the last step
    wide_search<kS + 1, kSteps>(u, t, r, lo, hi, le);                       // when only values are written)
  }
}

struct Snapped {
  __m512i r;     // the search's outcomes: the inner levels <= u counted with its bits reversed (WideTables)
  __mmask16 up;  // lanes that round up
  __m512 level;  // the level snapped to
};

// The level index of 16 snapped lanes: r's bits reversed (two 16-entry permutes), plus one if up.
NUQ_CPU_INLINE __m512i wide_index16(const Snapped& s, const WideTables& t) {
  const __m512i j = _mm512_add_epi32(_mm512_permutexvar_epi32(s.r, t.reverse_low),
                                     _mm512_permutexvar_epi32(_mm512_srli_epi32(s.r, 4), t.reverse_high));
  return _mm512_mask_add_epi32(j, s.up, j, _mm512_set1_epi32(1));
}

// The level (and its index) of 16 elements of one bucket (kFull), or of the lanes in `mask`, for 17..256
// levels: the reference's arithmetic, r * (hi - lo) < u - lo, with lo and hi from the search (no scaled gap,
// so any gaps are exact).
template <int kSteps, bool kFull>
NUQ_CPU_INLINE Snapped snap_wide16(const float* x, const uint32_t* words, __mmask16 mask, __m512 inv,
                                   const WideTables& t) {
  const __m512 xv = kFull ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(mask, x);
  const __m512 u = _mm512_min_ps(t.lmax, _mm512_max_ps(t.lmin, _mm512_mul_ps(xv, inv)));
  __m512i r = _mm512_setzero_si512();
  __m512 lo = t.lmin, hi = t.lmax;
  __mmask16 le[kMaxWideSteps];
  wide_search<0, kSteps>(u, t, r, lo, hi, le);
  hi = _mm512_min_ps(hi, t.lmax);
  const __m512i w = kFull ? _mm512_loadu_si512(words) : _mm512_maskz_loadu_epi32(mask, words);
  const __m512 rand = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(w, 8)), _mm512_set1_ps(0x1p-24f));
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_mul_ps(rand, _mm512_sub_ps(hi, lo)), _mm512_sub_ps(u, lo), _CMP_LT_OQ);
  return {r, up, _mm512_mask_blend_ps(up, lo, hi)};
}

}  // namespace
}  // namespace avx512
}  // namespace nuq

NUQ_AVX512_END
#endif  // NUQ_HAVE_AVX512_KERNEL
