// The CPU quantize kernel hand-vectorised for AVX-512 (16 float lanes): the same arithmetic as
// quant_cpu_kernel.h and nuq/reference.py, operation for operation, so results agree bitwise.
//
// Why by hand: Philox4x32-10 costs 5 multiplies of 32x32 -> 64 bits per random word and dominates the
// kernel; the compiler's vectorisation of it widens every word to 64 bits and shifts. Here each 64-bit
// lane holds one block's (c0, c1) or (c2, c3), so a round is one vpmuludq, one masked ternary-logic op and
// one 32-bit shuffle per register, eight register pairs interleaved to hide latency. The level search is a
// branchless binary search on permute-table lookups (up to 16 levels: `LevelTables`; 17..256: the wide
// search of `WideTables`); the L2 norm keeps its 256 float64 lanes in registers; the next bucket is
// prefetched while this one is snapped (snapping is compute-bound); big outputs use streaming stores. The
// fused encode narrows four vectors of indices at once (packs instead of vpmovdb) and packs 128 (up to 4
// bits) or 64 (5..8 bits) of them in registers. Encode then costs what quantize does to within a few
// percent (the same Philox and search; narrowing and packing instead of a permute and wider stores):
// bench/bench_ddp.py. Measured in bench/bench_kernel.py too. quant_cpu.cpp calls this file where the CPU
// has AVX-512 (checked at run time), else the generic kernel.
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,bmi2")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positives in avx512fintrin.h
#pragma GCC diagnostic ignored "-Wuninitialized"        // (_mm512_reduce_max_epu32 extracts from an undefined vector)

#include "quant_cpu_kernel.h"

