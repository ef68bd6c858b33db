// C++ CPU quantize kernel: OpenMP over buckets; each bucket is read once (norm, then snapping while it is
// still in cache). Two implementations compute the same bits: the hand-vectorised AVX-512 kernel
// (quant_cpu_avx512.cpp) where the CPU has AVX-512 and the level set has at most 16 values, and the generic
// kernel (quant_cpu_kernel.h, auto-vectorised, cloned for AVX2 and baseline x86-64) everywhere else. The
// arithmetic is exactly that of nuq/reference.py (its docstring lists it step by step).
#include <algorithm>
#include <atomic>

#include <omp.h>
#include <torch/extension.h>

#include "quant_cpu.h"
#include "quant_cpu_avx512.h"
#include "quant_cpu_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NUQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NUQ_CPU_CLONES
#endif

namespace nuq {
namespace {

using cpu::Levels;

constexpr int64_t kMinPerThread = 1 << 15;  // below this many values per thread, threads cost more than they save

bool cpu_has_avx512() {
#if NUQ_HAVE_AVX512_KERNEL
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

std::atomic<bool> g_allow_avx512{true};  // set_cpu_kernel("generic") clears it (tests compare both kernels)

// Threads for n values: at most `requested`, and 1 for small tensors (results never depend on it).
int thread_count(int64_t n, int64_t requested) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(requested, n / kMinPerThread)));
}

// One bucket end to end with the generic kernel: norm (stored to *norm_out when non-null), then snapping.
NUQ_CPU_CLONES void process_bucket(const float* x, int64_t len, int64_t bucket, bool linf, uint64_t g0, Levels lv,
                                   uint32_t k0, uint32_t k1, float* out, uint8_t* idx, float* norm_out) {
  const float nf = cpu::bucket_norm(x, len, bucket, linf);
  if (norm_out) *norm_out = nf;
  cpu::snap_bucket(x, len, nf, g0, lv, k0, k1, out, idx);
}

bool use_avx512(const float* levels, int num_levels) {
#if NUQ_HAVE_AVX512_KERNEL
  static const bool has = cpu_has_avx512();
  return has && g_allow_avx512.load(std::memory_order_relaxed) && avx512::handles(levels, num_levels);
#else
  (void)levels;
  (void)num_levels;
  return false;
#endif
}

void run_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
             int64_t offset, int64_t threads, float* out, uint8_t* idx, float* norms) {
  const BucketJob job{x.data_ptr<float>(), x.numel(), bucket, linf, levels.data_ptr<float>(),
                      static_cast<int>(levels.numel()), static_cast<uint64_t>(offset),
                      static_cast<uint32_t>(static_cast<uint64_t>(seed)),
                      static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32), out, idx, norms};
  const int64_t nb = (job.n + bucket - 1) / bucket;
  const int nthreads = thread_count(job.n, threads);
#if NUQ_HAVE_AVX512_KERNEL
  if (use_avx512(job.levels, job.num_levels)) {
#pragma omp parallel num_threads(nthreads)
    {  // contiguous ranges of buckets, as schedule(static) gives the generic loop below
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      avx512::run_buckets(job, nb * t / nt, nb * (t + 1) / nt);
    }
    return;
  }
#endif
  const Levels lv{job.levels, job.num_levels};
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket;
    const int64_t len = std::min(bucket, job.n - start);
    process_bucket(job.x + start, len, bucket, linf, job.offset + static_cast<uint64_t>(start), lv, job.key0,
                   job.key1, out ? out + start : nullptr, idx ? idx + start : nullptr, norms ? norms + b : nullptr);
  }
}

}  // namespace

std::string cpu_kernel_name(const torch::Tensor& levels) {
  TORCH_CHECK(levels.scalar_type() == torch::kFloat32 && levels.is_contiguous() && !levels.is_cuda(),
              "levels must be a contiguous float32 CPU tensor");
  return use_avx512(levels.data_ptr<float>(), static_cast<int>(levels.numel())) ? "avx512" : "generic";
}

void set_cpu_kernel(const std::string& name) {
  TORCH_CHECK(name == "auto" || name == "generic", "cpu kernel must be 'auto' or 'generic', got '", name, "'");
  g_allow_avx512.store(name == "auto", std::memory_order_relaxed);
}

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
