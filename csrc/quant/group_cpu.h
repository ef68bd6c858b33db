// The ActNN group codec on the CPU (torch-free): stochastic rounding of per-sample activations to per-sample
// bit widths with a per-(sample, group) or whole-tensor range, and the bit packing of the codes, in one pass
// (group_kernel.h is the driver; group.cpp binds the ops). The Python reference, step by step, is
// nuq/groupquant.py's `reference_compress`; every path computes exactly its bits.
//
// Layout: sample n's F features are zero-padded to `groups` groups of G; value i of the padded sample uses
// Philox stream position offset + n * groups * G + i under key seed (nuq/philox.py). Its codes are packed at
// the sample's own width b_n (csrc/common/bitpack.h's layout) from byte byte_offset[n] of one stream; a sample
// takes ceil(groups * G * b_n / 8) bytes. Work is split into units of `unit_groups` groups of one sample (a
// multiple of 8 groups, so every unit starts on a byte of its sample's stream whatever G is).
#pragma once
#include <cstdint>

namespace nuq {

constexpr float kGroupEps = 1e-6f;  // widens each range (min - eps, max + eps): a constant group keeps a finite scale

struct GroupJob {
  const float* x;       // (n, features), row-major
  int64_t n, features, group, groups, unit_groups;
  const uint8_t* bits;  // (n,), each 1..8
  const int64_t* byte_offset;  // (n,): where each sample's codes start
  bool pergroup;        // else every group uses [gmin, gmax] (the whole tensor's, padding zeros included)
  float gmin, gmax;
  uint32_t key0, key1;
  uint64_t offset;      // stream position of value 0 of sample 0
  uint8_t* codes;       // the packed stream (compress writes it, decompress reads it; `end` one past it)
  const uint8_t* end;
  float* mn;            // (n, groups): min - eps, float32 (compress writes; decompress reads the stored values)
  float* scale;         // (n, groups): (2^b - 1) / (max + eps - (min - eps))
  float* out;           // decompress: (n, features) float32
};

// Units of the job (n * ceil(groups / unit_groups)).
inline int64_t group_units(const GroupJob& job) {
  return job.n * ((job.groups + job.unit_groups - 1) / job.unit_groups);
}

// Each path compresses (decompresses) units first .. last-1; the generic one runs everywhere, the AVX2 and
// AVX-512 ones only where the CPU has them (group.cpp picks by quant_cpu.cpp's cpu_path()).
namespace group_generic {
void ranges(const GroupJob& job, int64_t first, int64_t last);  // min into job.mn, max into job.scale
void compress(const GroupJob& job, int64_t first, int64_t last);
void decompress(const GroupJob& job, int64_t first, int64_t last);
}  // namespace group_generic
namespace group_avx2 {
void ranges(const GroupJob& job, int64_t first, int64_t last);  // min into job.mn, max into job.scale
void compress(const GroupJob& job, int64_t first, int64_t last);
void decompress(const GroupJob& job, int64_t first, int64_t last);
}  // namespace group_avx2
namespace group_avx512 {
void ranges(const GroupJob& job, int64_t first, int64_t last);  // min into job.mn, max into job.scale
void compress(const GroupJob& job, int64_t first, int64_t last);
void decompress(const GroupJob& job, int64_t first, int64_t last);
}  // namespace group_avx512

}  // namespace nuq
