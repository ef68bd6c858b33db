"""The compiled kernels as torch.library ops (torch.ops.nuq.*): schemas that torch.library.opcheck accepts
(fake implementations included), a trace by torch.compile, keyword-only named arguments, and the bounds
every size computation in C++ relies on (bucket_size, value counts, piece positions)."""
import pytest
import torch

from nuq import codec, kernel, ops, packing
from nuq.levels import get_method
from nuq.limits import MAX_BUCKET_SIZE

pytestmark = pytest.mark.skipif(ops._quant is None or ops._pack is None,
                                reason="needs nuq._quant and nuq._pack (python setup.py build_ext --inplace)")

LV = get_method("q").init_levels(3, 0.5)  # 8 levels: 3-bit indices
KW = {"bucket_size": 16, "linf": False, "seed": 3, "offset": 5, "num_threads": 1}
# opcheck's tests without test_aot_dispatch_dynamic's compile of each op (seconds each; the torch.compile
# test below traces the ops through AOT autograd once).
UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


def _decode_supported() -> bool:
    return bool(ops._quant.decode_supported(LV))


def _message(x: torch.Tensor) -> torch.Tensor:
    return codec.encode(x, LV, KW["bucket_size"], "l2", KW["seed"], KW["offset"])


def _cases():
    x = torch.randn(100)
    nbytes = codec.layout(100, LV, 16).nbytes
    message = _message(x)
    idx, norms = kernel.quantize_indices(x, LV, 16, "l2", 3, 5)
    pieces = torch.tensor([[0, 40], [40, 100]])
    lay0, lay1 = codec.layout(40, LV, 16).nbytes, codec.layout(60, LV, 16).nbytes
    pieces3 = torch.tensor([[0, 40, 0], [40, 100, lay0]])
    dkw = {"bucket_size": 16, "num_threads": 1}
    cases = [
        ("quantize", (x, LV), KW),
        ("quantize_out", (torch.empty(100), x, LV), KW),
        ("quantize_indices", (x, LV), KW),
        ("dequantize_indices", (idx, norms, LV), dkw),
        ("encode", (torch.empty(nbytes, dtype=torch.uint8), x, LV), KW),
        ("quantize_pieces", (torch.zeros(100), x, LV, pieces), KW),
        ("encode_pieces", (torch.zeros(lay0 + lay1, dtype=torch.uint8), x, LV, pieces3), KW),
        ("pack", (idx,), {"bits": 3}),
        ("unpack", (packing.pack(idx, 3),), {"bits": 3, "n": 100}),
    ]
    if _decode_supported():
        both = torch.cat([_message(x[:40]), _message(x[40:])])  # (offsets differ: any valid messages do)
        cases += [("decode", (message, LV), {"n": 100, **dkw}),
                  ("decode_add", (torch.zeros(100), message, LV), dkw),
                  ("decode_pieces_add", (torch.zeros(100), both, LV, pieces3), dkw)]
    return cases


@pytest.mark.parametrize("name,args,kwargs", _cases(), ids=[c[0] for c in _cases()])
def test_opcheck(name, args, kwargs):
    """Schema (mutated tensors marked, nothing else written), no autograd surprises, and the fake
    implementation gives the real op's shapes, dtypes and devices."""
    torch.library.opcheck(getattr(torch.ops.nuq, name).default, args, kwargs, test_utils=UTILS)


def test_every_op_is_checked():
    names = {c[0] for c in _cases()}
    decode_ops = {"decode", "decode_add", "decode_pieces_add"}
    registered = {"quantize", "quantize_out", "quantize_indices", "dequantize_indices", "encode", "decode",
                  "decode_add", "quantize_pieces", "encode_pieces", "decode_pieces_add", "pack", "unpack"}
    assert all(hasattr(torch.ops.nuq, n) for n in registered)
    assert names == (registered if _decode_supported() else registered - decode_ops)


