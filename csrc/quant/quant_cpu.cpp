// C++ CPU quantize kernel: OpenMP over buckets; each bucket is read once (norm, then snapping while it is
// still in cache) and processed in chunks whose inner loops vectorise. The arithmetic is exactly that of
// nuq/reference.py (its docstring lists it step by step), so results agree bitwise.
#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>
#include <torch/extension.h>

#include "quant_common.h"
#include "quant_cpu.h"

namespace nuq {
namespace {

constexpr int kChunk = 256;    // elements snapped per inner pass (stack buffers)
constexpr int kScanMax = 32;   // up to this many inner levels a vectorised scan, beyond a binary search

struct Levels {
  const float* v;
  int k;  // count, 2..256
};

float bucket_norm(const float* x, int64_t len, int64_t bucket, bool linf) {
  if (linf) {
    float m = 0.0f;
    for (int64_t i = 0; i < len; ++i) {
      const float a = std::fabs(x[i]);
      m = a > m ? a : m;
    }
    return m;
  }
  const int lanes = norm_lanes(bucket);
  double acc[kMaxLanes];
  for (int k = 0; k < lanes; ++k) acc[k] = 0.0;
  const int64_t full = len / lanes * lanes;
  for (int64_t r = 0; r < full; r += lanes) {
    const float* row = x + r;
    for (int k = 0; k < lanes; ++k) {
      const double v = row[k];
      acc[k] += v * v;
    }
  }
  for (int64_t k = 0; k < len - full; ++k) {
    const double v = x[full + k];
    acc[k] += v * v;
  }
  for (int w = lanes / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) acc[i] = acc[2 * i] + acc[2 * i + 1];
  }
  return static_cast<float>(std::sqrt(acc[0]));
}

// Random words of elements g .. g+m-1 (m <= kChunk): words[e] belongs to element g + e.
void chunk_words(uint64_t g, int m, uint32_t k0, uint32_t k1, uint32_t* words) {
  const uint64_t first = g >> 2;
  const int blocks = static_cast<int>(((g + m - 1) >> 2) - first + 1);
  uint32_t buf[kChunk + 8];
  for (int b = 0; b < blocks; ++b) philox4x32_10(first + b, k0, k1, buf + 4 * b);
  const int shift = static_cast<int>(g - 4 * first);
  std::memcpy(words, buf + shift, sizeof(uint32_t) * m);
}

// Snap one bucket: writes dequantized values (out) or level indices (idx), whichever is non-null.
void snap_bucket(const float* x, int64_t len, float nf, uint64_t g0, const Levels& lv, uint32_t k0, uint32_t k1,
                 float* out, uint8_t* idx) {
  const float inv = nf > 0.0f ? 1.0f / nf : 0.0f;
  const float lmin = lv.v[0], lmax = lv.v[lv.k - 1];
  const int inner = lv.k - 2;
  float u[kChunk], lo[kChunk], hi[kChunk];
  int32_t j[kChunk];
  uint32_t words[kChunk];
  for (int64_t c = 0; c < len; c += kChunk) {
    const int m = static_cast<int>(std::min<int64_t>(kChunk, len - c));
    chunk_words(g0 + c, m, k0, k1, words);
    const float* xc = x + c;
    for (int e = 0; e < m; ++e) {
      float v = xc[e] * inv;
      v = v < lmin ? lmin : v;
      v = v > lmax ? lmax : v;
      u[e] = v;
      lo[e] = lmin;
      hi[e] = lv.v[1];
      j[e] = 0;
    }
    if (inner <= kScanMax) {
      for (int k = 1; k <= inner; ++k) {
        const float lk = lv.v[k], lk1 = lv.v[k + 1];
        for (int e = 0; e < m; ++e) {
          const bool b = lk <= u[e];
          lo[e] = b ? lk : lo[e];
          hi[e] = b ? lk1 : hi[e];
          j[e] += b;
        }
      }
    } else {
      const float* in = lv.v + 1;
      for (int e = 0; e < m; ++e) {
        int base = 0, n = inner;  // upper bound: count of inner levels <= u
        while (n > 0) {
          const int half = n / 2;
          if (in[base + half] <= u[e]) {
            base += half + 1;
            n -= half + 1;
          } else {
            n = half;
          }
        }
        j[e] = base;
        lo[e] = lv.v[base];
        hi[e] = lv.v[base + 1];
      }
    }
    if (out) {
      float* oc = out + c;
      for (int e = 0; e < m; ++e) {
        const float r = static_cast<float>(words[e] >> 8) * 0x1p-24f;
        const bool up = r * (hi[e] - lo[e]) < u[e] - lo[e];
        oc[e] = (up ? hi[e] : lo[e]) * nf;
      }
    } else {
      uint8_t* ic = idx + c;
      for (int e = 0; e < m; ++e) {
        const float r = static_cast<float>(words[e] >> 8) * 0x1p-24f;
        const bool up = r * (hi[e] - lo[e]) < u[e] - lo[e];
        ic[e] = static_cast<uint8_t>(j[e] + up);
      }
    }
  }
}

void run_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf, int64_t seed,
             int64_t offset, int64_t threads, float* out, uint8_t* idx, float* norms) {
  const float* xp = x.data_ptr<float>();
  const Levels lv{levels.data_ptr<float>(), static_cast<int>(levels.numel())};
  const int64_t n = x.numel();
  const int64_t nb = (n + bucket - 1) / bucket;
  const uint32_t k0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  const uint32_t k1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket;
    const int64_t len = std::min(bucket, n - start);
    const float nf = bucket_norm(xp + start, len, bucket, linf);
    if (norms) norms[b] = nf;
    snap_bucket(xp + start, len, nf, static_cast<uint64_t>(offset + start), lv, k0, k1,
                out ? out + start : nullptr, idx ? idx + start : nullptr);
  }
}

}  // namespace

torch::Tensor quantize_cpu(const torch::Tensor& x, const torch::Tensor& levels, int64_t bucket, bool linf,
                           int64_t seed, int64_t offset, int64_t threads) {
  auto out = torch::empty_like(x);
  run_cpu(x, levels, bucket, linf, seed, offset, threads, out.data_ptr<float>(), nullptr, nullptr);
  return out;
}

std::tuple<torch::Tensor, torch::Tensor> quantize_indices_cpu(const torch::Tensor& x, const torch::Tensor& levels,
                                                              int64_t bucket, bool linf, int64_t seed,
                                                              int64_t offset, int64_t threads) {
  auto idx = torch::empty({x.numel()}, x.options().dtype(torch::kUInt8));
  auto norms = torch::empty({(x.numel() + bucket - 1) / bucket}, x.options());
  run_cpu(x, levels, bucket, linf, seed, offset, threads, nullptr, idx.data_ptr<uint8_t>(),
          norms.data_ptr<float>());
  return {idx, norms};
}

torch::Tensor dequantize_indices_cpu(const torch::Tensor& idx, const torch::Tensor& norms,
                                     const torch::Tensor& levels, int64_t bucket, int64_t threads) {
  auto out = torch::empty({idx.numel()}, norms.options());
  const uint8_t* ip = idx.data_ptr<uint8_t>();
  const float* np = norms.data_ptr<float>();
  const float* lv = levels.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t n = idx.numel();
  const int64_t nb = norms.numel();
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t start = b * bucket, end = std::min(n, start + bucket);
    const float nf = np[b];
    for (int64_t i = start; i < end; ++i) op[i] = lv[ip[i]] * nf;
  }
  return out;
}

}  // namespace nuq
