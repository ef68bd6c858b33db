// The torch.ops.nuq operators of nuq._quant: one schema per op (named, typed arguments; the ints
// keyword-only, so none can be swapped silently), the CPU kernels registered here and the CUDA ones in
// quant_cuda_ops.cpp (CUDA builds). Their fake (shape-only) implementations, which torch.compile and
// torch.library.opcheck trace, are in nuq/ops.py. The Python module itself holds only plain utilities
// (which CPU kernel runs, whether CUDA was built). nuq/kernel.py checks inputs with user-facing messages
// first; the TORCH_CHECKs here keep a direct caller from crashing the process.
#include <torch/extension.h>

#include "../common/bitpack.h"
#include "quant_checks.h"
#include "quant_common.h"
#include "quant_cpu.h"

namespace nuq {
namespace {

at::Tensor quantize(const at::Tensor& x, const at::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                    int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  auto out = at::empty_like(x);
  quantize_cpu(x, levels, bucket, linf, seed, offset, threads, out);
  return out;
}

void quantize_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& levels, int64_t bucket, bool linf,
                  int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  check_out(out, x);
  quantize_cpu(x, levels, bucket, linf, seed, offset, threads, out);
}

std::tuple<at::Tensor, at::Tensor> quantize_indices(const at::Tensor& x, const at::Tensor& levels, int64_t bucket,
                                                    bool linf, int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  return quantize_indices_cpu(x, levels, bucket, linf, seed, offset, threads);
}

at::Tensor dequantize_indices(const at::Tensor& idx, const at::Tensor& norms, const at::Tensor& levels,
                              int64_t bucket, int64_t threads) {
  check_dequantize_inputs(idx, norms, levels, bucket);
  return dequantize_indices_cpu(idx, norms, levels, bucket, threads);
}

// The levels of a CPU decode (no x to check them against).
void check_decode_levels(const at::Tensor& levels) {
  TORCH_CHECK(levels.scalar_type() == at::kFloat && levels.is_contiguous() && levels.dim() == 1 &&
                  !levels.is_cuda() && levels.numel() >= 2 && levels.numel() <= kMaxLevels,
              "levels must be a contiguous 1-D float32 CPU tensor of 2..256 values");
}

// The vector a decode adds into.
void check_add_to(const at::Tensor& add_to) {
  TORCH_CHECK(add_to.scalar_type() == at::kFloat && add_to.is_contiguous() && add_to.dim() == 1 &&
                  !add_to.is_cuda(),
              "add_to must be a contiguous 1-D float32 CPU tensor, got ", add_to.scalar_type(), " of shape ",
              add_to.sizes(), add_to.is_contiguous() ? "" : " (not contiguous)");
}

// A buffer of several messages (the pieces calls; their sizes are checked per piece).
void check_message_buffer(const at::Tensor& message) {
  TORCH_CHECK(message.scalar_type() == at::kByte && message.is_contiguous() && message.dim() == 1 &&
                  !message.is_cuda(),
              "message must be a contiguous 1-D uint8 CPU tensor");
}

// Bytes of the message of n values (nuq/codec.py's layout): a float32 norm per bucket, then the indices.
int64_t message_bytes(int64_t n, int64_t bucket, int64_t bits) {
  return 4 * num_buckets(n, bucket) + bitpack::packed_bytes(n, bits);
}

// n values need at least n bits of message: a bound on n (from a caller) that keeps message_bytes and every
// size derived from it far from int64 overflow.
void check_value_count(int64_t n, const at::Tensor& message) {
  TORCH_CHECK(n >= 0 && n / 8 <= message.numel(), "a message of ", message.numel(), " bytes cannot hold ", n,
              " values");
}

// ceil(log2(#levels)): the bits of one packed index.
int64_t index_bits(const at::Tensor& levels) {
  int64_t bits = 1;
  while ((int64_t{1} << bits) < levels.numel()) ++bits;
  return bits;
}

// Checks a wire message (nuq/codec.py's layout) of n values for `what` ("encode" or "decode") and returns
// the index width ceil(log2(#levels)).
int64_t check_message(const at::Tensor& message, int64_t n, const at::Tensor& levels, int64_t bucket,
                      const char* what) {
  TORCH_CHECK(bucket % 8 == 0 || n <= bucket, what, " needs bucket_size % 8 == 0 (buckets start on a byte), got ",
              bucket);
  const int64_t bits = index_bits(levels);
  const int64_t nbytes = message_bytes(n, bucket, bits);
  TORCH_CHECK(message.scalar_type() == at::kByte && message.is_contiguous() && message.dim() == 1 &&
                  !message.is_cuda() && message.numel() == nbytes,
              "message must be a contiguous 1-D uint8 CPU tensor of ", nbytes, " bytes");
  return bits;
}

// The packed message of x written into `message` in one pass (CPU only).
void encode(at::Tensor& message, const at::Tensor& x, const at::Tensor& levels, int64_t bucket, bool linf,
            int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "encode runs on the CPU; CUDA tensors use quantize_indices and nuq.packing");
  const int64_t bits = check_message(message, x.numel(), levels, bucket, "encode");
  encode_cpu(x, levels, bucket, linf, seed, offset, threads, bits, message);
}