namespace nuq {
namespace avx512 {
namespace {

constexpr int kGroups = 8;                // Philox groups of 8 blocks computed together
constexpr int kWords = 32 * kGroups;      // random words per chunk: 256 elements
constexpr int kMaxPermuteLevels = 16;     // level sets up to this: levels and gaps in one permute table
constexpr int kMaxSteps = 4;              // their binary search steps: up to 15 inner levels
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

// Writes 16 values (kFull), or the lanes in `mask`, at out: plain stores for full vectors (masked stores are
// slow on some CPUs), or streaming stores (kStream: 64-byte aligned `out` only).
template <bool kFull, bool kStream>
NUQ_CPU_INLINE void store_values16(float* out, __m512 value, __mmask16 mask) {
  if (kStream) {
    _mm512_stream_ps(out, value);
  } else if (kFull) {
    _mm512_storeu_ps(out, value);
  } else {
    _mm512_mask_storeu_ps(out, mask, value);
  }
}

// Writes 16 level indices (kFull), or the lanes in `mask`, as bytes at dst.
template <bool kFull>
NUQ_CPU_INLINE void store_indices16(void* dst, __m512i index, __mmask16 mask) {
  if (kFull) {
    _mm_storeu_si128(static_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(index));
  } else {
    _mm512_mask_cvtepi32_storeu_epi8(dst, mask, index);
  }
}

// Snap 16 elements (kFull) or the lanes in `mask` and write them as dequantized values (`scaled` = levels *
// norm) or uint8 indices.
template <int kSteps, Output kOut, bool kFull, bool kStream = false>
NUQ_CPU_INLINE void snap16(const float* x, const uint32_t* words, __mmask16 mask, __m512 inv, __m512 scaled,
                           const LevelTables& t, void* dst) {
  const __m512i index = snap_index16<kSteps, kFull>(x, words, mask, inv, t);
  if constexpr (kOut == Output::kValues) {
    store_values16<kFull, kStream>(static_cast<float*>(dst), _mm512_permutexvar_ps(index, scaled), mask);
  } else {
    store_indices16<kFull>(dst, index, mask);
  }
}

// The indices of the 32 elements at x (the first m <= 32 of them; the rest read as zeros) as 16 bytes at
// `dst`: byte i holds element i in its low nibble and element 16 + i in its high one. Two groups share one
// narrowing (vpmovdb, two uops on the shuffle port that Philox and the search keep busy): one uop per
// group, as quantize's one permute per group.
template <int kSteps>
NUQ_CPU_INLINE void snap_nibbles32(const float* x, const uint32_t* words, int64_t m, __m512 inv, const LevelTables& t,
                           uint8_t* dst) {
  __m512i first, second;
  if (m >= 32) {
    first = snap_index16<kSteps, true>(x, words, 0xFFFF, inv, t);
    second = snap_index16<kSteps, true>(x + 16, words + 16, 0xFFFF, inv, t);
  } else {
    const __mmask16 m1 = m >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1);
    const __mmask16 m2 = m > 16 ? __mmask16((1u << (m - 16)) - 1) : __mmask16(0);
    first = _mm512_maskz_mov_epi32(m1, snap_index16<kSteps, false>(x, words, m1, inv, t));
    second = m2 ? _mm512_maskz_mov_epi32(m2, snap_index16<kSteps, false>(x + 16, words + 16, m2, inv, t))
                : _mm512_setzero_si512();
  }
  const __m512i pairs = _mm512_or_si512(first, _mm512_slli_epi32(second, 4));  // indices < 16: 4 bits
  _mm_store_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(pairs));
}

// Stores the low ceil(count * kBits / 8) bytes of `word` at dst + at, as one 8-byte store where the
// bucket's `room` bytes have them (the next group overwrites the extra ones).
template <int kBits>
NUQ_CPU_INLINE void store_group(uint8_t* dst, int64_t at, uint64_t word, int64_t count, int64_t room) {
  if (at + 8 <= room) {
    std::memcpy(dst + at, &word, 8);
  } else {
    std::memcpy(dst + at, &word, static_cast<size_t>((count * kBits + 7) / 8));
  }
}

// Packs 128 indices into 16 * kBits bytes at dst, kBits = 2, 3 or 4, all in vector registers (3 to 7 uops
// for 128 values): 128-bit lane L of `first` holds elements 32L..32L+15 as bytes, of `second` elements
// 32L+16..32L+31; neighbours are merged by multiply-adds (vpmaddubsw: pairs of bytes, vpmaddwd: pairs of
// 16-bit words), then packed down and gathered in stream order.
template <int kBits>
NUQ_CPU_INLINE void pack_halves128(__m512i first, __m512i second, uint8_t* dst) {
  const __m512i byte_pairs = _mm512_set1_epi16(static_cast<int16_t>(1 | (1 << (8 + kBits))));  // v0 + v1 << kBits
  const __m512i f2 = _mm512_maddubs_epi16(first, byte_pairs), s2 = _mm512_maddubs_epi16(second, byte_pairs);
  if (kBits == 4) {  // 16-bit words hold bytes of the stream: per lane, 8 of the first half then 8 of the second
    _mm512_storeu_si512(dst, _mm512_packus_epi16(f2, s2));
    return;
  }
  if (kBits == 3) {  // 6-bit fields as bytes (per lane 8 of the first half, 8 of the second), merged into
    // 12-bit then 24-bit fields; per lane bytes 0-2, 4-6, 8-10, 12-14 and the lanes' 12 bytes gathered
    const __m512i f6 = _mm512_maddubs_epi16(_mm512_packus_epi16(f2, s2), _mm512_set1_epi16(1 | (64 << 8)));
    const __m512i f12 = _mm512_madd_epi16(f6, _mm512_set1_epi32(1 | (4096 << 16)));
    const __m512i order = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    const __m512i lanes = _mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 3, 7, 11, 15), _mm512_shuffle_epi8(f12, order));
    _mm512_mask_storeu_epi32(dst, 0x0FFF, lanes);
    return;
  }
  // kBits == 2: 4-bit fields as bytes, merged into bytes of the stream (per lane 4 + 4, in 16-bit words),
  // then the lanes' low 8 bytes gathered
  const __m512i f8 = _mm512_maddubs_epi16(_mm512_packus_epi16(f2, s2), _mm512_set1_epi16(1 | (16 << 8)));
  const __m512i bytes = _mm512_packus_epi16(f8, _mm512_setzero_si512());
  const __m512i lanes = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), bytes);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_castsi512_si256(lanes));
}

