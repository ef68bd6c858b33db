"""What the executors run for one run: `run_one` trains in-process (debug), `run_trainer_child` trains the
run as a `python -m trainer` child process (local).

Why a child for local runs: inside submitit's job process submitit's own SIGTERM/SIGUSR2 handlers would
win over the trainer's (SIGTERM ignored, SIGUSR2 ending the run failed without a checkpoint). The child
behaves exactly as in a shell or a SLURM task: SIGTERM/SIGUSR2 checkpoint at the next step and end the run
`interrupted`; `run_trainer_child` replaces submitit's handlers (installed before the job function runs)
by forwarders to the child. And the child's exit status says how it ended, so a kill -9 is reported as
such at once instead of by a missing result.

Kept small and picklable by reference (submitit sends these functions to a fresh process); torch is only
imported by the trainer, never by the rest of the launcher.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer import runfiles
from trainer.runfiles import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK

FORWARDED = (signal.SIGTERM, signal.SIGUSR2)  # the preemption signals the trainer checkpoints on
CANCEL_WAIT_S = 30.0


class RunInterrupted(RuntimeError):
    """The trainer stopped on SIGTERM/SIGUSR2 after a checkpoint; launching again resumes it."""


class RunInUse(RuntimeError):
    """Another live trainer holds the run folder; this one wrote nothing."""


def run_one(run_dir: str) -> dict[str, Any]:
    """Train the run in run_dir from its config.yaml in this process; returns the trainer's results dict."""
    import trainer

    folder = Path(run_dir)
    config = runfiles.read_config(folder / runfiles.CONFIG)
    return trainer.run(config, folder)


def trainer_command(run_dir: str | Path) -> list[str]:
    """The command that trains one run folder (resuming it if it holds a checkpoint)."""
    return [sys.executable, "-u", "-m", "trainer", "--config", str(Path(run_dir) / runfiles.CONFIG)]


def _stop_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM (checkpoint and stop) the trainer if the job process dies, so none is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_trainer_child(run_dir: str) -> dict[str, Any]:
    """Train the run in run_dir as a `python -m trainer` child, forwarding SIGTERM/SIGUSR2 to it.

    Returns the results dict; raises RunInterrupted, RunInUse, or RuntimeError with how it failed (a
    signal that killed the trainer is also written into status.json, which the dead trainer could not do).
    """
    child = subprocess.Popen(trainer_command(run_dir), preexec_fn=_stop_with_parent)

    def forward(signum: int, _frame: Any) -> None:
        if child.returncode is None:
            child.send_signal(signum)
    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # submitit's cancel: stop the trainer too (it marks the run failed)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=CANCEL_WAIT_S)
        raise
    folder = Path(run_dir)
    status = runfiles.read_json(folder / runfiles.STATUS) or {}
    if code == EXIT_OK:
        return runfiles.read_json(folder / runfiles.RESULTS) or {}
    if code == EXIT_INTERRUPTED:
        raise RunInterrupted(f"checkpoint saved at iteration {status.get('iteration')}; launch again to resume")
    if code == EXIT_LOCKED:
        raise RunInUse(f"another trainer holds {folder}; this launch left it alone")
    if code < 0:
        from launcher.executors.distributed import describe_exit, mark_failed
        message = f"trainer (pid {child.pid}) {describe_exit(code)} (signal {-code})"
        if status.get("pid") == child.pid:
            mark_failed(folder, message)
        raise RuntimeError(message)
    raise RuntimeError(status.get("error") or f"trainer exited with code {code}")
