// C++ CPU quantize kernel: OpenMP over buckets; each bucket is read once (norm, then snapping while it is
// still in cache). Three paths compute the same bits: the hand-vectorised AVX-512 kernel
// (quant_cpu_avx512.cpp) where the CPU has AVX-512 (level sets of 2..256 values), the AVX2 kernel
// (quant_cpu_avx2.cpp) where it has AVX2, FMA and BMI2, and the generic kernel (quant_cpu_kernel.h,
// auto-vectorised, cloned for x86-64-v3 and baseline) everywhere else (aarch64...). NUQ_CPU_KERNEL
// (auto | avx512 | avx2 | generic, read at the first call) or set_cpu_kernel forces a path and the slower
// ones after it. The arithmetic is exactly that of nuq/reference.py (its docstring lists it step by step).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <omp.h>
#include <ATen/ops/empty.h>

#include "quant_cpu.h"
#include "quant_cpu_avx2.h"
#include "quant_cpu_avx512.h"
#include "quant_cpu_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NUQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NUQ_CPU_CLONES
#endif

namespace nuq {
namespace {

constexpr int64_t kMinPerThread = 1 << 15;  // below this many values per thread, threads cost more than they save

bool cpu_has_avx512() {
#if NUQ_HAVE_AVX512_KERNEL
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

// The CPU kernel paths, fastest first. A call runs the first path from first_path() on that the CPU has and
// that takes the levels (AVX-512: `handles`; the others: all level sets).
enum Path { kAvx512, kAvx2, kGeneric, kPaths };
constexpr const char* kPathNames[kPaths] = {"avx512", "avx2", "generic"};

bool cpu_has(int path) {
  static const bool has[kPaths] = {cpu_has_avx512(),
#if NUQ_HAVE_AVX2_KERNEL
                                   avx2::cpu_supported(),
#else
                                   false,
#endif
                                   true};
  return has[path];
}

// 'auto' -> the fastest path; a path's name -> that path (which this CPU must have).
int parse_path(const std::string& name, const char* what) {
  if (name == "auto") return kAvx512;
  for (int p = 0; p < kPaths; ++p) {
    if (name != kPathNames[p]) continue;
    TORCH_CHECK(cpu_has(p), what, " '", name, "': this CPU (or this build) has no ", name,
                " kernel; use 'auto' or a path it has");
    return p;
  }
  TORCH_CHECK(false, what, " must be 'auto', 'avx512', 'avx2' or 'generic', got '", name, "'");
  return kAvx512;
}

// The first path allowed: NUQ_CPU_KERNEL at the first call (a bad value raises at every call), then set_cpu_kernel.
std::atomic<int>& first_path() {
  static std::atomic<int> first{[] {
    const char* env = std::getenv("NUQ_CPU_KERNEL");
    return parse_path(env && *env ? env : "auto", "NUQ_CPU_KERNEL");
  }()};
  return first;
}

int path_for(const float* levels, int num_levels) {
  for (int p = first_path().load(std::memory_order_relaxed); p < kGeneric; ++p) {
#if NUQ_HAVE_AVX512_KERNEL
    if (p == kAvx512 && !avx512::handles(levels, num_levels)) continue;
#endif
    if (cpu_has(p)) return p;
  }
  (void)levels;
  (void)num_levels;
  return kGeneric;
}

// Threads for n values: at most `requested`, and 1 for small tensors (results never depend on it).
int thread_count(int64_t n, int64_t requested) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(requested, n / kMinPerThread)));
}

// One bucket with the generic kernel (cloned for x86-64-v4, -v3 and baseline; picked at load time).
NUQ_CPU_CLONES void process_bucket(const BucketJob& job, int64_t b) { cpu::process_bucket(job, b); }

