"""Rank bodies that tests/test_dist*.py run in real spawned processes (targets of launcher.distributed).

Each function runs inside one rank; it writes what the test asserts on to `out_dir/rank<r>.pt`, so the
assertions happen in the pytest process.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from launcher.distributed import init_process_group_from_env


def allreduce_until_killed(out_dir: str, victim: str, steps: str) -> None:
    """All-reduce in a loop; rank `victim` SIGKILLs itself after `steps` rounds (a crashed worker)."""
    init_process_group_from_env(no_cuda=True)
    rank = dist.get_rank()
    x = torch.ones(1000)
    for step in range(10_000):
        if rank == int(victim) and step == int(steps):
            Path(out_dir, "victim_dies").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(x)
        x.fill_(1.0)
        time.sleep(0.01)
    raise AssertionError("the survivor should have failed when its peer died")
