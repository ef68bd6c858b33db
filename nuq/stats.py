"""Bucket statistics of sampled gradients: what the adaptive level fits (ALQ/AMQ) model.

Gradients are bucketed exactly as the quantizer buckets them (the plan of nuq/buckets.py: `nuq_layer` one
vector for the whole network, else each parameter on its own with its own partial tail bucket;
`nuq_ig_sm_bkts` leaves the partial tail out), each bucket is divided by its L2 norm, and per bucket we
keep the norm and the mean and standard deviation of the normalised values, from segment sums over all
values at once: no Python loop per bucket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from nuq.buckets import full_buckets_end, plan


@dataclass
class BucketStats:
    """Norm-based statistics (the `dist_num` largest-norm buckets) and norm-less pooled statistics.

    `sigma` pools the within-bucket variances as the paper does: sqrt(sum_b (n_b - 1) var_b / N)."""

    means: torch.Tensor    # float64 [k]: mean of each kept bucket's normalised values
    sigmas: torch.Tensor   # float64 [k]: unbiased std of each kept bucket's normalised values
    norms: torch.Tensor    # float64 [k]: L2 norm of each kept bucket
    mean: float            # pooled mean over every normalised value
    sigma: float           # pooled within-bucket std
    nbuckets: int          # buckets seen (before the dist_num selection)
    nvalues: int           # values seen (a skipped tail bucket excluded)


def _bucket_sums(samples: Sequence[Sequence[torch.Tensor]], bucket_size: int, network_wide: bool,
                 skip_tail: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per quantized bucket s1 = sum x and s2 = sum x^2 (float64) and value counts. Full buckets of all
    vectors are rows of one matrix; the partial last buckets (at most one per vector) are summed by segment."""
    fulls, tails = [], []
    for grads in samples:
        flat = torch.cat([g.detach().reshape(-1) for g in grads]) if grads else torch.zeros(0)
        for p in plan([g.numel() for g in grads], bucket_size, network_wide, skip_tail):
            mid = full_buckets_end(p, bucket_size)
            if mid > p.start:
                fulls.append(flat[p.start:mid])
            if p.cut > mid:
                tails.append(flat[mid:p.cut])
    s1, s2, counts = [], [], []
    if fulls:
        rows = torch.cat(fulls).double().view(-1, bucket_size)
        s1.append(rows.sum(dim=1))
        s2.append((rows * rows).sum(dim=1))
        counts.append(torch.full((rows.shape[0],), bucket_size, dtype=torch.float64))
    if tails:
        sizes = torch.tensor([t.numel() for t in tails])
        x = torch.cat(tails).double()
        ids = torch.repeat_interleave(torch.arange(len(tails)), sizes).to(x.device)
        s1.append(torch.zeros(len(tails), dtype=torch.float64, device=x.device).index_add_(0, ids, x))
        s2.append(torch.zeros(len(tails), dtype=torch.float64, device=x.device).index_add_(0, ids, x * x))
        counts.append(sizes.double())
    if not counts:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), torch.zeros(0)
    return torch.cat([t.cpu() for t in s1]), torch.cat([t.cpu() for t in s2]), torch.cat(counts)


def bucket_stats(samples: Sequence[Sequence[torch.Tensor]], bucket_size: int, network_wide: bool,
                 skip_tail: bool = False, dist_num: int = 100) -> BucketStats:
    """Statistics of `samples` (each one gradient: a list of per-parameter tensors).

    network_wide: the `nuq_layer` option; skip_tail: the `nuq_ig_sm_bkts` option (a final partial
    bucket is left out, even a vector's only bucket, matching the quantizer).
    Per bucket only the sums s1 = sum x and s2 = sum x^2 are needed: norm = sqrt(s2), the mean of
    x/norm is s1 / (norm n), and the squared deviations of x/norm from it sum to (s2 - s1^2/n) / s2
    (float64 sums: the cancellation costs digits only when a bucket's mean exceeds its spread ~1e6x)."""
    if not isinstance(bucket_size, int) or bucket_size < 1:
        raise ValueError(f"bucket_size must be a positive int, got {bucket_size!r}")
    if not isinstance(dist_num, int) or dist_num < 1:
        raise ValueError(f"dist_num must be a positive int, got {dist_num!r}")
    if len(samples) == 0:
        raise ValueError("bucket_stats needs at least one gradient sample")
    if not any(g.numel() for grads in samples for g in grads):
        raise ValueError("no gradient values to compute bucket statistics from")
    s1, s2, n = _bucket_sums(samples, bucket_size, network_wide, skip_tail)
    if n.numel() == 0:
        raise ValueError("no gradient values to compute bucket statistics from (only partial buckets, "
                         "which nuq_ig_sm_bkts leaves out)")

    # an all-zero bucket has s1 = s2 = 0: dividing by 1 instead gives mean 0 and std 0, not NaN
    safe_s2 = torch.where(s2 > 0, s2, torch.ones_like(s2))
    norms = s2.sqrt()
    means = s1 / (safe_s2.sqrt() * n)
    sq_dev = ((s2 - s1 * s1 / n) / safe_s2).clamp_min(0.0)
    var = torch.where(n > 1, sq_dev / (n - 1).clamp_min(1.0), torch.zeros_like(sq_dev))

    nvalues = int(n.sum().item())
    pooled_mean = float((means * n).sum().item() / nvalues)
    pooled_sigma = float((sq_dev.sum() / nvalues).sqrt().item())

    k = min(dist_num, norms.numel())
    top = torch.topk(norms, k).indices
    return BucketStats(means=means[top], sigmas=var[top].sqrt(), norms=norms[top],
                       mean=pooled_mean, sigma=pooled_sigma, nbuckets=norms.numel(), nvalues=nvalues)
