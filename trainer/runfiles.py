"""The files of a run folder: names, atomic writes and safe reads.

The trainer writes them, the launcher (status, relaunch) and aggregation read them. Import-light: no torch.
Every write is temp file + rename, so a reader never sees half a file and a crash never loses the last one.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"        # the run's validated config (written by the launcher)
STATUS = "status.json"        # {"state", "iteration", "niters", "heartbeat", "host", "pid", "slurm_job_id", "slurm_array_task_id", "error", "Vacc"}
RESULTS = "results.json"      # written once at the end: {"status": "done", "final": {...}, "best": {...}, ...}
METRICS = "metrics.jsonl"     # one {"tag", "step", "value", "wall"} object per line
JOB = "job.json"              # written by the launcher: {"cluster", "job_id", "array_index", "submitted", "stdout", "stderr"}
REPRO = "repro.json"          # git commit, dirty flag, package versions, host, GPU
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"
LOG = "train.log"
LOCK = "run.lock"             # flock'ed by the live trainer for its whole life (trainer/runlock.py)
LEASE = "run.lease"           # the lock's fallback where flock is unavailable: O_EXCL file, refreshed with the heartbeat
SUBMIT_LOCK = "submit.lock"   # held by a launcher for the moment it checks a run and starts it
LAUNCHER_FILES = (CONFIG, JOB)  # written by the launcher, possibly while a trainer starts
TEMP_STALE_S = 60.0           # a launcher's temp file younger than this may still be in flight

# status.json "state" values
RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"


TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """Temp files of an atomic write of `name` are `.<name>.<random>.tmp` in the same folder."""
    return f".{name}."


def remove_stale_temps(run_dir: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in run_dir; return them.

    Call only while holding the run's lock (no trainer writes then); the launcher's own files are
    spared while younger than TEMP_STALE_S since a launch may be writing them this moment.
    """
    now = time.time() if now is None else now
    removed = []
    for path in Path(run_dir).glob(f".*{TEMP_SUFFIX}"):
        name = path.name[1:-len(TEMP_SUFFIX)].rpartition(".")[0]
        if not name:
            continue
        try:
            if name in LAUNCHER_FILES and now - path.stat().st_mtime < TEMP_STALE_S:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object at path, or None if it is missing or unreadable (a reader must not crash on a bad file)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
