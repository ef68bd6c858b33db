"""status.json heartbeats and the repro.json record of a run (written only by rank 0)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainer import runfiles
from trainer.dist import is_main
from trainer.runlock import RunLock

HEARTBEAT_S = 30.0


class StatusWriter:
    """Writes status.json atomically; `beat` rewrites it when HEARTBEAT_S has passed (cheap to call every step)."""

    def __init__(self, run_dir: str | os.PathLike, niters: int, lease: RunLock | None = None) -> None:
        self.lease = lease  # the run lock; its lease fallback is refreshed with every write
        self.path = Path(run_dir) / runfiles.STATUS
        self.niters = niters
        self.enabled = is_main()
        self._last = 0.0
        self.iteration = 0
        self.vacc: float | None = None
        self.started = time.time()  # when this trainer process started (stage tests check the order of starts)

    def write(self, state: str, error: str | None = None) -> None:
        self._last = time.monotonic()
        if not self.enabled:
            return
        if self.lease is not None:
            self.lease.refresh()
        runfiles.atomic_write_json(self.path, {
            "state": state, "iteration": self.iteration, "niters": self.niters, "heartbeat": time.time(),
            "started": self.started,
            "host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "error": error, "Vacc": self.vacc})

    def beat(self, iteration: int, force: bool = False) -> None:
        self.iteration = iteration
        if force or time.monotonic() - self._last >= HEARTBEAT_S:
            self.write(runfiles.RUNNING)


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _kernel_build() -> dict[str, Any] | None:
    """The compiled quantization extension, if built: its file and modification time."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("nuq._quant")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return {"file": spec.origin, "mtime": os.path.getmtime(spec.origin)}


def repro_record(device: str) -> dict[str, Any]:
    import numpy
    import torch
    repo = runfiles.REPO_ROOT
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    try:
        from importlib.metadata import version
        nuqlab = version("nuqlab")
    except Exception:
        nuqlab = None
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    return {
        "git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
                     "numpy": numpy.__version__, "nuqlab": nuqlab, "kernel": _kernel_build()},
        "host": socket.gethostname(), "platform": platform.platform(), "device": device, "gpu": gpu,
        "argv": sys.argv, "time": time.time(),
    }


def write_repro(run_dir: str | os.PathLike, device: str) -> None:
    if is_main():
        runfiles.atomic_write_json(Path(run_dir) / runfiles.REPRO, repro_record(device))
