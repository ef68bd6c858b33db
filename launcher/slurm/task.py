"""What one SLURM array task runs: its K packed runs, each as a `python -m trainer` child, concurrently;
or, for a run on several ranks (`--nodes/--gpus-per-node`), one rank of it (DistributedRank).

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
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import submitit

from launcher.executors.distributed import describe_exit, mark_failed
from launcher.executors.entry import trainer_command
from trainer import runfiles
from trainer.distributed import ENV_PARENT, export_slurm_environment, worker_command
from trainer.runfiles import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, REPO_ROOT  # noqa: F401  (REPO_ROOT: tests, executor)

STOP_GRACE_S = 60.0  # how long checkpoint() waits for the children to checkpoint and exit
# Preemption sends SIGTERM then SIGUSR2 to every process of the task. A child may checkpoint and exit on the
# SIGTERM before this process has handled its SIGUSR2; waiting a little lets submitit's handler requeue the
# task instead of the task ending as failed. (A cancelled task is killed by SLURM during this wait.)
SIGNAL_GRACE_S = 10.0
FAILURE_GRACE_S = 10.0  # how long rank 0 of a failed distributed run waits for the other ranks' exit files


def child_env(n_children: int) -> dict[str, str]:
    """The children's environment: the checkout importable, the task's CPUs split between the K runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = runfiles.pythonpath_with_repo(env.get("PYTHONPATH"))
    cpus = int(env.get("SLURM_CPUS_PER_TASK") or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // max(1, n_children))))
    return env


class PackedRuns(submitit.helpers.Checkpointable):
    """The callable submitted per array task: trains its run folders concurrently, returns their states."""

    def __init__(self) -> None:
        self._waiters: list[threading.Thread] = []
        self._children: list[subprocess.Popen] = []

    def __call__(self, run_dirs: list[str]) -> dict[str, str]:
        env = self._child_env(len(run_dirs))
        self._children = []
        for run_dir in run_dirs:
            self._children.append(subprocess.Popen(self._child_command(run_dir), env=env, cwd=run_dir))
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
        states = {d: self._final_state(d, c.returncode) for d, c in zip(run_dirs, self._children)}
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
        return submitit.helpers.DelayedSubmission(type(self)(), run_dirs)

    def _child_command(self, run_dir: str) -> list[str]:
        return trainer_command(run_dir)

    def _child_env(self, n_children: int) -> dict[str, str]:
        return child_env(n_children)

    def _final_state(self, run_dir: str, code: int) -> str:
        return _final_state(run_dir, code)

    def __getstate__(self) -> dict:
        return {}  # child processes and threads belong to this task only and cannot be pickled

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]  # a fresh task: nothing of the pickling process carries over


def _say(message: str) -> None:
    """A line in the task's log (stderr), so the log tells which runs ran when."""
    print(f"nuqlab {time.strftime('%Y-%m-%d %H:%M:%S')}: {message}", file=sys.stderr, flush=True)


def _reap(child: subprocess.Popen, run_dir: str) -> None:
    code = child.wait()
    _say(f"ended {run_dir} (pid {child.pid}, exit code {code})")


def _final_state(run_dir: str, code: int) -> str:
    """done, or the state the trainer left (failed/interrupted) with its error, or the exit code."""
    if code == EXIT_LOCKED:  # the status files belong to the other, live trainer
        return "not started: another trainer holds the run folder"
    if runfiles.is_done(run_dir):
        return runfiles.DONE
    status = runfiles.read_json(Path(run_dir) / runfiles.STATUS) or {}
    state = status.get("state") or f"exit code {code}"
    return f"{state}: {status['error']}" if status.get("error") else str(state)


class DistributedRank(PackedRuns):
    """The callable of a multi-task job: every SLURM task trains one rank of one run as a child process.

    The env:// variables come from submitit's TorchDistributedEnvironment (master = the job's first node).
    When its child ends, every rank writes rank<k>.exit.json in the run folder. When the run fails, rank 0
    waits up to FAILURE_GRACE_S for the other ranks' files and writes the failure that came first into
    status.json (which rank, on which node, how it died), since the survivors' own errors only say that a
    peer went away. Preemption: submitit calls checkpoint() on rank 0 only; every child also gets SLURM's
    signal, the ranks agree on the step to stop at, rank 0 saves the checkpoint and requeues the job.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rank, self._world, self._started = 0, 1, 0.0

    def __call__(self, run_dirs: list[str]) -> dict[str, str]:
        if len(run_dirs) != 1:
            raise ValueError(f"a distributed task trains one run, got {len(run_dirs)}: {run_dirs}")
        self._rank, self._world = export_slurm_environment()
        self._started = time.time()
        return super().__call__(run_dirs)

    def _child_command(self, run_dir: str) -> list[str]:
        return worker_command("--config", str(Path(run_dir) / runfiles.CONFIG))

    def _child_env(self, n_children: int) -> dict[str, str]:
        return {**child_env(n_children), ENV_PARENT: str(os.getpid())}  # the rank dies with this task

    def _final_state(self, run_dir: str, code: int) -> str:
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        record = {"rank": self._rank, "world": self._world, "node": node, "code": code, "time": time.time()}
        runfiles.atomic_write_json(Path(run_dir) / f"rank{self._rank}.exit.json", record)
        if code in (EXIT_OK, EXIT_INTERRUPTED):
            if self._rank == 0:
                return _final_state(run_dir, code)
            return runfiles.DONE if code == EXIT_OK else runfiles.INTERRUPTED
        if self._rank != 0:
            return f"{runfiles.FAILED}: rank {self._rank} {describe_exit(code)}"
        first = self._first_failure(Path(run_dir), record)
        message = (f"rank {first['rank']} of {self._world} (node {first['node']}) {describe_exit(first['code'])}"
                   f"; its log: {_task_log(first['rank'])}")
        mark_failed(Path(run_dir), message)
        return f"{runfiles.FAILED}: {message}"

    def _first_failure(self, run_dir: Path, own: dict) -> dict:
        """The earliest failed rank of this attempt, waiting up to FAILURE_GRACE_S for the others' files."""
        deadline = time.monotonic() + FAILURE_GRACE_S
        while True:
            records = [own] + [r for k in range(1, self._world)
                               if (r := runfiles.read_json(run_dir / f"rank{k}.exit.json"))
                               and r.get("time", 0) >= self._started]
            if len(records) == self._world or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        failed = [r for r in records if r["code"] not in (EXIT_OK, EXIT_INTERRUPTED)]
        return min(failed, key=lambda r: r["time"])


def _task_log(rank: int) -> Path:
    """The stderr file submitit gives task `rank` of this job."""
    env = submitit.JobEnvironment()
    return submitit.core.utils.JobPaths(env.paths.folder, env.job_id, rank).stderr