// Runs the job over all its buckets on up to `threads` threads (contiguous ranges of buckets per thread).
void run_job(const BucketJob& job, int64_t threads) {
  const int64_t nb = num_buckets(job.n, job.bucket);
  const int nthreads = thread_count(job.n, threads);
#if NUQ_HAVE_AVX512_KERNEL || NUQ_HAVE_AVX2_KERNEL
  const int path = path_for(job.levels, job.num_levels);
  if (path != kGeneric) {
#pragma omp parallel num_threads(nthreads)
    {  // the same ranges schedule(static) gives the generic loop below
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#if NUQ_HAVE_AVX512_KERNEL
      if (path == kAvx512) avx512::run_buckets(job, nb * t / nt, nb * (t + 1) / nt);
#endif
#if NUQ_HAVE_AVX2_KERNEL
      if (path == kAvx2) avx2::run_buckets(job, nb * t / nt, nb * (t + 1) / nt);
#endif
    }
    return;
  }
#endif
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t b = 0; b < nb; ++b) process_bucket(job, b);
}

BucketJob make_job(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                   int64_t offset) {
  BucketJob job{};
  job.x = x.data_ptr<float>();
  job.n = x.numel();
  job.bucket = bucket;
  job.linf = linf;
  job.levels = levels.data_ptr<float>();
  job.num_levels = static_cast<int>(levels.numel());
  job.offset = static_cast<uint64_t>(offset);
  job.key0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  job.key1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  return job;
}

}  // namespace

bool decode_supported(const torch::Tensor& levels) {
  return path_for(levels.data_ptr<float>(), static_cast<int>(levels.numel())) != kGeneric;
}

namespace {

// Decodes one message's buckets on up to `threads` threads; the largest index read.
uint32_t run_decode(const DecodeJob& job, int64_t threads) {
  const int64_t nb = num_buckets(job.n, job.bucket);
  uint32_t max_index = 0;
#if NUQ_HAVE_AVX512_KERNEL || NUQ_HAVE_AVX2_KERNEL
  const int path = path_for(job.levels, job.num_levels);  // not generic: the callers check decode_supported
#pragma omp parallel num_threads(thread_count(job.n, threads)) reduction(max : max_index)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#if NUQ_HAVE_AVX512_KERNEL
    if (path == kAvx512) avx512::decode_buckets(job, nb * t / nt, nb * (t + 1) / nt, &max_index);
#endif
#if NUQ_HAVE_AVX2_KERNEL
    if (path == kAvx2) avx2::decode_buckets(job, nb * t / nt, nb * (t + 1) / nt, &max_index);
#endif
  }
#else
  (void)threads;
  (void)nb;
#endif
  return max_index;
}

// The job decoding the message at `bytes` (nbytes long) of n values into out.
DecodeJob decode_job(const uint8_t* bytes, int64_t nbytes, int64_t n, const torch::Tensor& levels, int64_t bucket,
                     int64_t bits, float* out, bool accumulate) {
  const int64_t nb = num_buckets(n, bucket);
  DecodeJob job{bytes, bytes + 4 * nb, n, bucket, levels.data_ptr<float>(), static_cast<int>(levels.numel()),
                static_cast<int>(bits), out, bytes + nbytes};
  job.accumulate = accumulate;
  return job;
}

void check_indices_read(uint32_t max_index, int64_t num_levels) {
  TORCH_CHECK(max_index < static_cast<uint32_t>(num_levels), "the message holds level index ", max_index,
              " but there are only ", num_levels, " levels: corrupt, or encoded with other levels");
}

}  // namespace

torch::Tensor decode_cpu(const torch::Tensor& message, int64_t n, const torch::Tensor& levels, int64_t bucket,
                         int64_t bits, int64_t threads, const c10::optional<torch::Tensor>& add_to) {
  TORCH_CHECK(decode_supported(levels), "decode runs on the AVX-512 and AVX2 kernels only (this CPU or these ",
              levels.numel(), " levels have none); unpack, then dequantize_indices");
  auto out = add_to ? *add_to : torch::empty({n}, levels.options());
  const DecodeJob job = decode_job(message.data_ptr<uint8_t>(), message.numel(), n, levels, bucket, bits,
                                   out.data_ptr<float>(), add_to.has_value());
  check_indices_read(run_decode(job, threads), levels.numel());
  return out;
}

namespace {

// The job for one piece of x: its values as a vector of their own, stream offset `offset + start`.
BucketJob piece_job(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                    int64_t offset, const Piece& piece) {
  BucketJob job = make_job(x, levels, bucket, linf, seed, offset + piece.start);
  job.x += piece.start;
  job.n = piece.end - piece.start;
  return job;
}

}  // namespace

