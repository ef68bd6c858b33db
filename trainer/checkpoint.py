"""Checkpoints of a run folder: atomic, the previous one kept until the new one is complete, loaded as data.

`save` writes a temp file, moves checkpoint.pt to checkpoint.prev.pt, then renames the temp file in,
so at every instant one complete checkpoint exists. `load` reads with `weights_only=True` and falls back
to the previous checkpoint (with a clear message) if the newest is truncated or corrupt.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from trainer import runfiles

REQUIRED_KEYS = ("version", "iteration", "model", "optimizer", "rng", "streams", "estimator")
VERSION = 1


class CheckpointError(RuntimeError):
    """No usable checkpoint although checkpoint files exist."""


def save(run_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    run_dir = Path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=runfiles.temp_prefix(runfiles.CHECKPOINT), suffix=runfiles.TEMP_SUFFIX,
                               dir=run_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        current = run_dir / runfiles.CHECKPOINT
        if current.exists():
            os.replace(current, run_dir / runfiles.CHECKPOINT_PREV)
        os.replace(tmp, current)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"lacks keys {', '.join(missing)}")
    if state["version"] != VERSION:
        raise ValueError(f"has format version {state['version']}, this trainer reads version {VERSION}")
    return state


_ADVICE = ("weights_only", "Weights only load failed", "Check the documentation")  # PyTorch's advice, not the reason


def load_error_reason(err: BaseException) -> str:
    """Why a checkpoint did not load, in one line. For a refused pickle that is the unpickler's own reason
    (e.g. 'unsupported GLOBAL posix.system'), without PyTorch's advice around it to load with
    weights_only=False or to allowlist the global: both would run the file's code."""
    kept = []
    for line in str(err).splitlines():
        line = line.strip()
        if not line or any(a in line for a in _ADVICE):
            continue
        line = line.removeprefix("WeightsUnpickler error:").split(" Please use", 1)[0].strip()
        if line:
            kept.append(line)
    if "Weights only load failed" in str(err):
        reason = "; ".join(kept).rstrip(".") or "it holds more than plain data"
        return f"{type(err).__name__}: {reason}; refused by the data-only loader, nothing in it was run"
    return f"{type(err).__name__}: {kept[0]}" if kept else type(err).__name__


def load(run_dir: str | os.PathLike, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable checkpoint of run_dir, None when there is none; `warn` gets fallback messages."""
    run_dir = Path(run_dir)
    paths = [run_dir / runfiles.CHECKPOINT, run_dir / runfiles.CHECKPOINT_PREV]
    present = [p for p in paths if p.exists()]
    if not present:
        return None
    errors = []
    for path in present:
        try:
            state = _read(path)
        except Exception as err:  # truncated zip, unpickling error, wrong content
            msg = f"checkpoint {str(path)!r} is unreadable or corrupt ({load_error_reason(err)})"
            errors.append(msg)
            warn(msg + ("; falling back to the previous checkpoint" if path != present[-1] else ""))
            continue
        return state
    raise CheckpointError("no usable checkpoint: " + "; ".join(errors)
                          + ". Delete the checkpoint files to restart the run from scratch.")
