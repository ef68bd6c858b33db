"""nuq's group codec (nuq/groupquant.py, csrc/quant/group*.cpp): every CPU path (AVX-512, AVX2, generic; the
ones this CPU lacks are skipped, and every path this machine has is forced in turn) computes exactly the bits
of the pure-PyTorch reference on nuq's Philox stream, round-trips every width, and rounds without bias."""
from __future__ import annotations

import pytest
import torch

from nuq import groupquant as gq
from nuq import kernel, ops
from rounding_checks import assert_two_point_rounding

PATHS = ("avx512", "avx2", "generic")


def _path(name):
    """forced_cpu_kernel(name), or a skip where this CPU (or build) lacks the path."""
    try:
        with kernel.forced_cpu_kernel(name):
            pass
    except ValueError as err:
        pytest.skip(str(err))
    return kernel.forced_cpu_kernel(name)


def _x(n=5, f=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g) * torch.linspace(0.5, 3, n).view(-1, 1)


# (features, group size): groups on bytes, groups that are not (7, 3, 1), one partial group, one feature
SHAPES = [(200, 64), (256, 64), (50, 7), (9, 1), (2, 3), (1000, 256), (4100, 64)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("features,group", SHAPES)
def test_every_path_equals_the_reference_bit_for_bit(path, features, group):
    x = _x(f=features)
    bits = torch.tensor([1, 8, 3, 2, 5], dtype=torch.uint8)
    with _path(path):
        assert gq.cpu_kernel() == path
        for pergroup, store, seed, offset in ((True, torch.bfloat16, 7, 0), (False, torch.float32, 2 ** 40 + 3, 5),
                                              (True, torch.float32, 1, 6)):
            ref = gq.reference_compress(x, bits, group, pergroup, store, seed, offset)
            got = gq.compress(x, bits, group, pergroup, store, seed, offset)
            for a, b in zip(ref, got):
                assert a.dtype == b.dtype and torch.equal(a, b), (pergroup, store, seed, offset)
            out = gq.decompress(*got[:1], bits, got[1], got[2], group, features)
            assert torch.equal(out, gq.reference_decompress(ref[0], bits, ref[1], ref[2], group, features))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("features,group", SHAPES)
def test_group_ranges_are_torchs_min_and_max_of_each_padded_group(path, features, group):
    v = gq.grouped(_x(f=features), group)
    with _path(path):
        got = gq.ranges(v, True)
    want = (v.amin(-1, keepdim=True), v.amax(-1, keepdim=True))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert all(torch.equal(a, b) for a, b in zip(gq.ranges(v, False), (v.min().expand_as(want[0]), v.max().expand_as(want[0]))))


@pytest.mark.parametrize("path", PATHS)
def test_the_paths_split_work_over_threads_without_changing_a_bit(path):
    x, bits = _x(n=64, f=1024), torch.randint(1, 9, (64,), generator=torch.Generator().manual_seed(2))
    before = torch.get_num_threads()
    try:
        with _path(path):
            torch.set_num_threads(1)
            one = gq.compress(x, bits, 64, True, torch.bfloat16, 3)
            torch.set_num_threads(2)
            two = gq.compress(x, bits, 64, True, torch.bfloat16, 3)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert torch.equal(one[0], gq.reference_compress(x, bits, 64, True, torch.bfloat16, 3)[0])


@pytest.mark.parametrize("bits", [[b] * 5 for b in range(1, 9)] + [[1, 8, 3, 3, 5], [2, 2, 7, 1, 4]])
def test_codes_round_trip_at_every_width_and_mixed_per_sample_widths(bits):
    x, b = _x(), torch.tensor(bits)
    codes, mn, scale = gq.reference_codes(x, b, 64, True, seed=11)
    stream, smn, sscale = gq.compress(x, b, 64, True, torch.float32, 11)
    assert stream.numel() == sum(4 * 64 * w // 8 for w in bits)  # 200 features: 4 groups of 64, one padded
    assert int(codes.flatten(1).amax(1).max()) <= 255
    assert all(int(codes[i].max()) <= 2 ** w - 1 for i, w in enumerate(bits))
    expected = (codes.float() / scale + mn).reshape(5, -1)[:, :200]
    assert torch.equal(gq.decompress(stream, b, smn, sscale, 64, 200), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pergroup", [True, False])
def test_rounding_is_unbiased_with_the_variance_of_two_point_rounding_on_every_path(path, pergroup):
    x, draws, group = _x(n=4, f=96), 2000, 32
    bits = torch.tensor([1, 2, 3, 8])
    _, mn, scale = gq.reference_codes(x, bits, group, pergroup, seed=0)  # min and scale do not depend on the seed
    with _path(path):
        out = torch.stack([_round_trip(x, bits, group, pergroup, seed) for seed in range(draws)])
    step = (1 / scale).expand(-1, -1, group).reshape(4, -1)[:, :96]
    base = mn.expand(-1, -1, group).reshape(4, -1)[:, :96]
    assert_two_point_rounding(out, x, base + torch.floor((x - base) / step) * step, step)


def _round_trip(x, bits, group, pergroup, seed):
    codes, mn, scale = gq.compress(x, bits, group, pergroup, torch.float32, seed)
    return gq.decompress(codes, bits, mn, scale, group, x.shape[1])


def test_bad_input_is_refused_with_one_line_naming_it():
    x = _x()
    for bits, group, store, match in (
            (torch.tensor([1, 2, 9, 2, 2]), 64, torch.float32, r"need one bit width in 1..8 per sample \(5\)"),
            (torch.tensor([2, 2]), 64, torch.float32, r"per sample \(5\), got \[2, 2\]"),
            (torch.full((5,), 2), 0, torch.float32, "group_size must be an int in 1..65536, got 0"),
            (torch.full((5,), 2), 64, torch.float16, "store must be torch.float32 or torch.bfloat16")):
        with pytest.raises(ValueError, match=match):
            gq.compress(x, bits, group, True, store, 0)
    with pytest.raises(ValueError, match=r"x must be 2-D \(samples, features\), got shape \(5, 2, 100\)"):
        gq.compress(x.view(5, 2, 100), torch.full((5,), 2), 64, True, torch.float32, 0)


def test_the_ops_pass_torch_library_opcheck():
    x, bits = _x(), torch.tensor([1, 8, 3, 2, 5], dtype=torch.uint8)
    kw = {"group_size": 64, "pergroup": True, "store": torch.bfloat16, "seed": 1, "offset": 0}
    torch.library.opcheck(torch.ops.nuq.group_compress.default, (x, bits), kw)  # its fake: a dynamic byte count
    codes, mn, scale = torch.ops.nuq.group_compress(x, bits, **kw)
    torch.library.opcheck(torch.ops.nuq.group_decompress.default, (codes, bits, mn, scale),
                          {"group_size": 64, "features": 200})
    assert ops._quant is not None
    with pytest.raises(RuntimeError, match="bits must be in 1..8, got 0 for sample 1"):
        torch.ops.nuq.group_compress(x, torch.tensor([1, 0, 3, 2, 5], dtype=torch.uint8), group_size=64,
                                     pergroup=True, store=torch.float32, seed=1, offset=0)
