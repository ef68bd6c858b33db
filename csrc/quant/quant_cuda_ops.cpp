// The CUDA kernels of the torch.ops.nuq ops (schemas in quant.cpp), compiled in CUDA builds only: each runs
// on its input's device (a device guard) in torch's current stream there, so it is ordered with the
// caller's other work on that stream.
#ifdef NUQ_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (what at::cuda::getCurrentCUDAStream is, without cuBLAS/cuSPARSE headers)
#include <torch/extension.h>

#include "group_cuda.h"
#include "quant_checks.h"
#include "quant_cuda.h"

namespace nuq {
namespace {

void check_cuda(const char* err) { TORCH_CHECK(err == nullptr, "nuq CUDA kernel failed: ", err); }

// torch's current stream on the current device (set by the caller's guard).
void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Quantizes x into out (dequantized values) or idx (level indices), with the bucket norms in norms.
void run_quantize(const at::Tensor& x, const at::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                  int64_t offset, const at::Tensor& norms, float* out, uint8_t* idx) {
  check_cuda(cuda_quantize(x.data_ptr<float>(), x.numel(), bucket, linf, levels.data_ptr<float>(),
                           static_cast<int>(levels.numel()), static_cast<uint64_t>(seed),
                           static_cast<uint64_t>(offset), norms.data_ptr<float>(), out, idx, current_stream()));
}

at::Tensor quantize_cuda(const at::Tensor& x, const at::Tensor& levels, int64_t bucket_size, bool linf, int64_t seed,
                         int64_t offset, int64_t /*num_threads*/) {
  check_quant_inputs(x, levels, bucket_size, seed, offset);
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  auto norms = at::empty({num_buckets(x.numel(), bucket_size)}, x.options());
  run_quantize(x, levels, bucket_size, linf, seed, offset, norms, out.data_ptr<float>(), nullptr);
  return out;
}

void quantize_out_cuda(at::Tensor& out, const at::Tensor& x, const at::Tensor& levels, int64_t bucket_size,
                       bool linf, int64_t seed, int64_t offset, int64_t /*num_threads*/) {
  check_quant_inputs(x, levels, bucket_size, seed, offset);
  check_out(out, x);
  const c10::cuda::CUDAGuard guard(x.device());
  auto norms = at::empty({num_buckets(x.numel(), bucket_size)}, x.options());
  run_quantize(x, levels, bucket_size, linf, seed, offset, norms, out.data_ptr<float>(), nullptr);
}

std::tuple<at::Tensor, at::Tensor> quantize_indices_cuda(const at::Tensor& x, const at::Tensor& levels,
                                                         int64_t bucket_size, bool linf, int64_t seed, int64_t offset,
                                                         int64_t /*num_threads*/) {
  check_quant_inputs(x, levels, bucket_size, seed, offset);
  const c10::cuda::CUDAGuard guard(x.device());
  auto idx = at::empty({x.numel()}, x.options().dtype(at::kByte));
  auto norms = at::empty({num_buckets(x.numel(), bucket_size)}, x.options());
  run_quantize(x, levels, bucket_size, linf, seed, offset, norms, nullptr, idx.data_ptr<uint8_t>());
  return {idx, norms};
}

at::Tensor dequantize_indices_cuda(const at::Tensor& indices, const at::Tensor& norms, const at::Tensor& levels,
                                   int64_t bucket_size, int64_t /*num_threads*/) {
  const c10::cuda::CUDAGuard guard(indices.device());
  check_dequantize_inputs(indices, norms, levels, bucket_size);
  auto out = at::empty({indices.numel()}, norms.options());
  check_cuda(cuda_dequantize(indices.data_ptr<uint8_t>(), indices.numel(), bucket_size, norms.data_ptr<float>(),
                             levels.data_ptr<float>(), out.data_ptr<float>(), current_stream()));
  return out;
}

// The ActNN group codec (group_cuda.cu; the CPU ops in group.cpp): the same checks, then the kernels.
// Sample n's codes start at byte sum_{m<n} ceil(padded * bits[m] / 8); their total sizes the stream.
std::tuple<at::Tensor, int64_t> group_byte_offsets(const at::Tensor& bits, int64_t n, int64_t padded) {
  TORCH_CHECK(bits.scalar_type() == at::kByte && bits.dim() == 1 && bits.numel() == n && bits.is_contiguous(),
              "bits must be a contiguous 1-D uint8 tensor of one width per sample (", n, ")");
  if (n == 0) return {at::zeros({0}, bits.options().dtype(at::kLong)), 0};
  auto [lo, hi] = at::aminmax(bits);
  TORCH_CHECK(lo.item<int64_t>() >= 1 && hi.item<int64_t>() <= 8, "bits must be in 1..8");
  const auto b = bits.to(at::kLong);
  const auto nbytes = b * (padded / 8) + at::floor_divide(b * (padded % 8) + 7, 8);
  const auto ends = at::cumsum(nbytes, 0);
  return {(ends - nbytes).contiguous(), ends[-1].item<int64_t>()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_compress_cuda(const at::Tensor& x, const at::Tensor& bits,
                                                                   int64_t group_size, bool pergroup,
                                                                   at::ScalarType store, int64_t seed,
                                                                   int64_t offset) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous(),
              "x must be a contiguous 2-D float32 tensor (samples, features)");
  TORCH_CHECK(bits.device() == x.device(), "bits and x must be on one device");
  TORCH_CHECK(store == at::kFloat || store == at::kBFloat16, "store must be float32 or bfloat16");
  TORCH_CHECK(group_size >= 1 && group_size <= (1 << 16), "group_size must be in 1..65536, got ", group_size);
  TORCH_CHECK(seed >= 0 && offset >= 0, "seed and offset must be >= 0");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), features = x.size(1), groups = (features + group_size - 1) / group_size;
  auto [offsets, total] = group_byte_offsets(bits, n, groups * group_size);
  auto codes = at::empty({total}, x.options().dtype(at::kByte));
  auto mn = at::empty({n, groups, 1}, x.options()), scale = at::empty({n, groups, 1}, x.options());
  at::Tensor range;
  if (!pergroup && x.numel() > 0) {  // the whole tensor's, the zero padding included
    auto [lo, hi] = at::aminmax(x);
    range = at::stack({lo, hi});
    if (groups * group_size > features) range = at::stack({at::clamp_max(lo, 0.0), at::clamp_min(hi, 0.0)});
  }
  const GroupCudaJob job{x.data_ptr<float>(), n, features, group_size, groups, bits.data_ptr<uint8_t>(),
                         offsets.data_ptr<int64_t>(), range.defined() ? range.data_ptr<float>() : nullptr,
                         static_cast<uint32_t>(static_cast<uint64_t>(seed)),
                         static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32), static_cast<uint64_t>(offset),
                         codes.data_ptr<uint8_t>(), mn.data_ptr<float>(), scale.data_ptr<float>(), nullptr};
  check_cuda(cuda_group_compress(job, current_stream()));
  return {codes, mn.to(store), scale.to(store)};
}

