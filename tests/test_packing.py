"""Bit packing of level indices: exact round trips, the documented byte layout, sizes and bad input."""
import pytest
import torch

from nuq import packing

BACKENDS = [False] + ([True] if packing.has_extension() else [])


def _random_indices(n: int, bits: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 ** bits, (n,), generator=g, dtype=torch.int64).to(torch.uint8)


@pytest.mark.parametrize("use_ext", BACKENDS)
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000, 100_003])
def test_round_trip_is_exact(bits, n, use_ext):
    idx = _random_indices(n, bits, seed=bits * 7 + n)
    packed = packing.pack(idx, bits, use_ext=use_ext)
    assert packed.dtype == torch.uint8 and packed.numel() == (n * bits + 7) // 8
    assert torch.equal(packing.unpack(packed, bits, n, use_ext=use_ext), idx)


@pytest.mark.skipif(not packing.has_extension(), reason="C++ extension not built (python setup.py build_ext --inplace)")
@pytest.mark.parametrize("bits", range(1, 9))
def test_extension_and_torch_produce_the_same_bytes(bits):
    idx = _random_indices(70_001, bits, seed=bits)
    assert torch.equal(packing.pack(idx, bits, use_ext=True), packing.pack(idx, bits, use_ext=False))


@pytest.mark.parametrize("use_ext", BACKENDS)
def test_layout_is_a_little_endian_bit_stream(use_ext):
    # 3-bit values 1..5: stream bits (LSB first) 100 010 110 001 101 -> bytes 0b11010001, 0b00010110 + pad
    idx = torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint8)
    packed = packing.pack(idx, 3, use_ext=use_ext)
    expected = [1 | 2 << 3 | (3 & 0b11) << 6, 3 >> 2 | 4 << 1 | 5 << 4]
    assert packed.tolist() == expected
    # 2-bit values: four per byte, first value in the lowest bits
    assert packing.pack(torch.tensor([3, 0, 1, 2], dtype=torch.uint8), 2, use_ext=use_ext).tolist() == [0b10010011]


@pytest.mark.parametrize("use_ext", BACKENDS)
def test_value_too_wide_is_rejected(use_ext):
    idx = torch.tensor([0, 1, 8, 2], dtype=torch.uint8)
    with pytest.raises((ValueError, RuntimeError), match="fit in 3 bits"):
        packing.pack(idx, 3, use_ext=use_ext)


def test_bad_arguments_name_the_value():
    idx = torch.zeros(4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="bits must be an int in 1..8, got 9"):
        packing.pack(idx, 9)
    with pytest.raises(ValueError, match="1-D torch.uint8 tensor, got torch.int64"):
        packing.pack(idx.long(), 2)
    with pytest.raises(ValueError, match="10 values of 4 bits need 5 bytes, got 4"):
        packing.unpack(torch.zeros(4, dtype=torch.uint8), 4, 10)


def test_bits_for_levels():
    assert [packing.bits_for_levels(k) for k in (2, 3, 4, 5, 8, 9, 16, 256)] == [1, 2, 2, 3, 3, 4, 4, 8]
    with pytest.raises(ValueError, match="got 257"):
        packing.bits_for_levels(257)
