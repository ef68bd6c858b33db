// The AVX-512 path of the ActNN group codec (group_cpu.h): 16 float lanes (masked tails), the AVX-512 Philox
// of the quantize kernel (quant_cpu_avx512_philox.h), the same IEEE operations as the generic path in the
// same order (never fused: fp-contract=off), so the codes agree bit for bit. group.cpp calls it where the
// CPU has AVX-512 (F, BW, DQ, VL) and BMI2, unless NUQ_CPU_KERNEL forces a slower path.
#include "group_cpu.h"
#include "quant_cpu_avx512.h"  // NUQ_HAVE_AVX512_KERNEL, NUQ_AVX512_BEGIN

#if NUQ_HAVE_AVX512_KERNEL
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/bitpack.h"
#include "quant_common.h"

NUQ_AVX512_BEGIN
#pragma GCC optimize("fp-contract=off")
#include "quant_cpu_avx512_philox.h"
#include "group_kernel.h"

namespace nuq {
namespace group_avx512 {
namespace {

inline __mmask16 tail_mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1); }

// bitpack::pack with one BMI2 bit-extract per 8 codes (fast on the Intel CPUs that have AVX-512; 8 bits: a copy).
template <int kBits>
inline void pext_pack(const uint8_t* c, int64_t m, uint8_t* dst) {
  constexpr uint64_t kFields = ((uint64_t{1} << kBits) - 1) * 0x0101010101010101ull;
  const int64_t full = m / 8;
  for (int64_t k = 0; k < full; ++k) {
    uint64_t w;
    std::memcpy(&w, c + 8 * k, 8);
    const uint64_t packed = _pext_u64(w, kFields);
    std::memcpy(dst + kBits * k, &packed, kBits);
  }
  if (m > 8 * full) bitpack::pack_up_to_8<kBits>(c + 8 * full, m - 8 * full, dst + kBits * full);
}

// unpack_codes with one BMI2 bit-deposit per 8 codes.
template <int kBits>
inline void pdep_unpack(const uint8_t* src, int64_t m, const uint8_t* end, uint8_t* dst) {
  constexpr uint64_t kFields = ((uint64_t{1} << kBits) - 1) * 0x0101010101010101ull;
  for (int64_t k = 0; k < m; k += 8) {
    const uint8_t* at = src + k / 8 * kBits;
    uint64_t w = 0;
    if (end - at >= 8) {
      std::memcpy(&w, at, 8);  // one load; the bytes past this group's are dropped by the deposit
    } else {
      std::memcpy(&w, at, static_cast<size_t>(std::min<int64_t>(kBits, end - at)));
    }
    const uint64_t v = _pdep_u64(w, kFields);
    std::memcpy(dst + k, &v, 8);
  }
}

struct Avx512Path {
  using Keys = avx512::RoundKeys;
  static Keys keys(uint32_t k0, uint32_t k1) { return avx512::round_keys(k0, k1); }
  static void words(uint64_t g, const Keys& k, uint32_t* out) {
    static_assert(avx512::kWords == kGroupWords, "philox_words writes kGroupWords words");
    if (g % 4 == 0) {
      avx512::philox_words(g >> 2, k, out);
      return;
    }
    alignas(64) uint32_t buf[2 * kGroupWords];  // positions 4q .. 4q + 511 cover g .. g + 255
    avx512::philox_words(g >> 2, k, buf);
    avx512::philox_words((g >> 2) + kGroupWords / 4, k, buf + kGroupWords);
    std::memcpy(out, buf + g % 4, sizeof(uint32_t) * kGroupWords);
  }
  // (The first read of x: each line prefetched kAhead bytes before it is needed, so DRAM streams ahead of us.)
  static void minmax(const float* x, int64_t len, float* lo, float* hi) {
    constexpr int64_t kAhead = 4096 / sizeof(float);
    __m512 va = _mm512_set1_ps(x[0]), vb = va;
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(x + i + kAhead), _MM_HINT_T0);
      const __m512 v = _mm512_loadu_ps(x + i);
      va = _mm512_min_ps(va, v);
      vb = _mm512_max_ps(vb, v);
    }
    if (i < len) {
      const __mmask16 m = tail_mask(len - i);
      const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
      va = _mm512_mask_min_ps(va, m, va, v);
      vb = _mm512_mask_max_ps(vb, m, vb, v);
    }
    *lo = _mm512_reduce_min_ps(va);
    *hi = _mm512_reduce_max_ps(vb);
  }
  static void codes(const float* x, int64_t len, float lo, float scale, float levels, const uint32_t* w,
                    uint8_t* out) {
    const __m512 vlo = _mm512_set1_ps(lo), vscale = _mm512_set1_ps(scale), vlevels = _mm512_set1_ps(levels);
    const __m512 unit = _mm512_set1_ps(0x1p-24f), half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = len - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(len - i);
      const __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vlo), vscale);
      const __m512i wi = _mm512_maskz_loadu_epi32(m, w + i);
      const __m512 noise = _mm512_sub_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(wi, 8)), unit), half);
      __m512 y = _mm512_add_ps(t, noise);
      y = _mm512_min_ps(_mm512_max_ps(y, zero), vlevels);
      // the conversion rounds half to even (the default rounding mode), as std::nearbyint does
      _mm512_mask_cvtepi32_storeu_epi8(out + i, m, _mm512_cvtps_epi32(y));
    }
  }
  static void pack(const uint8_t* c, int64_t m, int bits, uint8_t* dst) {
    bitpack::with_bits(bits, [&](auto b) { pext_pack<b()>(c, m, dst); });
  }
  static void unpack(const uint8_t* src, int64_t m, int bits, const uint8_t* end, uint8_t* dst) {
    bitpack::with_bits(bits, [&](auto b) { pdep_unpack<b()>(src, m, end, dst); });
  }
  // Up to 4 bits, code / scale + mn of the 16 possible codes once per group (one division), then a lookup.
  static void dequant(const uint8_t* c, int64_t len, float scale, float mn, int bits, float* out) {
    const __m512 vscale = _mm512_set1_ps(scale), vmn = _mm512_set1_ps(mn);
    const __m512 table = _mm512_add_ps(
        _mm512_div_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), vscale), vmn);
    for (int64_t i = 0; i < len; i += 16) {
      const __mmask16 m = len - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(len - i);
      const __m512i code = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, c + i));
      if (bits <= 4) {
        _mm512_mask_storeu_ps(out + i, m, _mm512_permutexvar_ps(code, table));
      } else {
        _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_div_ps(_mm512_cvtepi32_ps(code), vscale), vmn));
      }
    }
  }
};

}  // namespace

void ranges(const GroupJob& job, int64_t first, int64_t last) { range_units<Avx512Path>(job, first, last); }
void compress(const GroupJob& job, int64_t first, int64_t last) { compress_units<Avx512Path>(job, first, last); }
void decompress(const GroupJob& job, int64_t first, int64_t last) { decompress_units<Avx512Path>(job, first, last); }

}  // namespace group_avx512
}  // namespace nuq

NUQ_AVX512_END
#endif  // NUQ_HAVE_AVX512_KERNEL