// The values of a message made by encode (CPU only).
at::Tensor decode(const at::Tensor& message, const at::Tensor& levels, int64_t n, int64_t bucket,
                  int64_t threads) {
  check_decode_levels(levels);
  check_bucket(bucket);
  check_value_count(n, message);
  const int64_t bits = check_message(message, n, levels, bucket, "decode");
  return decode_cpu(message, n, levels, bucket, bits, threads);
}

// decode, the values added to `add_to` (one pass: no decoded vector in between).
void decode_add(at::Tensor& add_to, const at::Tensor& message, const at::Tensor& levels, int64_t bucket,
                int64_t threads) {
  check_add_to(add_to);
  const int64_t n = add_to.numel();
  check_decode_levels(levels);
  check_bucket(bucket);
  check_value_count(n, message);
  const int64_t bits = check_message(message, n, levels, bucket, "decode");
  decode_cpu(message, n, levels, bucket, bits, threads, add_to);
}

// The pieces of a pieces call: an int64 [k, 3] CPU tensor of (start, end, byte position) rows, each piece
// inside x's n values and its message (codec layout of end - start values) inside `buffer_bytes`, in
// order without overlap.
std::vector<Piece> check_pieces(const at::Tensor& pieces, int64_t n, int64_t buffer_bytes, int64_t bucket,
                                int64_t bits) {
  TORCH_CHECK(pieces.scalar_type() == at::kLong && pieces.dim() == 2 && pieces.size(1) == 3 &&
                  pieces.is_contiguous() && !pieces.is_cuda(),
              "pieces must be a contiguous int64 CPU tensor of (start, end, byte position) rows, got ",
              pieces.scalar_type(), " of shape ", pieces.sizes());
  const int64_t* row = pieces.data_ptr<int64_t>();
  std::vector<Piece> out;
  int64_t free_from = 0;  // the first message byte not yet used
  for (int64_t i = 0; i < pieces.size(0); ++i, row += 3) {
    const int64_t start = row[0], end = row[1], pos = row[2];
    TORCH_CHECK(0 <= start && start <= end && end <= n, "piece ", i, " covers values [", start, ", ", end,
                ") but x has ", n);
    const int64_t len = end - start;
    TORCH_CHECK(bucket % 8 == 0 || len <= bucket, "piece ", i, " needs bucket_size % 8 == 0 (buckets start on a "
                "byte), got ", bucket, " for ", len, " values");
    const int64_t nbytes = message_bytes(len, bucket, bits);
    TORCH_CHECK(pos >= free_from && nbytes <= buffer_bytes && pos <= buffer_bytes - nbytes, "piece ", i, "'s message of ", nbytes,
                " bytes at byte ", pos, " overlaps the previous piece's or ends past the buffer's ", buffer_bytes,
                " bytes");
    free_from = pos + nbytes;
    out.push_back(Piece{start, end, pos, nbytes});
  }
  return out;
}

