"""The state of a run folder, read from the files the launcher and trainer write (docs/CONTRACTS.md).

Never raises on missing or half-written files: status and dry-run must work on any folder.
"""
from __future__ import annotations

import time
from pathlib import Path

from trainer import runfiles
from trainer.runfiles import DONE, FAILED, INTERRUPTED, RUNNING, is_done  # noqa: F401  (the trainer's states)

STALE, PENDING, NOT_SUBMITTED = "stale", "pending", "not submitted"  # what only the launcher can tell
STATES = (DONE, FAILED, RUNNING, STALE, INTERRUPTED, PENDING, NOT_SUBMITTED)
STALE_AFTER_S = 600.0  # a running trainer refreshes its heartbeat far more often than every 10 minutes


def run_state(run_dir: str | Path, now: float | None = None) -> str:
    """One of STATES for the folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # one stat for the common case of a fresh grid (10,000-run dry-runs)
        return NOT_SUBMITTED
    if is_done(run_dir):
        return DONE
    status = runfiles.read_json(run_dir / runfiles.STATUS)
    if status is not None:
        state = status.get("state")
        if state in (FAILED, INTERRUPTED):
            return state
        heartbeat = status.get("heartbeat")
        now = time.time() if now is None else now
        if isinstance(heartbeat, (int, float)) and now - heartbeat > STALE_AFTER_S:
            return STALE
        return RUNNING
    if (run_dir / runfiles.JOB).exists():
        return PENDING
    return NOT_SUBMITTED
