// Python bindings of nuq._quant. nuq/kernel.py checks inputs with user-facing messages first; the
// TORCH_CHECKs here only keep a direct caller from crashing the process.
#include <torch/extension.h>

#include "quant_common.h"
#include "quant_cpu.h"
#ifdef NUQ_WITH_CUDA
#include "quant_cuda.h"
#endif

namespace nuq {
namespace {

#ifdef NUQ_WITH_CUDA
// The caller (nuq/kernel.py) selects x's device and passes torch's current stream as an integer, so this
// glue needs no torch CUDA headers and compiles wherever torch does.
void check_cuda(const char* err) { TORCH_CHECK(err == nullptr, "nuq._quant CUDA kernel failed: ", err); }

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

void quantize_cuda(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                   int64_t offset, int64_t stream, torch::Tensor& out) {
  auto norms = torch::empty({(x.numel() + bucket - 1) / bucket}, x.options());
  check_cuda(cuda_quantize(x.data_ptr<float>(), x.numel(), bucket, linf, levels.data_ptr<float>(),
                           static_cast<int>(levels.numel()), static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                           norms.data_ptr<float>(), out.data_ptr<float>(), nullptr, as_stream(stream)));
}

std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cuda(const torch::Tensor& x, const torch::Tensor& levels,
                                                               int64_t bucket, bool linf, int64_t seed,
                                                               int64_t offset, int64_t stream) {
  auto idx = torch::empty({x.numel()}, x.options().dtype(torch::kUInt8));
  auto norms = torch::empty({(x.numel() + bucket - 1) / bucket}, x.options());
  check_cuda(cuda_quantize(x.data_ptr<float>(), x.numel(), bucket, linf, levels.data_ptr<float>(),
                           static_cast<int>(levels.numel()), static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                           norms.data_ptr<float>(), nullptr, idx.data_ptr<uint8_t>(), as_stream(stream)));
  return {idx, norms};
}

torch::Tensor dequantize_indices_cuda(const torch::Tensor& idx, const torch::Tensor& norms,
                                      const torch::Tensor& levels, int64_t bucket, int64_t stream) {
  auto out = torch::empty({idx.numel()}, norms.options());
  check_cuda(cuda_dequantize(idx.data_ptr<uint8_t>(), idx.numel(), bucket, norms.data_ptr<float>(),
                             levels.data_ptr<float>(), out.data_ptr<float>(), as_stream(stream)));
  return out;
}
#endif

void check_quant_inputs(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, int64_t seed,
                        int64_t offset) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x must be contiguous float32");
  TORCH_CHECK(levels.scalar_type() == torch::kFloat32 && levels.is_contiguous() && levels.dim() == 1,
              "levels must be a contiguous 1-D float32 tensor");
  TORCH_CHECK(levels.numel() >= 2 && levels.numel() <= kMaxLevels, "levels must hold 2..256 values");
  TORCH_CHECK(levels.device() == x.device(), "levels and x must be on one device");
  TORCH_CHECK(bucket >= 1, "bucket_size must be >= 1");
  TORCH_CHECK(seed >= 0 && offset >= 0, "seed and offset must be >= 0");
}

bool on_cuda(const torch::Tensor& t) {
  if (!t.is_cuda()) return false;
#ifdef NUQ_WITH_CUDA
  return true;
#else
  TORCH_CHECK(false, "nuq._quant was built without CUDA");
#endif
}

torch::Tensor quantize_out(torch::Tensor out, const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket,
                           bool linf, int64_t seed, int64_t offset, int64_t threads, int64_t stream) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(out.scalar_type() == torch::kFloat32 && out.is_contiguous() && out.numel() == x.numel() &&
                  out.device() == x.device(),
              "out must be a contiguous float32 tensor with x's size on x's device");
#ifdef NUQ_WITH_CUDA
  if (on_cuda(x)) {
    quantize_cuda(x, levels, bucket, linf, seed, offset, stream, out);
    return out;
  }
#else
  on_cuda(x);
#endif
  quantize_cpu(x, levels, bucket, linf, seed, offset, threads, out);
  return out;
}