// quantize_out of each piece x[start, end) of an int64 [k, 2] CPU tensor of rows (start, end), in order and
// not overlapping, into out[start, end) (stream offset `offset + start`; buckets restart at start): one
// call for a model's layers. The rest of out is left as it is.
void quantize_pieces(at::Tensor& out, const at::Tensor& x, const at::Tensor& levels, const at::Tensor& pieces,
                     int64_t bucket, bool linf, int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "quantize_pieces runs on the CPU; CUDA tensors quantize each piece");
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == x.numel() &&
                  !out.is_cuda(),
              "out must be a contiguous float32 CPU tensor with x's size");
  TORCH_CHECK(pieces.scalar_type() == at::kLong && pieces.dim() == 2 && pieces.size(1) == 2 &&
                  pieces.is_contiguous() && !pieces.is_cuda(),
              "pieces must be a contiguous int64 CPU tensor of (start, end) rows, got ", pieces.scalar_type(),
              " of shape ", pieces.sizes());
  const int64_t* row = pieces.data_ptr<int64_t>();
  std::vector<Piece> checked;
  int64_t free_from = 0;
  for (int64_t i = 0; i < pieces.size(0); ++i, row += 2) {
    TORCH_CHECK(free_from <= row[0] && row[0] <= row[1] && row[1] <= x.numel(), "piece ", i, " covers values [",
                row[0], ", ", row[1], ") but x has ", x.numel(), " and the previous piece ends at ", free_from);
    free_from = row[1];
    checked.push_back(Piece{row[0], row[1], 0, 0});
  }
  quantize_pieces_cpu(x, levels, bucket, linf, seed, offset, threads, out, checked);
}

// encode for each piece of x (see check_pieces) into `message`: one call for a model's layers.
void encode_pieces(at::Tensor& message, const at::Tensor& x, const at::Tensor& levels, const at::Tensor& pieces,
                   int64_t bucket, bool linf, int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "encode runs on the CPU; CUDA tensors use quantize_indices and nuq.packing");
  check_message_buffer(message);
  const int64_t bits = index_bits(levels);
  encode_pieces_cpu(x, levels, bucket, linf, seed, offset, threads, bits, message,
                    check_pieces(pieces, x.numel(), message.numel(), bucket, bits));
}

// decode_add for each piece: add_to[start, end) += the values of the piece's message.
void decode_pieces_add(at::Tensor& add_to, const at::Tensor& message, const at::Tensor& levels,
                       const at::Tensor& pieces, int64_t bucket, int64_t threads) {
  check_add_to(add_to);
  check_decode_levels(levels);
  check_message_buffer(message);
  check_bucket(bucket);
  const int64_t bits = index_bits(levels);
  decode_pieces_cpu(message, levels, bucket, bits, threads, add_to,
                    check_pieces(pieces, add_to.numel(), message.numel(), bucket, bits));
}

