// The generic (portable, scalar) path of the ActNN group codec (group_cpu.h): the reference arithmetic one
// value at a time, with quant_cpu_kernel.h's Philox (chunk_words). It runs where neither AVX2 nor AVX-512 is
// available, or when forced (NUQ_CPU_KERNEL=generic), and is what the vector paths must equal bit for bit.
#include "quant_cpu_kernel.h"  // cpu::chunk_words (before the pragma: its copy is the baseline one)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")  // (x - min) * scale + noise: two roundings, as every path does
#endif
#include "group_kernel.h"

namespace nuq {
namespace group_generic {
namespace {

struct GenericPath {
  struct Keys {
    uint32_t k0, k1;
  };
  static Keys keys(uint32_t k0, uint32_t k1) { return Keys{k0, k1}; }
  static void words(uint64_t g, const Keys& k, uint32_t* out) {
    static_assert(cpu::kChunk == kGroupWords, "chunk_words writes kGroupWords words");
    cpu::chunk_words(g, k.k0, k.k1, out);
  }
  static void minmax(const float* x, int64_t len, float* lo, float* hi) {
    float a = x[0], b = x[0];
    for (int64_t i = 1; i < len; ++i) {
      a = x[i] < a ? x[i] : a;
      b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
  }
  static void codes(const float* x, int64_t len, float lo, float scale, float levels, const uint32_t* w,
                    uint8_t* out) {
    for (int64_t i = 0; i < len; ++i) out[i] = round_code(x[i], lo, scale, levels, w[i]);
  }
  static void pack(const uint8_t* c, int64_t m, int bits, uint8_t* dst) { bitpack::pack_bits(c, m, bits, dst); }
  static void unpack(const uint8_t* src, int64_t m, int bits, const uint8_t* end, uint8_t* dst) {
    unpack_codes(src, m, bits, end, dst);
  }
  static void dequant(const uint8_t* c, int64_t len, float scale, float mn, int /*bits*/, float* out) {
    for (int64_t i = 0; i < len; ++i) out[i] = static_cast<float>(c[i]) / scale + mn;
  }
};

}  // namespace

void ranges(const GroupJob& job, int64_t first, int64_t last) { range_units<GenericPath>(job, first, last); }
void compress(const GroupJob& job, int64_t first, int64_t last) { compress_units<GenericPath>(job, first, last); }
void decompress(const GroupJob& job, int64_t first, int64_t last) { decompress_units<GenericPath>(job, first, last); }

}  // namespace group_generic
}  // namespace nuq