void quantize_pieces_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                         int64_t offset, int64_t threads, torch::Tensor& out, const std::vector<Piece>& pieces) {
  for (const Piece& piece : pieces) {
    if (piece.end == piece.start) continue;
    BucketJob job = piece_job(x, levels, bucket, linf, seed, offset, piece);
    job.out = out.data_ptr<float>() + piece.start;
    run_job(job, threads);
  }
}

void encode_pieces_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                       int64_t offset, int64_t threads, int64_t bits, torch::Tensor& message,
                       const std::vector<Piece>& pieces) {
  for (const Piece& piece : pieces) {
    if (piece.end == piece.start) continue;
    BucketJob job = piece_job(x, levels, bucket, linf, seed, offset, piece);
    job.norms = message.data_ptr<uint8_t>() + piece.pos;
    job.packed = message.data_ptr<uint8_t>() + piece.pos + 4 * num_buckets(job.n, bucket);
    job.bits = static_cast<int>(bits);
    run_job(job, threads);
  }
}

void decode_pieces_cpu(const torch::Tensor& message, const torch::Tensor& levels, int64_t bucket, int64_t bits,
                       int64_t threads, torch::Tensor& add_to, const std::vector<Piece>& pieces) {
  TORCH_CHECK(decode_supported(levels), "decode runs on the AVX-512 and AVX2 kernels only (this CPU or these ",
              levels.numel(), " levels have none); unpack, then dequantize_indices");
  uint32_t max_index = 0;
  for (const Piece& piece : pieces) {
    const int64_t n = piece.end - piece.start;
    if (n == 0) continue;
    const DecodeJob job = decode_job(message.data_ptr<uint8_t>() + piece.pos, piece.nbytes, n, levels, bucket, bits,
                                     add_to.data_ptr<float>() + piece.start, true);
    max_index = std::max(max_index, run_decode(job, threads));
  }
  check_indices_read(max_index, levels.numel());
}

int cpu_path() {
  for (int p = first_path().load(std::memory_order_relaxed); p < kGeneric; ++p) {
    if (cpu_has(p)) return p;
  }
  return kGeneric;
}

std::string cpu_path_name(int path) { return kPathNames[path]; }

std::string cpu_kernel_name(const torch::Tensor& levels) {
  TORCH_CHECK(levels.scalar_type() == at::kFloat && levels.is_contiguous() && !levels.is_cuda(),
              "levels must be a contiguous float32 CPU tensor");
  return kPathNames[path_for(levels.data_ptr<float>(), static_cast<int>(levels.numel()))];
}

void set_cpu_kernel(const std::string& name) {
  first_path().store(parse_path(name, "cpu kernel"), std::memory_order_relaxed);
}

void quantize_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                  int64_t offset, int64_t threads, torch::Tensor& out) {
  BucketJob job = make_job(x, levels, bucket, linf, seed, offset);
  job.out = out.data_ptr<float>();
  run_job(job, threads);
}

std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cpu(const torch::Tensor& x, const torch::Tensor& levels,
                                                              int64_t bucket, bool linf, int64_t seed,
                                                              int64_t offset, int64_t threads) {
  auto idx = torch::empty({x.numel()}, x.options().dtype(at::kByte));
  auto norms = torch::empty({num_buckets(x.numel(), bucket)}, x.options());
  BucketJob job = make_job(x, levels, bucket, linf, seed, offset);
  job.idx = idx.data_ptr<uint8_t>();
  job.norms = norms.data_ptr<float>();
  run_job(job, threads);
  return {idx, norms};
}

void encode_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                int64_t offset, int64_t threads, int64_t bits, torch::Tensor& message) {
  const int64_t nb = num_buckets(x.numel(), bucket);
  BucketJob job = make_job(x, levels, bucket, linf, seed, offset);
  job.norms = message.data_ptr<uint8_t>();
  job.packed = message.data_ptr<uint8_t>() + 4 * nb;
  job.bits = static_cast<int>(bits);
  run_job(job, threads);
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
    const int64_t start = b * bucket, end = start + std::min(n - start, bucket);
    const float nf = np[b];
    for (int64_t i = start; i < end; ++i) op[i] = lv[ip[i]] * nf;
  }
  return out;
}

}  // namespace nuq