// Four vectors of indices (< 256) as 64 bytes in element order: two dword packs and a word pack leave
// elements 4L..4L+3 of the four in 128-bit lane L, and a dword permute puts them in order (4 shuffle
// uops, against 8 for four vpmovdb).
NUQ_CPU_INLINE __m512i narrow4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i packed = _mm512_packus_epi16(_mm512_packus_epi32(a, b), _mm512_packus_epi32(c, d));
  return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), packed);
}

// Snaps 128 elements (eight full vectors) and packs them kBits (2..4) bits each into 16 * kBits bytes at
// dst, in registers: pack_halves128's halves are the even and the odd vectors, narrowed four at a time.
template <int kSteps, int kBits>
NUQ_CPU_INLINE void snap_pack128(const float* x, const uint32_t* words, __m512 inv, const LevelTables& t,
                                 uint8_t* dst) {
  __m512i v[8];
  for (int k = 0; k < 8; ++k) v[k] = snap_index16<kSteps, true>(x + 16 * k, words + 16 * k, 0xFFFF, inv, t);
  pack_halves128<kBits>(narrow4(v[0], v[2], v[4], v[6]), narrow4(v[1], v[3], v[5], v[7]), dst);
}

// Packs the m indices of a chunk's tail (after its groups of 128: snap_pack128), in snap_nibbles32's layout
// at `nibbles`, kBits bits each into `dst` (csrc/common/bitpack.h's stream), where `room` bytes belong to
// this bucket, by bit-extracts (BMI2 pext); all of a chunk at 1 bit.
template <int kBits>
NUQ_CPU_INLINE void pack_chunk(const uint8_t* nibbles, int64_t m, uint8_t* dst, int64_t room) {
  constexpr uint64_t kLow = ((uint64_t{1} << kBits) - 1) * 0x0101010101010101ull, kHigh = kLow << 4;
  for (int64_t e = 0; e < m; e += 32) {
    uint64_t q0, q1;
    std::memcpy(&q0, nibbles + e / 2, 8);
    std::memcpy(&q1, nibbles + e / 2 + 8, 8);
    const uint64_t first = _pext_u64(q0, kLow) | _pext_u64(q1, kLow) << (8 * kBits);
    const uint64_t second = _pext_u64(q0, kHigh) | _pext_u64(q1, kHigh) << (8 * kBits);
    const int64_t at = e / 8 * kBits;  // 16 values are 2 * kBits whole bytes
    store_group<kBits>(dst, at, first, std::min<int64_t>(16, m - e), room);
    if (m - e > 16) store_group<kBits>(dst, at + 2 * kBits, second, std::min<int64_t>(16, m - e - 16), room);
  }
}

// Fetches `lines` cache lines of the next bucket from element `ahead` into cache while this one is snapped:
// two lines per 16 elements snapped, so it has arrived well before its norm pass (the snapping is
// compute-bound, so this hides the memory latency entirely).
NUQ_CPU_INLINE void prefetch_next(const float* next, int64_t next_len, int64_t ahead, int lines) {
  for (int k = 0; k < lines && ahead + 16 * k < next_len; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(next + ahead + 16 * k), _MM_HINT_T0);
  }
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

// snap16 for 17..256 levels (`scaled` holds the norm).
template <int kSteps, Output kOut, bool kFull, bool kStream = false>
NUQ_CPU_INLINE void snap16(const float* x, const uint32_t* words, __mmask16 mask, __m512 inv, __m512 scaled,
                           const WideTables& t, void* dst) {
  const Snapped s = snap_wide16<kSteps, kFull>(x, words, mask, inv, t);
  if constexpr (kOut == Output::kValues) {
    store_values16<kFull, kStream>(static_cast<float*>(dst), _mm512_mul_ps(s.level, scaled), mask);
  } else {
    store_indices16<kFull>(dst, wide_index16(s, t), mask);
  }
}

