"""What one SLURM array task runs: its K packed runs, each as a `python -m trainer` child, concurrently.

Why children and not threads: K runs in one process would share torch's global RNG and thread settings
(irreproducible) and the GIL. Why not in the submitit process itself: submitit's SIGUSR2 handler runs on
the main thread, so a trainer on that thread could not reach its next step boundary while the handler waits.
Here the handler (`checkpoint`) forwards the stop request to the children, waits until each has written its
checkpoint and exited, and only then lets submitit requeue the task. On requeue the same run folders are
started again and every trainer resumes from its newest checkpoint; a done run returns at once.

SIGTERM (scancel, `scontrol requeue`, the time limit's kill) reaches the children directly from slurmd,
and the trainer's CLI checkpoints on it too, so those paths also leave a fresh checkpoint behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import submitit

from trainer import runfiles

REPO_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 60.0  # how long checkpoint() waits for the children to checkpoint and exit
# Preemption sends SIGTERM then SIGUSR2 to every process of the task. A child may checkpoint and exit on the
# SIGTERM before this process has handled its SIGUSR2; waiting a little lets submitit's handler requeue the
# task instead of the task ending as failed. (A cancelled task is killed by SLURM during this wait.)
SIGNAL_GRACE_S = 10.0


def child_command(run_dir: str | Path) -> list[str]:
    """The command that trains one run folder (resuming it if it holds a checkpoint)."""
    return [sys.executable, "-u", "-m", "trainer", "--config", str(Path(run_dir) / runfiles.CONFIG)]


def child_env(n_children: int) -> dict[str, str]:
    """The children's environment: the checkout importable, the task's CPUs split between the K runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    cpus = int(env.get("SLURM_CPUS_PER_TASK") or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // max(1, n_children))))
    return env


class PackedRuns(submitit.helpers.Checkpointable):
    """The callable submitted per array task: trains its run folders concurrently, returns their states."""

    def __init__(self) -> None:
        self._waiters: list[threading.Thread] = []
        self._children: list[subprocess.Popen] = []

    def __call__(self, run_dirs: list[str]) -> dict[str, str]:
        env = child_env(len(run_dirs))
        self._children = []
        for run_dir in run_dirs:
            self._children.append(subprocess.Popen(child_command(run_dir), env=env, cwd=run_dir))
            _say(f"started {run_dir} (pid {self._children[-1].pid})")
        # Reaping happens on helper threads: checkpoint() runs as a signal handler on this thread, possibly
        # in the middle of a wait here, and Popen.wait is not re-entrant (its lock would be held).
        self._waiters = [threading.Thread(target=_reap, args=(c, d), daemon=True)
                         for c, d in zip(self._children, run_dirs)]
        for waiter in self._waiters:
            waiter.start()
        for waiter in self._waiters:
            while waiter.is_alive():
                waiter.join(timeout=1.0)
        states = {d: _final_state(d, c.returncode) for d, c in zip(run_dirs, self._children)}
        if any(s.startswith(runfiles.INTERRUPTED) for s in states.values()):
            time.sleep(SIGNAL_GRACE_S)
        bad = {d: s for d, s in states.items() if s != runfiles.DONE}
        if bad:
            # A non-zero task lets sacct show FAILED; the run folders say which run failed and why.
            raise RuntimeError("runs not done: " + "; ".join(f"{Path(d).name}: {s}" for d, s in bad.items()))
        return states

    def checkpoint(self, run_dirs: list[str]) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption/timeout: make every child checkpoint, then requeue the same runs."""
        for child, waiter in zip(self._children, self._waiters):
            if waiter.is_alive():
                child.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + STOP_GRACE_S
        for child, waiter in zip(self._children, self._waiters):
            waiter.join(timeout=max(0.0, deadline - time.monotonic()))
            if waiter.is_alive():
                _say(f"run pid {child.pid} did not stop in {STOP_GRACE_S:.0f}s; requeueing anyway")
        _say(f"checkpointed {len(run_dirs)} runs on preemption/timeout; submitit requeues this task")
        return submitit.helpers.DelayedSubmission(PackedRuns(), run_dirs)

    def __getstate__(self) -> dict:
        return {}  # child processes and threads belong to this task only and cannot be pickled

    def __setstate__(self, state: dict) -> None:
        self._waiters, self._children = [], []


def _say(message: str) -> None:
    """A line in the task's log (stderr), so the log tells which runs ran when."""
    print(f"nuqlab {time.strftime('%Y-%m-%d %H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def _reap(child: subprocess.Popen, run_dir: str) -> None:
    code = child.wait()
    _say(f"ended {run_dir} (pid {child.pid}, exit code {code})")


def _final_state(run_dir: str, code: int) -> str:
    """done, or the state the trainer left (failed/interrupted) with its error, or the exit code."""
    results = runfiles.read_json(Path(run_dir) / runfiles.RESULTS) or {}
    if results.get("status") == runfiles.DONE:
        return runfiles.DONE
    status = runfiles.read_json(Path(run_dir) / runfiles.STATUS) or {}
    state = status.get("state") or f"exit code {code}"
    return f"{state}: {status['error']}" if status.get("error") else str(state)
