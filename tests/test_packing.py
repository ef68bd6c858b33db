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


@pytest.mark.skipif(not packing.has_extension(), reason="C++ extension not built (python setup.py build_ext --inplace)")
@pytest.mark.parametrize("n", [1, 7, 8, 13, 100_003])
def test_relu_mask_ops_equal_the_torch_ops(n):
    """relu(x) and its 1-bit mask x > 0 in one pass, and grad * mask: the bytes of pack(x > 0, 1), and
    torch's values (NaN kept by relu, dropped by the mask; 0 * inf gives NaN as torch's product)."""
    g = torch.Generator().manual_seed(n)
    x, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    x[: min(n, 3)] = torch.tensor([float("nan"), 0.0, -2.0])[: min(n, 3)]
    grad[-1] = float("inf")
    out, mask = torch.ops.nuq.relu_mask(x)
    assert torch.equal(out.nan_to_num(), x.clamp(min=0).nan_to_num()) and bool(out[0].isnan())
    assert torch.equal(mask, packing.pack((x > 0).to(torch.uint8), 1, use_ext=False))
    expected = grad * (x > 0)
    assert torch.equal(torch.ops.nuq.mask_mul(grad, mask).nan_to_num(), expected.nan_to_num())
    assert torch.equal(torch.ops.nuq.mask_mul(grad, mask).isnan(), expected.isnan())
    torch.library.opcheck(torch.ops.nuq.relu_mask.default, (x.nan_to_num(),))  # (opcheck compares NaN unequal)
    torch.library.opcheck(torch.ops.nuq.mask_mul.default, (grad.nan_to_num(), mask))
    with pytest.raises(RuntimeError, match=r"mask must be a contiguous 1-D uint8 CPU tensor of ceil"):
        torch.ops.nuq.mask_mul(grad, mask[:-1] if n > 8 else torch.zeros(5, dtype=torch.uint8))


def test_relu_mask_helpers_fall_back_to_torch_ops_off_the_extension():
    """nuq.packing.relu_mask / mask_mul on a tensor the op does not take (float64): the same values."""
    x = torch.randn(3, 5, dtype=torch.float64)
    out, mask = packing.relu_mask(x)
    assert torch.equal(out, x.clamp(min=0)) and torch.equal(mask, packing.pack((x > 0).reshape(-1).to(torch.uint8), 1))
    grad = torch.randn(3, 5, dtype=torch.float64)
    assert torch.equal(packing.mask_mul(grad, mask), grad * (x > 0))
