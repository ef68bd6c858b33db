"""The `slurm_cluster` fixture: a real two-node SLURM cluster (scripts/slurm_cluster.sh), started once;
and the helpers the cluster tests share.

Import it into a test module (`from slurm_fixture import slurm_cluster`). Where the cluster cannot be
started (not root, no apt-get) the tests FAIL with the reason: CI runs as root and must never skip them.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from launcher import cli
from trainer import runfiles

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
STATE_DIR = Path(os.environ.get("NUQLAB_SLURM_DIR", "/tmp/nuqlab-slurm"))


@pytest.fixture(scope="session")
def slurm_cluster() -> Path:
    """Start the cluster if it is not running (left running: tests/run.sh stops it); yield its state folder."""
    if os.geteuid() != 0:
        pytest.fail(f"the SLURM integration tests need root to start the test cluster ({SCRIPT} start); "
                    f"running as uid {os.geteuid()}", pytrace=False)
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"could not start the SLURM test cluster ({SCRIPT} start, exit {proc.returncode}):\n"
                    f"{proc.stdout}{proc.stderr}", pytrace=False)
    os.environ["SLURM_CONF"] = str(STATE_DIR / "etc" / "slurm.conf")
    return STATE_DIR


def launch(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the `launch` CLI in-process; assert it succeeded; return its stdout."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"launch {' '.join(argv)} -> {code}\n{out}\n{err}"
    return out


def run_dirs(root: Path, folder: str) -> list[Path]:
    return sorted(p for p in (root / folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def read(path: Path) -> dict:
    return runfiles.read_json(path) or {}


def wait_until(what: str, predicate, timeout: float = 240.0, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; squeue:\n"
                        + subprocess.run(["squeue"], capture_output=True, text=True).stdout)
        time.sleep(every)


def finished(d: Path) -> bool:
    """The run ended (done or failed) and its job left the queue."""
    state = read(d / runfiles.STATUS).get("state")
    job = read(d / runfiles.JOB).get("job_id", "")
    queued = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", job.split("_")[0]],
                            capture_output=True, text=True).stdout.split()
    return (read(d / runfiles.RESULTS).get("status") == "done" or state == "failed") and job not in queued
