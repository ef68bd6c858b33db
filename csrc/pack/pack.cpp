// Bit packing of b-bit level indices (b in 1..8) into bytes: the CPU fast path of nuq/packing.py, as the
// ops torch.ops.nuq.pack(indices, *, bits) and torch.ops.nuq.unpack(packed, *, bits, n) (fake
// implementations in nuq/ops.py).
//
// Layout (same as the torch fallback; see csrc/common/bitpack.h): one little-endian bit stream, value i in
// bits [i*b, (i+1)*b). 8 values fill exactly b bytes, so each group of 8 is packed independently, which
// makes the loop trivially parallel.
// torch/python.h (pybind11 + tensor casters), not torch/extension.h: the C++ frontend (torch/all.h) is
// unused here and was ~40% of this file's compile time.
#include <ATen/Parallel.h>
#include <torch/python.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "../common/bitpack.h"

namespace {

// Packing is memory-bound (~0.5 ns per value on one core), so threads only pay off on huge vectors; on a
// loaded machine an OpenMP barrier can cost milliseconds. Parallel above this many groups of 8 values.
constexpr int64_t kParallelGrain = int64_t{1} << 22;

void check_args(const torch::Tensor& t, int64_t bits, const char* name) {
  TORCH_CHECK(bits >= 1 && bits <= 8, "bits must be in 1..8, got ", bits);
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == torch::kUInt8, name, " must be uint8, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous(), name, " must be 1-D and contiguous");
}

using nuq::bitpack::spread;
using nuq::bitpack::squeeze;

// The group loops, with `bits` a compile-time constant so each group's b-byte load/store is a few
// plain moves instead of a memcpy call.
template <int bits>
uint64_t pack_groups(const uint8_t* in, uint8_t* dst, int64_t full) {
  uint64_t seen = 0;  // OR of every group: a bit above `bits` in any byte means a value did not fit
#pragma omp parallel for reduction(| : seen) schedule(static) if (full > kParallelGrain)
  for (int64_t g = 0; g < full; ++g) {
    uint64_t w;
    std::memcpy(&w, in + g * 8, 8);
    seen |= w;
    const uint64_t word = squeeze<bits>(w);
    std::memcpy(dst + g * bits, &word, bits);  // little-endian host: low bytes first
  }
  return seen;
}

// `avail`: readable bytes at src. Groups whose 8-byte window fits read one whole word and mask it (a
// b-byte partial load into a word would stall store-to-load forwarding); the last few read b bytes.
template <int bits>
void unpack_groups(const uint8_t* src, uint8_t* dst, int64_t full, int64_t avail) {
  constexpr uint64_t mask = (uint64_t{1} << (8 * bits)) - 1;
  const int64_t fast = avail >= 8 ? std::min(full, (avail - 8) / bits + 1) : 0;
#pragma omp parallel for schedule(static) if (fast > kParallelGrain)
  for (int64_t g = 0; g < fast; ++g) {
    uint64_t word;
    std::memcpy(&word, src + g * bits, 8);
    const uint64_t w = spread<bits>(word & mask);
    std::memcpy(dst + g * 8, &w, 8);
  }
  for (int64_t g = fast; g < full; ++g) {
    uint64_t word = 0;
    std::memcpy(&word, src + g * bits, bits);
    const uint64_t w = spread<bits>(word);
    std::memcpy(dst + g * 8, &w, 8);
  }
}

template <int bits>
void unpack_tail(const uint8_t* src, uint8_t* dst, int64_t rest, int64_t tail_bytes) {
  uint64_t word = 0;
  std::memcpy(&word, src, tail_bytes);
  const uint64_t w = spread<bits>(word);
  std::memcpy(dst, &w, rest);
}

// Calls fn<b>() for the runtime b in 1..7 (8 bits is a plain copy, done before: never instantiated here).
template <typename Fn>
auto dispatch(int64_t bits, Fn&& fn) {
  return nuq::bitpack::with_bits(bits, [&](auto b) { return fn(std::integral_constant<int, (b() < 8 ? b() : 7)>{}); });
}

torch::Tensor pack(const torch::Tensor& indices, int64_t bits) {
  check_args(indices, bits, "indices");
  const int64_t n = indices.numel();
  const int64_t nbytes = nuq::bitpack::packed_bytes(n, bits);
  auto out = torch::empty({nbytes}, indices.options());
  const uint8_t* in = indices.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  if (bits == 8) {
    std::memcpy(dst, in, n);
    return out;
  }
  const int64_t full = n / 8, rest = n - full * 8;  // complete groups of 8 values, values after them
  const uint64_t seen = dispatch(bits, [&](auto b) {
    uint64_t s = pack_groups<b()>(in, dst, full);
    if (rest > 0) s |= nuq::bitpack::pack_up_to_8<b()>(in + full * 8, rest, dst + full * b());
    return s;
  });
  const uint64_t high = ~(((uint64_t{1} << bits) - 1) * 0x0101010101010101ull);
  TORCH_CHECK((seen & high) == 0, "an index does not fit in ", bits, " bits (max ", (1 << bits) - 1, ")");
  return out;
}

torch::Tensor unpack(const torch::Tensor& packed, int64_t bits, int64_t n) {
  check_args(packed, bits, "packed");
  TORCH_CHECK(n >= 0, "number of values must be >= 0, got ", n);
  const int64_t need = nuq::bitpack::packed_bytes(n, bits);
  TORCH_CHECK(packed.numel() >= need, n, " values of ", bits, " bits need ", need, " bytes, got ",
              packed.numel());
  auto out = torch::empty({n}, packed.options());
  const uint8_t* src = packed.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  if (bits == 8) {
    std::memcpy(dst, src, n);
    return out;
  }
  const int64_t full = n / 8, rest = n - full * 8;
  dispatch(bits, [&](auto b) {
    unpack_groups<b()>(src, dst, full, packed.numel());
    if (rest > 0) unpack_tail<b()>(src + full * b(), dst + full * 8, rest, need - full * b());
    return 0;
  });
  return out;
}

// --- the 1-bit ReLU mask of activation compression (trainer/plugins/actnn_layers.py): relu(x) and the bit
// stream of x > 0 in one pass; in backward grad * bit in one pass. Bit i of the mask is value i (the 1-bit
// layout of pack). Memory-bound: loops over 8 values that the x86-64-v3/v4 clones vectorise.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NUQ_PACK_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NUQ_PACK_CLONES
#endif

constexpr int64_t kMaskGrain = int64_t{1} << 13;  // groups of 8 values per thread at least (64 Ki values)

// Values [8 g0, 8 g1) of x (n values): out = relu (x < 0 -> 0, NaN kept as torch's clamp), mask bit = x > 0.
NUQ_PACK_CLONES void relu_mask_groups(const float* x, int64_t n, int64_t g0, int64_t g1, float* out, uint8_t* mask) {
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t base = 8 * g, count = std::min<int64_t>(8, n - base);
    uint8_t bits = 0;
    if (count == 8) {
#if defined(__SSE2__)
      const __m128 zero = _mm_setzero_ps();
      const __m128 a = _mm_loadu_ps(x + base), b = _mm_loadu_ps(x + base + 4);
      _mm_storeu_ps(out + base, _mm_andnot_ps(_mm_cmplt_ps(a, zero), a));  // v < 0 -> 0; NaN kept
      _mm_storeu_ps(out + base + 4, _mm_andnot_ps(_mm_cmplt_ps(b, zero), b));
      bits = static_cast<uint8_t>(_mm_movemask_ps(_mm_cmpgt_ps(a, zero)) | _mm_movemask_ps(_mm_cmpgt_ps(b, zero)) << 4);
#else
      for (int k = 0; k < 8; ++k) {
        const float v = x[base + k];
        out[base + k] = v < 0.0f ? 0.0f : v;
        bits |= static_cast<uint8_t>((v > 0.0f ? 1 : 0) << k);
      }
#endif
    } else {
      for (int k = 0; k < count; ++k) {
        const float v = x[base + k];
        out[base + k] = v < 0.0f ? 0.0f : v;
        bits |= static_cast<uint8_t>((v > 0.0f ? 1 : 0) << k);
      }
    }
    mask[g] = bits;
  }
}

