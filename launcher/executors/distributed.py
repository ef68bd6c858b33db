"""Running one training run as N torch.distributed processes: spawning and watching the ranks.

What runs inside each rank is trainer/distributed.py; this module only starts, watches and stops them.
Local (`--procs-per-run N`, or `python -m launcher.executors.distributed --nprocs N --config DIR/config.yaml`):
the parent hosts the rendezvous TCPStore on a port the OS picks (port 0, still bound while the ranks
start, so no other program can take it in between: no free-port race), spawns N `python -m
trainer.distributed --worker` processes with the env:// variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE=True so the ranks connect to the parent's
store, the way torchrun's agent does), and monitors them. A rank that exits non-zero or is killed
makes the parent wait `grace_s` for the others to fail on their own (gloo notices a closed peer at
once), then stop them, write the failure to the run's status.json and raise DistributedRunError naming
the rank and how it died. A rank that hangs is caught by the collective timeout (`timeout_s`) in the
others. Ranks die with the parent (PR_SET_PDEATHSIG).

SLURM (`launch --cluster slurm --nodes N --gpus-per-node G`): one multi-task job per run, one task per
GPU (`slurm_parameters`); every task runs launcher.slurm.task.DistributedRank, which exports submitit's
TorchDistributedEnvironment and trains its rank as a child `--worker` process. Inside any SLURM
allocation `srun python -m trainer.distributed --slurm --config DIR/config.yaml` does the same by hand
(the dry-run's job scripts use it).

Import-light (no torch at import): the launcher imports this module to build commands.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from trainer import runfiles, runlock
from trainer.distributed import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, ENV_BACKEND, ENV_PARENT, ENV_TIMEOUT, worker_command
from trainer.runfiles import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

DEFAULT_GRACE_S = 10.0     # after a rank fails, how long the others get to fail on their own
POLL_S = 0.1
DIST_ESTIMATORS = ("nuq_dist", "ddp_hook")  # estimators that exchange gradients between ranks


class DistributedRunError(RuntimeError):
    """A rank of a distributed run failed; the message names the rank, its exit and where its log is."""


# --------------------------------------------------------------------------------------------------
# Parent side: spawn and monitor


@dataclass
class _Rank:
    rank: int
    proc: subprocess.Popen
    log: Path | None
    code: int | None = None
    first_exit: float | None = None


@dataclass
class LocalResult:
    """How each rank ended: exit codes (negative = killed by that signal) and the first failure."""
    codes: list[int]
    failed_rank: int | None = None
    message: str = ""
    logs: dict[int, str] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        """The ranks stopped on request (checkpoint saved) rather than finishing."""
        return self.failed_rank is None and EXIT_INTERRUPTED in self.codes


def rank_env(rank: int, nprocs: int, addr: str, port: int, timeout_s: float, backend: str | None = None) -> dict[str, str]:
    """The env:// variables of rank `rank` of `nprocs` local processes, connecting to the parent's store."""
    env = {
        "RANK": str(rank), "WORLD_SIZE": str(nprocs), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nprocs),
        "MASTER_ADDR": addr, "MASTER_PORT": str(port), "TORCHELASTIC_USE_AGENT_STORE": "True",
        ENV_TIMEOUT: str(timeout_s), ENV_PARENT: str(os.getpid()),
    }
    if backend:
        env[ENV_BACKEND] = backend
    if "OMP_NUM_THREADS" not in os.environ:  # N ranks sharing the cores: do not oversubscribe them
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nprocs))
    return env


