// The AVX2 CPU kernel (quant_cpu_avx2.cpp): torch-free, called by quant_cpu.cpp on CPUs with AVX2, FMA and
// BMI2 but no AVX-512 (Zen 2/3, Intel before Skylake-SP, many cloud VMs), or when forced (NUQ_CPU_KERNEL=avx2).
// Takes every level set (2..256 values); results equal the reference bit for bit, as every path's do.
#pragma once
#include <cstdint>

#include "quant_cpu_avx512.h"  // BucketJob, DecodeJob

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NUQ_HAVE_AVX2_KERNEL 1
#else
#define NUQ_HAVE_AVX2_KERNEL 0  // off x86 (aarch64...) the file compiles to nothing: the generic kernel runs
#endif

namespace nuq {
namespace avx2 {

#if NUQ_HAVE_AVX2_KERNEL
// Whether this CPU has AVX2, FMA and BMI2 (what this kernel is compiled for).
bool cpu_supported();
// Buckets first .. last-1 of the job. Call only where cpu_supported().
void run_buckets(const BucketJob& job, int64_t first, int64_t last);
// Decodes buckets first .. last-1; raises *max_index to the largest index read. Call only where cpu_supported().
void decode_buckets(const DecodeJob& job, int64_t first, int64_t last, uint32_t* max_index);
#endif

}  // namespace avx2
}  // namespace nuq
