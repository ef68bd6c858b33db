"""Scalar logging of a run: metrics.jsonl (fast path for aggregation) and TensorBoard event files.

Both get the same scalars. On resume from a checkpoint taken at step k, lines past k are dropped from
metrics.jsonl and TensorBoard is told to purge them, so the files match an uninterrupted run.
Only rank 0 writes (see trainer.dist); other ranks get a logger that drops everything.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainer import runfiles
from trainer.dist import is_main


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the well-formed lines of metrics.jsonl with step <= last_step (atomic rewrite)."""
    if not path.exists():
        return
    kept = []
    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by a crash
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= last_step:
                kept.append(line if line.endswith("\n") else line + "\n")
    runfiles.atomic_write_text(path, "".join(kept))


class RunLogger:
    """Writes scalars of one run folder.

    `resume_step`: the step of the checkpoint being resumed (None for a fresh run); a fresh run
    starts an empty metrics.jsonl, a resumed one keeps the lines up to that step.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = is_main()
        self.last: dict[str, float] = {}
        self._fh = None
        self._tb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / runfiles.METRICS
        if resume_step is None:
            runfiles.atomic_write_text(path, "")
        else:
            truncate_metrics(path, resume_step)
        self._fh = open(path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter
            # TensorBoard hides earlier events at steps >= purge_step (a failed or interrupted attempt's tail)
            purge = 0 if resume_step is None else resume_step + 1
            # tensorboardX names files by the second: a suffix in ns keeps a quick resume from reopening
            # (and wiping) the previous attempt's file, and keeps file-name order = creation order
            self._tb = SummaryWriter(str(self.run_dir), purge_step=purge, flush_secs=30,
                                     filename_suffix=f".{time.time_ns()}")

    def scalar(self, tag: str, step: int, value: float) -> None:
        """Log one scalar; non-finite values are written as JSON null in metrics.jsonl."""
        value = float(value)
        self.last[tag] = value
        if not self.enabled:
            return
        rec: dict[str, Any] = {"tag": tag, "step": int(step),
                               "value": value if math.isfinite(value) else None, "wall": time.time()}
        self._fh.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            self._tb.add_scalar(tag, value, int(step))

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        for tag, value in values.items():
            self.scalar(prefix + tag, step, value)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self.flush()
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
