// Host launchers of the ActNN group codec's CUDA kernels (group_cuda.cu), torch-free: raw device pointers
// and a cudaStream_t passed as void*. Each returns nullptr on success or the CUDA error string. The layout
// and arithmetic are group_cpu.h's (nuq/groupquant.py's reference), bit for bit.
#pragma once
#include <cstdint>

namespace nuq {

struct GroupCudaJob {
  const float* x;              // (n, features)
  int64_t n, features, group, groups;
  const uint8_t* bits;         // (n,)
  const int64_t* byte_offset;  // (n,)
  const float* range;          // nullptr: per-group ranges; else the whole tensor's (min, max), padding included
  uint32_t key0, key1;
  uint64_t offset;
  uint8_t* codes;
  float* mn;     // (n, groups)
  float* scale;  // (n, groups)
  float* out;    // decompress: (n, features)
};

// Writes mn, scale and the packed codes.
const char* cuda_group_compress(const GroupCudaJob& job, void* stream);
// Writes out from codes, mn and scale (float32).
const char* cuda_group_decompress(const GroupCudaJob& job, void* stream);

}  // namespace nuq
