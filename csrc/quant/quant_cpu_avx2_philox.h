// Philox4x32-10 for the AVX2 kernels (4 blocks per ymm register): included, under the AVX2 target pragma,
// by quant_cpu_avx2.cpp (the quantize kernel) and group_cpu_avx2.cpp (the ActNN group codec). Computes exactly
// what quant_common.h's philox4x32_10 computes one block at a time, and nuq/philox.py in Python.
//
// Why by hand: Philox costs 5 multiplies of 32x32 -> 64 bits per random word and dominates the kernels;
// the compiler's vectorisation of it widens every word to 64 bits. Each 64-bit lane holds one block's
// (c0, c1) in register a and (c2, c3) in register b, so vpmuludq multiplies c0 and c2 in place; a round is
// then p = c * M, the high word xored with the other word and the key, and a swap of the 32-bit halves.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant_common.h"  // the Philox constants

namespace nuq {
namespace avx2 {
namespace {  // each includer compiles its own copy for AVX2

constexpr int kRegs = 4;                   // registers of 4 blocks each computed together (8 ymm live)
constexpr int kGroupBlocks = 4 * kRegs;    // 16 blocks = 64 words per group

struct RoundKeys {
  __m256i k0[10], k1[10];  // each key in the high half of every 64-bit lane
};

RoundKeys round_keys(uint32_t k0, uint32_t k1) {
  RoundKeys keys;
  for (int r = 0; r < 10; ++r) {
    keys.k0[r] = _mm256_set1_epi64x(static_cast<int64_t>(static_cast<uint64_t>(k0) << 32));
    keys.k1[r] = _mm256_set1_epi64x(static_cast<int64_t>(static_cast<uint64_t>(k1) << 32));
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return keys;
}

// The 4 kRegs words of Philox blocks q, q+1, .. in stream order (block i's word w at 4 i + w), as
// quant_common.h's philox4x32_10 computes them one block at a time. Lane i of a[r] (b[r]) holds block
// 4 r + i's (c0, c1) ((c2, c3)). A round: p0 = c0 * M0 (vpmuludq on a), p1 = c2 * M1 (on b); the new
// (c0, c1) = (hi(p1) ^ c1 ^ k0, lo(p1)) is p1 ^ (c1 ^ k0 in the high half) with its halves swapped.
inline void philox_group(uint64_t q, const RoundKeys& keys, uint32_t* __restrict out) {
  const __m256i m0 = _mm256_set1_epi64x(kPhiloxM0), m1 = _mm256_set1_epi64x(kPhiloxM1);
  const __m256i high = _mm256_set1_epi64x(static_cast<int64_t>(0xFFFFFFFF00000000ull));
  __m256i a[kRegs], b[kRegs];
  for (int r = 0; r < kRegs; ++r) {  // the 64-bit counter q + i is exactly (c0, c1) = (low, high) words
    a[r] = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<int64_t>(q + 4 * static_cast<uint64_t>(r))),
                            _mm256_setr_epi64x(0, 1, 2, 3));
    b[r] = _mm256_setzero_si256();
  }
  for (int round = 0; round < 10; ++round) {
    for (int r = 0; r < kRegs; ++r) {
      const __m256i p0 = _mm256_mul_epu32(a[r], m0);
      const __m256i p1 = _mm256_mul_epu32(b[r], m1);
      const __m256i na = _mm256_xor_si256(p1, _mm256_xor_si256(_mm256_and_si256(a[r], high), keys.k0[round]));
      const __m256i nb = _mm256_xor_si256(p0, _mm256_xor_si256(_mm256_and_si256(b[r], high), keys.k1[round]));
      a[r] = _mm256_shuffle_epi32(na, _MM_SHUFFLE(2, 3, 0, 1));
      b[r] = _mm256_shuffle_epi32(nb, _MM_SHUFFLE(2, 3, 0, 1));
    }
  }
  for (int r = 0; r < kRegs; ++r) {  // blocks 0, 2 and 1, 3 of the register, then in order
    const __m256i even = _mm256_unpacklo_epi64(a[r], b[r]), odd = _mm256_unpackhi_epi64(a[r], b[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * r), _mm256_permute2x128_si256(even, odd, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * r + 8), _mm256_permute2x128_si256(even, odd, 0x31));
  }
}

constexpr int kChunkWords = 256;  // words of philox_chunk
constexpr int kChunkGroups = (kChunkWords / 4 + 1 + kGroupBlocks - 1) / kGroupBlocks;  // 5: 65 blocks at any alignment

// The kChunkWords words of stream positions g .. g + 255 (any alignment: positions 4q .. 4q + 3 share block q).
inline void philox_chunk(uint64_t g, const RoundKeys& keys, uint32_t* __restrict words) {
  const uint64_t first = g >> 2;
  alignas(32) uint32_t buf[4 * kGroupBlocks * kChunkGroups];
  const int groups = g % 4 == 0 ? kChunkWords / (4 * kGroupBlocks) : kChunkGroups;  // aligned: 64 blocks, else 65
  for (int i = 0; i < groups; ++i) philox_group(first + static_cast<uint64_t>(i * kGroupBlocks), keys, buf + 64 * i);
  std::memcpy(words, buf + (g - 4 * first), sizeof(uint32_t) * kChunkWords);
}

}  // namespace
}  // namespace avx2
}  // namespace nuq