#if defined(__SSE2__)
// The four 0/1 floats of each 4-bit nibble of a mask.
alignas(16) constexpr float kNibbles[16][4] = {
    {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {1, 1, 0, 0}, {0, 0, 1, 0}, {1, 0, 1, 0}, {0, 1, 1, 0}, {1, 1, 1, 0},
    {0, 0, 0, 1}, {1, 0, 0, 1}, {0, 1, 0, 1}, {1, 1, 0, 1}, {0, 0, 1, 1}, {1, 0, 1, 1}, {0, 1, 1, 1}, {1, 1, 1, 1}};
#endif

// Values [8 g0, 8 g1): out = grad * bit (as torch's grad * mask: 0 * inf is NaN).
NUQ_PACK_CLONES void mask_mul_groups(const float* grad, const uint8_t* mask, int64_t n, int64_t g0, int64_t g1,
                                     float* out) {
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t base = 8 * g, count = std::min<int64_t>(8, n - base);
    const uint32_t bits = mask[g];
    if (count == 8) {
#if defined(__SSE2__)
      _mm_storeu_ps(out + base, _mm_mul_ps(_mm_loadu_ps(grad + base), _mm_load_ps(kNibbles[bits & 15])));
      _mm_storeu_ps(out + base + 4, _mm_mul_ps(_mm_loadu_ps(grad + base + 4), _mm_load_ps(kNibbles[bits >> 4])));
#else
      for (int k = 0; k < 8; ++k) out[base + k] = grad[base + k] * static_cast<float>((bits >> k) & 1u);
#endif
    } else {
      for (int k = 0; k < count; ++k) out[base + k] = grad[base + k] * static_cast<float>((bits >> k) & 1u);
    }
  }
}