// The indices of 64 elements (four full vectors) as 64 bytes in element order (narrow4).
template <int kSteps>
NUQ_CPU_INLINE __m512i snap_wide64(const float* x, const uint32_t* words, __m512 inv, const WideTables& t) {
  Snapped s[4];
  for (int v = 0; v < 4; ++v) s[v] = snap_wide16<kSteps, true>(x + 16 * v, words + 16 * v, 0xFFFF, inv, t);
  // r narrowed, then reversed bytewise (a pshufb per nibble), then plus one where up: a few ops per 64
  const __m512i r = narrow4(s[0].r, s[1].r, s[2].r, s[3].r), low4 = _mm512_set1_epi8(0x0F);
  const __m512i j = _mm512_or_si512(_mm512_shuffle_epi8(t.reverse_low_bytes, _mm512_and_si512(r, low4)),
                                    _mm512_shuffle_epi8(t.reverse_high_bytes,
                                                        _mm512_and_si512(_mm512_srli_epi16(r, 4), low4)));
  const __mmask64 up = _mm512_kunpackd(_mm512_kunpackw(s[3].up, s[2].up), _mm512_kunpackw(s[1].up, s[0].up));
  return _mm512_mask_add_epi8(j, up, j, _mm512_set1_epi8(1));
}

// Byte i of a 128-bit lane of packed output: the low `bits` bytes of its first 64-bit word, then of its second.
constexpr char lane_byte(int i, int bits) { return static_cast<char>(i < bits ? i : i < 2 * bits ? 8 + i - bits : -1); }

// Packs 64 byte indices (kBits = 5..7 bits each) into 8 * kBits bytes at dst, of which `room` bytes belong to
// the bucket: multiply-adds merge neighbours (pairs of bytes, then of 16-bit words), a bit-select the 32-bit
// halves of each 64-bit word, which then holds kBits bytes of the stream; each 128-bit lane's 2 * kBits
// bytes are stored in turn (each store's spare bytes are overwritten by the next, or by the next group).
template <int kBits>
NUQ_CPU_INLINE void pack64(__m512i bytes, uint8_t* dst, int64_t room) {
  // vpmaddubsw: the constant as the unsigned operand, so 2^7 fits; indices < 2^7 are the signed one
  const __m512i f2 = _mm512_maddubs_epi16(_mm512_set1_epi16(static_cast<int16_t>(1 | (1 << (8 + kBits)))), bytes);
  const __m512i f4 = _mm512_madd_epi16(f2, _mm512_set1_epi32(1 | (1 << (16 + 2 * kBits))));
  const __m512i keep = _mm512_set1_epi64((int64_t{1} << (4 * kBits)) - 1);
  const __m512i f8 = _mm512_ternarylogic_epi64(keep, f4, _mm512_srli_epi64(f4, 32 - 4 * kBits), 0xCA);  // keep ? f4 : hi
  const __m512i lanes = _mm512_shuffle_epi8(f8, _mm512_broadcast_i32x4(_mm_setr_epi8(
      lane_byte(0, kBits), lane_byte(1, kBits), lane_byte(2, kBits), lane_byte(3, kBits), lane_byte(4, kBits),
      lane_byte(5, kBits), lane_byte(6, kBits), lane_byte(7, kBits), lane_byte(8, kBits), lane_byte(9, kBits),
      lane_byte(10, kBits), lane_byte(11, kBits), lane_byte(12, kBits), lane_byte(13, kBits),
      lane_byte(14, kBits), lane_byte(15, kBits))));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_castsi512_si128(lanes));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * kBits), _mm512_extracti32x4_epi32(lanes, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 4 * kBits), _mm512_extracti32x4_epi32(lanes, 2));
  const __m128i last = _mm512_extracti32x4_epi32(lanes, 3);
  if (6 * kBits + 16 <= room) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 6 * kBits), last);
  } else {
    _mm_mask_storeu_epi8(dst + 6 * kBits, static_cast<__mmask16>((1u << (2 * kBits)) - 1), last);
  }
}

// Packs the m byte indices at idx kBits (5..7) bits each into `dst`, whose `room` bytes belong to the bucket:
// one bit-extract (BMI2 pext) per 8 values.
template <int kBits>
NUQ_CPU_INLINE void pack_bytes(const uint8_t* idx, int64_t m, uint8_t* dst, int64_t room) {
  constexpr uint64_t kFields = ((uint64_t{1} << kBits) - 1) * 0x0101010101010101ull;
  for (int64_t e = 0; e < m; e += 8) {
    const int64_t count = std::min<int64_t>(8, m - e);
    uint64_t w;
    std::memcpy(&w, idx + e, 8);
    if (count < 8) w &= (uint64_t{1} << (8 * count)) - 1;  // the padding bits of a last byte are zero
    store_group<kBits>(dst, e / 8 * kBits, _pext_u64(w, kFields), count, room);
  }
}

