"""Bucket statistics against a direct per-bucket computation of the same definitions."""
import math

import pytest
import torch

from nuq.stats import bucket_stats


def direct(samples, bucket_size, network_wide, skip_tail):
    """Per-bucket (norm, mean, unbiased std, values) by an explicit loop: the definition."""
    rows = []
    for grads in samples:
        vecs = [torch.cat([g.reshape(-1) for g in grads])] if network_wide else [g.reshape(-1) for g in grads]
        for v in vecs:
            for start in range(0, v.numel(), bucket_size):
                b = v[start:start + bucket_size].double()
                if skip_tail and b.numel() < bucket_size:
                    continue
                norm = b.norm().item()
                x = b / norm
                std = x.std().item() if b.numel() > 1 else 0.0
                rows.append((norm, x.mean().item(), std, x))
    return rows


def make_samples(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (13,), (4, 4, 3), (2,)]  # 35 + 13 + 48 + 2 = 98 values
    return [[torch.randn(s, generator=g) * (i + 1) for i, s in enumerate(shapes)] for _ in range(2)]


@pytest.mark.parametrize("network_wide", [True, False])
@pytest.mark.parametrize("skip_tail", [False, True])
def test_stats_equal_direct_computation(network_wide, skip_tail):
    samples = make_samples(0)
    rows = direct(samples, 8, network_wide, skip_tail)
    st = bucket_stats(samples, 8, network_wide, skip_tail, dist_num=1000)
    assert st.nbuckets == len(rows)
    assert st.nvalues == sum(r[3].numel() for r in rows)
    want = sorted(rows, key=lambda r: -r[0])
    torch.testing.assert_close(st.norms, torch.tensor([r[0] for r in want], dtype=torch.float64))
    torch.testing.assert_close(st.means, torch.tensor([r[1] for r in want], dtype=torch.float64))
    torch.testing.assert_close(st.sigmas, torch.tensor([r[2] for r in want], dtype=torch.float64))
    allx = torch.cat([r[3] for r in rows])
    assert st.mean == pytest.approx(allx.mean().item(), rel=1e-9, abs=1e-15)
    # pooled within-bucket variance: sum of squared deviations from each bucket's own mean over N
    ss = sum(((r[3] - r[3].mean()) ** 2).sum().item() for r in rows)
    assert st.sigma == pytest.approx(math.sqrt(ss / allx.numel()), rel=1e-9)


def test_bucket_counts_follow_the_bucketing_policy():
    samples = make_samples(1)
    # network-wide: 98 values -> 12 full buckets of 8 and a tail of 2, per sample
    assert bucket_stats(samples, 8, True, False).nbuckets == 2 * 13
    assert bucket_stats(samples, 8, True, True).nbuckets == 2 * 12
    # per layer: 35 -> 5 (tail 3), 13 -> 2 (tail 5), 48 -> 6, 2 -> 1 (tail only)
    assert bucket_stats(samples, 8, False, False).nbuckets == 2 * (5 + 2 + 6 + 1)
    assert bucket_stats(samples, 8, False, True).nbuckets == 2 * (4 + 1 + 6 + 0)


def test_dist_num_keeps_the_largest_norms():
    # bucket k of this vector is constant with value k+1: its norm is (k+1) * sqrt(4)
    v = torch.arange(1, 11, dtype=torch.float32).repeat_interleave(4)
    st = bucket_stats([[v]], 4, True, False, dist_num=3)
    torch.testing.assert_close(st.norms, torch.tensor([20.0, 18.0, 16.0], dtype=torch.float64))
    # each bucket is constant: normalised values are all 1/2, std 0
    torch.testing.assert_close(st.means, torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(st.sigmas, torch.zeros(3, dtype=torch.float64))
    assert st.nbuckets == 10 and st.sigma == 0.0 and st.mean == pytest.approx(0.5)


def test_zero_bucket_has_zero_statistics_not_nan():
    v = torch.cat([torch.zeros(4), torch.tensor([3.0, 4.0, 0.0, 0.0])])
    st = bucket_stats([[v]], 4, True, False)
    assert torch.isfinite(st.means).all() and torch.isfinite(st.sigmas).all()
    assert st.norms.tolist() == [5.0, 0.0]
    assert st.means[1].item() == 0.0 and st.sigmas[1].item() == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(bucket_size=0), "bucket_size"), (dict(dist_num=0), "dist_num"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(bucket_size=8, network_wide=True, skip_tail=False, dist_num=10) | kwargs
    with pytest.raises(ValueError, match=match):
        bucket_stats(make_samples(0), **args)


def test_no_values_left_is_an_error():
    with pytest.raises(ValueError, match="no gradient values"):
        bucket_stats([[torch.ones(3)]], 8, True, skip_tail=True)
    with pytest.raises(ValueError, match="at least one"):
        bucket_stats([], 8, True)
