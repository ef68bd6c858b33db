// Bit packing of b-bit level indices (b in 1..8) into bytes: the CPU fast path of nuq/packing.py.
//
// Layout (same as the torch fallback): one little-endian bit stream, value i in bits [i*b, (i+1)*b).
// 8 values fill exactly b bytes, so each group of 8 is packed into one 64-bit word independently,
// which makes the loop trivially parallel. Padding bits of the last byte are zero.
#include <torch/extension.h>

#include <cstdint>
#include <cstring>

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

// Packs the `count` (<= 8) values at `in` into the low bytes of a word; ORs the values into `seen`.
inline uint64_t pack_group(const uint8_t* in, int64_t count, int64_t bits, uint8_t& seen) {
  uint64_t word = 0;
  for (int64_t i = 0; i < count; ++i) {
    seen |= in[i];
    word |= static_cast<uint64_t>(in[i]) << (i * bits);
  }
  return word;
}

torch::Tensor pack(const torch::Tensor& indices, int64_t bits) {
  check_args(indices, bits, "indices");
  const int64_t n = indices.numel();
  const int64_t nbytes = (n * bits + 7) / 8;
  auto out = torch::empty({nbytes}, indices.options());
  const uint8_t* in = indices.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t full = n / 8;  // complete groups of 8 values
  uint8_t seen = 0;            // OR of every value: its high bits tell whether one did not fit
  if (bits == 8) {
    std::memcpy(dst, in, n);
    return out;
  }
#pragma omp parallel for reduction(| : seen) schedule(static) if (full > kParallelGrain)
  for (int64_t g = 0; g < full; ++g) {
    const uint64_t word = pack_group(in + g * 8, 8, bits, seen);
    std::memcpy(dst + g * bits, &word, bits);  // little-endian host: low bytes first
  }
  const int64_t rest = n - full * 8;
  if (rest > 0) {
    const uint64_t word = pack_group(in + full * 8, rest, bits, seen);
    std::memcpy(dst + full * bits, &word, nbytes - full * bits);
  }
  TORCH_CHECK((seen >> bits) == 0, "an index does not fit in ", bits, " bits (max ", (1 << bits) - 1,
              "); OR of all indices is ", static_cast<int>(seen));
  return out;
}

torch::Tensor unpack(const torch::Tensor& packed, int64_t bits, int64_t n) {
  check_args(packed, bits, "packed");
  TORCH_CHECK(n >= 0, "number of values must be >= 0, got ", n);
  const int64_t need = (n * bits + 7) / 8;
  TORCH_CHECK(packed.numel() >= need, n, " values of ", bits, " bits need ", need, " bytes, got ",
              packed.numel());
  auto out = torch::empty({n}, packed.options());
  const uint8_t* src = packed.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  if (bits == 8) {
    std::memcpy(dst, src, n);
    return out;
  }
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  const int64_t full = n / 8;
#pragma omp parallel for schedule(static) if (full > kParallelGrain)
  for (int64_t g = 0; g < full; ++g) {
    uint64_t word = 0;
    std::memcpy(&word, src + g * bits, bits);
    uint8_t* o = dst + g * 8;
    for (int64_t i = 0; i < 8; ++i) o[i] = static_cast<uint8_t>((word >> (i * bits)) & mask);
  }
  const int64_t rest = n - full * 8;
  if (rest > 0) {
    uint64_t word = 0;
    std::memcpy(&word, src + full * bits, need - full * bits);
    for (int64_t i = 0; i < rest; ++i)
      dst[full * 8 + i] = static_cast<uint8_t>((word >> (i * bits)) & mask);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Bit packing of b-bit quantization level indices (nuq/packing.py's CPU fast path)";
  m.def("pack", &pack, "Pack uint8 values < 2**bits into ceil(n*bits/8) bytes", py::arg("indices"),
        py::arg("bits"));
  m.def("unpack", &unpack, "Unpack n values of `bits` bits", py::arg("packed"), py::arg("bits"),
        py::arg("n"));
}