// The values the snapped levels are multiplied by: levels * norm for a permute (up to 16 levels), the
// norm itself for the wide search's levels.
inline __m512 scaled_levels(const LevelTables& t, float norm) { return _mm512_mul_ps(t.levels, _mm512_set1_ps(norm)); }
inline __m512 scaled_levels(const WideTables&, float norm) { return _mm512_set1_ps(norm); }

// Snap a bucket whose stream starts at g0 into `dst` (values, indices or packed bytes of this bucket),
// in chunks of kWords elements: one vectorised Philox call gives the chunk's words when g0 is a multiple
// of 4; otherwise the chunk also needs the first words of the next block, one scalar Philox call. Packed
// output goes through the chunk's indices (kWords bytes, in L1) and pack_chunk.
template <int kSteps, Output kOut, int kBits, typename Tables>
void snap_bucket(const float* x, int64_t len, float norm, uint64_t g0, const Tables& t,
                 const RoundKeys& keys, void* dst, const float* next, int64_t next_len, bool stream) {
  constexpr bool kWide = std::is_same_v<Tables, WideTables>;
  const float inv_s = norm > 0.0f ? 1.0f / norm : 0.0f;
  const __m512 inv = _mm512_set1_ps(inv_s), scaled = scaled_levels(t, norm);
  alignas(64) uint32_t words[kWords + 4];
  alignas(64) uint8_t nibbles[kOut == Output::kPacked ? kWords : 1];  // (wide levels: one byte per index)
  const int64_t shift = static_cast<int64_t>(g0 & 3);  // every chunk starts kWords later: the same shift
  for (int64_t c = 0; c < len; c += kWords) {
    const int64_t m = std::min<int64_t>(len - c, kWords);
    const uint64_t block = (g0 + static_cast<uint64_t>(c)) >> 2;
    philox_words(block, keys, words);
    if (shift + m > kWords) philox4x32_10(block + kWords / 4, keys.k0[0], keys.k1[0], words + kWords);
    const uint32_t* w = words + shift;
    if constexpr (kWide && kOut != Output::kValues) {  // byte indices, 64 at a time; the message itself at 8 bits
      constexpr bool direct = kOut == Output::kIndices || kBits == 8;
      uint8_t* bytes = direct ? static_cast<uint8_t*>(dst) + c : nibbles;
      uint8_t* packed = static_cast<uint8_t*>(dst) + c / 8 * kBits;  // (only for kBits < 8)
      const int64_t room = (len * kBits + 7) / 8 - c / 8 * kBits;
      int64_t e = 0;
      for (; e + 64 <= m; e += 64) {
        prefetch_next(next, next_len, 2 * (c + e), 8);
        const __m512i index = snap_wide64<kSteps>(x + c + e, w + e, inv, t);
        if constexpr (direct) {
          _mm512_storeu_si512(bytes + e, index);
        } else {
          pack64<kBits>(index, packed + e / 8 * kBits, room - e / 8 * kBits);
        }
      }
      const int64_t tail = e;
      for (; e + 16 <= m; e += 16) {
        snap16<kSteps, Output::kIndices, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, bytes + e);
      }
      if (e < m) {
        snap16<kSteps, Output::kIndices, false>(x + c + e, w + e, __mmask16((1u << (m - e)) - 1), inv, scaled, t,
                                                bytes + e);
      }
      if constexpr (!direct) {
        if (tail < m) pack_bytes<kBits>(nibbles + tail, m - tail, packed + tail / 8 * kBits, room - tail / 8 * kBits);
      }
      continue;
    } else if constexpr (kOut == Output::kPacked) {  // c is a multiple of kWords, so of 8: the chunk starts on a whole byte
      uint8_t* packed = static_cast<uint8_t*>(dst) + c / 8 * kBits;
      int64_t e = 0;
      if constexpr (kBits >= 2) {  // 128 at a time in registers
        for (; e + 128 <= m; e += 128) {
          prefetch_next(next, next_len, 2 * (c + e), 16);
          snap_pack128<kSteps, kBits>(x + c + e, w + e, inv, t, packed + e / 8 * kBits);
        }
      }
      if (e < m) {  // the rest through the nibble buffer
        for (int64_t f = e; f < m; f += 32) {
          prefetch_next(next, next_len, 2 * (c + f), 4);
          snap_nibbles32<kSteps>(x + c + f, w + f, m - f, inv, t, nibbles + (f - e) / 2);
        }
        pack_chunk<kBits>(nibbles, m - e, packed + e / 8 * kBits, (len * kBits + 7) / 8 - (c + e) / 8 * kBits);
      }
      continue;
    }
    float* values = kOut == Output::kValues ? static_cast<float*>(dst) + c : nullptr;
    uint8_t* indices = kOut == Output::kIndices ? static_cast<uint8_t*>(dst) + c : nullptr;
    int64_t e = 0;
    for (; e + 16 <= m; e += 16) {
      prefetch_next(next, next_len, 2 * (c + e), 2);
      if (kOut == Output::kIndices) {
        snap16<kSteps, kOut, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, indices + e);
      } else if (stream && (reinterpret_cast<uintptr_t>(values + e) & 63) == 0) {
        snap16<kSteps, kOut, true, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, values + e);
      } else {
        snap16<kSteps, kOut, true>(x + c + e, w + e, 0xFFFF, inv, scaled, t, values + e);
      }
    }
    if (e < m) {
      void* group = kOut == Output::kValues ? static_cast<void*>(values + e) : static_cast<void*>(indices + e);
      snap16<kSteps, kOut, false>(x + c + e, w + e, __mmask16((1u << (m - e)) - 1), inv, scaled, t, group);
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

// The same for 17..256 levels (4..8 search steps; packed: 5..8 bits).
template <Output kOut, typename... Args>
void snap_bucket_any(const WideTables& t, int bits, Args... args) {
  if (kOut != Output::kPacked) {
    switch (t.steps) {
      case 4: return snap_bucket<4, kOut, 0>(args...);
      case 5: return snap_bucket<5, kOut, 0>(args...);
      case 6: return snap_bucket<6, kOut, 0>(args...);
      case 7: return snap_bucket<7, kOut, 0>(args...);
      default: return snap_bucket<8, kOut, 0>(args...);
    }
  }
  switch (t.steps * 16 + bits) {
    case 4 * 16 + 5: return snap_bucket<4, kOut, 5>(args...);
    case 5 * 16 + 5: return snap_bucket<5, kOut, 5>(args...);
    case 5 * 16 + 6: return snap_bucket<5, kOut, 6>(args...);
    case 6 * 16 + 6: return snap_bucket<6, kOut, 6>(args...);
    case 6 * 16 + 7: return snap_bucket<6, kOut, 7>(args...);
    case 7 * 16 + 7: return snap_bucket<7, kOut, 7>(args...);
    case 7 * 16 + 8: return snap_bucket<7, kOut, 8>(args...);
    default: return snap_bucket<8, kOut, 8>(args...);
  }
}

template <typename Tables>
void run_buckets_with(const Tables& t, const BucketJob& job, int64_t first, int64_t last) {
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

}  // namespace

bool handles(const float* levels, int num_levels) {
  if (num_levels < 2 || num_levels > kMaxLevels) return false;
  if (num_levels > kMaxPermuteLevels) return true;  // the wide search computes the reference's r * gap as such
  for (int j = 0; j + 1 < num_levels; ++j) {  // the scaled gaps of LevelTables must be exact
    const float gap = levels[j + 1] - levels[j];
    if (gap != 0.0f && !(gap >= 0x1p-90f)) return false;
  }
  return true;
}

void run_buckets(const BucketJob& job, int64_t first, int64_t last) {
  if (job.num_levels <= kMaxPermuteLevels) {
    run_buckets_with(level_tables(job.levels, job.num_levels), job, first, last);
  } else {
    const WideTables t = wide_tables(job.levels, job.num_levels);
    run_buckets_with(t, job, first, last);
  }
}

namespace {

// Writes (or adds to what is there, `accumulate`) the decoded values of the lanes in `mask` (all, `full`).
NUQ_CPU_INLINE void store_decoded(float* out, __m512 value, __mmask16 mask, bool full, bool accumulate) {
  if (full) {
    _mm512_storeu_ps(out, accumulate ? _mm512_add_ps(_mm512_loadu_ps(out), value) : value);
  } else {
    _mm512_mask_storeu_ps(out, mask, accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), value) : value);
  }
}

