// C++ CPU quantize kernel: OpenMP over buckets; each bucket is read once (norm, then snapping while it is
// still in cache) and processed in chunks whose inner loops vectorise. The arithmetic is exactly that of
// nuq/reference.py (its docstring lists it step by step), so results agree bitwise.
#include <algorithm>

#include <omp.h>
#include <torch/extension.h>

#include "quant_cpu.h"
#include "quant_cpu_kernel.h"

namespace nuq {
namespace {

using cpu::Levels;

constexpr int64_t kMinPerThread = 1 << 15;  // below this many values per thread, threads cost more than they save

// Threads for n values: at most `requested`, and 1 for small tensors (results never depend on it).
int thread_count(int64_t n, int64_t requested) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(requested, n / kMinPerThread)));
}

void run_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
             int64_t offset, int64_t threads, float* out, uint8_t* idx, float* norms) {
  const float* xp = x.data_ptr<float>();
  const Levels lv{levels.data_ptr<float>(), static_cast<int>(levels.numel())};
  const int64_t n = x.numel();
  const int64_t nb = (n + bucket - 1) / bucket;
  const uint32_t k0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  const uint32_t k1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
#pragma omp parallel for schedule(static) num_threads(thread_count(n, threads))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket;
    const int64_t len = std::min(bucket, n - start);
    cpu::process_bucket(xp + start, len, bucket, linf, static_cast<uint64_t>(offset + start), lv, k0, k1,
                        out ? out + start : nullptr, idx ? idx + start : nullptr, norms ? norms + b : nullptr);
  }
}

}  // namespace

void quantize_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                  int64_t offset, int64_t threads, torch::Tensor& out) {
  run_cpu(x, levels, bucket, linf, seed, offset, threads, out.data_ptr<float>(), nullptr, nullptr);
}

std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cpu(const torch::Tensor& x, const torch::Tensor& levels,
                                                              int64_t bucket, bool linf, int64_t seed,
                                                              int64_t offset, int64_t threads) {
  auto idx = torch::empty({x.numel()}, x.options().dtype(torch::kUInt8));
  auto norms = torch::empty({(x.numel() + bucket - 1) / bucket}, x.options());
  run_cpu(x, levels, bucket, linf, seed, offset, threads, nullptr, idx.data_ptr<uint8_t>(),
          norms.data_ptr<float>());
  return {idx, norms};
}

torch::Tensor dequantize_indices_cpu(const torch::Tensor& idx, const torch::Tensor& norms,
                                     const torch::Tensor& levels, int64_t bucket, int64_t threads) {
  auto out = torch::empty({idx.numel()}, norms.options());
  const uint8_t* ip = idx.data_ptr<uint8_t>();
  const float* np = norms.data_ptr<float>();
  const float* lv = levels.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t n = idx.numel();
  const int64_t nb = norms.numel();
#pragma omp parallel for schedule(static) num_threads(thread_count(n, threads))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket, end = std::min(n, start + bucket);
    const float nf = np[b];
    for (int64_t i = start; i < end; ++i) op[i] = lv[ip[i]] * nf;
  }
  return out;
}

}  // namespace nuq
