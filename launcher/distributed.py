"""Running one training run as N torch.distributed processes: locally (spawned here) or as SLURM tasks.

Local (`--procs-per-run N`, or `python -m launcher.distributed --nprocs N --config DIR/config.yaml`):
the parent hosts the rendezvous TCPStore on a port the OS picks (port 0, still bound while the ranks
start, so no other program can take it in between: no free-port race), spawns N `python -m
launcher.distributed --worker` processes with the env:// variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE=True so the ranks connect to the parent's
store, the way torchrun's agent does), and monitors them. A rank that exits non-zero or is killed
makes the parent wait `grace_s` for the others to fail on their own (gloo notices a closed peer at
once), then stop them, write the failure to the run's status.json and raise DistributedRunError naming
the rank and how it died. A rank that hangs is caught by the collective timeout (`timeout_s`) in the
others. Ranks die with the parent (PR_SET_PDEATHSIG).

SLURM (`launch --cluster slurm --nodes N --gpus-per-node G`): one multi-task job per run, one task per
GPU (`slurm_parameters`); every task runs launcher.slurm_task.DistributedRank, which exports submitit's
TorchDistributedEnvironment and trains its rank as a child `--worker` process. Inside any SLURM
allocation `srun python -m launcher.distributed --slurm --config DIR/config.yaml` does the same by hand
(the dry-run's job scripts use it).

Import-light (no torch at import): the launcher imports this module to build commands.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

DEFAULT_TIMEOUT_S = 300.0  # collective/rendezvous timeout inside the ranks: bounds any hang
DEFAULT_GRACE_S = 10.0     # after a rank fails, how long the others get to fail on their own
POLL_S = 0.1
DEFAULT_TARGET = "launcher.distributed:train_rank"
ENV_TIMEOUT = "NUQ_DIST_TIMEOUT"
ENV_PARENT = "NUQ_DIST_PARENT_PID"
ENV_BACKEND = "NUQ_DIST_BACKEND"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3  # as `python -m trainer`
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
            cmd = [sys.executable, "-m", "launcher.distributed", "--worker", "--target", target, *worker_args]
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
    from trainer import runfiles
    from trainer.__main__ import read_config
    run_dir = Path(config_path).resolve().parent
    done = runfiles.read_json(run_dir / runfiles.RESULTS)
    if done and done.get("status") == runfiles.DONE:
        return runfiles.DONE
    try:
        check_config(read_config(Path(config_path)), nprocs)
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
    """What the local executor submits for a run with --procs-per-run N (instead of launcher.entry.run_one):
    train the run in run_dir on N local ranks and return its results.json dict.

    Raises DistributedRunError on a rank failure, and InterruptedError when the ranks stopped on request
    (checkpoint saved; launching again resumes)."""
    from trainer import runfiles
    state = run_local(Path(run_dir) / runfiles.CONFIG, nprocs)
    if state == runfiles.INTERRUPTED:
        raise InterruptedError(f"run {run_dir} stopped on request with a checkpoint; launch it again to resume")
    return runfiles.read_json(Path(run_dir) / runfiles.RESULTS) or {}


def mark_failed(run_dir: Path, message: str) -> None:
    """Record a rank failure in status.json (rank 0 may have died before it could write anything)."""
    from trainer import runfiles
    status = runfiles.read_json(run_dir / runfiles.STATUS) or {}
    if status.get("state") == runfiles.DONE:
        return
    status.update(state=runfiles.FAILED, error=message, heartbeat=time.time())
    runfiles.atomic_write_json(run_dir / runfiles.STATUS, status)


# --------------------------------------------------------------------------------------------------
# Rank side


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its parent dies, so no orphan waits on a collective."""
    parent = int(os.environ.get(ENV_PARENT, "0") or 0)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def init_process_group_from_env(no_cuda: bool = False) -> str:
    """init_process_group from the env:// variables with the launcher's timeout; return the backend.

    NCCL when CUDA is usable (each rank on GPU LOCAL_RANK), gloo otherwise; $NUQ_DIST_BACKEND overrides.
    """
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    cuda = torch.cuda.is_available() and not no_cuda
    backend = os.environ.get(ENV_BACKEND) or ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    timeout = timedelta(seconds=float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend, timeout=timeout)
    return backend


_stop_pending = False


def stop_pending() -> bool:
    """True once this rank got SIGTERM/SIGUSR2. The ranks must stop at the same step, so the signal only
    sets this flag; the distributed estimator all-reduces it at each step start and then asks the
    trainer loop to stop on every rank together (estim/nuq_dist.py)."""
    return _stop_pending


def _install_stop_handlers() -> None:
    def note(*_: Any) -> None:
        global _stop_pending
        _stop_pending = True
    for s in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(s, note)


def train_rank(*argv: str) -> None:
    """One rank of a distributed training run: `--config DIR/config.yaml` (DIR is the run folder)."""
    parser = argparse.ArgumentParser(prog="launcher.distributed --worker")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(list(argv))
    import torch.distributed as dist

    from trainer import loop
    from trainer.__main__ import read_config
    config = read_config(Path(args.config))
    _install_stop_handlers()
    init_process_group_from_env(bool(config.get("no_cuda", False)))
    try:
        loop.run(config, Path(args.config).resolve().parent)
    except loop.Interrupted as err:
        print(f"rank {dist.get_rank()}: interrupted: {err}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        dist.destroy_process_group()


def _resolve_target(target: str) -> Callable[..., Any]:
    """'package.module:function' or '/path/to/file.py:function' -> the function."""
    mod_name, sep, fn_name = target.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"target must be 'module:function' or 'file.py:function', got {target!r}")
    if mod_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {mod_name!r} from target {target!r}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    return getattr(module, fn_name)


def worker_main(target: str, argv: Sequence[str]) -> None:
    """Entry of a spawned rank: bind to the parent's life, then run the target."""
    _die_with_parent()
    _resolve_target(target)(*argv)


# --------------------------------------------------------------------------------------------------
# SLURM side (called by launcher/slurm.py)


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


def export_slurm_environment() -> tuple[int, int]:
    """Inside a SLURM task: set the env:// variables from submitit's TorchDistributedEnvironment (master =
    the first node, port from the job id; each task sees only its own GPU). Returns (rank, world size)."""
    from submitit.helpers import TorchDistributedEnvironment
    if "SLURM_JOB_ID" not in os.environ or "SLURM_PROCID" not in os.environ:
        raise ValueError("not inside a SLURM task (no SLURM_JOB_ID/SLURM_PROCID); start it with srun")
    # submitit sets this in the jobs it submits; a task started by a hand-written srun is a SLURM job too
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=True, overwrite=True)
    return env.rank, env.world_size


# --------------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--slurm"]:  # one rank of a run inside an srun task (the dry-run's job scripts)
        try:
            export_slurm_environment()
        except ValueError as err:
            print(f"launcher.distributed: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        train_rank(*argv[1:])
        return EXIT_OK
    if argv[:1] == ["--worker"]:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--target", default=DEFAULT_TARGET)
        known, rest = parser.parse_known_args(argv[1:])
        worker_main(known.target, rest)
        return EXIT_OK
    parser = argparse.ArgumentParser(prog="python -m launcher.distributed",
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
        print(f"launcher.distributed: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except DistributedRunError as err:
        print(f"launcher.distributed: failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"launcher.distributed: {state}", file=sys.stderr)
    return EXIT_INTERRUPTED if state == "interrupted" else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
