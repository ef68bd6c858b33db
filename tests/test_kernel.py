"""The quantize kernel: statistics of the reference and of the C++ CPU kernel, bitwise agreement between
them, bucket/tail/norm handling and every bad input. Fixed seeds throughout."""
import math

import pytest
import torch

from nuq import checks, codec, kernel
from nuq.levels import get_method
from nuq.philox import philox4x32, uniforms

FIXED = ["q", "qinf", "nuq", "trn"]
QUANT_KW = {"bucket_size": 4, "linf": False, "seed": 1, "offset": 0, "num_threads": 1}  # torch.ops.nuq quantize


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The reference's small tensors gain nothing from torch's intra-op threads on a shared machine; the
    kernel's own thread count is passed explicitly where it matters."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cpu_flags() -> set[str]:
    try:
        return set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return set()


def _cpu_has_avx512() -> bool:
    return {"avx512f", "avx512bw", "avx512dq", "avx512vl", "bmi2"} <= _cpu_flags()


def _cpu_has_avx2() -> bool:
    return {"avx2", "fma", "bmi2"} <= _cpu_flags()


@pytest.fixture(params=["auto", "avx2", "generic"])
def cpu_kernel(request):
    """Run a test with the CPU backend's default kernel (AVX-512 where the CPU has it), with the AVX2 one
    forced (where the CPU has AVX2) and with the generic one forced: all must compute the reference's bits."""
    if request.param == "avx2" and not _cpu_has_avx2():
        pytest.skip("this CPU has no AVX2 + FMA + BMI2: the AVX2 kernel cannot run here")
    with kernel.forced_cpu_kernel(request.param):
        yield request.param


def _levels(method: str, bits: int = 3) -> torch.Tensor:
    return get_method(method).init_levels(bits, 0.5)


