// The ops torch.ops.nuq.group_compress / group_decompress (schemas in quant.cpp, fakes in nuq/ops.py): the
// ActNN group codec of group_cpu.h on the CPU, split into units over at::parallel_for (torch's intra-op
// threads; results never depend on their number), on the path quant_cpu.cpp's cpu_path() picks.
// nuq/groupquant.py checks inputs with user-facing messages first; the TORCH_CHECKs here keep a direct
// caller from crashing the process.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <tuple>

#include "../common/bitpack.h"
#include "group_cpu.h"
#include "quant_cpu.h"
#include "quant_cpu_avx2.h"
#include "quant_cpu_avx512.h"

namespace nuq {
namespace {

constexpr int64_t kUnitValues = 2048;     // values per work unit (at least 8 groups): its words and codes stay in L1
constexpr int64_t kGrainValues = 1 << 15;  // below this many values per thread, threads cost more than they save
constexpr int64_t kMaxGroup = 1 << 16;     // nuq/groupquant.py's MAX_GROUP_SIZE: a unit's buffers stay small

int64_t unit_groups(int64_t group) { return 8 * std::max<int64_t>(1, kUnitValues / (8 * group)); }

using UnitFn = void (*)(const GroupJob& job, int64_t first, int64_t last);

// Each CPU path's functions, indexed by cpu_path() (0 avx512, 1 avx2, 2 generic); a path this build lacks
// (off x86) holds the generic ones, which cpu_path() picks there anyway.
struct PathFns {
  UnitFn ranges, compress, decompress;
};
#define NUQ_GROUP_FNS(ns) PathFns{ns::ranges, ns::compress, ns::decompress}
const PathFns kPathFns[] = {
#if NUQ_HAVE_AVX512_KERNEL
    NUQ_GROUP_FNS(group_avx512),
#else
    NUQ_GROUP_FNS(group_generic),
#endif
#if NUQ_HAVE_AVX2_KERNEL
    NUQ_GROUP_FNS(group_avx2),
#else
    NUQ_GROUP_FNS(group_generic),
#endif
    NUQ_GROUP_FNS(group_generic)};
#undef NUQ_GROUP_FNS

// `work` (&PathFns::compress, ...) of the current CPU path over all units of the job.
void run(const GroupJob& job, UnitFn PathFns::*work) {
  const int64_t grain = std::max<int64_t>(1, kGrainValues / (job.unit_groups * job.group));
  const UnitFn fn = kPathFns[cpu_path()].*work;
  at::parallel_for(0, group_units(job), grain, [&](int64_t first, int64_t last) { fn(job, first, last); });
}

void check_group(int64_t group, int64_t features) {
  TORCH_CHECK(group >= 1 && group <= kMaxGroup, "group_size must be in 1..", kMaxGroup, ", got ", group);
  TORCH_CHECK(features >= 0, "features must be >= 0, got ", features);
}

// bits: uint8 (n,) on the CPU, each 1..8. Returns the byte offsets of each sample's codes and the total.
std::tuple<at::Tensor, int64_t> byte_offsets(const at::Tensor& bits, int64_t n, int64_t padded) {
  TORCH_CHECK(bits.scalar_type() == at::kByte && bits.dim() == 1 && bits.numel() == n && bits.is_contiguous() &&
                  bits.device().is_cpu(),
              "bits must be a contiguous 1-D uint8 CPU tensor of one width per sample (", n, "), got ",
              bits.scalar_type(), " of shape ", bits.sizes());
  auto offsets = at::empty({n}, bits.options().dtype(at::kLong));
  const uint8_t* b = bits.data_ptr<uint8_t>();
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(b[i] >= 1 && b[i] <= 8, "bits must be in 1..8, got ", static_cast<int>(b[i]), " for sample ", i);
    off[i] = total;
    total += bitpack::packed_bytes(padded, b[i]);
  }
  return {offsets, total};
}

GroupJob make_job(const at::Tensor& bits, const at::Tensor& offsets, int64_t n, int64_t features, int64_t group) {
  GroupJob job{};
  job.n = n;
  job.features = features;
  job.group = group;
  job.groups = (features + group - 1) / group;
  job.unit_groups = unit_groups(group);
  job.bits = bits.data_ptr<uint8_t>();
  job.byte_offset = offsets.data_ptr<int64_t>();
  return job;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_compress(const at::Tensor& x, const at::Tensor& bits,
                                                              int64_t group_size, bool pergroup,
                                                              at::ScalarType store, int64_t seed, int64_t offset) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(),
              "x must be a contiguous 2-D float32 CPU tensor (samples, features), got ", x.scalar_type(),
              " of shape ", x.sizes());
  TORCH_CHECK(store == at::kFloat || store == at::kBFloat16, "store must be float32 or bfloat16, got ", store);
  const int64_t n = x.size(0), features = x.size(1);
  check_group(group_size, features);
  const int64_t groups = (features + group_size - 1) / group_size, padded = groups * group_size;
  TORCH_CHECK(seed >= 0 && offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - n * padded,
              "seed and offset must be >= 0 with offset + values < 2^63, got seed ", seed, " offset ", offset);
  auto [offsets, total] = byte_offsets(bits, n, padded);
  auto codes = at::empty({total}, x.options().dtype(at::kByte));
  auto mn = at::empty({n, groups, 1}, x.options());
  auto scale = at::empty({n, groups, 1}, x.options());
  GroupJob job = make_job(bits, offsets, n, features, group_size);
  job.x = x.data_ptr<float>();
  job.pergroup = pergroup;
  if (!pergroup && x.numel() > 0) {  // the whole tensor's range, the zero padding included
    auto [lo, hi] = at::aminmax(x);
    job.gmin = std::min(lo.item<float>(), padded > features ? 0.0f : std::numeric_limits<float>::infinity());
    job.gmax = std::max(hi.item<float>(), padded > features ? 0.0f : -std::numeric_limits<float>::infinity());
  }
  job.key0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  job.key1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  job.offset = static_cast<uint64_t>(offset);
  job.codes = codes.data_ptr<uint8_t>();
  job.end = job.codes + total;
  job.mn = mn.data_ptr<float>();
  job.scale = scale.data_ptr<float>();
  if (n * groups > 0) run(job, &PathFns::compress);
  return {codes, mn.to(store), scale.to(store)};
}