def _host_store(timeout_s: float) -> Any:
    """A TCPStore server on 127.0.0.1 at an OS-chosen port; it stays bound while this object lives."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    return TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                    timeout=timedelta(seconds=timeout_s))


def describe_exit(code: int) -> str:
    """A process exit code in words: 'exited with code 1', 'was killed by SIGKILL'."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _last_line(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def spawn_local(nprocs: int, worker_args: Sequence[str], *, log_dir: str | os.PathLike | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, grace_s: float = DEFAULT_GRACE_S,
                backend: str | None = None, target: str = DEFAULT_TARGET) -> LocalResult:
    """Run `target(*worker_args)` in `nprocs` torch.distributed processes; return how each ended.

    Rank 0 writes to this process's stdout/stderr; rank k > 0 to `log_dir/rank<k>.log` (or inherits
    them when log_dir is None). Never hangs: a failure stops every rank within `grace_s` + a few seconds.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be a positive int, got {nprocs!r}")
    store = _host_store(timeout_s)
    ranks: list[_Rank] = []
    try:
        for r in range(nprocs):
            env = {**os.environ, **rank_env(r, nprocs, "127.0.0.1", store.port, timeout_s, backend)}
            log = Path(log_dir) / f"rank{r}.log" if (log_dir is not None and r > 0) else None
            out = open(log, "w") if log else None
            cmd = worker_command(*worker_args, target=target)
            try:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
            finally:
                if out:
                    out.close()
            ranks.append(_Rank(r, proc, log))
        return _monitor(ranks, grace_s)
    finally:
        _stop(ranks)
        del store


def _forwarding(ranks: list[_Rank]) -> Callable[[int, Any], None]:
    def forward(signum: int, _frame: Any) -> None:  # preemption signals reach every rank
        for r in ranks:
            if r.proc.poll() is None:
                r.proc.send_signal(signum)
    return forward


def _monitor(ranks: list[_Rank], grace_s: float) -> LocalResult:
    forward = _forwarding(ranks)
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        failed: _Rank | None = None
        deadline = float("inf")
        while True:
            now = time.monotonic()
            for r in ranks:
                if r.code is None and (code := r.proc.poll()) is not None:
                    r.code, r.first_exit = code, now
                    if code not in (EXIT_OK, EXIT_INTERRUPTED) and failed is None:
                        failed, deadline = r, now + grace_s
            if all(r.code is not None for r in ranks) or now > deadline:
                break
            time.sleep(POLL_S)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _stop(ranks)
    codes = [r.proc.returncode for r in ranks]
    if failed is None:
        return LocalResult(codes)
    others = ", ".join(f"rank {r.rank} {describe_exit(r.proc.returncode)}" for r in ranks if r is not failed)
    where = f" (last log line: {_last_line(failed.log)!r}; log {failed.log})" if failed.log else ""
    msg = (f"rank {failed.rank} of {len(ranks)} {describe_exit(failed.code)}{where}; "
           f"stopped the other ranks: {others}")
    return LocalResult(codes, failed.rank, msg, {r.rank: str(r.log) for r in ranks if r.log})


def _stop(ranks: list[_Rank], term_wait_s: float = 5.0) -> None:
    """SIGTERM every live rank, then SIGKILL what is still alive after `term_wait_s`."""
    live = [r for r in ranks if r.proc.poll() is None]
    for r in live:
        r.proc.terminate()
    end = time.monotonic() + term_wait_s
    for r in live:
        try:
            r.proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def check_config(config: dict[str, Any], nprocs: int) -> None:
    """Refuse a multi-process run whose estimator would train N independent replicas."""
    g_estim = config.get("g_estim", "sgd")
    if nprocs > 1 and g_estim not in DIST_ESTIMATORS:
        raise ValueError(f"g_estim {g_estim!r} does not exchange gradients between processes; running it on "
                         f"{nprocs} processes needs g_estim one of {', '.join(DIST_ESTIMATORS)} "
                         f"(nuq_method none exchanges full-precision gradients)")


def run_local(config_path: str | os.PathLike, nprocs: int, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              grace_s: float = DEFAULT_GRACE_S, backend: str | None = None, target: str = DEFAULT_TARGET) -> str:
    """Train the run whose config is `config_path` (its folder is the run folder) on `nprocs` local ranks.

    Returns 'done' or 'interrupted' (stopped on SIGTERM/SIGUSR2 with a checkpoint; run again to resume).
    A done run is left alone. On a rank failure the run's status.json is marked failed with the parent's
    message (who died, how) and DistributedRunError is raised. `target` is the rank body, called with
    ('--config', config_path) (tests wrap `train_rank`). ValueError for a config that cannot run on N ranks.
    """
    run_dir = Path(config_path).resolve().parent
    if runfiles.is_done(run_dir):
        return runfiles.DONE
    try:
        check_config(runfiles.read_config(config_path), nprocs)
    except ValueError as err:  # say why in status.json too: the executor reports its error line
        if run_dir.is_dir():
            mark_failed(run_dir, str(err))
        raise
    result = spawn_local(nprocs, ["--config", str(config_path)], log_dir=run_dir, timeout_s=timeout_s,
                         grace_s=grace_s, backend=backend, target=target)
    if result.failed_rank is not None:
        mark_failed(run_dir, result.message)
        raise DistributedRunError(result.message)
    return runfiles.INTERRUPTED if result.interrupted else runfiles.DONE


def run_one_distributed(run_dir: str, nprocs: int) -> dict[str, Any]:
    """What the local executor submits for a run with --procs-per-run N (instead of
    launcher.executors.entry.run_trainer_child):
    train the run in run_dir on N local ranks and return its results.json dict.

    Raises DistributedRunError on a rank failure, and InterruptedError when the ranks stopped on request
    (checkpoint saved; launching again resumes)."""
    state = run_local(Path(run_dir) / runfiles.CONFIG, nprocs)
    if state == runfiles.INTERRUPTED:
        raise InterruptedError(f"run {run_dir} stopped on request with a checkpoint; launch it again to resume")
    return runfiles.read_json(Path(run_dir) / runfiles.RESULTS) or {}


def mark_failed(run_dir: Path, message: str) -> None:
    """Record a rank failure in status.json (rank 0 may have died before it could write anything);
    never over the status of a live trainer that holds the folder (a second launch's trainer)."""
    if runlock.is_held(run_dir):
        return
    status = runfiles.read_json(run_dir / runfiles.STATUS) or {}
    if status.get("state") == runfiles.DONE:
        return
    status.update(state=runfiles.FAILED, error=message, heartbeat=time.time())
    runfiles.atomic_write_json(run_dir / runfiles.STATUS, status)


# --------------------------------------------------------------------------------------------------
# SLURM side (called by launcher/slurm/executor.py)


def slurm_parameters(nodes: int, gpus_per_node: int) -> dict[str, int]:
    """submitit.SlurmExecutor parameters for one run on `nodes` nodes: one task (rank) per GPU, or one
    task per node when gpus_per_node is 0 (CPU nodes, gloo)."""
    for name, value, low in (("nodes", nodes, 1), ("gpus_per_node", gpus_per_node, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    params = {"nodes": nodes, "ntasks_per_node": max(1, gpus_per_node)}
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    return params


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m launcher.executors.distributed",
                                     description="Train one run on N local torch.distributed processes.")
    parser.add_argument("--nprocs", type=int, required=True, help="ranks to spawn")
    parser.add_argument("--config", required=True, help="the run's config.yaml (its folder is the run folder)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="collective timeout, seconds")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help="seconds the other ranks get to exit after one fails")
    parser.add_argument("--backend", choices=("gloo", "nccl"), default=None, help="default: nccl on GPU, else gloo")
    args = parser.parse_args(argv)
    if args.nprocs < 1:
        parser.error(f"--nprocs must be >= 1, got {args.nprocs}")
    try:
        state = run_local(args.config, args.nprocs, timeout_s=args.timeout, grace_s=args.grace,
                          backend=args.backend)
    except ValueError as err:  # unreadable config, or an estimator that cannot run on N ranks
        print(f"launcher.executors.distributed: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except DistributedRunError as err:
        print(f"launcher.executors.distributed: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"launcher.executors.distributed: {state}", file=sys.stderr)
    return EXIT_INTERRUPTED if state == runfiles.INTERRUPTED else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
