"""The files of a run folder: names, atomic writes and safe reads.

The trainer writes them, the launcher (status, relaunch) and aggregation read them. Import-light: no torch.
Every write is temp file + rename, so a reader never sees half a file and a crash never loses the last one.
"""
from __future__ import annotations

import json
import os
import tempfile
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

# status.json "state" values
RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def upstream_dir(run_dir: str | os.PathLike, init_run: str) -> Path:
    """The folder of the run named by a config's `init_run`: a sibling of run_dir (stages share one results
    folder). The launcher checks the upstream's state there, the trainer loads its checkpoint.pt."""
    if not init_run or "/" in init_run or init_run in (".", ".."):
        raise ValueError(f"init_run {init_run!r} must be the name of a run folder next to this one")
    return Path(run_dir).parent / init_run
