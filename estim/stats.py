"""Bucket statistics of sampled gradients: what the adaptive level fits (ALQ/AMQ) model.

Gradients are bucketed exactly as the quantizer buckets them (`nuq_layer`: one vector for the whole
network, buckets crossing layer boundaries; otherwise each parameter on its own, with its own partial
tail bucket), each bucket is divided by its L2 norm, and per bucket we keep the norm and the mean and
standard deviation of the normalised values. All buckets are handled as rows of one padded matrix:
no Python loop per bucket.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


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


def _bucket_rows(flat: Sequence[torch.Tensor], bucket_size: int, skip_tail: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad each vector to whole buckets and stack all buckets as rows; returns (rows, counts)."""
    pieces, counts = [], []
    for v in flat:
        n = v.numel()
        full, tail = divmod(n, bucket_size)
        if skip_tail:  # the quantizer passes a final partial bucket through unquantized
            n, tail = full * bucket_size, 0
        if n == 0:
            continue
        pad = (bucket_size - tail) % bucket_size
        pieces.append(torch.nn.functional.pad(v[:n], (0, pad)))
        count = torch.full((full + (1 if tail else 0),), bucket_size, dtype=torch.float64)
        if tail:
            count[-1] = tail
        counts.append(count)
    if not pieces:
        raise ValueError("no gradient values to compute bucket statistics from")
    rows = torch.cat(pieces).view(-1, bucket_size)
    return rows, torch.cat(counts)


def bucket_stats(samples: Sequence[Sequence[torch.Tensor]], bucket_size: int, network_wide: bool,
                 skip_tail: bool = False, dist_num: int = 100) -> BucketStats:
    """Statistics of `samples` (each one gradient: a list of per-parameter tensors).

    network_wide: the `nuq_layer` option; skip_tail: the `nuq_ig_sm_bkts` option (a final partial
    bucket is left out, even a vector's only bucket, matching the quantizer)."""
    if not isinstance(bucket_size, int) or bucket_size < 1:
        raise ValueError(f"bucket_size must be a positive int, got {bucket_size!r}")
    if not isinstance(dist_num, int) or dist_num < 1:
        raise ValueError(f"dist_num must be a positive int, got {dist_num!r}")
    if len(samples) == 0:
        raise ValueError("bucket_stats needs at least one gradient sample")
    flat: list[torch.Tensor] = []
    for grads in samples:
        vecs = [g.detach().reshape(-1).float() for g in grads]
        flat.extend([torch.cat(vecs)] if network_wide else vecs)
    rows, counts = _bucket_rows(flat, bucket_size, skip_tail)
    counts = counts.to(rows.device)

    norms = rows.double().pow(2).sum(dim=1).sqrt()
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    normed = rows.double() / safe[:, None]
    means = normed.sum(dim=1) / counts
    # padding zeros sit at -mean from the bucket mean: remove their share from the squared deviations
    pad = bucket_size - counts
    sq_dev = (normed - means[:, None]).pow(2).sum(dim=1) - pad * means.pow(2)
    sq_dev = sq_dev.clamp_min(0.0)
    var = torch.where(counts > 1, sq_dev / (counts - 1).clamp_min(1.0), torch.zeros_like(sq_dev))

    nvalues = int(counts.sum().item())
    pooled_mean = float(normed.sum().item() / nvalues)
    pooled_sigma = float((sq_dev.sum() / nvalues).sqrt().item())

    k = min(dist_num, norms.numel())
    top = torch.topk(norms, k).indices
    return BucketStats(means=means[top].cpu(), sigmas=var[top].sqrt().cpu(), norms=norms[top].cpu(),
                       mean=pooled_mean, sigma=pooled_sigma, nbuckets=norms.numel(), nvalues=nvalues)
