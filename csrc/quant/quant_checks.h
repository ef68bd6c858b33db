// Input checks of the ops (quant.cpp: CPU, quant_cuda_ops.cpp: CUDA). nuq/kernel.py checks inputs with
// user-facing messages first; these keep a direct caller of torch.ops.nuq.* from crashing the process or
// reading memory it does not own.
#pragma once
#include <torch/extension.h>

#include <limits>

#include "quant_common.h"

namespace nuq {

inline void check_bucket(int64_t bucket) {
  TORCH_CHECK(bucket >= 1 && bucket <= kMaxBucket, "bucket_size must be in [1, ", kMaxBucket, "], got ", bucket);
}

// x, levels, bucket_size, seed and offset of a quantize op (offset + n must fit the int64 stream position).
inline void check_quant_inputs(const at::Tensor& x, const at::Tensor& levels, int64_t bucket, int64_t seed,
                               int64_t offset) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32");
  TORCH_CHECK(levels.scalar_type() == at::kFloat && levels.is_contiguous() && levels.dim() == 1,
              "levels must be a contiguous 1-D float32 tensor");
  TORCH_CHECK(levels.numel() >= 2 && levels.numel() <= kMaxLevels, "levels must hold 2..256 values");
  TORCH_CHECK(levels.device() == x.device(), "levels and x must be on one device");
  check_bucket(bucket);
  TORCH_CHECK(seed >= 0 && offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - x.numel(),
              "seed and offset must be >= 0 with offset + numel < 2^63, got seed ", seed, " offset ", offset);
}

// The `out` of quantize_out.
inline void check_out(const at::Tensor& out, const at::Tensor& x) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == x.numel() &&
                  out.device() == x.device(),
              "out must be a contiguous float32 tensor with x's size on x's device");
}

// The inputs of dequantize_indices.
inline void check_dequantize_inputs(const at::Tensor& idx, const at::Tensor& norms, const at::Tensor& levels,
                                    int64_t bucket) {
  TORCH_CHECK(idx.scalar_type() == at::kByte && idx.is_contiguous() && idx.dim() == 1,
              "indices must be a contiguous 1-D uint8 tensor");
  TORCH_CHECK(norms.scalar_type() == at::kFloat && norms.is_contiguous(), "norms must be contiguous float32");
  TORCH_CHECK(levels.scalar_type() == at::kFloat && levels.is_contiguous(), "levels must be contiguous float32");
  check_bucket(bucket);
  TORCH_CHECK(norms.numel() == num_buckets(idx.numel(), bucket), "one norm per bucket");
  TORCH_CHECK(idx.device() == norms.device() && idx.device() == levels.device(), "one device for all inputs");
  TORCH_CHECK(idx.numel() == 0 || idx.max().item<int64_t>() < levels.numel(), "an index exceeds the levels");
}

}  // namespace nuq
