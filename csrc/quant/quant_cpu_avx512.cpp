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
//
// This file is the driver: buckets, norms, outputs and the decode. Its parts are headers of their own:
// quant_cpu_avx512_philox.h (the random words), quant_cpu_avx512_search.h (the level search) and
// quant_cpu_avx512_pack.h (packing for the fused encode).
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

NUQ_AVX512_BEGIN
#include "quant_cpu_kernel.h"
#include "quant_cpu_avx512_pack.h"
#include "quant_cpu_avx512_philox.h"
#include "quant_cpu_avx512_search.h"

namespace nuq {
namespace avx512 {
namespace {

constexpr int64_t kStreamValues = 1 << 21; // outputs this big (8 MiB) bypass the cache: streaming stores
                                           // skip reading each line before writing it (+12% at 64 MiB)

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
  return l2_norm_float(std::sqrt(acc[0]));
}

enum class Output { kValues, kIndices, kPacked };

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

// Fetches `lines` cache lines of the next bucket from element `ahead` into cache while this one is snapped:
// two lines per 16 elements snapped, so it has arrived well before its norm pass (the snapping is
// compute-bound, so this hides the memory latency entirely).
NUQ_CPU_INLINE void prefetch_next(const float* next, int64_t next_len, int64_t ahead, int lines) {
  for (int k = 0; k < lines && ahead + 16 * k < next_len; ++k) {
    _mm_prefetch(reinterpret_cast<const char*>(next + ahead + 16 * k), _MM_HINT_T0);
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
  bitpack::with_bits(job.bits, [&](auto b) { decode_bits<b()>(job, first, last, max_index); });
}

}  // namespace avx512
}  // namespace nuq

NUQ_AVX512_END
#endif  // NUQ_HAVE_AVX512_KERNEL