void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
}

std::tuple<torch::Tensor, torch::Tensor> relu_mask(const torch::Tensor& x) {
  check_float(x, "x");
  const int64_t n = x.numel(), groups = (n + 7) / 8;
  auto out = torch::empty_like(x);
  auto mask = torch::empty({groups}, x.options().dtype(torch::kUInt8));
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  uint8_t* mp = mask.data_ptr<uint8_t>();
  at::parallel_for(0, groups, kMaskGrain, [&](int64_t g0, int64_t g1) { relu_mask_groups(xp, n, g0, g1, op, mp); });
  return {out, mask};
}

torch::Tensor mask_mul(const torch::Tensor& grad, const torch::Tensor& mask) {
  check_float(grad, "grad");
  const int64_t n = grad.numel(), groups = (n + 7) / 8;
  TORCH_CHECK(mask.device().is_cpu() && mask.scalar_type() == torch::kUInt8 && mask.dim() == 1 &&
                  mask.is_contiguous() && mask.numel() == groups,
              "mask must be a contiguous 1-D uint8 CPU tensor of ceil(", n, " / 8) = ", groups, " bytes, got ",
              mask.scalar_type(), " of shape ", mask.sizes());
  auto out = torch::empty_like(grad);
  const float* gp = grad.data_ptr<float>();
  const uint8_t* mp = mask.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, groups, kMaskGrain, [&](int64_t g0, int64_t g1) { mask_mul_groups(gp, mp, n, g0, g1, op); });
  return out;
}

}  // namespace

// A fragment of the nuq op library (quant.cpp defines the library and points torch at nuq/ops.py).
TORCH_LIBRARY_FRAGMENT(nuq, m) {
  m.def("pack(Tensor indices, *, int bits) -> Tensor");    // uint8 values < 2**bits -> ceil(n*bits/8) bytes
  m.def("unpack(Tensor packed, *, int bits, int n) -> Tensor");  // the first n values of `bits` bits
  m.def("relu_mask(Tensor x) -> (Tensor out, Tensor mask)");  // relu(x), and x > 0 packed 1 bit per value
  m.def("mask_mul(Tensor grad, Tensor mask) -> Tensor");  // grad * (bit of relu_mask's mask)
}

TORCH_LIBRARY_IMPL(nuq, CPU, m) {
  m.impl("pack", &pack);
  m.impl("unpack", &unpack);
  m.impl("relu_mask", &relu_mask);
  m.impl("mask_mul", &mask_mul);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Bit packing of quantization level indices: importing this registers torch.ops.nuq.pack and unpack";
}
