// Declarations of the CPU entry points; quant.cpp binds them after checking their inputs.
#pragma once
// Tensor and optional only, not torch/extension.h: the kernels' files then compile ~10x faster; only the
// binding file (quant.cpp) pays for pybind11 and the C++ frontend.
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
namespace torch { using namespace at; }  // as torch/types.h does: torch::Tensor is at::Tensor

#include <string>
#include <tuple>
#include <vector>

namespace nuq {

// Writes into `out` (contiguous float32, x.numel() values, on the CPU).
void quantize_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                  int64_t offset, int64_t threads, torch::Tensor& out);
std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cpu(const torch::Tensor& x, const torch::Tensor& levels,
                                                              int64_t bucket, bool linf, int64_t seed,
                                                              int64_t offset, int64_t threads);
// Quantizes x into `message` (uint8, 4*ceil(n/bucket) + ceil(n*bits/8) bytes, any alignment): the float32
// bucket norms, then the level indices packed `bits` = ceil(log2(#levels)) bits each (nuq/codec.py's
// layout) in one pass. Needs bucket % 8 == 0 (every bucket starts on a byte).
void encode_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                int64_t offset, int64_t threads, int64_t bits, torch::Tensor& message);
// Whether decode_cpu runs for these levels: where the AVX-512 kernel takes them.
bool decode_supported(const torch::Tensor& levels);
// The float32 [n] values of a message made by encode_cpu (levels[index] * bucket norm, bit for bit), where
// decode_supported: a new tensor, or added to `add_to` (contiguous float32 [n], returned; each value rounded
// as torch's add_to += values). Raises if an index is not below the number of levels.
torch::Tensor decode_cpu(const torch::Tensor& message, int64_t n, const torch::Tensor& levels, int64_t bucket,
                         int64_t bits, int64_t threads, const c10::optional<torch::Tensor>& add_to = c10::nullopt);
// One piece of a flat vector sent as its own message (buckets restart at `start`): values [start, end),
// whose message of `nbytes` bytes (codec layout) sits at byte `pos` of a larger buffer.
struct Piece {
  int64_t start, end, pos, nbytes;
};
// quantize_cpu of each piece of x into out[start, end), piece i with stream offset `offset + start` (pos and
// nbytes unused); the rest of out is left as it is. Pieces are checked by the caller.
void quantize_pieces_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                         int64_t offset, int64_t threads, torch::Tensor& out, const std::vector<Piece>& pieces);
// encode_cpu for each piece of x into `message`, piece i with stream offset `offset + start` (what a
// model's layers need, in one call). Pieces are checked by the caller.
void encode_pieces_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                       int64_t offset, int64_t threads, int64_t bits, torch::Tensor& message,
                       const std::vector<Piece>& pieces);
// Adds each piece's decoded values to add_to[start, end) (decode_cpu with add_to), where decode_supported;
// raises (after adding) if an index is not below the number of levels.
void decode_pieces_cpu(const torch::Tensor& message, const torch::Tensor& levels, int64_t bucket, int64_t bits,
                       int64_t threads, torch::Tensor& add_to, const std::vector<Piece>& pieces);
// The CPU path of a kernel that takes every input (the ActNN group codec, group.cpp): 0 avx512, 1 avx2,
// 2 generic, the first this CPU has from the one NUQ_CPU_KERNEL / set_cpu_kernel allows; and its name.
int cpu_path();
std::string cpu_path_name(int path);
// Which CPU kernel a call with these levels runs: "avx512", "avx2" or "generic".
std::string cpu_kernel_name(const torch::Tensor& levels);
// "auto" (the fastest path the CPU has), or "avx512", "avx2", "generic": that path first (and the slower
// ones for levels it does not take), for tests and benchmarks; overrides NUQ_CPU_KERNEL. Raises for a path
// this CPU lacks.
void set_cpu_kernel(const std::string& name);
torch::Tensor dequantize_indices_cpu(const torch::Tensor& idx, const torch::Tensor& norms,
                                     const torch::Tensor& levels, int64_t bucket, int64_t threads);

}  // namespace nuq
