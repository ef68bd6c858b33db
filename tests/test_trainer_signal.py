"""A real `python -m trainer` subprocess sent SIGUSR2 checkpoints at a step boundary and exits with code 3."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from trainer import runfiles

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _start(run_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(run_dir / "config.yaml")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigusr2_checkpoints_and_resume_finishes(tmp_path):
    config = {"niters": 1_000_000, "batch_size": 32, "chkpt_iter": 0, "log_interval": 20, "tblog_interval": 20}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = _start(tmp_path)
    try:
        status = tmp_path / runfiles.STATUS
        started = _wait_for(lambda: (runfiles.read_json(status) or {}).get("iteration", 0) >= 20, 120)
        assert started, proc.stderr.read() if proc.poll() is not None else "trainer did not reach iteration 20"
        proc.send_signal(signal.SIGUSR2)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    assert "interrupted" in err
    state = json.loads(status.read_text())
    assert state["state"] == "interrupted"
    stopped_at = torch.load(tmp_path / runfiles.CHECKPOINT, weights_only=True)["iteration"]
    assert stopped_at == state["iteration"] and 20 <= stopped_at < 1_000_000
    assert not (tmp_path / runfiles.RESULTS).exists()

    # a requeue with the same folder resumes; lowering niters lets it finish quickly
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**config, "niters": stopped_at + 5}))
    done = subprocess.run([sys.executable, "-m", "trainer", "--config", str(tmp_path / "config.yaml")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / runfiles.RESULTS).read_text())
    assert results["status"] == "done" and results["niters"] == stopped_at + 5
    assert f"resuming at iteration {stopped_at}" in (tmp_path / runfiles.LOG).read_text()