torch::Tensor quantize(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
                       int64_t offset, int64_t threads, int64_t stream) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  return quantize_out(torch::empty_like(x), x, levels, bucket, linf, seed, offset, threads, stream);
}

std::tuple<torch::Tensor, torch::Tensor> quantize_indices(const torch::Tensor& x, const torch::Tensor& levels,
                                                          int64_t bucket, bool linf, int64_t seed, int64_t offset,
                                                          int64_t threads, int64_t stream) {
  check_quant_inputs(x, levels, bucket, seed, offset);
#ifdef NUQ_WITH_CUDA
  if (on_cuda(x)) return quantize_indices_cuda(x, levels, bucket, linf, seed, offset, stream);
#else
  on_cuda(x);
#endif
  return quantize_indices_cpu(x, levels, bucket, linf, seed, offset, threads);
}

torch::Tensor dequantize_indices(const torch::Tensor& idx, const torch::Tensor& norms, const torch::Tensor& levels,
                                 int64_t bucket, int64_t threads, int64_t stream) {
  TORCH_CHECK(idx.scalar_type() == torch::kUInt8 && idx.is_contiguous() && idx.dim() == 1,
              "indices must be a contiguous 1-D uint8 tensor");
  TORCH_CHECK(norms.scalar_type() == torch::kFloat32 && norms.is_contiguous(), "norms must be contiguous float32");
  TORCH_CHECK(levels.scalar_type() == torch::kFloat32 && levels.is_contiguous(), "levels must be contiguous float32");
  TORCH_CHECK(bucket >= 1 && norms.numel() == (idx.numel() + bucket - 1) / bucket, "one norm per bucket");
  TORCH_CHECK(idx.device() == norms.device() && idx.device() == levels.device(), "one device for all inputs");
  TORCH_CHECK(idx.numel() == 0 || idx.max().item<int64_t>() < levels.numel(), "an index exceeds the levels");
#ifdef NUQ_WITH_CUDA
  if (on_cuda(idx)) return dequantize_indices_cuda(idx, norms, levels, bucket, stream);
#else
  on_cuda(idx);
#endif
  return dequantize_indices_cpu(idx, norms, levels, bucket, threads);
}

// The levels of a CPU decode (no x to check them against).
void check_decode_levels(const torch::Tensor& levels) {
  TORCH_CHECK(levels.scalar_type() == torch::kFloat32 && levels.is_contiguous() && levels.dim() == 1 &&
                  !levels.is_cuda() && levels.numel() >= 2 && levels.numel() <= kMaxLevels,
              "levels must be a contiguous 1-D float32 CPU tensor of 2..256 values");
}

// The vector a decode adds into.
void check_add_to(const torch::Tensor& add_to) {
  TORCH_CHECK(add_to.scalar_type() == torch::kFloat32 && add_to.is_contiguous() && add_to.dim() == 1 &&
                  !add_to.is_cuda(),
              "add_to must be a contiguous 1-D float32 CPU tensor, got ", add_to.scalar_type(), " of shape ",
              add_to.sizes(), add_to.is_contiguous() ? "" : " (not contiguous)");
}

// A buffer of several messages (the pieces calls; their sizes are checked per piece).
void check_message_buffer(const torch::Tensor& message) {
  TORCH_CHECK(message.scalar_type() == torch::kUInt8 && message.is_contiguous() && message.dim() == 1 &&
                  !message.is_cuda(),
              "message must be a contiguous 1-D uint8 CPU tensor");
}

// Bytes of the message of n values (nuq/codec.py's layout): a float32 norm per bucket, then the indices.
int64_t message_bytes(int64_t n, int64_t bucket, int64_t bits) {
  return 4 * ((n + bucket - 1) / bucket) + (n * bits + 7) / 8;
}

