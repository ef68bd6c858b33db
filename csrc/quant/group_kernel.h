// The driver of the ActNN group codec (group_cpu.h), torch-free: each path's file (group_cpu.cpp,
// group_cpu_avx2.cpp, group_cpu_avx512.cpp) includes it under its target and fp-contract=off pragmas with a
// Path of its own (Philox words, min/max, rounding and dequantizing vectorised for its registers), so the
// paths compute the same bits: every float op is one IEEE operation, never fused.
//
// Per unit (up to unit_groups groups of one sample): the Philox words of its values, then group by group the
// range (min, max of the group, its zero padding included, or the whole tensor's), widened by kGroupEps,
// scale = (2^b - 1) / (max + eps - (min - eps)), and each value's code
//   round_half_even(clamp((x - min) * scale + (r - 1/2), 0, 2^b - 1)), r = (word >> 8) * 2^-24 in [0, 1),
// then the unit's codes packed at the sample's width b (a unit starts on a byte: unit_groups % 8 == 0).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/bitpack.h"
#include "group_cpu.h"

namespace nuq {
namespace {  // each path's file compiles its own copy for its target

constexpr int64_t kGroupWords = 256;  // Path::words writes this many words per call

// The code of one value (the padding's, and every value of the generic path).
inline uint8_t round_code(float x, float lo, float scale, float levels, uint32_t word) {
  const float t = (x - lo) * scale;
  const float noise = static_cast<float>(static_cast<int32_t>(word >> 8)) * 0x1p-24f - 0.5f;
  float y = t + noise;
  y = y < 0.0f ? 0.0f : y;
  y = y > levels ? levels : y;
  return static_cast<uint8_t>(std::nearbyint(y));  // the default rounding mode: half to even
}

// m values of kBits bits from src into dst (room for m rounded up to 8); reads nothing at or past `end`
// (a Path's unpack unless it has a faster one).
template <int kBits>
inline void unpack_codes_bits(const uint8_t* src, int64_t m, const uint8_t* end, uint8_t* dst) {
  constexpr uint64_t kMask = kBits == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * kBits)) - 1;
  for (int64_t k = 0; k < m; k += 8) {
    const uint8_t* at = src + k / 8 * kBits;
    uint64_t w = 0;
    if (end - at >= 8) {
      std::memcpy(&w, at, 8);
    } else {
      std::memcpy(&w, at, static_cast<size_t>(end - at));
    }
    const uint64_t v = bitpack::spread<kBits>(w & kMask);  // (8 bits: the bytes themselves)
    std::memcpy(dst + k, &v, 8);
  }
}

inline void unpack_codes(const uint8_t* src, int64_t m, int bits, const uint8_t* end, uint8_t* dst) {
  bitpack::with_bits(bits, [&](auto b) { unpack_codes_bits<b()>(src, m, end, dst); });
}

// Unit u's sample and groups [g0, g1).
struct Unit {
  int64_t n, g0, g1;
};

inline Unit unit_of(const GroupJob& job, int64_t u) {
  const int64_t per_sample = (job.groups + job.unit_groups - 1) / job.unit_groups;
  const int64_t n = u / per_sample, g0 = u % per_sample * job.unit_groups;
  return Unit{n, g0, std::min(job.groups, g0 + job.unit_groups)};
}

template <class Path>
void compress_units(const GroupJob& job, int64_t first, int64_t last) {
  const int64_t G = job.group, span = job.unit_groups * G;
  std::vector<uint32_t> words(static_cast<size_t>((span + kGroupWords - 1) / kGroupWords * kGroupWords));
  std::vector<uint8_t> codes(static_cast<size_t>(span + 8));
  const typename Path::Keys keys = Path::keys(job.key0, job.key1);
  for (int64_t u = first; u < last; ++u) {
    const Unit unit = unit_of(job, u);
    const int bits = job.bits[unit.n];
    const float levels = static_cast<float>((1 << bits) - 1);
    const int64_t v0 = unit.g0 * G, m = (unit.g1 - unit.g0) * G;
    const float* xs = job.x + unit.n * job.features;
    const uint64_t p0 = job.offset + static_cast<uint64_t>(unit.n * job.groups * G + v0);
    for (int64_t c = 0; c < m; c += kGroupWords) Path::words(p0 + static_cast<uint64_t>(c), keys, words.data() + c);
    for (int64_t g = unit.g0; g < unit.g1; ++g) {
      const int64_t a = g * G, valid = std::min(G, job.features - a);
      float lo = job.gmin, hi = job.gmax;
      if (job.pergroup) {
        Path::minmax(xs + a, valid, &lo, &hi);
        if (valid < G) {  // the zero padding takes part in the last group's range
          lo = std::min(lo, 0.0f);
          hi = std::max(hi, 0.0f);
        }
      }
      lo = lo - kGroupEps;
      const float scale = levels / ((hi + kGroupEps) - lo);
      job.mn[unit.n * job.groups + g] = lo;
      job.scale[unit.n * job.groups + g] = scale;
      uint8_t* cg = codes.data() + (a - v0);
      const uint32_t* wg = words.data() + (a - v0);
      Path::codes(xs + a, valid, lo, scale, levels, wg, cg);
      for (int64_t i = valid; i < G; ++i) cg[i] = round_code(0.0f, lo, scale, levels, wg[i]);
    }
    Path::pack(codes.data(), m, bits, job.codes + job.byte_offset[unit.n] + v0 / 8 * bits);
  }
}

// The (min, max) of each group of units first .. last-1 into job.mn and job.scale (the padding included).
template <class Path>
void range_units(const GroupJob& job, int64_t first, int64_t last) {
  for (int64_t u = first; u < last; ++u) {
    const Unit unit = unit_of(job, u);
    const float* xs = job.x + unit.n * job.features;
    for (int64_t g = unit.g0; g < unit.g1; ++g) {
      const int64_t a = g * job.group, valid = std::min(job.group, job.features - a);
      float lo, hi;
      Path::minmax(xs + a, valid, &lo, &hi);
      if (valid < job.group) {
        lo = std::min(lo, 0.0f);
        hi = std::max(hi, 0.0f);
      }
      job.mn[unit.n * job.groups + g] = lo;
      job.scale[unit.n * job.groups + g] = hi;
    }
  }
}

template <class Path>
void decompress_units(const GroupJob& job, int64_t first, int64_t last) {
  const int64_t G = job.group;
  std::vector<uint8_t> codes(static_cast<size_t>(job.unit_groups * G + 8));
  for (int64_t u = first; u < last; ++u) {
    const Unit unit = unit_of(job, u);
    const int bits = job.bits[unit.n];
    const int64_t v0 = unit.g0 * G, m = (unit.g1 - unit.g0) * G;
    Path::unpack(job.codes + job.byte_offset[unit.n] + v0 / 8 * bits, m, bits, job.end, codes.data());
    for (int64_t g = unit.g0; g < unit.g1; ++g) {
      const int64_t a = g * G, valid = std::min(G, job.features - a);
      const int64_t k = unit.n * job.groups + g;
      Path::dequant(codes.data() + (a - v0), valid, job.scale[k], job.mn[k], bits, job.out + unit.n * job.features + a);
    }
  }
}

}  // namespace
}  // namespace nuq
