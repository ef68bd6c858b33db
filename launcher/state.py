"""The state of a run folder, read from the files the launcher and trainer write (docs/CONTRACTS.md).

Never raises on missing or half-written files: status and dry-run must work on any folder.
A held run lock (trainer/runlock.py) is a live trainer whatever status.json says; a status.json that
says running while nobody holds the lock, or whose pid on this host is gone, is a dead run (stale),
relaunchable at once.
"""
from __future__ import annotations

import time
from pathlib import Path

from trainer import runfiles, runlock
from trainer.runfiles import DONE, FAILED, INTERRUPTED, RUNNING, is_done  # noqa: F401  (the trainer's states)

# what only the launcher can tell
STALE, PENDING, NOT_SUBMITTED, CORRUPT = "stale", "pending", "not submitted", "corrupt"
STATES = (DONE, FAILED, RUNNING, STALE, INTERRUPTED, PENDING, NOT_SUBMITTED, CORRUPT)
STALE_AFTER_S = runlock.STALE_AFTER_S


def run_state(run_dir: str | Path, now: float | None = None) -> str:
    """One of STATES for the folder."""
    return run_state_note(run_dir, now)[0]


def run_state_note(run_dir: str | Path, now: float | None = None) -> tuple[str, str | None]:
    """(one of STATES, why, when the files alone do not say it: a dead trainer, an unreadable file)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # one stat for the common case of a fresh grid (10,000-run dry-runs)
        return NOT_SUBMITTED, None
    if is_done(run_dir):
        return DONE, None
    if runlock.is_held(run_dir):
        return RUNNING, None
    results = run_dir / runfiles.RESULTS
    if results.exists() and runfiles.read_json(results) is None:
        return CORRUPT, f"{results} is unreadable; a relaunch sets it aside and finishes from the checkpoint"
    status = runfiles.read_json(run_dir / runfiles.STATUS)
    if status is not None:
        state = status.get("state")
        if state in (FAILED, INTERRUPTED):
            return state, None
        heartbeat = status.get("heartbeat")
        now = time.time() if now is None else now
        if runlock.has_lock_file(run_dir):
            return STALE, "its trainer is gone (the run lock is free)"
        if runlock.pid_gone(status.get("host"), status.get("pid")):
            return STALE, f"its trainer (pid {status.get('pid')} on this host) is not alive"
        if isinstance(heartbeat, (int, float)) and now - heartbeat > STALE_AFTER_S:
            return STALE, f"no heartbeat for {now - heartbeat:.0f} s"
        return RUNNING, None
    if (run_dir / runfiles.JOB).exists():
        return PENDING, None
    return NOT_SUBMITTED, None