bool has_cuda() {
#ifdef NUQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

// The quantize arguments after the tensors, keyword-only: (..., *, bucket_size, linf, seed, offset, num_threads).
// Element i of x uses Philox stream position offset + i under key seed; num_threads bounds the CPU threads
// (results never depend on it; CUDA ignores it). Ops that write into a tensor mark it (a!) and return nothing.
#define NUQ_QUANT_ARGS "*, int bucket_size, bool linf, int seed, int offset, int num_threads"

TORCH_LIBRARY(nuq, m) {
  m.set_python_module("nuq.ops");  // where the fake implementations live
  m.def("quantize(Tensor x, Tensor levels, " NUQ_QUANT_ARGS ") -> Tensor");
  m.def("quantize_out(Tensor(a!) out, Tensor x, Tensor levels, " NUQ_QUANT_ARGS ") -> ()");
  m.def("quantize_indices(Tensor x, Tensor levels, " NUQ_QUANT_ARGS ") -> (Tensor indices, Tensor norms)");
  m.def("dequantize_indices(Tensor indices, Tensor norms, Tensor levels, *, int bucket_size, int num_threads) "
        "-> Tensor");
  // CPU only: the fused codec (nuq/codec.py's message layout) and the pieces calls (a model's layers at once).
  m.def("encode(Tensor(a!) message, Tensor x, Tensor levels, " NUQ_QUANT_ARGS ") -> ()");
  m.def("decode(Tensor message, Tensor levels, *, int n, int bucket_size, int num_threads) -> Tensor");
  m.def("decode_add(Tensor(a!) add_to, Tensor message, Tensor levels, *, int bucket_size, int num_threads) -> ()");
  // pieces: int64 rows (start, end) for quantize_pieces, (start, end, byte position) for the codec
  m.def("quantize_pieces(Tensor(a!) out, Tensor x, Tensor levels, Tensor pieces, " NUQ_QUANT_ARGS ") -> ()");
  m.def("encode_pieces(Tensor(a!) message, Tensor x, Tensor levels, Tensor pieces, " NUQ_QUANT_ARGS ") -> ()");
  m.def("decode_pieces_add(Tensor(a!) add_to, Tensor message, Tensor levels, Tensor pieces, *, int bucket_size, "
        "int num_threads) -> ()");
  // The ActNN group codec (group.cpp, CPU; quant_cuda_ops.cpp, CUDA): per-sample bits, per-(sample, group) or
  // whole-tensor range, stochastic rounding on the Philox stream (value i of padded sample n at position
  // offset + n * groups * group_size + i under key seed), codes packed at each sample's width in one stream.
  m.def("group_compress(Tensor x, Tensor bits, *, int group_size, bool pergroup, ScalarType store, int seed, "
        "int offset) -> (Tensor codes, Tensor mn, Tensor scale)");
  m.def("group_ranges(Tensor x, *, int group_size) -> (Tensor min, Tensor max)");  // per (sample, group), padding in
  m.def("group_decompress(Tensor codes, Tensor bits, Tensor mn, Tensor scale, *, int group_size, int features) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(nuq, CPU, m) {
  m.impl("quantize", &quantize);
  m.impl("quantize_out", &quantize_out);
  m.impl("quantize_indices", &quantize_indices);
  m.impl("dequantize_indices", &dequantize_indices);
  m.impl("encode", &encode);
  m.impl("decode", &decode);
  m.impl("decode_add", &decode_add);
  m.impl("quantize_pieces", &quantize_pieces);
  m.impl("encode_pieces", &encode_pieces);
  m.impl("decode_pieces_add", &decode_pieces_add);
}

}  // namespace nuq

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "nuqlab quantize kernels: importing this registers the torch.ops.nuq ops (see nuq/ops.py)";
  m.def("decode_supported", &nuq::decode_supported, "decode_supported(levels): whether decode runs for them");
  m.def("has_cuda", &nuq::has_cuda, "whether this build holds the CUDA kernel");
  m.def("cpu_kernel", &nuq::cpu_kernel_name, "cpu_kernel(levels): 'avx512', 'avx2' or 'generic', the CPU kernel a call with these levels runs");
  m.def("group_cpu_kernel", [] { return nuq::cpu_path_name(nuq::cpu_path()); },
        "group_cpu_kernel(): 'avx512', 'avx2' or 'generic', the CPU path of group_compress/group_decompress");
  m.def("set_cpu_kernel", &nuq::set_cpu_kernel, "set_cpu_kernel('auto' | 'avx512' | 'avx2' | 'generic'): the first CPU path allowed");
}
