// The bit-stream layout of packed level indices, shared by nuq._pack (pack.cpp) and the fused encode of
// nuq._quant: value i of a stream occupies bits [i*b, (i+1)*b), bit 0 being the least significant bit of
// byte 0, so 8 values fill exactly b bytes. Padding bits of a last partial byte are zero. Header-only.
//
// A group of 8 values is moved as one 64-bit word (byte i = value i) and its fields are squeezed together,
// or spread apart, in three mask-and-shift steps (pairs of bytes, pairs of 16-bit lanes, the two 32-bit
// halves): ~10 integer ops per 8 values, on the scalar pipes, which the vector kernels leave idle.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nuq {
namespace bitpack {

// ceil(n * bits / 8): the bytes of n values of `bits` (1..8) bits, without forming n * bits (8 values fill
// `bits` whole bytes), so any n >= 0 gives its exact size.
inline int64_t packed_bytes(int64_t n, int64_t bits) { return n / 8 * bits + (n % 8 * bits + 7) / 8; }

constexpr uint64_t kLanes16 = 0x00FF00FF00FF00FFull;
constexpr uint64_t kLanes32 = 0x0000FFFF0000FFFFull;
constexpr uint64_t kLow32 = 0x00000000FFFFFFFFull;

// 8 values, one per byte of `w` (each < 2^bits), -> the 8*bits-bit stream in the low bits.
template <int bits>
inline uint64_t squeeze(uint64_t w) {
  w = (w & kLanes16) | ((w >> 8) & kLanes16) << bits;
  w = (w & kLanes32) | ((w >> 16) & kLanes32) << (2 * bits);
  return (w & kLow32) | (w >> 32) << (4 * bits);
}

// Inverse of squeeze: the low 8*bits bits of `w` -> 8 values, one per byte.
template <int bits>
inline uint64_t spread(uint64_t w) {
  const uint64_t m4 = (uint64_t{1} << (4 * bits)) - 1;  // bits <= 8: at most 32 bits
  const uint64_t m2 = ((uint64_t{1} << (2 * bits)) - 1) * 0x0000000100000001ull;
  const uint64_t m1 = ((uint64_t{1} << bits) - 1) * 0x0001000100010001ull;
  w = (w & m4) | (w >> (4 * bits)) << 32;
  w = (w & m2) | ((w >> (2 * bits)) & m2) << 16;
  return (w & m1) | ((w >> bits) & m1) << 8;
}

// Packs `count` (<= 8) values at `in` into ceil(count*bits/8) bytes at `dst`. Returns the OR of the values.
template <int bits>
inline uint64_t pack_up_to_8(const uint8_t* in, int64_t count, uint8_t* dst) {
  uint64_t w = 0;
  std::memcpy(&w, in, static_cast<size_t>(count));
  const uint64_t word = squeeze<bits>(w);  // little-endian host: low bytes first
  std::memcpy(dst, &word, static_cast<size_t>((count * bits + 7) / 8));
  return w;
}

// Packs n values into ceil(n*bits/8) bytes at dst (dst starts the stream). Returns the OR of the values.
template <int bits>
inline uint64_t pack(const uint8_t* in, int64_t n, uint8_t* dst) {
  uint64_t seen = 0;
  const int64_t full = n / 8;
  for (int64_t g = 0; g < full; ++g) {
    uint64_t w;
    std::memcpy(&w, in + g * 8, 8);
    seen |= w;
    const uint64_t word = squeeze<bits>(w);
    std::memcpy(dst + g * bits, &word, bits);
  }
  if (n > full * 8) seen |= pack_up_to_8<bits>(in + full * 8, n - full * 8, dst + full * bits);
  return seen;
}

// Calls fn(std::integral_constant<int, b>{}) for a runtime width b in 1..8 (anything else: 8), so the
// group loops see b as a constant.
template <typename Fn>
inline auto with_bits(int64_t bits, Fn&& fn) {
  switch (bits) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    default: return fn(std::integral_constant<int, 8>{});
  }
}

// pack for a runtime width (8 bits: the values themselves).
inline void pack_bits(const uint8_t* in, int64_t n, int64_t bits, uint8_t* dst) {
  with_bits(bits, [&](auto b) {
    if constexpr (b() == 8) {
      std::memcpy(dst, in, static_cast<size_t>(n));
    } else {
      pack<b()>(in, n, dst);
    }
  });
}

}  // namespace bitpack
}  // namespace nuq