at::Tensor group_decompress_cuda(const at::Tensor& codes, const at::Tensor& bits, const at::Tensor& mn,
                                 const at::Tensor& scale, int64_t group_size, int64_t features) {
  TORCH_CHECK(group_size >= 1 && group_size <= (1 << 16), "group_size must be in 1..65536, got ", group_size);
  TORCH_CHECK(features >= 0, "features must be >= 0");
  const c10::cuda::CUDAGuard guard(codes.device());
  const int64_t n = bits.numel(), groups = (features + group_size - 1) / group_size;
  auto [offsets, total] = group_byte_offsets(bits, n, groups * group_size);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 1 && codes.is_contiguous() && codes.numel() == total,
              "codes must be a contiguous 1-D uint8 tensor of ", total, " bytes");
  TORCH_CHECK(mn.numel() == n * groups && scale.numel() == n * groups, "mn and scale need one value per (sample, group)");
  const auto mn32 = mn.to(at::kFloat).contiguous(), scale32 = scale.to(at::kFloat).contiguous();
  auto out = at::empty({n, features}, mn32.options());
  const GroupCudaJob job{nullptr, n, features, group_size, groups, bits.data_ptr<uint8_t>(),
                         offsets.data_ptr<int64_t>(), nullptr, 0, 0, 0,
                         const_cast<uint8_t*>(codes.data_ptr<uint8_t>()), const_cast<float*>(mn32.data_ptr<float>()),
                         const_cast<float*>(scale32.data_ptr<float>()), out.data_ptr<float>()};
  check_cuda(cuda_group_decompress(job, current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(nuq, CUDA, m) {
  m.impl("group_compress", &group_compress_cuda);
  m.impl("group_decompress", &group_decompress_cuda);
  m.impl("quantize", &quantize_cuda);
  m.impl("quantize_out", &quantize_out_cuda);
  m.impl("quantize_indices", &quantize_indices_cuda);
  m.impl("dequantize_indices", &dequantize_indices_cuda);
}

}  // namespace nuq
#endif  // NUQ_WITH_CUDA