at::Tensor group_decompress(const at::Tensor& codes, const at::Tensor& bits, const at::Tensor& mn,
                            const at::Tensor& scale, int64_t group_size, int64_t features) {
  const int64_t n = bits.numel();
  check_group(group_size, features);
  const int64_t groups = (features + group_size - 1) / group_size;
  auto [offsets, total] = byte_offsets(bits, n, groups * group_size);
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 1 && codes.is_contiguous() &&
                  codes.device().is_cpu() && codes.numel() == total,
              "codes must be a contiguous 1-D uint8 CPU tensor of ", total, " bytes, got ", codes.scalar_type(),
              " of shape ", codes.sizes());
  for (const at::Tensor* t : {&mn, &scale}) {
    TORCH_CHECK((t->scalar_type() == at::kFloat || t->scalar_type() == at::kBFloat16) && t->numel() == n * groups &&
                    t->device().is_cpu(),
                "mn and scale must be float32 or bfloat16 CPU tensors of ", n * groups, " values (samples x groups)");
  }
  const auto mn32 = mn.to(at::kFloat).contiguous(), scale32 = scale.to(at::kFloat).contiguous();
  auto out = at::empty({n, features}, mn32.options());
  GroupJob job = make_job(bits, offsets, n, features, group_size);
  job.codes = const_cast<uint8_t*>(codes.data_ptr<uint8_t>());
  job.end = job.codes + total;
  job.mn = const_cast<float*>(mn32.data_ptr<float>());
  job.scale = const_cast<float*>(scale32.data_ptr<float>());
  job.out = out.data_ptr<float>();
  if (n * groups > 0) run(job, &PathFns::decompress);
  return out;
}

// (min, max) (n, groups, 1) float32 of each group of x (n, features), the zero padding included.
std::tuple<at::Tensor, at::Tensor> group_ranges(const at::Tensor& x, int64_t group_size) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(),
              "x must be a contiguous 2-D float32 CPU tensor (samples, features), got ", x.scalar_type(),
              " of shape ", x.sizes());
  const int64_t n = x.size(0), features = x.size(1);
  check_group(group_size, features);
  const int64_t groups = (features + group_size - 1) / group_size;
  auto lo = at::empty({n, groups, 1}, x.options()), hi = at::empty({n, groups, 1}, x.options());
  GroupJob job{};
  job.x = x.data_ptr<float>();
  job.n = n;
  job.features = features;
  job.group = group_size;
  job.groups = groups;
  job.unit_groups = unit_groups(group_size);
  job.mn = lo.data_ptr<float>();
  job.scale = hi.data_ptr<float>();
  if (n * groups > 0) run(job, &PathFns::ranges);
  return {lo, hi};
}

}  // namespace

TORCH_LIBRARY_IMPL(nuq, CPU, m) {
  m.impl("group_ranges", &group_ranges);
  m.impl("group_compress", &group_compress);
  m.impl("group_decompress", &group_decompress);
}

}  // namespace nuq
