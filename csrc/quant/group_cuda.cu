// CUDA kernels of the ActNN group codec: the layout and arithmetic of group_cpu.h / nuq/groupquant.py, every
// float op an explicit IEEE round-to-nearest intrinsic (the build passes --use_fast_math), so the codes equal
// the CPU paths' bit for bit (up to float32 denormals, which fast-math flushes). Torch-free, so `nvcc -c`
// checks it on any machine with nvcc; quant_cuda_ops.cpp binds it.
#include <cuda_runtime.h>

#include <algorithm>

#include "group_cpu.h"  // kGroupEps
#include "group_cuda.h"
#include "quant_common.h"

namespace nuq {
namespace {

constexpr int kThreads = 256;

// One thread per (sample, group): its range (widened), stored as min - eps and the scale.
__global__ void group_params_kernel(GroupCudaJob job) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= job.n * job.groups) return;
  const int64_t n = t / job.groups, g = t % job.groups;
  const int64_t a = g * job.group, valid = min(job.group, job.features - a);
  float lo, hi;
  if (job.range) {
    lo = job.range[0];
    hi = job.range[1];
  } else {
    const float* x = job.x + n * job.features + a;
    lo = x[0];
    hi = x[0];
    for (int64_t i = 1; i < valid; ++i) {
      lo = x[i] < lo ? x[i] : lo;
      hi = x[i] > hi ? x[i] : hi;
    }
    if (valid < job.group) {
      lo = lo < 0.0f ? lo : 0.0f;
      hi = hi > 0.0f ? hi : 0.0f;
    }
  }
  lo = __fsub_rn(lo, kGroupEps);
  const float levels = static_cast<float>((1 << job.bits[n]) - 1);
  job.mn[t] = lo;
  job.scale[t] = __fdiv_rn(levels, __fsub_rn(__fadd_rn(hi, kGroupEps), lo));
}

// The values i0 .. i0 + count - 1 (count <= 8) of padded sample n that this thread of a codes or decompress
// kernel handles; n = -1 past the last.
struct Octet {
  int64_t n, i0, count;
};

__device__ Octet octet_of(const GroupCudaJob& job) {
  const int64_t padded = job.groups * job.group, per = (padded + 7) / 8;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= job.n * per) return Octet{-1, 0, 0};
  const int64_t i0 = t % per * 8;
  return Octet{t / per, i0, min(int64_t{8}, padded - i0)};
}

// One thread per 8 values of a padded sample: their codes, packed into bits[n] bytes (fewer at its end).
__global__ void group_codes_kernel(GroupCudaJob job) {
  const Octet o = octet_of(job);
  if (o.n < 0) return;
  const int64_t n = o.n, i0 = o.i0, count = o.count;
  const int bits = job.bits[n];
  const float levels = static_cast<float>((1 << bits) - 1);
  const uint64_t p0 = job.offset + static_cast<uint64_t>(n * job.groups * job.group + i0);
  uint32_t words[12];  // positions p0 .. p0 + 7 lie in blocks p0 / 4 .. p0 / 4 + 2
  for (int b = 0; b < 3; ++b) philox4x32_10((p0 >> 2) + b, job.key0, job.key1, words + 4 * b);
  uint64_t packed = 0;
  for (int k = 0; k < count; ++k) {
    const int64_t i = i0 + k, g = i / job.group;
    const float x = i < job.features ? job.x[n * job.features + i] : 0.0f;
    const float lo = job.mn[n * job.groups + g], scale = job.scale[n * job.groups + g];
    const float t1 = __fmul_rn(__fsub_rn(x, lo), scale);
    const uint32_t w = words[(p0 & 3) + k];
    const float noise = __fsub_rn(__fmul_rn(static_cast<float>(static_cast<int32_t>(w >> 8)), 0x1p-24f), 0.5f);
    float y = __fadd_rn(t1, noise);
    y = y < 0.0f ? 0.0f : y;
    y = y > levels ? levels : y;
    packed |= static_cast<uint64_t>(static_cast<uint32_t>(rintf(y))) << (bits * k);
  }
  uint8_t* dst = job.codes + job.byte_offset[n] + i0 / 8 * bits;
  const int nbytes = static_cast<int>((count * bits + 7) / 8);
  for (int b = 0; b < nbytes; ++b) dst[b] = static_cast<uint8_t>(packed >> (8 * b));
}

// One thread per 8 values of a padded sample: code / scale + min of those below `features`.
__global__ void group_decompress_kernel(GroupCudaJob job) {
  const Octet o = octet_of(job);
  if (o.n < 0) return;
  const int64_t n = o.n, i0 = o.i0, count = o.count;
  const int bits = job.bits[n];
  const uint8_t* src = job.codes + job.byte_offset[n] + i0 / 8 * bits;
  const int nbytes = static_cast<int>((count * bits + 7) / 8);
  uint64_t packed = 0;
  for (int b = 0; b < nbytes; ++b) packed |= static_cast<uint64_t>(src[b]) << (8 * b);
  const uint64_t field = (uint64_t{1} << bits) - 1;
  for (int k = 0; k < count; ++k) {
    const int64_t i = i0 + k;
    if (i >= job.features) break;
    const int64_t gi = n * job.groups + i / job.group;
    const float code = static_cast<float>(static_cast<uint32_t>((packed >> (bits * k)) & field));
    job.out[n * job.features + i] = __fadd_rn(__fdiv_rn(code, job.scale[gi]), job.mn[gi]);
  }
}

unsigned blocks_for(int64_t work) { return static_cast<unsigned>((work + kThreads - 1) / kThreads); }

const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* cuda_group_compress(const GroupCudaJob& job, void* stream) {
  if (job.n * job.groups == 0) return nullptr;  // (a launch of no blocks is an error)
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int64_t per = (job.groups * job.group + 7) / 8;
  if (job.n * per > int64_t{kThreads} * 0x7fffffff) return "too many values for one CUDA launch";
  group_params_kernel<<<blocks_for(job.n * job.groups), kThreads, 0, s>>>(job);
  if (const char* err = last_error()) return err;
  group_codes_kernel<<<blocks_for(job.n * per), kThreads, 0, s>>>(job);
  return last_error();
}

const char* cuda_group_decompress(const GroupCudaJob& job, void* stream) {
  if (job.n * job.groups == 0) return nullptr;
  const int64_t per = (job.groups * job.group + 7) / 8;
  if (job.n * per > int64_t{kThreads} * 0x7fffffff) return "too many values for one CUDA launch";
  group_decompress_kernel<<<blocks_for(job.n * per), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(job);
  return last_error();
}

}  // namespace nuq
