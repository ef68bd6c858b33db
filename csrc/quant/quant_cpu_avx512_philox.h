// Philox4x32-10 for the AVX-512 kernel: 256 random words per call, 8 groups of 8 blocks, each round a few
// vector ops per register (see philox_words). Computes exactly what quant_common.h's philox4x32_10 computes
// one block at a time, and nuq/philox.py in Python. Included by quant_cpu_avx512.cpp (the quantize kernel)
// and group_cpu_avx512.cpp (the ActNN group codec), each its own copy; compiled for AVX-512 (NUQ_AVX512_BEGIN).
#pragma once
#include "quant_cpu_avx512.h"

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <cstdint>

#include "quant_common.h"  // the Philox constants and the scalar philox4x32_10
NUQ_AVX512_BEGIN

namespace nuq {
namespace avx512 {
namespace {  // each includer compiles its own copy

constexpr int kGroups = 8;                // Philox groups of 8 blocks computed together
constexpr int kWords = 32 * kGroups;      // random words per chunk: 256 elements

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

}  // namespace
}  // namespace avx512
}  // namespace nuq

NUQ_AVX512_END
#endif  // NUQ_HAVE_AVX512_KERNEL
