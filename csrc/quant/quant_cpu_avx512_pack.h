// Packing in the AVX-512 kernel's fused encode: snapped level indices narrowed to bytes and packed `kBits`
// bits each into csrc/common/bitpack.h's stream, in registers (pack_halves128, pack64: 128 or 64 values at
// once) or by BMI2 bit-extracts for the tails (pack_chunk, pack_bytes), with the snap-and-pack loops that
// feed them (snap_pack128, snap_nibbles32, snap_wide64). Part of quant_cpu_avx512.cpp (the driver), its
// only includer; compiled for AVX-512 (NUQ_AVX512_BEGIN).
#pragma once
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <algorithm>
#include <cstring>

#include "quant_cpu_avx512_search.h"  // snap_index16, snap_wide16 and the tables (intrinsics, cpu:: helpers)
NUQ_AVX512_BEGIN

namespace nuq {
namespace avx512 {
namespace {  // included by quant_cpu_avx512.cpp only

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

}  // namespace
}  // namespace avx512
}  // namespace nuq

NUQ_AVX512_END
#endif  // NUQ_HAVE_AVX512_KERNEL
