"""`--cluster local`: the runs on this machine through submitit's LocalExecutor, one per GPU when there are GPUs."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from launcher.errors import UsageError
from launcher.executors.base import Executor, register_executor, summary
from launcher.selection import RunSpec, Selection, positive_float, positive_int
from launcher.stages import require_upstreams, take_ready
from launcher.state import DONE, INTERRUPTED, RUNNING, is_done, run_state
from trainer import runfiles, runlock
from trainer.runlock import RunLock

POLL_S = 0.5
SUBMIT_WAIT_S = 60.0  # another launch holds a run's submit lock only while it checks and starts that run
RESULT_WAIT_S = 2.0   # a finished job's result file may lag its process on a slow file system
DEFAULT_TIMEOUT_MIN = 7 * 24 * 60


def visible_gpus() -> list[int]:
    """GPU indices visible to this process, found without importing torch."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:  # submitit sets each run's CUDA_VISIBLE_DEVICES to one of these physical indices
        ids = [d.strip() for d in env.split(",") if d.strip()]
        ids = ids[:ids.index("-1")] if "-1" in ids else ids
        if not all(d.isdigit() for d in ids):
            raise UsageError(f"CUDA_VISIBLE_DEVICES={env!r}: the local executor needs integer GPU indices")
        return [int(d) for d in ids]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(1 for line in out.splitlines() if line.startswith("GPU "))))


def _error_line(run: RunSpec, err: BaseException) -> str:
    status = runfiles.read_json(run.dir / runfiles.STATUS) or {}
    if status.get("error"):
        return str(status["error"])
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


