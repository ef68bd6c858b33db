"""Small grids that show a feature end to end in seconds on a CPU.

`l1clip`: the shipped example plugin (trainer/plugins/l1clip.py, docs/plugins.md) against the plain run on
the digits: `launch --grid examples --run l1clip --cluster local`.
"""
from __future__ import annotations

from launcher.grid import Cond
from launcher.registry import GridRun, register

BASE = {"dataset": "digits", "arch": "digits_mlp", "batch_size": 32, "lr": 0.05, "niters": 200,
        "chkpt_iter": 100, "log_interval": 50, "tblog_interval": 50}


@register
def l1clip() -> GridRun:
    """3 runs: no plugin, then L1 at two strengths with the weights clamped to [-0.1, 0.1]."""
    grid = {**BASE, "plugins": [None, Cond("l1clip", {"l1clip_l1": [1e-4, 1e-3], "l1clip_clip": 0.1})]}
    return GridRun(grid, "examples_l1clip", tuple(BASE))
