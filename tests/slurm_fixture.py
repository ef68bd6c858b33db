"""The `slurm_cluster` fixture: a real single-node SLURM cluster (scripts/slurm_cluster.sh), started once.

Import it into a test module (`from slurm_fixture import slurm_cluster`). Where the cluster cannot be
started (not root, no apt-get) the tests FAIL with the reason: CI runs as root and must never skip them.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

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