@register_executor("local")
class LocalExecutor(Executor):
    """Runs through submitit's LocalExecutor, at most --max-parallel at a time (one per GPU with GPUs)."""
    help = "run on this machine through submitit"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-parallel", type=positive_int, default=None, metavar="N",
                            help="local runs at a time (default 1; with GPUs, one per visible GPU)")
        parser.add_argument("--timeout-min", type=positive_float, default=DEFAULT_TIMEOUT_MIN, metavar="MIN",
                            help="kill a local run after MIN minutes (default 7 days)")
        parser.add_argument("--procs-per-run", type=positive_int, default=1, metavar="N",
                            help="local: train each run on N torch.distributed processes "
                                 "(launcher/executors/distributed.py; N GPUs per run when there are GPUs)")

    def launch(self, runs: list[RunSpec], selection: Selection, args: argparse.Namespace) -> int:
        import submitit

        procs = args.procs_per_run
        target = _run_target(procs)
        gpus = visible_gpus()
        if gpus and len(gpus) < procs:
            raise UsageError(f"--procs-per-run {procs}: only {len(gpus)} GPUs are visible")
        cap = args.max_parallel or max(1, len(gpus) // procs)
        require_upstreams(runs, run_state)
        _put_repo_on_pythonpath()
        queue = list(runs)
        running: dict[Any, tuple[RunSpec, tuple[int, ...]]] = {}
        free = list(gpus)
        counts: Counter[str] = Counter()
        blocked_by: dict[str, str] = {}  # run name -> the failed run it cannot start without
        print(f"running {len(runs)} runs locally, {cap} at a time", flush=True)
        progress = Progress(len(runs))
        try:
            while queue or running:
                while queue and len(running) < cap and (not gpus or len(free) >= procs):
                    unfinished = {r.name for r in queue} | {r.name for r, _ in running.values()}
                    run, blocked = take_ready(queue, unfinished, blocked_by)
                    for skipped, by in blocked:
                        progress.write(f"[{skipped.index}] BLOCKED by {by} (failed): not started")
                    counts["failed"] += len(blocked)
                    if run is None:  # the rest wait on upstream runs still running
                        break
                    mine = tuple(free[:procs]) if gpus else ()
                    with RunLock(run.dir, runfiles.SUBMIT_LOCK).acquire(wait_s=SUBMIT_WAIT_S):
                        taken = taken_by_other(run)  # by another launch since this one listed the runs
                        if taken:
                            progress.write(f"[{run.index}] skipped: {taken}")
                            counts["skipped"] += 1
                            continue
                        del free[:len(mine)]
                        running[self._submit(submitit, target, run, mine, args, progress)] = (run, mine)
                progress.show(sum(counts.values()), len(running))
                time.sleep(POLL_S)
                for job in [j for j in running if j.done()]:
                    run, mine = running.pop(job)
                    free.extend(mine)
                    outcome = self._report(job, run, progress)
                    counts[outcome] += 1
                    if outcome != "finished":  # its downstream stages cannot start from it in this launch
                        blocked_by[run.name] = run.name
        except KeyboardInterrupt:
            progress.close()
            return _interrupted(running, queue)
        progress.show(sum(counts.values()), 0)
        progress.close()
        extra = "".join(f", {counts[k]} {k}" for k in ("interrupted", "skipped") if counts[k])
        print(f"local: {counts['finished']} finished, {counts['failed']} failed or blocked{extra}", flush=True)
        return 1 if counts["failed"] or counts["interrupted"] else 0

    @staticmethod
    def _submit(submitit: Any, target: tuple, run: RunSpec, gpus: tuple[int, ...], args: argparse.Namespace,
                progress: "Progress") -> Any:
        fn, extra = target
        executor = submitit.LocalExecutor(folder=run.dir / "submitit")
        params: dict[str, Any] = {"timeout_min": args.timeout_min}
        if gpus:
            params.update(gpus_per_node=len(gpus), visible_gpus=gpus)
        executor.update_parameters(**params)
        with _stderr_to(run.dir / "submitit" / CONTROLLER_LOG):  # submitit's controller inherits stderr
            job = executor.submit(fn, str(run.dir.absolute()), *extra)
        runfiles.write_job(run.dir, "local", str(job.job_id), str(job.paths.stdout), str(job.paths.stderr))
        where = f" on GPU {','.join(map(str, gpus))}" if gpus else ""
        progress.write(f"[{run.index}] started{where}: {run.dir}")
        return job

    @staticmethod
    def _report(job: Any, run: RunSpec, progress: "Progress") -> str:
        """Print how the run ended; 'finished', 'failed', 'interrupted' or 'skipped'."""
        if not _wait_for_file(job.paths.result_pickle, RESULT_WAIT_S):  # the job process itself was killed
            progress.write(f"[{run.index}] FAILED: its job process ended without a result (killed?); "
                           f"log: {job.paths.stderr}")
            return "failed"
        try:
            results = job.result()
        except Exception as err:  # submitit wraps the run's exception; show its last line, not the traceback
            state = run_state(run.dir)
            if state == INTERRUPTED:
                iteration = (runfiles.read_json(run.dir / runfiles.STATUS) or {}).get("iteration")
                progress.write(f"[{run.index}] interrupted: checkpoint saved at iteration {iteration}; "
                               "launch again to resume")
                return "interrupted"
            if state == RUNNING:
                progress.write(f"[{run.index}] skipped: another trainer holds {run.dir}")
                return "skipped"
            progress.write(f"[{run.index}] FAILED: {_error_line(run, err)} (log: {job.paths.stderr})")
            return "failed"
        progress.write(f"[{run.index}] done: {summary(results)}")
        return "finished"


def taken_by_other(run: RunSpec) -> str | None:
    """Why another launch owns the run now (done, a trainer holds it, its local job is starting), or None."""
    state = run_state(run.dir)
    if state in (DONE, RUNNING):
        return f"{state} (another launch took it)"
    job = runfiles.read_json(run.dir / runfiles.JOB) or {}
    controller = job.get("job_id")
    if job.get("cluster") == "local" and job.get("host") == socket.gethostname() and str(controller).isdigit() \
            and not runlock.pid_gone(job.get("host"), int(controller)):
        return f"local job {controller} of another launch is starting it"
    return None


def _wait_for_file(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


CONTROLLER_LOG = "controller.log"
CANCEL_WAIT_S = 10.0


class Progress:
    """'7/20 done, 2 running, ~3 min left' on stderr through tqdm (as the trainer's bar); run lines above it."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                        bar_format="{n}/{total} done{postfix}, ~{remaining} left", postfix="0 running")
        self.shown = (0, 0)

    def show(self, finished: int, running: int) -> None:
        """Redraw when a count changed (not every poll: a log file would fill with identical lines)."""
        if (finished, running) == self.shown:
            return
        self.shown = (finished, running)
        self.bar.set_postfix_str(f"{running} running", refresh=False)
        self.bar.update(finished - self.bar.n)
        self.bar.refresh()

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at `path` while child processes are started, so their tracebacks on Ctrl-C
    land in the run's submitit folder instead of the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _interrupted(running: dict[Any, tuple[RunSpec, tuple[int, ...]]], queue: list[RunSpec]) -> int:
    """Ctrl-C: stop the running jobs, mark their runs interrupted (a relaunch resumes them from their last
    checkpoint), say so in one line; exit code 130 as for any interrupted command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    for job in running:
        job.cancel(check=False)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while any(not job.done() for job in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    marked = 0
    for run, _ in running.values():
        if not is_done(run.dir):
            status = runfiles.read_json(run.dir / runfiles.STATUS) or {}
            runfiles.atomic_write_json(run.dir / runfiles.STATUS, {**status, "state": runfiles.INTERRUPTED})
            marked += 1
    print(f"launch: interrupted: {marked} running runs marked interrupted, {len(queue)} not started; "
          "run the same command again to resume them", file=sys.stderr, flush=True)
    return 130


def _run_target(procs: int) -> tuple[Callable[..., Any], tuple]:
    """What each local job runs: launcher.executors.entry.run_trainer_child, or run_one_distributed for N
    processes per run."""
    if procs == 1:
        from launcher.executors.entry import run_trainer_child
        return run_trainer_child, ()
    try:
        from launcher.executors.distributed import run_one_distributed
    except ModuleNotFoundError as err:
        if err.name != "launcher.executors.distributed":
            raise
        raise UsageError(f"--procs-per-run {procs} is not available in this installation "
                         "(module launcher.executors.distributed is missing)") from None
    return run_one_distributed, (procs,)


def _put_repo_on_pythonpath() -> None:
    """submitit starts fresh interpreters: make sure they import this checkout's packages."""
    os.environ["PYTHONPATH"] = runfiles.pythonpath_with_repo(os.environ.get("PYTHONPATH"))
