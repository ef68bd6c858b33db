"""The rank side of a multi-process training run: what runs inside each torch.distributed process.

A rank is started by the launcher (launcher/executors/distributed.py spawns local ranks, launcher/slurm/task.py
starts one per SLURM task) as `python -m trainer.distributed --worker --config DIR/config.yaml` with the
env:// variables set. Inside any SLURM allocation `srun python -m trainer.distributed --slurm --config
DIR/config.yaml` does the same by hand (the dry-run's job scripts use it): it sets the env:// variables from
submitit's TorchDistributedEnvironment first.

The environment variable names below are the contract between the launcher that starts the ranks and the
ranks themselves. Import-light (no torch at import): the launcher imports these names.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from trainer import dist as dist_state, runfiles

DEFAULT_TIMEOUT_S = 300.0  # collective/rendezvous timeout inside the ranks: bounds any hang
DEFAULT_TARGET = "trainer.distributed:train_rank"
ENV_TIMEOUT = "NUQ_DIST_TIMEOUT"
ENV_PARENT = "NUQ_DIST_PARENT_PID"
ENV_BACKEND = "NUQ_DIST_BACKEND"


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


def _install_stop_handlers() -> None:
    """SIGTERM/SIGUSR2 only note the request (trainer.dist.note_stop_signal): the ranks stop together."""
    for s in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(s, lambda *_: dist_state.note_stop_signal())


def train_rank(*argv: str) -> None:
    """One rank of a distributed training run: `--config DIR/config.yaml` (DIR is the run folder)."""
    parser = argparse.ArgumentParser(prog="trainer.distributed --worker")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(list(argv))
    import torch.distributed as dist

    from trainer import loop
    config = runfiles.read_config(Path(args.config))
    _install_stop_handlers()
    init_process_group_from_env(bool(config.get("no_cuda", False)))
    try:
        loop.run(config, Path(args.config).resolve().parent)
    except loop.Interrupted as err:
        print(f"rank {dist.get_rank()}: interrupted: {err}", file=sys.stderr)
        raise SystemExit(runfiles.EXIT_INTERRUPTED) from None
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


def worker_command(*args: str, target: str | None = None) -> list[str]:
    """The command line that starts one rank running `target` (default: train_rank) with `args`."""
    return [sys.executable, "-u", "-m", "trainer.distributed", "--worker",
            *(("--target", target) if target else ()), *args]


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


def main(argv: Sequence[str] | None = None) -> int:
    """`--worker [--target T] ARGS` (a spawned rank) or `--slurm --config C` (one rank inside an srun task)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--slurm"]:
        try:
            export_slurm_environment()
        except ValueError as err:
            print(f"trainer.distributed: error: {err}", file=sys.stderr)
            return runfiles.EXIT_USAGE
        train_rank(*argv[1:])
        return runfiles.EXIT_OK
    if argv[:1] == ["--worker"]:
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--target", default=DEFAULT_TARGET)
        known, rest = parser.parse_known_args(argv[1:])
        worker_main(known.target, rest)
        return runfiles.EXIT_OK
    print("usage: python -m trainer.distributed --worker [--target MODULE:FN] --config DIR/config.yaml | "
          "--slurm --config DIR/config.yaml (to train on N local ranks: python -m launcher.executors.distributed)",
          file=sys.stderr)
    return runfiles.EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
