// The AVX-512 CPU kernel (quant_cpu_avx512.cpp): torch-free, called by quant_cpu.cpp on CPUs that have
// AVX-512 for the level sets it handles (`handles`: all in practice); everything else runs the generic kernel.
#pragma once
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NUQ_HAVE_AVX512_KERNEL 1
#else
#define NUQ_HAVE_AVX512_KERNEL 0
#endif

#if NUQ_HAVE_AVX512_KERNEL
// The code between these is compiled for AVX-512 whatever the build's flags (the driver checks the CPU at run
// time): quant_cpu_avx512.cpp and its part headers (_philox.h, _search.h, _pack.h) each open and close it.
#define NUQ_AVX512_BEGIN                                                             \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512bw,avx512dq,avx512vl,bmi2\")") \
      _Pragma("GCC diagnostic push")                                                 \
      _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")                   \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
// (the two warnings: GCC 12 false positives in avx512fintrin.h; _mm512_reduce_max_epu32 extracts from an
// undefined vector)
#define NUQ_AVX512_END _Pragma("GCC diagnostic pop") _Pragma("GCC pop_options")
#endif

namespace nuq {

// One quantize call over flat x: buckets of `bucket` values, the last possibly partial. Exactly one of
// out (dequantized values), idx (level indices) and packed (indices packed `bits` bits each, layout of
// csrc/common/bitpack.h; needs bucket % 8 == 0 so every bucket starts on a byte) is non-null. norms (one
// float32 per bucket, written bytewise so it may be unaligned) may be null.
struct BucketJob {
  const float* x;
  int64_t n;
  int64_t bucket;
  bool linf;
  const float* levels;
  int num_levels;
  uint64_t offset;  // stream position of x[0]
  uint32_t key0, key1;
  float* out;
  uint8_t* idx;
  void* norms;
  uint8_t* packed = nullptr;
  int bits = 0;  // ceil(log2(num_levels)), for `packed`
};

// Decoding one message (nuq/codec.py's layout) of n values into out: norms (float32 per bucket, bytewise),
// then indices packed `bits` bits each; bucket % 8 == 0 unless there is one bucket. The AVX-512 kernel
// decodes the level sets it handles; elsewhere nuq/codec.py unpacks, then dequantizes.
struct DecodeJob {
  const uint8_t* norms;
  const uint8_t* packed;
  int64_t n;
  int64_t bucket;
  const float* levels;
  int num_levels;
  int bits;
  float* out;
  const uint8_t* end;  // one past the message's last byte
  bool accumulate = false;  // out += the values (each rounded once, as torch's add of the decoded vector)
};

namespace avx512 {

#if NUQ_HAVE_AVX512_KERNEL
// Whether the AVX-512 kernel handles this level set: 2 .. 256 sorted values, and for up to 16 no two closer
// than 2^-90 unless equal (true of every such level set in practice; the generic kernel takes the rest).
bool handles(const float* levels, int num_levels);
// Buckets first .. last-1 of the job. Call only where the CPU has AVX-512 F, BW, DQ, VL and BMI2.
void run_buckets(const BucketJob& job, int64_t first, int64_t last);
// Decodes buckets first .. last-1 (bits = ceil(log2(levels))); raises *max_index to the largest index read. Same CPU requirements as run_buckets.
void decode_buckets(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index);
#endif

}  // namespace avx512
}  // namespace nuq