// ceil(log2(#levels)): the bits of one packed index.
int64_t index_bits(const torch::Tensor& levels) {
  int64_t bits = 1;
  while ((int64_t{1} << bits) < levels.numel()) ++bits;
  return bits;
}

// Checks a wire message (nuq/codec.py's layout) of n values for `what` ("encode" or "decode") and returns
// the index width ceil(log2(#levels)).
int64_t check_message(const torch::Tensor& message, int64_t n, const torch::Tensor& levels, int64_t bucket,
                      const char* what) {
  TORCH_CHECK(bucket % 8 == 0 || n <= bucket, what, " needs bucket_size % 8 == 0 (buckets start on a byte), got ",
              bucket);
  const int64_t bits = index_bits(levels);
  const int64_t nbytes = message_bytes(n, bucket, bits);
  TORCH_CHECK(message.scalar_type() == torch::kUInt8 && message.is_contiguous() && message.dim() == 1 &&
                  !message.is_cuda() && message.numel() == nbytes,
              "message must be a contiguous 1-D uint8 CPU tensor of ", nbytes, " bytes");
  return bits;
}

// The packed message of x written into `message` in one pass (CPU only).
torch::Tensor encode(torch::Tensor message, const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket,
                     bool linf, int64_t seed, int64_t offset, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "encode runs on the CPU; CUDA tensors use quantize_indices and nuq.packing");
  const int64_t bits = check_message(message, x.numel(), levels, bucket, "encode");
  encode_cpu(x, levels, bucket, linf, seed, offset, threads, bits, message);
  return message;
}

// The values of a message made by encode (CPU only).
torch::Tensor decode(const torch::Tensor& message, int64_t n, const torch::Tensor& levels, int64_t bucket,
                     int64_t threads) {
  check_decode_levels(levels);
  TORCH_CHECK(n >= 0 && bucket >= 1, "need n >= 0 and bucket_size >= 1");
  const int64_t bits = check_message(message, n, levels, bucket, "decode");
  return decode_cpu(message, n, levels, bucket, bits, threads);
}

// decode, the values added to `add_to` (one pass: no decoded vector in between), which is returned.
torch::Tensor decode_add(torch::Tensor add_to, const torch::Tensor& message, const torch::Tensor& levels,
                         int64_t bucket, int64_t threads) {
  check_add_to(add_to);
  const int64_t n = add_to.numel();
  check_decode_levels(levels);
  TORCH_CHECK(bucket >= 1, "need bucket_size >= 1");
  const int64_t bits = check_message(message, n, levels, bucket, "decode");
  return decode_cpu(message, n, levels, bucket, bits, threads, add_to);
}

