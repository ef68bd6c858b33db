// The AVX2 path of the ActNN group codec (group_cpu.h): 8 float lanes, the AVX2 Philox of the quantize
// kernel (quant_cpu_avx2_philox.h), the same IEEE operations as the generic path in the same order (never
// fused: fp-contract=off), so the codes agree bit for bit. group.cpp calls it where the CPU has AVX2, FMA and
// BMI2 and no AVX-512, or when forced (NUQ_CPU_KERNEL=avx2).
#include "group_cpu.h"
#include "quant_cpu_avx2.h"  // NUQ_HAVE_AVX2_KERNEL

#if NUQ_HAVE_AVX2_KERNEL
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../common/bitpack.h"
#include "quant_common.h"

#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2")
#pragma GCC optimize("fp-contract=off")
#include "quant_cpu_avx2_philox.h"
#include "group_kernel.h"

namespace nuq {
namespace group_avx2 {
namespace {

struct Avx2Path {
  using Keys = avx2::RoundKeys;
  static Keys keys(uint32_t k0, uint32_t k1) { return avx2::round_keys(k0, k1); }
  static void words(uint64_t g, const Keys& k, uint32_t* out) {
    static_assert(avx2::kChunkWords == kGroupWords, "philox_chunk writes kGroupWords words");
    avx2::philox_chunk(g, k, out);
  }
  static void minmax(const float* x, int64_t len, float* lo, float* hi) {
    float a = x[0], b = x[0];
    int64_t i = 0;
    if (len >= 8) {
      __m256 va = _mm256_loadu_ps(x), vb = va;
      for (i = 8; i + 8 <= len; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        va = _mm256_min_ps(va, v);
        vb = _mm256_max_ps(vb, v);
      }
      alignas(32) float la[8], lb[8];
      _mm256_store_ps(la, va);
      _mm256_store_ps(lb, vb);
      for (int k = 0; k < 8; ++k) {
        a = la[k] < a ? la[k] : a;
        b = lb[k] > b ? lb[k] : b;
      }
    }
    for (; i < len; ++i) {
      a = x[i] < a ? x[i] : a;
      b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
  }
  static void codes(const float* x, int64_t len, float lo, float scale, float levels, const uint32_t* w,
                    uint8_t* out) {
    const __m256 vlo = _mm256_set1_ps(lo), vscale = _mm256_set1_ps(scale), vlevels = _mm256_set1_ps(levels);
    const __m256 unit = _mm256_set1_ps(0x1p-24f), half = _mm256_set1_ps(0.5f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vlo), vscale);
      const __m256i wi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i));
      const __m256 noise = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(wi, 8)), unit), half);
      __m256 y = _mm256_add_ps(t, noise);
      y = _mm256_min_ps(_mm256_max_ps(y, zero), vlevels);
      const __m256i c = _mm256_cvtps_epi32(y);  // rounds half to even (the default mode), as std::nearbyint
      const __m128i c16 = _mm_packus_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(c16, c16));
    }
    for (; i < len; ++i) out[i] = round_code(x[i], lo, scale, levels, w[i]);
  }
  static void pack(const uint8_t* c, int64_t m, int bits, uint8_t* dst) { bitpack::pack_bits(c, m, bits, dst); }
  static void unpack(const uint8_t* src, int64_t m, int bits, const uint8_t* end, uint8_t* dst) {
    unpack_codes(src, m, bits, end, dst);
  }
  static void dequant(const uint8_t* c, int64_t len, float scale, float mn, int /*bits*/, float* out) {
    const __m256 vscale = _mm256_set1_ps(scale), vmn = _mm256_set1_ps(mn);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
      const __m256i ci = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + i)));
      _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_div_ps(_mm256_cvtepi32_ps(ci), vscale), vmn));
    }
    for (; i < len; ++i) out[i] = static_cast<float>(c[i]) / scale + mn;
  }
};

}  // namespace

void ranges(const GroupJob& job, int64_t first, int64_t last) { range_units<Avx2Path>(job, first, last); }
void compress(const GroupJob& job, int64_t first, int64_t last) { compress_units<Avx2Path>(job, first, last); }
void decompress(const GroupJob& job, int64_t first, int64_t last) { decompress_units<Avx2Path>(job, first, last); }

}  // namespace group_avx2
}  // namespace nuq

#pragma GCC pop_options
#endif  // NUQ_HAVE_AVX2_KERNEL
