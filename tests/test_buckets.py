"""The one bucketing plan (nuq/buckets.py) and its users agree: the quantizer's bits, the statistics' buckets."""
import pytest
import torch

from nuq.buckets import Piece, plan
from nuq.quantizer import QuantConfig, bits_per_coordinate
from nuq.stats import bucket_stats

SIZES = [300, 7, 129, 64]


def test_plan_of_each_flag():
    assert plan(SIZES, 64, network_wide=False, skip_tail=False) == [
        Piece(0, 300, 300), Piece(300, 307, 307), Piece(307, 436, 436), Piece(436, 500, 500)]
    assert plan(SIZES, 64, network_wide=False, skip_tail=True) == [  # tails 300 % 64, 7, 129 % 64 pass through
        Piece(0, 256, 300), Piece(300, 300, 307), Piece(307, 435, 436), Piece(436, 500, 500)]
    assert plan(SIZES, 64, network_wide=True, skip_tail=False) == [Piece(0, 500, 500)]
    assert plan(SIZES, 64, network_wide=True, skip_tail=True) == [Piece(0, 448, 500)]
    with pytest.raises(ValueError, match="bucket_size must be a positive int, got 0"):
        plan(SIZES, 0, False, False)


@pytest.mark.parametrize("network_wide", [False, True])
@pytest.mark.parametrize("skip_tail", [False, True])
def test_statistics_and_bits_count_the_plans_buckets(network_wide, skip_tail):
    pieces = plan(SIZES, 64, network_wide, skip_tail)
    buckets = sum(-(-p.quantized // 64) for p in pieces)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) for n in SIZES]
    stats = bucket_stats([grads], 64, network_wide, skip_tail, dist_num=1000)
    assert stats.nbuckets == buckets and stats.nvalues == sum(p.quantized for p in pieces)
    cfg = QuantConfig(method="q", bits=3, bucket_size=64, network_wide=network_wide, ig_sm_bkts=skip_tail)
    lv = cfg.init_levels()  # 8 levels: 3 bits an index, 32 a norm, 32 a raw value
    want = sum(3 * p.quantized + 32 * p.raw for p in pieces) + 32 * buckets
    assert bits_per_coordinate(SIZES, lv, cfg) == pytest.approx(want / sum(SIZES), rel=0, abs=1e-12)
