// Declarations of the CPU and CUDA entry points; quant.cpp binds them after checking their inputs.
#pragma once
#include <torch/extension.h>

#include <tuple>

namespace nuq {

torch::Tensor quantize_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf,
                           int64_t seed, int64_t offset, int64_t threads);
std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cpu(const torch::Tensor& x, const torch::Tensor& levels,
                                                              int64_t bucket, bool linf, int64_t seed,
                                                              int64_t offset, int64_t threads);
torch::Tensor dequantize_indices_cpu(const torch::Tensor& idx, const torch::Tensor& norms,
                                     const torch::Tensor& levels, int64_t bucket, int64_t threads);

#ifdef NUQ_WITH_CUDA
torch::Tensor quantize_cuda(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf,
                            int64_t seed, int64_t offset);
std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cuda(const torch::Tensor& x, const torch::Tensor& levels,
                                                               int64_t bucket, bool linf, int64_t seed,
                                                               int64_t offset);
torch::Tensor dequantize_indices_cuda(const torch::Tensor& idx, const torch::Tensor& norms,
                                      const torch::Tensor& levels, int64_t bucket);
#endif

}  // namespace nuq
