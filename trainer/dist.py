"""Rank awareness: which process owns the run folder and how each rank seeds its data.

With torch.distributed initialised, every rank trains but only rank 0 writes run-folder files;
each rank draws its own data (seed + rank) like independent workers of data-parallel SGD.
"""
from __future__ import annotations


def rank() -> int:
    """This process's rank, 0 when torch.distributed is not initialised."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always ships it
        return 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_main() -> bool:
    """True in the process that writes the run folder."""
    return rank() == 0
