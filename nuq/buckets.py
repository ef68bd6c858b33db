"""The bucketing plan: which values of a model's gradients form which bucket. One copy of the rule, used by
the quantizer (nuq/quantizer.py), the distributed exchange's segments (nuq/exchange.py, `g_estim=nuq_dist`)
and the bucket statistics of adaptive levels (nuq/stats.py): "the distributed estimator is bit-identical to
the simulated one" and "the levels are fitted to the buckets that are quantized" both rest on it.

The gradients (one tensor per parameter) are taken flat and concatenated in list order.
* `network_wide` (`nuq_layer`): the whole concatenation is one vector, buckets cross layer boundaries;
  otherwise each parameter is a vector of its own (buckets restart at its first value).
* Each vector is cut into buckets of `bucket_size` consecutive values from its start; the last may be partial.
* `skip_tail` (`nuq_ig_sm_bkts`): a vector's final partial bucket passes through unquantized (a vector
  smaller than one bucket passes through whole).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Piece:
    """One vector of the plan, as positions in the flat concatenation: [start, cut) is quantized in buckets
    counted from `start`; [cut, end) is the pass-through tail (empty unless skip_tail)."""
    start: int
    cut: int
    end: int

    @property
    def quantized(self) -> int:
        """Values quantized (the partial last bucket included)."""
        return self.cut - self.start

    @property
    def raw(self) -> int:
        """Values passed through unquantized."""
        return self.end - self.cut


def plan(sizes: Sequence[int], bucket_size: int, network_wide: bool, skip_tail: bool) -> list[Piece]:
    """The vectors of gradients with `sizes` values each (see the module doc), in order."""
    if isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1:
        raise ValueError(f"bucket_size must be a positive int, got {bucket_size!r}")
    pieces, start = [], 0
    for n in ([sum(sizes)] if network_wide else sizes):
        end = start + n
        pieces.append(Piece(start, end - n % bucket_size if skip_tail else end, end))
        start = end
    return pieces


def full_buckets_end(piece: Piece, bucket_size: int) -> int:
    """Where the full buckets of a piece's quantized part end (a partial bucket, if any, follows)."""
    return piece.start + piece.quantized // bucket_size * bucket_size
