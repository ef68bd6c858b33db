"""Ask SLURM about jobs (squeue, sacct) and cancel them (scancel); every query degrades to None.

Status must work on a laptop, on a cluster without accounting and after the submitting shell is gone, so a
missing command, a timeout or an error is "no answer" (None), never an exception. No torch here.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Iterable

QUERY_TIMEOUT_S = 20.0
# squeue states in which a job still holds (or waits for) a slot
QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
          "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT"}
ACTIVE = {"RUNNING", "COMPLETING"}


def _run(argv: list[str]) -> str | None:
    """stdout of argv, or None when the command is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def array_ids(job_ids: Iterable[str]) -> list[str]:
    """'12_3' -> '12' (the array job), de-duplicated in order; plain ids stay as they are."""
    return list(dict.fromkeys(j.split("_")[0] for j in job_ids if j))


def _parse(text: str) -> dict[str, str]:
    """'ID|STATE ...' lines -> {ID: STATE}; sacct's 'CANCELLED by 0' becomes 'CANCELLED'."""
    states = {}
    for line in text.splitlines():
        if "|" in line:
            job, state = line.split("|", 1)
            states[job.strip()] = (state.split() or ["UNKNOWN"])[0].rstrip("+")
    return states


def queue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{'12_3': 'RUNNING', ...} for the jobs squeue still lists, or None when squeue does not answer."""
    ids = array_ids(job_ids)
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)])
    return None if out is None else _parse(out)


def accounting_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{'12_3': 'COMPLETED', ...} from sacct (latest attempt), or None without accounting."""
    ids = array_ids(job_ids)
    if not ids:
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
    return None if out is None else _parse(out)


def cancel(job_ids: list[str]) -> str | None:
    """scancel the jobs; None on success, else the reason."""
    if shutil.which("scancel") is None:
        return "scancel is not on PATH (is this a SLURM login node?)"
    try:
        proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as err:
        return f"scancel failed: {err}"
    return None if proc.returncode == 0 else f"scancel failed: {proc.stderr.strip() or proc.returncode}"
