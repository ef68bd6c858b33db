"""Single-process pieces of the distributed path: message layout, codec errors, segment plans, chunking."""
import pytest
import torch

from estim.nuq_dist import worker_stream
from nuq.exchange import plan_segments
from nuq import codec, exchange, kernel
from nuq.levels import METHODS
from nuq.quantizer import QuantConfig, quantize_grads


def test_layout_counts_index_bits_norms_and_the_padding_byte():
    lay = codec.layout(1001, METHODS["q"].init_levels(3, 0.5), 100)
    assert (lay.bits, lay.nbuckets, lay.index_bytes, lay.norm_bytes) == (3, 11, 376, 44)  # 3003 bits -> 376 B
    assert lay.nbytes == 420 and lay.bits_per_value == pytest.approx(8 * 420 / 1001)
    assert codec.layout(10, METHODS["trn"].init_levels(2, 0.5), 4).bits == 2  # 3 levels need 2 bits


def test_decode_rejects_a_message_of_the_wrong_size():
    lv = METHODS["q"].init_levels(2, 0.5)
    msg = codec.encode(torch.randn(100), lv, 32, "l2", 1, 0)
    with pytest.raises(ValueError, match="100 values at 2 bits in buckets of 32 is 41 uint8 bytes, got .*40"):
        codec.decode(msg[:40], 100, lv, 32)


@pytest.mark.parametrize("bits", [3, 8])
def test_decode_add_to_sums_like_adding_the_decoded_values(bits):
    # the fused path (one pass) and the unpack-then-dequantize path give the bits of `total += decode(msg)`
    lv = METHODS["q"].init_levels(bits, 0.5)
    g = torch.Generator().manual_seed(bits)
    x, base = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    msg = codec.encode(x, lv, 64, "l2", 2, 5)
    decoded = codec.decode(msg, 1000, lv, 64, backend="reference")
    want = base + decoded
    for backend in (None, "reference"):
        total = base.clone()
        assert codec.decode(msg, 1000, lv, 64, backend=backend, add_to=total) is total
        assert torch.equal(total, want), backend
    with pytest.raises(ValueError, match=r"add_to must be a float32 tensor of shape \(1000,\) on cpu, got "
                                         r"torch.float64 \(1000,\)"):
        codec.decode(msg, 1000, lv, 64, add_to=base.double())
    strided = torch.zeros(2000)[::2]  # not contiguous: decoded, then added
    assert torch.equal(codec.decode(msg, 1000, lv, 64, add_to=strided), decoded)


@pytest.mark.parametrize("network_wide,skip_tail", [(False, False), (False, True), (True, False), (True, True)])
def test_segment_plan_encodes_what_the_simulated_quantizer_computes(network_wide, skip_tail):
    # one rank's decoded message under the plan == nuq.quantizer.quantize_grads of the same gradients
    sizes = [300, 7, 129, 64]
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(s, generator=g) for s in sizes]
    cfg = QuantConfig(method="q", bits=3, bucket_size=64, network_wide=network_wide, ig_sm_bkts=skip_tail)
    lv = cfg.init_levels()
    segs = plan_segments(sizes, 64, network_wide, skip_tail)
    q = exchange.Quant(lv, 64, "l2")
    stream = worker_stream(seed=9, call=2, worker=1, world=3, numel=sum(sizes))
    flat = torch.cat(grads)
    msg = exchange.encode_segments(flat, segs, q, stream, torch.empty(exchange.message_nbytes(segs, q), dtype=torch.uint8))
    got = exchange.decode_segments(msg, flat.numel(), segs, q, torch.zeros(flat.numel()))
    want = torch.cat(quantize_grads(grads, lv, cfg, 9, (2 * 3 + 1) * sum(sizes)))
    assert torch.equal(got, want)
    raw = sum(s.end - s.start for s in segs if s.raw)
    assert raw == (0 if not skip_tail else (sum(sizes) % 64 if network_wide else 300 % 64 + 7 + 129 % 64 + 0))


def test_chunks_are_bucket_aligned_and_cover_the_vector():
    bounds = exchange.chunk_bounds(1000, 64, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(s % 64 == 0 for s, _ in bounds)
    assert exchange.chunk_bounds(10, 64, 4)[-1] == (0, 10)  # fewer buckets than ranks: empty chunks first


def test_encode_equals_the_kernel_for_a_piece_with_its_offset():
    # the all-to-all exchange quantizes chunk [s, e) at offset + s: the same numbers as the whole vector
    x, lv = torch.randn(640), METHODS["q"].init_levels(4, 0.5)
    whole = kernel.quantize(x, lv, 64, "l2", 4, 1000)
    piece = codec.decode(codec.encode(x[128:384], lv, 64, "l2", 4, 1000 + 128), 256, lv, 64)
    assert torch.equal(piece, whole[128:384])
