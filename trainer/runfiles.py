"""The facts of a run folder, in one place: file names, state names, what "done" means, job.json, reading
config.yaml, the exit codes of the processes that train a run, and the checkout they run from.

The trainer writes the files, the launcher (status, relaunch) and aggregation read them. Import-light: no
torch. Every write is temp file + rename, so a reader never sees half a file and a crash never loses the last.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"        # the run's validated config (written by the launcher)
STATUS = "status.json"        # {"state", "iteration", "niters", "heartbeat", "host", "pid", "slurm_job_id", "slurm_array_task_id", "error", "Vacc"}
RESULTS = "results.json"      # written once at the end: {"status": "done", "final": {...}, "best": {...}, ...}
METRICS = "metrics.jsonl"     # one {"tag", "step", "value", "wall"} object per line
JOB = "job.json"              # written by the launcher: {"cluster", "job_id", "array_index", "submitted", "stdout", "stderr", "host"}
REPRO = "repro.json"          # git commit, dirty flag, package versions, host, GPU
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"
LOG = "train.log"
LOCK = "run.lock"             # flock'ed by the live trainer for its whole life (trainer/runlock.py)
LEASE = "run.lease"           # the lock's fallback where flock is unavailable: O_EXCL file, refreshed with the heartbeat
SUBMIT_LOCK = "submit.lock"   # held by a launcher for the moment it checks a run and starts it
LAUNCHER_FILES = (CONFIG, JOB)  # written by the launcher, possibly while a trainer starts
TEMP_STALE_S = 60.0           # a launcher's temp file younger than this may still be in flight

# status.json "state" values (launcher/state.py derives stale, pending and not submitted from the files)
RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"

# exit codes of `python -m trainer`, of a rank (`python -m trainer.distributed`) and of the launchers
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_LOCKED = 0, 1, 2, 3, 4

# the checkout holding the packages: child processes (submitit, SLURM tasks, job scripts) put it on PYTHONPATH
REPO_ROOT = Path(__file__).resolve().parents[1]


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


def is_done(run_dir: str | os.PathLike) -> bool:
    """A run is done iff results.json says so; a done run is never retrained or overwritten."""
    results = read_json(Path(run_dir) / RESULTS)
    return bool(results) and results.get("status") == DONE


def write_job(run_dir: str | os.PathLike, cluster: str, job_id: str, stdout: str | None, stderr: str | None,
              array_index: int | None = None, submitted: float | None = None, after: list[str] | None = None,
              after_runs: list[str] | None = None) -> None:
    """job.json: where the launcher sent the run (a run folder with it but no status.json is pending);
    `after`/`after_runs`: the SLURM jobs (of those upstream runs) it waits on, for a chained stage."""
    job = {"cluster": cluster, "job_id": job_id, "array_index": array_index,
           "submitted": time.time() if submitted is None else submitted, "stdout": stdout, "stderr": stderr,
           "host": socket.gethostname()}
    if after is not None:
        job.update(after=after, after_runs=after_runs or [])
    atomic_write_json(Path(run_dir) / JOB, job)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config.yaml mapping at path (empty file: {}); ValueError with a one-line reason otherwise."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"config file {str(path)!r} does not exist") from None
    except OSError as err:
        raise ValueError(f"cannot read config file {str(path)!r}: {err.strerror}") from None
    try:
        config = yaml.load(text, Loader=loader)
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of option: value, got {type(config).__name__}")
    return config


def pythonpath_with_repo(pythonpath: str | None) -> str:
    """$PYTHONPATH with REPO_ROOT first: fresh interpreters (submitit, SLURM tasks) import this checkout."""
    root = str(REPO_ROOT)
    return os.pathsep.join([root] + [p for p in (pythonpath or "").split(os.pathsep) if p and p != root])


def upstream_dir(run_dir: str | os.PathLike, init_run: str) -> Path:
    """The folder of the run named by a config's `init_run`: a sibling of run_dir (stages share one results
    folder). The launcher checks the upstream's state there, the trainer loads its checkpoint.pt."""
    if not init_run or "/" in init_run or init_run in (".", ".."):
        raise ValueError(f"init_run {init_run!r} must be the name of a run folder next to this one")
    return Path(run_dir).parent / init_run
