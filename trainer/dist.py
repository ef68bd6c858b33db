"""Rank awareness: which process owns the run folder, how each rank seeds its data, and its stop signal.

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


_stop_signalled = False


def note_stop_signal() -> None:
    """A rank got SIGTERM/SIGUSR2 (trainer/distributed.py installs this as the handler). The ranks must stop
    at the same step, so the signal only sets a flag; at each step start the loop asks the estimator to agree
    on it across ranks (GradientEstimator.agree_on_stop) and then stops on every rank together."""
    global _stop_signalled
    _stop_signalled = True


def stop_signalled() -> bool:
    """True once this process noted a stop signal (always False outside a multi-process rank)."""
    return _stop_signalled
