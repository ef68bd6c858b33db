"""Exact level sets of every method for bits 2..8 (the paper code's definitions)."""
from fractions import Fraction

import pytest
import torch

from nuq.levels import METHODS, bits_per_coordinate, get_method

BITS = range(2, 9)


def _f32(values: list) -> torch.Tensor:
    """Exact rationals rounded once to float32 (float64 is exact enough for these denominators)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64).to(torch.float32)


def _uniform(bits: int) -> torch.Tensor:
    k = 2 ** bits
    return _f32([Fraction(-1) + Fraction(2 * i, k - 1) for i in range(k)])


def _exponential(bits: int, mul: float) -> torch.Tensor:
    pos = [Fraction(mul) ** j for j in range(2 ** (bits - 1))]
    return _f32([-p for p in pos] + list(reversed(pos)))


EXPECTED = {
    "q": lambda b, m: _uniform(b),
    "qinf": lambda b, m: _uniform(b),
    "nuq": _exponential,
    "trn": lambda b, m: _f32([-1, 0, 1]),
    **{name: _exponential for name in ("alq", "alq_nb", "alqg", "alqg_nb", "amq", "amq_nb")},
}


def test_registry_holds_every_method_of_the_option_schema():
    from trainer.options import NUQ_METHODS
    assert set(METHODS) == set(NUQ_METHODS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mul", [0.5, 0.3])
def test_exact_levels(name, bits, mul):
    got = get_method(name).init_levels(bits, mul)
    assert got.dtype == torch.float32
    assert torch.equal(got, EXPECTED[name](bits, mul))
    # sorted; strictly so unless mul^(2^(bits-1)-1) underflows float32 (e.g. 0.3^127 -> 0)
    assert torch.all(got[1:] >= got[:-1])
    if mul == 0.5 or name in ("q", "qinf", "trn"):
        assert torch.all(got[1:] > got[:-1]), "levels must be strictly increasing"
    assert torch.equal(got, -got.flip(0)), "levels are symmetric"


def test_level_counts_and_no_zero_level():
    for bits in BITS:
        assert get_method("q").init_levels(bits, 0.5).numel() == 2 ** bits
        assert get_method("nuq").init_levels(bits, 0.5).numel() == 2 ** bits
        assert not torch.any(get_method("q").init_levels(bits, 0.5) == 0)
        assert not torch.any(get_method("nuq").init_levels(bits, 0.5) == 0)
    # values near 0 snap to +-mul^(2^(bits-1)-1): the smallest level magnitude
    assert get_method("nuq").init_levels(3, 0.5).abs().min().item() == 0.5 ** 3


def test_norms_and_adaptive_flags():
    assert {n for n, m in METHODS.items() if m.norm == "linf"} == {"qinf", "trn"}
    assert {n for n, m in METHODS.items() if m.adaptive} == {"alq", "alq_nb", "alqg", "alqg_nb", "amq", "amq_nb"}
    assert not METHODS["none"].quantizes and METHODS["none"].init_levels(3, 0.5).numel() == 0


@pytest.mark.parametrize("bits", [0, 9, 2.0, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        get_method("q").init_levels(bits, 0.5)


@pytest.mark.parametrize("mul", [0.0, 1.0, -0.5])
def test_bad_mul(mul):
    with pytest.raises(ValueError, match="nuq_mul"):
        get_method("nuq").init_levels(3, mul)


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="known: .*qinf"):
        get_method("qsgd")


def test_bits_per_coordinate():
    assert bits_per_coordinate(get_method("q").init_levels(3, 0.5)) == 3
    assert bits_per_coordinate(get_method("trn").init_levels(3, 0.5)) == 2
    assert bits_per_coordinate(get_method("none").init_levels(3, 0.5)) == 32