def _theory(x: torch.Tensor, levels: torch.Tensor, norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element: the gap l_{j+1}-l_j around u = x/norm and the variance norm^2 (u-l_j)(l_{j+1}-u), in float64."""
    u = (x.double() / norm).clamp(float(levels[0]), float(levels[-1]))
    lv = levels.double()
    j = torch.searchsorted(lv[1:-1].contiguous(), u, right=True)
    lo, hi = lv[j], lv[j + 1]
    return (hi - lo) * norm, norm ** 2 * (u - lo) * (hi - u)


# ---------------------------------------------------------------- the random stream

def test_philox_known_answers():
    """Random123's published known-answer vectors for Philox4x32-10."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        got = philox4x32(tuple(torch.tensor([c]) for c in ctr), key)
        assert tuple(int(w) for w in got) == want


def test_uniform_stream_is_positional():
    """Element offset+i's uniform does not depend on where a call starts; values are 24-bit in [0, 1)."""
    whole = uniforms(7, 0, 100)
    assert torch.equal(uniforms(7, 13, 50), whole[13:63])
    assert float(whole.min()) >= 0.0 and float(whole.max()) < 1.0
    assert torch.equal(whole * 2 ** 24, (whole * 2 ** 24).round())
    assert not torch.equal(uniforms(8, 0, 100), whole)


# ---------------------------------------------------------------- statistics (C++ kernel: many draws are cheap)

def _repeated_draws(method: str, torch_seed: int, seed: int, n: int = 64, T: int = 4000):
    """T independent quantizations of one n-value bucket of N(0, 1) values: (x, levels, norm, draws [T, n])."""
    torch.manual_seed(torch_seed)
    x = torch.randn(n)
    lv = _levels(method)
    norm_kind = get_method(method).norm
    draws = kernel.quantize(x.repeat(T), lv, n, norm_kind, seed=seed, offset=0).view(T, n).double()
    norm = float(x.norm()) if norm_kind == "l2" else float(x.abs().max())
    return x, lv, norm, draws


@pytest.mark.parametrize("method", FIXED)
def test_unbiased_within_clt_bound(method):
    """T independent draws of one 64-value bucket: each element's mean is within 5 standard errors
    sqrt(var_i / T) of x_i (per element P(|z| > 5) < 6e-7, so < 1e-4 over the 64 elements)."""
    x, lv, norm, draws = _repeated_draws(method, torch_seed=1, seed=3)
    T = draws.shape[0]
    _, var = _theory(x, lv, norm)
    err = draws.mean(0) - x.double()
    exact = var < 1e-12
    assert torch.all(err[exact].abs() < 1e-5), "values on a level are never moved"
    z = err[~exact] / (var[~exact] / T).sqrt()
    assert float(z.abs().max()) < 5.0


@pytest.mark.parametrize("method", FIXED)
def test_variance_matches_theory(method):
    """Per-element sample variance vs norm^2 (u-l_j)(l_{j+1}-u). A draw lies within gap_i of its mean, so
    Var(s_i^2) <= gap_i^2 var_i / T; the sum over elements is within 5 of its standard deviations."""
    x, lv, norm, draws = _repeated_draws(method, torch_seed=2, seed=4)
    T = draws.shape[0]
    gap, var = _theory(x, lv, norm)
    s2 = draws.var(0)
    sd = (gap ** 2 * var / T).sum().sqrt()
    assert abs(float(s2.sum() - var.sum())) < 5 * float(sd) + 1e-9
    assert var.sum() > 0


def test_values_snap_to_adjacent_levels():
    """Every output is norm * one of the two levels around u (never a farther one)."""
    torch.manual_seed(3)
    x = torch.randn(1000)
    lv = _levels("nuq", 4)
    idx, norms = kernel.quantize_indices(x, lv, 1000, "l2", seed=5, offset=0)
    u = (x / norms[0]).clamp(-1, 1)
    j = torch.searchsorted(lv[1:-1].contiguous(), u, right=True)
    assert torch.all((idx.long() == j) | (idx.long() == j + 1))


# ---------------------------------------------------------------- kernel == reference

# the kernel uses one thread per 2^15 values, so the last cases are big enough for 3 threads to split them
CASES = [(1000, 128), (30, 7), (1000, 1000), (20000, 8192), (5000, 300), (3, 1000), (4096, 1), (110007, 4096),
         (100000, 100000)]


@pytest.mark.parametrize("method,bits", [("q", 2), ("q", 3), ("qinf", 4), ("nuq", 3), ("nuq", 8), ("trn", 2),
                                         ("q", 6)])
def test_cpu_kernel_equals_reference_bitwise(method, bits, cpu_kernel):
    """Same seed and offset: identical bits at 1, 2 and 3 threads (3 oversubscribes 2 cores on purpose)."""
    torch.manual_seed(4)
    lv = _levels(method, bits)
    norm = get_method(method).norm
    for n, bucket in CASES:
        x = torch.randn(n) * 3
        for seed, offset in [(11, 0), (2 ** 40 + 3, 5), (0, 2 ** 33 + 2)]:
            ri, rn = kernel.quantize_indices(x, lv, bucket, norm, seed, offset, backend="reference")
            ref = kernel.dequantize_indices(ri, rn, lv, bucket, backend="reference")
            assert torch.equal(ref, kernel.quantize(x, lv, bucket, norm, seed, offset, backend="reference"))
            for threads in (1, 2, 3):
                got = kernel.quantize(x, lv, bucket, norm, seed, offset, num_threads=threads)
                assert torch.equal(ref, got), (n, bucket, seed, offset, threads)
                gi, gn = kernel.quantize_indices(x, lv, bucket, norm, seed, offset, num_threads=threads)
                assert torch.equal(ri, gi) and torch.equal(rn, gn)
                assert torch.equal(kernel.dequantize_indices(gi, gn, lv, bucket, num_threads=threads), got)


@pytest.mark.parametrize("count", [17, 20, 33, 35, 64, 100, 129, 256])
def test_many_levels_search_equals_reference(count: int, cpu_kernel: str) -> None:
    """The binary searches pad the inner levels to 2^steps - 1 probes (the generic kernel's beyond 34 levels,
    AVX-512's wide search beyond 16: 4 to 8 steps): random sorted level sets (repeated levels, outer levels
    inside +-1) against the reference, with a zero bucket, NaN and inf values, and buckets and tails that
    are not multiples of 16."""
    gen = torch.Generator().manual_seed(count)
    inner = torch.rand(count - 2, generator=gen) * 1.6 - 0.8
    inner[: count // 10] = inner[0]  # repeated levels
    lv = torch.cat([torch.tensor([-0.9]), inner, torch.tensor([0.95])]).sort().values
    x = torch.randn(3001, generator=gen) * 2
    x[200:400] = 0.0  # a zero bucket
    x[1000], x[1500], x[2000] = float("nan"), float("inf"), float("-inf")
    for bucket in (200, 136, 3001):
        for offset in (0, 7):
            ri, rn = kernel.quantize_indices(x, lv, bucket, "l2", 5, offset, backend="reference")
            gi, gn = kernel.quantize_indices(x, lv, bucket, "l2", 5, offset)
            assert torch.equal(ri, gi) and torch.equal(rn.isnan(), gn.isnan())
            assert torch.equal(rn.nan_to_num(), gn.nan_to_num())
            ref = kernel.quantize(x, lv, bucket, "l2", 5, offset, backend="reference")
            assert torch.equal(ref.isnan(), kernel.quantize(x, lv, bucket, "l2", 5, offset).isnan())
            assert torch.equal(ref.nan_to_num(), kernel.quantize(x, lv, bucket, "l2", 5, offset).nan_to_num())
    # values exactly on the levels (linf norm 4: x / 4 is exact): a level counts as <= u, never skipped
    on = torch.cat([torch.tensor([4.0]), lv * 4, lv[1:-1] * 4 + 1e-6]).repeat(3)
    for bucket in (on.numel(), 64):
        ri, _ = kernel.quantize_indices(on, lv, bucket, "linf", 5, 0, backend="reference")
        gi, _ = kernel.quantize_indices(on, lv, bucket, "linf", 5, 0)
        assert torch.equal(ri, gi)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32(dtype):
    x = (torch.randn(3000) * 2).to(dtype)
    lv = _levels("q")
    got = kernel.quantize(x, lv, 256, "l2", 1, 0)
    assert got.dtype == dtype and got.shape == x.shape
    want = kernel.quantize(x.float(), lv, 256, "l2", 1, 0, backend="reference").to(dtype)
    assert torch.equal(got, want)


def test_non_contiguous_input_is_made_contiguous():
    x = torch.randn(64, 50).t()
    assert not x.is_contiguous()
    lv = _levels("q")
    got = kernel.quantize(x, lv, 100, "l2", 2, 0)
    assert got.shape == x.shape
    assert torch.equal(got, kernel.quantize(x.contiguous(), lv, 100, "l2", 2, 0))


@pytest.mark.parametrize("backend", [None, "reference"])
def test_out_argument_writes_in_place(backend):
    x = torch.randn(10, 300)
    lv = _levels("q")
    out = torch.full((3000,), 7.0)
    got = kernel.quantize(x, lv, 256, "l2", 3, 9, out=out, backend=backend)
    assert got.data_ptr() == out.data_ptr() and got.shape == x.shape
    assert torch.equal(got, kernel.quantize(x, lv, 256, "l2", 3, 9, backend="reference"))
    with pytest.raises(ValueError, match="out has 10 values"):
        kernel.quantize(x, lv, 256, out=torch.empty(10))
    with pytest.raises(TypeError, match="out must be a contiguous float32"):
        kernel.quantize(x, lv, 256, out=torch.empty(3000, dtype=torch.float16))


def test_same_seed_repeats_and_offsets_differ():
    x = torch.randn(5000)
    lv = _levels("q")
    a = kernel.quantize(x, lv, 512, "l2", 1, 0)
    assert torch.equal(a, kernel.quantize(x, lv, 512, "l2", 1, 0))
    assert not torch.equal(a, kernel.quantize(x, lv, 512, "l2", 1, 5000))
    assert not torch.equal(a, kernel.quantize(x, lv, 512, "l2", 2, 0))


# ---------------------------------------------------------------- buckets, tails, norms

@pytest.mark.parametrize("backend", [None, "reference"])
def test_tail_bucket_quantized_with_its_own_norm(backend):
    torch.manual_seed(5)
    n, bucket = 1000, 300  # buckets of 300, 300, 300 and a tail of 100
    x = torch.randn(n)
    x[900:] *= 100  # a tail with a very different scale
    lv = _levels("q")
    idx, norms = kernel.quantize_indices(x, lv, bucket, "l2", 1, 0, backend=backend)
    assert norms.shape == (4,)
    want = torch.stack([x[i:i + bucket].double().norm() for i in range(0, n, bucket)]).float()
    assert torch.allclose(norms, want, rtol=1e-6, atol=0)
    q = kernel.quantize(x, lv, bucket, "l2", 1, 0, backend=backend)
    for b in range(4):
        part = q[b * bucket:(b + 1) * bucket]
        assert torch.equal(part, lv[idx[b * bucket:(b + 1) * bucket].long()] * norms[b])


@pytest.mark.parametrize("backend", [None, "reference"])
def test_l2_and_linf_norms(backend):
    torch.manual_seed(6)
    x = torch.randn(2500)
    lv = _levels("q")
    _, n2 = kernel.quantize_indices(x, lv, 1000, "l2", 1, 0, backend=backend)
    _, ninf = kernel.quantize_indices(x, lv, 1000, "linf", 1, 0, backend=backend)
    chunks = x.split(1000)
    assert torch.equal(ninf, torch.stack([c.abs().max() for c in chunks]))  # a max is exact
    assert torch.allclose(n2, torch.stack([c.double().norm() for c in chunks]).float(), rtol=1e-6, atol=0)
    assert torch.all(n2 > ninf)
    # L-inf keeps the largest value's magnitude within one level of its own; L2 shrinks every |u| below 1
    q = kernel.quantize(x, lv, 1000, "linf", 1, 0, backend=backend)
    assert float(q.abs().max()) <= float(ninf.max()) * (1 + 1e-6)


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("method", FIXED)
def test_zero_buckets_give_zeros_not_nan(backend, method, cpu_kernel):
    x = torch.randn(1100)
    x[200:400] = 0
    x[1000:] = 0  # a zero partial tail bucket
    q = kernel.quantize(x, _levels(method), 200, get_method(method).norm, 1, 0, backend=backend)
    assert torch.all(torch.isfinite(q))
    assert torch.all(q[200:400] == 0) and torch.all(q[1000:] == 0)
    assert torch.all(q[:200] != 0) or method == "trn"


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("bucket", [100, 300])  # 128 and 256 L2 lanes: the AVX-512 kernel's own norm at 256
def test_non_finite_values_poison_only_their_bucket(norm, bucket, cpu_kernel):
    """A NaN or infinite gradient value is never turned into finite garbage: its bucket comes out non-finite,
    others are untouched; kernel and reference agree (NaN positions included)."""
    x = torch.randn(5 * bucket)
    x[bucket + 7] = float("nan")
    x[3 * bucket + 1] = float("inf")
    lv = _levels("q")
    for backend in (None, "reference"):
        q = kernel.quantize(x, lv, bucket, norm, 1, 0, backend=backend)
        for b in (1, 3):
            assert not torch.any(torch.isfinite(q[b * bucket:(b + 1) * bucket]))
        for b in (0, 2, 4):
            assert torch.all(torch.isfinite(q[b * bucket:(b + 1) * bucket]))
    ref = kernel.quantize(x, lv, bucket, norm, 1, 0, backend="reference")
    torch.testing.assert_close(kernel.quantize(x, lv, bucket, norm, 1, 0), ref, rtol=0, atol=0, equal_nan=True)


def test_cpu_kernel_selection():
    """AVX-512 runs level sets (2..256 values) whose scaled gaps it computes exactly; the rest runs the AVX2
    kernel (the generic one without AVX2), as does any call within forced_cpu_kernel('avx2'); within
    only_generic_cpu_kernel() the generic kernel runs. Either way the bits are the reference's."""
    second = "avx2" if _cpu_has_avx2() else "generic"
    fast = "avx512" if _cpu_has_avx512() else second
    tiny_gap = torch.tensor([-1.0, 0.0, 1e-30, 1.0])
    assert kernel.cpu_kernel(_levels("q", 4)) == fast
    assert kernel.cpu_kernel(_levels("q", 5)) == fast  # 32 levels: the wide search
    assert kernel.cpu_kernel(_levels("q", 8)) == fast  # 256 levels
    assert kernel.cpu_kernel(_levels("nuq", 8)) == fast  # gaps down to 2^-126: the wide search has no scaled gaps
    assert kernel.cpu_kernel(tiny_gap) == second
    with kernel.only_generic_cpu_kernel():
        assert kernel.cpu_kernel(_levels("q", 4)) == "generic"
    assert kernel.cpu_kernel(_levels("q", 4)) == fast
    if _cpu_has_avx2():
        with kernel.forced_cpu_kernel("avx2"):
            assert kernel.cpu_kernel(_levels("q", 4)) == kernel.cpu_kernel(tiny_gap) == "avx2"
    x = torch.randn(3000) * 1e-29
    ref = kernel.quantize(x, tiny_gap, 512, "linf", 4, 1, backend="reference")
    assert torch.equal(kernel.quantize(x, tiny_gap, 512, "linf", 4, 1), ref)
    with pytest.raises(ValueError, match="one of auto, avx512, avx2, generic, got 'sse'"):
        with kernel.forced_cpu_kernel("sse"):
            pass
    from nuq import _quant
    with pytest.raises(RuntimeError, match="must be 'auto', 'avx512', 'avx2' or 'generic', got 'sse'"):
        _quant.set_cpu_kernel("sse")
    if not _cpu_has_avx512():
        with pytest.raises(ValueError, match="no avx512 kernel"):
            with kernel.forced_cpu_kernel("avx512"):
                pass


@pytest.mark.parametrize("value, path", [("generic", "generic"), ("avx2", "avx2"), ("bogus", None)])
def test_environment_variable_forces_a_path(value, path):
    """NUQ_CPU_KERNEL is read at the first kernel call of a process; a bad value is a clear error."""
    import subprocess
    import sys
    if path == "avx2" and not _cpu_has_avx2():
        pytest.skip("this CPU has no AVX2 + FMA + BMI2")
    code = ("import torch; from nuq import kernel; from nuq.levels import get_method; "
            "print(kernel.cpu_kernel(get_method('q').init_levels(3, 0.5)))")
    env = {**__import__("os").environ, "NUQ_CPU_KERNEL": value}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if path is None:
        assert proc.returncode != 0
        assert "NUQ_CPU_KERNEL must be 'auto', 'avx512', 'avx2' or 'generic', got 'bogus'" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == path


@pytest.mark.parametrize("method,bits", [("nuq", 3), ("q", 6)])  # permute tables and the wide search
def test_large_tensor_with_streaming_stores_equals_reference(method, bits):
    """Outputs of 8 MiB and more are written with streaming stores where `out` is 64-byte aligned: aligned,
    misaligned (a view one value in) and index outputs all keep the reference's bits."""
    torch.manual_seed(6)
    n, bucket = (1 << 21) + 37, 8192
    x = torch.randn(n)
    lv = _levels(method, bits)
    ref = kernel.quantize(x, lv, bucket, "l2", 9, 3, backend="reference")
    for threads in (1, 2):
        assert torch.equal(kernel.quantize(x, lv, bucket, "l2", 9, 3, num_threads=threads), ref)
    shifted = torch.empty(n + 1)[1:]
    assert torch.equal(kernel.quantize(x, lv, bucket, "l2", 9, 3, out=shifted), ref)
    idx, norms = kernel.quantize_indices(x, lv, bucket, "l2", 9, 3)
    assert torch.equal(kernel.dequantize_indices(idx, norms, lv, bucket), ref)


def test_all_zero_input():
    q = kernel.quantize(torch.zeros(100), _levels("nuq"), 16, "l2", 1, 0)
    assert torch.equal(q, torch.zeros(100))


def test_empty_input_returns_empty():
    lv = _levels("q")
    assert kernel.quantize(torch.empty(0, 3), lv, 8).shape == (0, 3)
    idx, norms = kernel.quantize_indices(torch.empty(0), lv, 8)
    assert idx.numel() == 0 and norms.numel() == 0 and idx.dtype == torch.uint8
    assert kernel.dequantize_indices(idx, norms, lv, 8).numel() == 0


# ---------------------------------------------------------------- bad input

LV = torch.tensor([-1.0, 0.0, 1.0])


@pytest.mark.parametrize("call,error,match", [
    (lambda: kernel.quantize(torch.arange(10), LV, 4), TypeError, "x has dtype torch.int64"),
    (lambda: kernel.quantize(torch.randn(10, dtype=torch.float64), LV, 4), TypeError, "accepted: float32"),
    (lambda: kernel.quantize([1.0, 2.0], LV, 4), TypeError, "x must be a torch.Tensor"),
    (lambda: kernel.quantize(torch.randn(10), torch.tensor([1.0, -1.0]), 4), ValueError, "sorted"),
    (lambda: kernel.quantize(torch.randn(10), torch.tensor([-2.0, 1.0]), 4), ValueError, r"within \[-1, 1\]"),
    (lambda: kernel.quantize(torch.randn(10), torch.tensor([0.5]), 4), ValueError, "2..256"),
    (lambda: kernel.quantize(torch.randn(10), torch.linspace(-1, 1, 257), 4), ValueError, "2..256"),
    (lambda: kernel.quantize(torch.randn(10), torch.tensor([-1.0, float("nan")]), 4), ValueError, "finite"),
    (lambda: kernel.quantize(torch.randn(10), torch.tensor([-1, 1]), 4), TypeError, "levels has dtype"),
    (lambda: kernel.quantize(torch.randn(10), LV.to("meta"), 4), ValueError, "levels is on meta"),
    (lambda: kernel.quantize(torch.randn(10), LV, 0), ValueError, r"bucket_size must be in \[1, 2147483647\]"),
    (lambda: kernel.quantize(torch.randn(10), LV, 2.5), TypeError, "bucket_size must be an int"),
    (lambda: kernel.quantize(torch.randn(10), LV, 4, "l3"), ValueError, "norm must be one of l2, linf"),
    (lambda: kernel.quantize(torch.randn(10), LV, 4, "l2", -1), ValueError, "seed must be"),
    (lambda: kernel.quantize(torch.randn(10), LV, 4, "l2", 2 ** 63), ValueError, "seed must be"),
    (lambda: kernel.quantize(torch.randn(10), LV, 4, "l2", 0, -5), ValueError, "offset must be"),
    (lambda: kernel.quantize(torch.randn(10), LV, 4, backend="gpu"), ValueError, "no quantize backend 'gpu'"),
    (lambda: kernel.dequantize_indices(torch.tensor([0, 3], dtype=torch.uint8), torch.ones(1), LV, 4),
     ValueError, "only 3 levels"),
    (lambda: kernel.dequantize_indices(torch.tensor([0, 1], dtype=torch.uint8), torch.ones(2), LV, 4),
     ValueError, "norms has 2 values"),
    (lambda: kernel.dequantize_indices(torch.tensor([0, 1]), torch.ones(1), LV, 4), TypeError, "uint8"),
    (lambda: kernel.dequantize_indices(torch.tensor([0], dtype=torch.uint8), torch.ones(1, dtype=torch.float64),
                                       LV, 4), TypeError, "norms must be"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_levels_changed_in_place_are_checked_again():
    """check_levels remembers the last level set it passed; changing that tensor in place (its version
    counter moves) makes the next call check it again, so bad levels never reach the kernel."""
    lv = torch.tensor([-1.0, 0.0, 1.0])
    x = torch.randn(10)
    kernel.quantize(x, lv, 4)
    lv[1] = 2.0  # unsorted and out of range
    with pytest.raises(ValueError, match="sorted"):
        kernel.quantize(x, lv, 4)
    lv[1] = 0.5
    assert set(kernel.quantize(x, lv, 10, "linf").abs().div(x.abs().max()).unique().tolist()) <= {0.0, 0.5, 1.0}
    with pytest.raises(ValueError, match="levels is on cpu but x is on meta"):  # another device: checked again
        checks.check_levels(lv, torch.device("meta"))


def test_levels_changed_through_numpy_or_data_are_checked_again():
    """Writes through .numpy() or .data move no version counter: the levels check compares values, so
    levels made unsorted that way are refused instead of reaching the kernel unchecked."""
    x = torch.randn(10)
    for write in (lambda lv: lv.numpy().__setitem__(slice(None), [1.0, 5.0, -1.0]),
                  lambda lv: lv.data.copy_(torch.tensor([1.0, 5.0, -1.0]))):
        lv = torch.tensor([-1.0, 0.0, 1.0])
        kernel.quantize(x, lv, 4)
        write(lv)
        with pytest.raises(ValueError, match="sorted"):
            kernel.quantize(x, lv, 4)


def test_levels_check_never_hands_out_a_changed_tensor():
    """A second tensor with the values checked before passes on the cached check, and the kernel gets those
    values even after the first tensor was changed behind the check's back."""
    x = torch.randn(1000)
    first, second = torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])
    kernel.quantize(x, first, 64)
    first.numpy()[:] = [-1.0, 0.9, 1.0]
    assert torch.equal(kernel.quantize(x, second, 64, seed=3),
                       kernel.quantize(x, second, 64, seed=3, backend="reference"))


@pytest.mark.parametrize("bucket", [2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 5])
def test_bucket_size_beyond_the_bound_is_a_one_line_value_error(bucket):
    """Every entry point names the value and the accepted range (2^63 and up was a pybind TypeError that
    dumped the tensors; 2^63 - 1 returned uninitialised memory)."""
    x, lv = torch.zeros(10), _levels("q")
    message = torch.zeros(100, dtype=torch.uint8)
    idx, norms = torch.zeros(10, dtype=torch.uint8), torch.ones(1)
    calls = [lambda: kernel.quantize(x, lv, bucket), lambda: kernel.quantize_indices(x, lv, bucket),
             lambda: kernel.dequantize_indices(idx, norms, lv, bucket),
             lambda: kernel.quantize_pieces(x, lv, bucket, "l2", 0, 0, [(0, 10)]),
             lambda: kernel.encode_packed(x, lv, bucket, "l2", 0, 0, message),
             lambda: kernel.decode_packed(message, 10, lv, bucket),
             lambda: kernel.encode_pieces_packed(x, lv, bucket, "l2", 0, 0, [(0, 10, 0)], message),
             lambda: kernel.decode_pieces_packed(message, lv, bucket, [(0, 10, 0)], torch.zeros(10)),
             lambda: codec.encode(x, lv, bucket, "l2", 0, 0), lambda: codec.decode(message, 10, lv, bucket)]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == f"bucket_size must be in [1, 2147483647] (2^31 - 1), got {bucket}"


@pytest.mark.parametrize("bucket", [8, 512])  # the generic norm's lanes, and the AVX-512 kernel's 256 lanes
def test_bucket_whose_l2_norm_overflows_float32_stays_finite(cpu_kernel, bucket):
    """Values near 3e38: the float64 sum of squares is fine, its root is not a float32. The norm saturates
    at the largest float32, so a finite bucket gives finite values (it was NaN), with the reference's bits;
    every |x| <= norm still, so the rounding stays unbiased."""
    torch.manual_seed(4)
    x = torch.rand(3 * bucket) * 3.4e38 * torch.where(torch.rand(3 * bucket) < 0.5, -1.0, 1.0)
    x[2 * bucket:] /= 1e30  # an ordinary bucket beside them
    lv = _levels("q")
    ref = kernel.quantize(x, lv, bucket, "l2", 5, 0, backend="reference")
    got = kernel.quantize(x, lv, bucket, "l2", 5, 0)
    assert torch.isfinite(got).all() and torch.equal(got, ref)
    idx, norms = kernel.quantize_indices(x, lv, bucket, "l2", 5, 0)
    assert norms[0] == torch.finfo(torch.float32).max and norms[2] < 1e10
    decoded = codec.decode(codec.encode(x, lv, bucket, "l2", 5, 0), x.numel(), lv, bucket)
    assert torch.equal(decoded, ref)
    x[3] = float("inf")  # a bucket holding inf keeps its infinite norm (and NaN values) as before
    assert torch.isinf(kernel.quantize_indices(x, lv, bucket, "l2", 5, 0)[1][0])


def test_extension_direct_call_checks_do_not_crash():
    """A caller bypassing nuq.kernel gets a RuntimeError from the op, never a crash."""
    with pytest.raises(RuntimeError, match="contiguous float32"):
        torch.ops.nuq.quantize(torch.randn(4, 4).t(), LV, **QUANT_KW)
    with pytest.raises(RuntimeError, match="out must be"):
        torch.ops.nuq.quantize_out(torch.empty(3), torch.randn(4), LV, **QUANT_KW)
    with pytest.raises(RuntimeError, match="exceeds"):
        torch.ops.nuq.dequantize_indices(torch.tensor([9], dtype=torch.uint8), torch.ones(1), LV, bucket_size=4,
                                         num_threads=1)


def test_missing_extension_is_a_clear_error(monkeypatch):
    import importlib
    real = importlib.import_module

    def fake(name, *args):
        if name == "nuq._quant":
            raise ImportError("No module named 'nuq._quant'")
        return real(name, *args)
    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(kernel, "_loaded", None)  # as in a process that never imported it
    with pytest.raises(RuntimeError, match="build_ext --inplace"):
        kernel.quantize(torch.randn(10), LV, 4)


def test_values_beyond_outer_levels_are_clipped():
    """Levels not reaching +-1 (as fitted levels may): |u| beyond them snaps to the outer level."""
    lv = torch.tensor([-0.5, 0.0, 0.5])
    x = torch.tensor([10.0, 0.0, 0.0, 0.0])
    q = kernel.quantize(x, lv, 4, "l2", 1, 0)
    assert math.isclose(float(q[0]), 5.0)


# ---------------------------------------------------------------- fused encode (quantize + bit packing)

@pytest.mark.parametrize("method,bits", [("q", 1), ("trn", 2), ("q", 2), ("nuq", 3), ("qinf", 4), ("q", 5),
                                         ("nuq", 6), ("q", 7), ("nuq", 8)])
def test_encode_packed_equals_reference_indices_packed(method, bits, cpu_kernel):
    """The one-pass encode writes exactly the reference's norms and indices, packed by nuq.packing's torch
    path, for tails, single small buckets and stream offsets that are not multiples of 4."""
    from nuq import packing
    torch.manual_seed(8)
    lv = _levels(method, bits)
    norm = get_method(method).norm
    width = packing.bits_for_levels(lv.numel())
    for n, bucket in [(1000, 128), (20000, 8192), (5003, 8), (7, 1000), (70001, 4096), (3000, 24), (5000, 200),
                      (3000, 1000)]:  # buckets and chunk tails of 64k + 16i + 8 values
        x = torch.randn(n)
        for offset in (0, 3, 2 ** 33 + 1):
            idx, norms = kernel.quantize_indices(x, lv, bucket, norm, 7, offset, backend="reference")
            want = torch.cat([norms.view(torch.uint8), packing.pack(idx, width, use_ext=False)])
            assert kernel.fused_codec_supported(n, x.device, bucket)
            for threads in (1, 2):
                out = torch.full((want.numel(),), 0xAB, dtype=torch.uint8)
                kernel.encode_packed(x, lv, bucket, norm, 7, offset, out, num_threads=threads)
                assert torch.equal(out, want), (n, bucket, offset, threads)


@pytest.mark.parametrize("method,bits", [("trn", 2), ("nuq", 3), ("q", 6), ("q", 8)])
def test_pieces_encode_and_decode_as_one_call_per_piece(method, bits):
    """encode_pieces_packed writes each piece's encode_packed message at its position (bytes between
    pieces untouched); decode_pieces_packed adds each piece's decode into its range, in piece order."""
    torch.manual_seed(bits)
    lv = _levels(method, bits)
    norm = get_method(method).norm
    x = torch.randn(5000)
    spans = [(0, 300), (300, 300), (300, 307), (307, 4100), (4100, 5000)]  # an empty piece, a short one
    pieces, pos = [], 3
    for start, end in spans:
        pieces.append((start, end, pos))
        pos += codec.layout(end - start, lv, 64).nbytes + 5  # 5 spare bytes after each message
    out = torch.full((pos,), 0xAB, dtype=torch.uint8)
    assert kernel.encode_pieces_packed(x, lv, 64, norm, 11, 7, pieces, out) is out
    want = torch.full((pos,), 0xAB, dtype=torch.uint8)
    for start, end, at in pieces:
        size = codec.layout(end - start, lv, 64).nbytes
        if size:
            kernel.encode_packed(x[start:end], lv, 64, norm, 11, 7 + start, want[at:at + size])
    assert torch.equal(out, want)
    if not kernel.fused_decode_supported(5000, x.device, lv, 64):
        return
    # the last piece's message once more after the others: ranges of add_to may repeat (added in order)
    last = pieces[-1][2]
    message = torch.cat([out, out[last:]])
    base = torch.randn(5000)
    total = base.clone()
    assert kernel.decode_pieces_packed(message, lv, 64, pieces + [(4100, 5000, pos)], total) is total
    expect = base.clone()
    for start, end, at in pieces + [(4100, 5000, last)]:
        size = codec.layout(end - start, lv, 64).nbytes
        if size:
            expect[start:end] += kernel.decode_packed(out[at:at + size], end - start, lv, 64)
    assert torch.equal(total, expect)


def test_pieces_bad_input_is_named():
    lv = _levels("q", 3)
    x = torch.randn(100)
    out = torch.zeros(200, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"piece 1 covers values \[50, 101\) but x has 100"):
        kernel.encode_pieces_packed(x, lv, 64, "l2", 1, 0, [(0, 50, 0), (50, 101, 100)], out)
    with pytest.raises(ValueError, match="piece 1's message of 23 bytes at byte 10 overlaps the previous"):
        kernel.encode_pieces_packed(x, lv, 64, "l2", 1, 0, [(0, 50, 0), (50, 100, 10)], out)
    with pytest.raises(ValueError, match="ends past the buffer's 200 bytes"):
        kernel.encode_pieces_packed(x, lv, 64, "l2", 1, 0, [(0, 100, 190)], out)
    with pytest.raises(ValueError, match="bucket_size % 8 == 0"):
        kernel.encode_pieces_packed(x, lv, 12, "l2", 1, 0, [(0, 100, 0)], out)
    with pytest.raises(RuntimeError, match="pieces must be a contiguous int64 CPU tensor"):
        torch.ops.nuq.encode_pieces(out, x, lv, torch.zeros(2, 2, dtype=torch.int64), **QUANT_KW)


def test_encode_packed_bad_input_is_named():
    lv = _levels("q")
    x = torch.randn(100)
    assert not kernel.fused_codec_supported(100, x.device, 12)  # buckets would start mid-byte
    assert kernel.fused_codec_supported(100, x.device, 100)  # a single bucket starts on byte 0
    assert not kernel.fused_codec_supported(100, x.device, 16, backend="reference")
    with pytest.raises(ValueError, match="bucket_size % 8 == 0"):
        kernel.encode_packed(x, lv, 12, "l2", 1, 0, torch.empty(1000, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="message must be a contiguous 1-D uint8 CPU tensor of 66 bytes"):
        torch.ops.nuq.encode(torch.empty(65, dtype=torch.uint8), x, lv, **{**QUANT_KW, "bucket_size": 16})
    with pytest.raises(RuntimeError, match="bucket_size % 8 == 0"):  # (above: 7 norms + 300 bits)
        torch.ops.nuq.encode(torch.empty(100, dtype=torch.uint8), x, lv, **{**QUANT_KW, "bucket_size": 12})


@pytest.mark.parametrize("method,bits", [("q", 1), ("trn", 2), ("nuq", 3), ("qinf", 4), ("q", 5), ("nuq", 6),
                                         ("q", 7), ("nuq", 8)])
def test_decode_packed_equals_dequantized_reference(method, bits, cpu_kernel):
    """One-pass decode runs on the AVX-512 and AVX2 kernels (2..256 levels) and then gives levels[index] *
    norm bit for bit, at 1 and 2 threads, tails included; on the generic one it is not offered (and
    nuq.codec unpacks, then dequantizes)."""
    torch.manual_seed(9)
    lv = _levels(method, bits)
    norm = get_method(method).norm
    supported = cpu_kernel != "generic" and (_cpu_has_avx2() or _cpu_has_avx512())
    assert kernel.fused_decode_supported(1000, torch.device("cpu"), lv, 128) == supported
    for n, bucket in [(1000, 128), (20000, 8192), (5003, 8), (7, 1000), (70001, 4096)]:
        x = torch.randn(n)
        message = torch.empty(4 * -(-n // bucket) + -(-n * max(1, (lv.numel() - 1).bit_length()) // 8),
                              dtype=torch.uint8)
        kernel.encode_packed(x, lv, bucket, norm, 3, 1, message)
        want = kernel.quantize(x, lv, bucket, norm, 3, 1, backend="reference")
        if not supported:
            with pytest.raises(ValueError, match="AVX-512 or AVX2 kernel"):
                kernel.decode_packed(message, n, lv, bucket)
            continue
        base = torch.randn(n)
        for threads in (1, 2):
            assert torch.equal(kernel.decode_packed(message, n, lv, bucket, num_threads=threads), want)
            total = base.clone()  # adding in the same pass rounds as torch's add of the decoded values
            assert kernel.decode_packed(message, n, lv, bucket, num_threads=threads, add_to=total) is total
            assert torch.equal(total, base + want)


@pytest.mark.skipif(not (_cpu_has_avx2() or _cpu_has_avx512()),
                    reason="the one-pass decode exists only on AVX2 and AVX-512 CPUs (tested above)")
def test_decode_packed_add_to_bad_input_is_named():
    lv = _levels("q", 3)
    x = torch.randn(100)
    message = torch.empty(4 + 38, dtype=torch.uint8)
    kernel.encode_packed(x, lv, 128, "l2", 1, 0, message)
    with pytest.raises(ValueError, match="add_to must hold the message's 100 values, got shape \\(99,\\)"):
        kernel.decode_packed(message, 100, lv, 128, add_to=torch.zeros(99))
    kw = {"bucket_size": 128, "num_threads": 1}
    with pytest.raises(RuntimeError, match="add_to must be a contiguous 1-D float32 CPU tensor, got Double"):
        torch.ops.nuq.decode_add(torch.zeros(100, dtype=torch.float64), message, lv, **kw)
    with pytest.raises(RuntimeError, match="not contiguous"):
        torch.ops.nuq.decode_add(torch.zeros(200)[::2], message, lv, **kw)


@pytest.mark.skipif(not (_cpu_has_avx2() or _cpu_has_avx512()),
                    reason="the one-pass decode exists only on AVX2 and AVX-512 CPUs (tested above)")
def test_decode_packed_rejects_an_index_beyond_the_levels(cpu_kernel):
    """trn has 3 levels in 2 bits: a message holding index 3 is corrupt, and says so instead of reading garbage."""
    if cpu_kernel == "generic":
        pytest.skip("the generic kernel has no one-pass decode (tested above)")
    lv = _levels("trn", 2)
    message = torch.zeros(4 + 4, dtype=torch.uint8)  # one bucket of 16 values: a norm, then 4 bytes
    message[:4] = torch.tensor([1.0]).view(torch.uint8)
    message[4 + 2] = 0b00110000  # value 10 = 3
    with pytest.raises(ValueError, match="level index 3 but there are only 3 levels"):
        kernel.decode_packed(message, 16, lv, 16)
    with pytest.raises(ValueError, match="message must be a contiguous 1-D uint8 CPU tensor of 8 bytes"):
        kernel.decode_packed(message[:7], 16, lv, 16)
    # 200 levels in 8 bits (the wide decode): index 250 in the last of 20 values, the second group of 16
    lv = torch.linspace(-1.0, 1.0, 200)
    message = torch.zeros(4 + 20, dtype=torch.uint8)
    message[:4] = torch.tensor([1.0]).view(torch.uint8)
    message[4 + 19] = 250
    with pytest.raises(ValueError, match="level index 250 but there are only 200 levels"):
        kernel.decode_packed(message, 20, lv, 24)
    message[4 + 19] = 199
    assert kernel.decode_packed(message, 20, lv, 24)[19] == 1.0
