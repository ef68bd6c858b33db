// The CUDA kernels of the torch.ops.nuq ops (schemas in quant.cpp), compiled in CUDA builds only: each runs
// on its input's device (a device guard) in torch's current stream there, so it is ordered with the
// caller's other work on that stream.
#ifdef NUQ_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (what at::cuda::getCurrentCUDAStream is, without cuBLAS/cuSPARSE headers)
#include <torch/extension.h>

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

}  // namespace

TORCH_LIBRARY_IMPL(nuq, CUDA, m) {
  m.impl("quantize", &quantize_cuda);
  m.impl("quantize_out", &quantize_out_cuda);
  m.impl("quantize_indices", &quantize_indices_cuda);
  m.impl("dequantize_indices", &dequantize_indices_cuda);
}

}  // namespace nuq
#endif  // NUQ_WITH_CUDA