// decode_buckets for kBits-bit indices: per 16 values two 8-byte loads (values 0-7 and 8-15), spread to
// bytes by BMI2 pdep, and levels[index] * norm looked up in the bucket's levels * norm, padded to a table of
// max(16, 2^kBits) entries.
template <int kBits>
void decode_bits(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index) {
  constexpr int kEntries = 1 << kBits, kTable = kEntries < 16 ? 16 : kEntries;
  alignas(64) float padded[kTable], scaled[kTable];  // scaled: levels * this bucket's norm
  for (int j = 0; j < kTable; ++j) padded[j] = job.levels[std::min(j, job.num_levels - 1)];
  constexpr uint64_t kFields = ((uint64_t{1} << kBits) - 1) * 0x0101010101010101ull;
  __m512i seen = _mm512_setzero_si512();  // lane-wise maximum index: one out of range fails the call
  for (int64_t b = first; b < last; ++b) {
    const int64_t start = b * job.bucket;
    const int64_t len = std::min(job.bucket, job.n - start);
    float norm;
    std::memcpy(&norm, job.norms + 4 * b, 4);
    for (int j = 0; j < kTable; j += 16) {  // (a product stored, never fused with the accumulating add)
      _mm512_store_ps(scaled + j, _mm512_mul_ps(_mm512_load_ps(padded + j), _mm512_set1_ps(norm)));
    }
    const uint8_t* src = job.packed + start / 8 * kBits;
    float* out = job.out + start;
    for (int64_t e = 0; e < len; e += 16) {
      const int64_t count = std::min<int64_t>(16, len - e);
      const uint8_t* at = src + e / 8 * kBits;
      uint64_t low = 0, high = 0;  // values 0-7 at `at`, 8-15 kBits bytes later (pdep reads 8 kBits bits)
      if (at + kBits + 8 <= job.end) {
        std::memcpy(&low, at, 8);
        std::memcpy(&high, at + kBits, 8);
      } else {  // the message's last bytes: only those that exist
        alignas(16) uint8_t tail[16] = {};
        std::memcpy(tail, at, static_cast<size_t>(std::min<int64_t>((count * kBits + 7) / 8, job.end - at)));
        std::memcpy(&low, tail, 8);
        std::memcpy(&high, tail + kBits, 8);
      }
      const __m512i index = _mm512_cvtepu8_epi32(
          _mm_set_epi64x(static_cast<int64_t>(_pdep_u64(high, kFields)), static_cast<int64_t>(_pdep_u64(low, kFields))));
      __mmask16 high_bits[3] = {};  // index bits 5, 6, 7: the blends of tables of 64, 128 and 256 entries
      for (int i = 0; i + 5 < kBits; ++i) high_bits[i] = _mm512_test_epi32_mask(index, _mm512_set1_epi32(32 << i));
      const __mmask16 mask = count == 16 ? __mmask16(0xFFFF) : __mmask16((1u << count) - 1);
      seen = _mm512_mask_max_epu32(seen, mask, seen, index);
      store_decoded(out + e, lookup<kEntries>(index, scaled, high_bits), mask, count == 16, job.accumulate);
    }
  }
  *max_index = std::max(*max_index, static_cast<uint32_t>(_mm512_reduce_max_epu32(seen)));
}

}  // namespace

void decode_buckets(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index) {
  switch (job.bits) {
    case 1: return decode_bits<1>(job, first, last, max_index);
    case 2: return decode_bits<2>(job, first, last, max_index);
    case 3: return decode_bits<3>(job, first, last, max_index);
    case 4: return decode_bits<4>(job, first, last, max_index);
    case 5: return decode_bits<5>(job, first, last, max_index);
    case 6: return decode_bits<6>(job, first, last, max_index);
    case 7: return decode_bits<7>(job, first, last, max_index);
    default: return decode_bits<8>(job, first, last, max_index);
  }
}

}  // namespace avx512
}  // namespace nuq

#pragma GCC pop_options
#endif  // NUQ_HAVE_AVX512_KERNEL