// The pieces of a pieces call: an int64 [k, 3] CPU tensor of (start, end, byte position) rows, each piece
// inside x's n values and its message (codec layout of end - start values) inside `buffer_bytes`, in
// order without overlap.
std::vector<Piece> check_pieces(const torch::Tensor& pieces, int64_t n, int64_t buffer_bytes, int64_t bucket,
                                int64_t bits) {
  TORCH_CHECK(pieces.scalar_type() == torch::kInt64 && pieces.dim() == 2 && pieces.size(1) == 3 &&
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
    TORCH_CHECK(pos >= free_from && pos + nbytes <= buffer_bytes, "piece ", i, "'s message of ", nbytes,
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
torch::Tensor quantize_pieces(torch::Tensor out, const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket,
                              bool linf, int64_t seed, int64_t offset, const torch::Tensor& pieces, int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "quantize_pieces runs on the CPU; CUDA tensors quantize each piece");
  TORCH_CHECK(out.scalar_type() == torch::kFloat32 && out.is_contiguous() && out.numel() == x.numel() &&
                  !out.is_cuda(),
              "out must be a contiguous float32 CPU tensor with x's size");
  TORCH_CHECK(pieces.scalar_type() == torch::kInt64 && pieces.dim() == 2 && pieces.size(1) == 2 &&
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
  return out;
}

// encode for each piece of x (see check_pieces) into `message`: one call for a model's layers.
torch::Tensor encode_pieces(torch::Tensor message, const torch::Tensor& x, const torch::Tensor& levels,
                            int64_t bucket, bool linf, int64_t seed, int64_t offset, const torch::Tensor& pieces,
                            int64_t threads) {
  check_quant_inputs(x, levels, bucket, seed, offset);
  TORCH_CHECK(!x.is_cuda(), "encode runs on the CPU; CUDA tensors use quantize_indices and nuq.packing");
  check_message_buffer(message);
  const int64_t bits = index_bits(levels);
  encode_pieces_cpu(x, levels, bucket, linf, seed, offset, threads, bits, message,
                    check_pieces(pieces, x.numel(), message.numel(), bucket, bits));
  return message;
}

// decode_add for each piece: add_to[start, end) += the values of the piece's message.
torch::Tensor decode_pieces_add(torch::Tensor add_to, const torch::Tensor& message, const torch::Tensor& levels,
                                int64_t bucket, const torch::Tensor& pieces, int64_t threads) {
  check_add_to(add_to);
  check_decode_levels(levels);
  check_message_buffer(message);
  TORCH_CHECK(bucket >= 1, "need bucket_size >= 1");
  const int64_t bits = index_bits(levels);
  decode_pieces_cpu(message, levels, bucket, bits, threads, add_to,
                    check_pieces(pieces, add_to.numel(), message.numel(), bucket, bits));
  return add_to;
}

bool has_cuda() {
#ifdef NUQ_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace nuq

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "nuqlab quantize kernels (C++/OpenMP CPU, CUDA when built with it)";
  // Arguments: (x, levels, bucket_size, linf, seed, offset, cpu_threads, cuda_stream) and
  // (indices, norms, levels, bucket_size, cpu_threads, cuda_stream); cuda_stream is torch's current stream
  // handle (torch.cuda.current_stream().cuda_stream), ignored on CPU.
  m.def("quantize", &nuq::quantize, "quantize-dequantize flat float32 x");
  m.def("quantize_out", &nuq::quantize_out, "quantize_out(out, x, ...): quantize into a given float32 tensor");
  m.def("quantize_indices", &nuq::quantize_indices, "(uint8 level indices, float32 bucket norms)");
  m.def("dequantize_indices", &nuq::dequantize_indices, "levels[index] * bucket norm");
  m.def("encode", &nuq::encode,
        "encode(message, x, levels, bucket_size, linf, seed, offset, cpu_threads): norms + packed indices");
  m.def("quantize_pieces", &nuq::quantize_pieces,
        "quantize_pieces(out, x, levels, bucket_size, linf, seed, offset, pieces, cpu_threads): each piece "
        "(int64 rows start, end) quantized as its own vector into out");
  m.def("encode_pieces", &nuq::encode_pieces,
        "encode_pieces(message, x, levels, bucket_size, linf, seed, offset, pieces, cpu_threads): each piece "
        "(int64 rows start, end, byte position) encoded as its own message");
  m.def("decode_pieces_add", &nuq::decode_pieces_add,
        "decode_pieces_add(add_to, message, levels, bucket_size, pieces, cpu_threads): add_to[start:end] += "
        "each piece's values");
  m.def("decode_supported", &nuq::decode_supported, "decode_supported(levels): whether decode runs for them");
  m.def("decode", &nuq::decode, "decode(message, n, levels, bucket_size, cpu_threads): float32 values");
  m.def("decode_add", &nuq::decode_add,
        "decode_add(add_to, message, levels, bucket_size, cpu_threads): add_to += the message's values");
  m.def("has_cuda", &nuq::has_cuda, "whether this build holds the CUDA kernel");
  m.def("cpu_kernel", &nuq::cpu_kernel_name, "cpu_kernel(levels): 'avx512', 'avx2' or 'generic', the CPU kernel a call with these levels runs");
  m.def("set_cpu_kernel", &nuq::set_cpu_kernel, "set_cpu_kernel('auto' | 'avx512' | 'avx2' | 'generic'): the first CPU path allowed");
}
