"""One trainer per run folder (issue 15): the run lock, its lease fallback, dead runs, stale temp files."""
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import state
from trainer import runfiles, runlock

ROOT = Path(__file__).resolve().parent.parent
TINY = {"dataset": "digits", "arch": "digits_mlp", "niters": 4, "chkpt_iter": 2, "log_interval": 0}
HOLD = ("import sys, time; from trainer import runlock; runlock.RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(60)")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _holder(run_dir):
    """A separate process that holds run_dir's lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _write_config(run_dir, config=TINY):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runfiles.CONFIG).write_text("".join(f"{k}: {v}\n" for k, v in config.items()))


def _trainer(run_dir, timeout=120):
    return subprocess.run([sys.executable, "-m", "trainer", "--config", str(run_dir / runfiles.CONFIG)],
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def test_a_second_trainer_exits_with_its_own_code_and_leaves_the_live_run_alone(tmp_path):
    _write_config(tmp_path)
    live = {"state": "running", "iteration": 7, "pid": 1, "host": "elsewhere", "heartbeat": time.time()}
    runfiles.atomic_write_json(tmp_path / runfiles.STATUS, live)
    holder = _holder(tmp_path)
    try:
        out = _trainer(tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert out.returncode == 4, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use by another trainer" in lines[0] and f"pid {holder.pid}" in lines[0]
    assert runfiles.read_json(tmp_path / runfiles.STATUS) == live  # the live run's status is not touched
    assert not (tmp_path / runfiles.LOG).exists() and not (tmp_path / runfiles.CHECKPOINT).exists()


def test_the_lock_dies_with_its_process_even_on_kill_9(tmp_path):
    holder = _holder(tmp_path)
    try:
        assert runlock.is_held(tmp_path)
        with pytest.raises(runlock.RunLocked, match="in use by another trainer"):
            runlock.RunLock(tmp_path).acquire(wait_s=0.2)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert not runlock.is_held(tmp_path)
    lock = runlock.RunLock(tmp_path).acquire(wait_s=0)
    lock.release()


def test_lease_fallback_where_flock_is_unavailable(tmp_path, monkeypatch):
    # Mock: an NFS mount without lock support (flock fails with ENOLCK) cannot be set up here.
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    first = runlock.RunLock(tmp_path).acquire(wait_s=0)
    assert (tmp_path / runfiles.LEASE).exists() and runlock.is_held(tmp_path)
    with pytest.raises(runlock.RunLocked):
        runlock.RunLock(tmp_path).acquire(wait_s=0.2)
    first.release()
    assert not runlock.is_held(tmp_path) and not (tmp_path / runfiles.LEASE).exists()

    # a lease of a dead process of this host is stale at once; one of another host only when old
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = tmp_path / runfiles.LEASE
    lease.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert not runlock.is_held(tmp_path)
    runlock.RunLock(tmp_path).acquire(wait_s=0).release()
    lease.write_text(json.dumps({"host": "another-host", "pid": 1}))
    assert runlock.is_held(tmp_path)
    old = time.time() - runlock.STALE_AFTER_S - 1
    os.utime(lease, (old, old))
    assert not runlock.is_held(tmp_path)
    taken = runlock.RunLock(tmp_path).acquire(wait_s=0)
    assert json.loads(lease.read_text())["pid"] == os.getpid()
    before = lease.stat().st_mtime
    os.utime(lease, (old, old))
    taken.refresh()  # the heartbeat keeps the lease fresh
    assert lease.stat().st_mtime > before
    taken.release()


def test_running_status_with_a_dead_pid_or_a_free_lock_is_stale_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    runfiles.atomic_write_json(tmp_path / runfiles.STATUS, {"state": "running", "heartbeat": now,
                                                            "host": socket.gethostname(), "pid": dead.pid})
    assert state.run_state(tmp_path) == state.STALE
    assert "not alive" in state.run_state_note(tmp_path)[1]
    # with a lock file: a free lock means no trainer, whatever the pid says
    runfiles.atomic_write_json(tmp_path / runfiles.STATUS, {"state": "running", "heartbeat": now,
                                                            "host": socket.gethostname(), "pid": os.getpid()})
    assert state.run_state(tmp_path) == state.RUNNING  # no lock file: an older trainer, the pid is alive
    holder = _holder(tmp_path)
    try:
        assert state.run_state(tmp_path) == state.RUNNING
        runfiles.atomic_write_json(tmp_path / runfiles.STATUS, {"state": "failed", "heartbeat": now - 3600})
        assert state.run_state(tmp_path) == state.RUNNING  # a held lock is a live trainer, whatever status says
    finally:
        holder.kill()
        holder.wait(timeout=10)
    runfiles.atomic_write_json(tmp_path / runfiles.STATUS, {"state": "running", "heartbeat": now,
                                                            "host": "another-host", "pid": 1})
    assert state.run_state(tmp_path) == state.STALE and "lock" in state.run_state_note(tmp_path)[1]


def test_stale_temp_files_are_removed_when_a_trainer_takes_the_lock(tmp_path):
    _write_config(tmp_path)
    temps = [tmp_path / ".checkpoint.pt.k2j3h.tmp", tmp_path / ".status.json.abc.tmp",
             tmp_path / ".metrics.json.q.tmp"]
    for t in temps:
        t.write_bytes(b"x" * 100)
    keep = tmp_path / ".hidden-but-not-ours"
    keep.write_text("x")
    out = _trainer(tmp_path)
    assert out.returncode == 0, out.stderr
    assert [t for t in temps if t.exists()] == [] and keep.exists()
    assert runfiles.read_json(tmp_path / runfiles.RESULTS)["status"] == "done"
