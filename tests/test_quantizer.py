"""The bucketing policy: network-wide vs per-layer, tail pass-through, TernGrad clip, `none`, bits."""
import pytest
import torch

from nuq import kernel
from nuq.quantizer import QuantConfig, bits_per_coordinate, quantize_grads, quantize_vector, terngrad_clip


def _grads():
    torch.manual_seed(0)
    return [torch.randn(10, 7), torch.randn(30), torch.randn(3, 2, 2)]  # 70 + 30 + 12 = 112 values


def test_network_wide_buckets_across_layers():
    grads = _grads()
    cfg = QuantConfig(method="q", bits=3, bucket_size=32, network_wide=True)
    lv = cfg.init_levels()
    got = quantize_grads(grads, lv, cfg, seed=5, offset=100)
    want = kernel.quantize(torch.cat([g.reshape(-1) for g in grads]), lv, 32, "l2", 5, 100)
    assert [g.shape for g in got] == [g.shape for g in grads]
    assert torch.equal(torch.cat([g.reshape(-1) for g in got]), want)


def test_per_layer_buckets_each_layer_with_disjoint_stream_positions():
    grads = _grads()
    cfg = QuantConfig(method="nuq", bits=3, bucket_size=32, network_wide=False)
    lv = cfg.init_levels()
    got = quantize_grads(grads, lv, cfg, seed=5, offset=100)
    pos = 100
    for g, q in zip(grads, got):
        assert torch.equal(q, kernel.quantize(g, lv, 32, "l2", 5, pos))
        pos += g.numel()
    # per-layer differs from network-wide (the bucket norms differ)
    wide = quantize_grads(grads, lv, QuantConfig(method="nuq", bits=3, bucket_size=32, network_wide=True), 5, 100)
    assert not torch.equal(wide[0], got[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("skip_tail", [False, True])
def test_per_layer_in_one_call_equals_quantize_vector_per_layer(dtype, skip_tail):
    # quantize_grads quantizes all layers in one kernel call (kernel.quantize_pieces); the values are those
    # of quantize_vector layer by layer, with pass-through tails, in the gradients' dtype
    grads = [g.to(dtype) for g in _grads()] + [torch.randn(5).to(dtype)]  # a layer smaller than a bucket
    cfg = QuantConfig(method="q", bits=3, bucket_size=32, ig_sm_bkts=skip_tail)
    lv = cfg.init_levels()
    got = quantize_grads(grads, lv, cfg, seed=3, offset=7)
    pos = 7
    for g, q in zip(grads, got):
        want = quantize_vector(g.reshape(-1), lv, cfg, 3, pos).view_as(g)
        assert q.dtype == dtype and torch.equal(q, want)
        pos += g.numel()


def test_quantize_pieces_equals_quantize_per_piece():
    x = torch.randn(500)
    lv = QuantConfig(method="nuq", bits=3, bucket_size=64).init_levels()
    pieces = [(0, 100), (130, 130), (130, 400), (450, 500)]  # gaps pass through
    for backend in (None, "reference"):
        got = kernel.quantize_pieces(x, lv, 64, "l2", 2, 9, pieces, backend=backend)
        want = x.clone()
        for start, end in pieces:
            if end > start:
                want[start:end] = kernel.quantize(x[start:end], lv, 64, "l2", 2, 9 + start, backend="reference")
        assert torch.equal(got, want), backend
        with pytest.raises(ValueError, match="piece 1 covers values \\[50, 60\\)|out of order"):
            kernel.quantize_pieces(x, lv, 64, "l2", 2, 9, [(0, 100), (50, 60)], backend=backend)
    with pytest.raises(ValueError, match="but x has 500"):
        kernel.quantize_pieces(x, lv, 64, "l2", 2, 9, [(0, 501)])


def test_ig_sm_bkts_passes_only_the_partial_tail():
    torch.manual_seed(1)
    v = torch.randn(100)
    cfg = QuantConfig(method="q", bits=2, bucket_size=32, ig_sm_bkts=True)
    lv = cfg.init_levels()
    q = quantize_vector(v, lv, cfg, seed=1, offset=0)
    assert torch.equal(q[96:], v[96:])  # the partial bucket of 4 passes through
    assert torch.equal(q[:96], kernel.quantize(v[:96], lv, 32, "l2", 1, 0))  # full buckets quantized


def test_ig_sm_bkts_exact_bucket_multiple_and_small_vectors():
    v = torch.randn(64)
    cfg = QuantConfig(method="q", bits=2, bucket_size=32, ig_sm_bkts=True)
    lv = cfg.init_levels()
    q = quantize_vector(v, lv, cfg, seed=1, offset=0)
    assert torch.equal(q, kernel.quantize(v, lv, 32, "l2", 1, 0))  # no bucket zeroed, no crash
    assert torch.all(q != 0)
    small = torch.randn(20)
    assert torch.equal(quantize_vector(small, lv, cfg, 1, 0), small)  # smaller than a bucket
    exact = torch.randn(32)
    assert torch.equal(quantize_vector(exact, lv, cfg, 1, 0), kernel.quantize(exact, lv, 32, "l2", 1, 0))


def test_without_ig_sm_bkts_the_tail_is_quantized():
    v = torch.randn(100)
    cfg = QuantConfig(method="q", bits=2, bucket_size=32)
    q = quantize_vector(v, cfg.init_levels(), cfg, 1, 0)
    assert not torch.equal(q[96:], v[96:])


def test_terngrad_clip_at_2_5_std_per_bucket():
    v = torch.cat([torch.linspace(-1, 1, 99), torch.tensor([50.0]), torch.linspace(-2, 2, 30)])
    out = terngrad_clip(v, 100)
    b0 = v[:100]
    c0 = 2.5 * float(b0.std(unbiased=False))
    assert abs(float(out[99]) - c0) < 1e-4 * c0  # the outlier is clipped to 2.5 std of its bucket
    assert torch.equal(out[:99], v[:99])  # values inside the band are untouched
    c1 = 2.5 * float(v[100:].std(unbiased=False))  # the partial bucket uses its own std
    assert torch.allclose(out[100:], v[100:].clamp(-c1, c1))


def test_clip_applies_before_quantizing():
    v = torch.cat([torch.randn(63) * 0.01, torch.tensor([100.0])])
    cfg = QuantConfig(method="trn", bits=2, bucket_size=64, clip=True)
    q = quantize_vector(v, cfg.init_levels(), cfg, 1, 0)
    c = 2.5 * float(v.std(unbiased=False))  # ~31: the outlier inflates its own std
    # trn: L-inf norm of the clipped bucket is c, so the outlier becomes exactly +c (u = 1), not 100
    assert abs(float(q[63]) - c) < 1e-4 * c
    assert float(q.abs().max()) <= c * (1 + 1e-6)


def test_none_is_identity():
    grads = _grads()
    cfg = QuantConfig(method="none")
    got = quantize_grads(grads, cfg.init_levels(), cfg, 1, 0)
    assert all(torch.equal(a, b) for a, b in zip(got, grads))


def test_bits_per_coordinate():
    lv8 = torch.linspace(-1, 1, 8)
    cfg = QuantConfig(method="q", bits=3, bucket_size=32, network_wide=True)
    assert bits_per_coordinate([64], lv8, cfg) == 3 + 32 / 32
    tail = QuantConfig(method="q", bits=3, bucket_size=32, ig_sm_bkts=True)
    # 70 values: 64 quantized (3 bits + two 32-bit norms), 6 passed at 32 bits
    assert bits_per_coordinate([70], lv8, tail) == pytest.approx((64 * 3 + 2 * 32 + 6 * 32) / 70)
    assert bits_per_coordinate([10], torch.empty(0), QuantConfig(method="none")) == 32


def test_from_opt_reads_paper_names():
    cfg = QuantConfig.from_opt({"nuq_method": "qinf", "nuq_bits": 5, "nuq_bucket_size": 8192, "nuq_layer": True,
                                "nuq_ig_sm_bkts": True, "nuq_clip": True, "nuq_mul": 0.4})
    assert cfg == QuantConfig("qinf", 5, 8192, True, True, True, 0.4)
    assert cfg.norm == "linf"
    with pytest.raises(ValueError, match="unknown nuq_method"):
        QuantConfig.from_opt({"nuq_method": "qsgd"})
    with pytest.raises(ValueError, match="nuq_bucket_size"):
        QuantConfig.from_opt({"nuq_bucket_size": 0})
