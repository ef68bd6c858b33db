// Host launchers of the CUDA kernels (quant_cuda.cu), torch-free: raw device pointers and a cudaStream_t
// passed as void*. Each returns nullptr on success or the CUDA error string.
#pragma once
#include <cstdint>

namespace nuq {

// Writes norms[ceil(n / bucket)] and either out[n] (dequantized values) or idx[n] (level indices).
const char* cuda_quantize(const float* x, int64_t n, int64_t bucket, bool linf, const float* levels, int k,
                          uint64_t seed, uint64_t offset, float* norms, float* out, uint8_t* idx, void* stream);
const char* cuda_dequantize(const uint8_t* idx, int64_t n, int64_t bucket, const float* norms, const float* levels,
                            float* out, void* stream);

}  // namespace nuq