def test_torch_compile_traces_quantize_in_one_graph():
    """quantize inside a compiled function: one graph (fullgraph), through AOT autograd with dynamic
    shapes, and the bits of the eager kernel."""
    def step(x):
        y = torch.ops.nuq.quantize(x * 2, LV, **KW)
        idx, norms = torch.ops.nuq.quantize_indices(y, LV, **KW)
        return y + 1, idx, norms

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager", dynamic=True)
    for n in (100, 37):
        x = torch.randn(n)
        want = step(x)
        got = compiled(x)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert torch.equal(want[0], kernel.quantize(x * 2, LV, 16, "l2", 3, 5, backend="reference") + 1)


def test_arguments_are_named_and_typed():
    """The ints are keyword-only: a positional call (as the old bindings took, where two ints could swap
    silently) or a wrong name is refused."""
    x = torch.randn(10)
    schema = torch.ops.nuq.quantize.default._schema
    assert [a.name for a in schema.arguments if a.kwarg_only] == ["bucket_size", "linf", "seed", "offset",
                                                                   "num_threads"]
    with pytest.raises((TypeError, RuntimeError)):
        torch.ops.nuq.quantize(x, LV, 16, False, 3, 5, 1)
    with pytest.raises((TypeError, RuntimeError)):
        torch.ops.nuq.quantize(x, LV, bucket=16, linf=False, seed=3, offset=5, num_threads=1)
    with pytest.raises((TypeError, RuntimeError)):
        torch.ops.nuq.quantize(x, LV, **{**KW, "linf": "l2"})
    with pytest.raises((TypeError, RuntimeError)):
        torch.ops.nuq.pack(torch.zeros(8, dtype=torch.uint8), 3)
    assert torch.equal(torch.ops.nuq.quantize(x, LV, **KW), kernel.quantize(x, LV, 16, "l2", 3, 5))


@pytest.mark.parametrize("bucket", [MAX_BUCKET_SIZE + 1, 2 ** 63 - 1])
def test_ops_refuse_buckets_beyond_the_bound(bucket):
    """(n + bucket - 1) / bucket overflowed to 0 buckets near 2^63: the op returned uninitialised memory."""
    x = torch.zeros(10)
    with pytest.raises(RuntimeError, match=r"bucket_size must be in \[1, 2147483647\], got " + str(bucket)):
        torch.ops.nuq.quantize(x, LV, **{**KW, "bucket_size": bucket})
    with pytest.raises(RuntimeError, match=r"bucket_size must be in \[1, 2147483647\]"):
        torch.ops.nuq.quantize_indices(x, LV, **{**KW, "bucket_size": bucket})
    assert torch.equal(torch.ops.nuq.quantize(x, LV, **{**KW, "bucket_size": MAX_BUCKET_SIZE}), x)


def test_ops_refuse_sizes_that_would_overflow():
    """Value counts and piece positions from a caller: checked without forming a product or sum that wraps
    (a wrapped size passed the checks and the kernel read or wrote outside the buffers)."""
    x = torch.randn(100)
    message = _message(x)
    with pytest.raises(RuntimeError, match="need"):  # n * bits wrapped to a small byte count
        torch.ops.nuq.unpack(torch.zeros(8, dtype=torch.uint8), bits=8, n=2 ** 61)
    dkw = {"bucket_size": 16, "num_threads": 1}
    if _decode_supported():
        with pytest.raises(RuntimeError, match="cannot hold"):
            torch.ops.nuq.decode(message, LV, n=2 ** 62, **dkw)
    with pytest.raises(RuntimeError, match="ends past the buffer"):  # pos + nbytes wrapped negative
        torch.ops.nuq.encode_pieces(torch.zeros(100, dtype=torch.uint8), x, LV,
                                    torch.tensor([[0, 100, 2 ** 63 - 10]]), **KW)
    with pytest.raises(RuntimeError, match="offset"):
        torch.ops.nuq.quantize(x, LV, **{**KW, "offset": 2 ** 63 - 50})
