"""Grid families and their runs: `grids/<family>.py` modules whose `@register`ed functions return a GridRun.

`--grid` is a family name (a module of the `grids` package) or a path to a .py file written the same way,
so a user can keep private grids outside the checkout. Errors become UsageError naming file and line.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from launcher.errors import UsageError

RUN_MARK = "__nuqlab_run__"


@dataclass(frozen=True)
class GridRun:
    """What a registered run returns: the grid, its results folder (under --root), the keys left out of
    names, and optional SLURM resource defaults for the slurm executor (flags win over them)."""
    grid: Any
    folder: str
    exclude: tuple[str, ...] = field(default_factory=tuple)
    slurm: dict[str, Any] | None = None


def register(fn: Callable[[], GridRun]) -> Callable[[], GridRun]:
    """Mark a function of a grid family as a run; it takes no arguments and returns a GridRun."""
    setattr(fn, RUN_MARK, True)
    return fn


def families() -> list[str]:
    """The grid families shipped in the `grids` package."""
    import grids
    return sorted(m.name for m in pkgutil.iter_modules(grids.__path__) if not m.name.startswith("_"))


def _where(err: BaseException, filename: str | None) -> str:
    """'file:line' of the frame in `filename` where err was raised (else the innermost frame)."""
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    frames = traceback.extract_tb(err.__traceback__)
    mine = [f for f in frames if filename and Path(f.filename) == Path(filename)]
    frame = (mine or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame else "<unknown>"


def _load_path(path: Path) -> ModuleType:
    name = f"_nuqlab_grid_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--grid {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_family(grid: str) -> ModuleType:
    """Import the family module named by --grid; unknown names list the available families."""
    as_path = grid.endswith(".py") or "/" in grid
    try:
        if as_path:
            path = Path(grid)
            if not path.is_file():
                raise UsageError(f"--grid {grid}: no such file")
            return _load_path(path)
        if not grid.isidentifier():
            raise ModuleNotFoundError(name=f"grids.{grid}")
        return importlib.import_module(f"grids.{grid}")
    except ModuleNotFoundError as err:
        if as_path or err.name != f"grids.{grid}":
            raise UsageError(f"grid {grid!r} failed to import: {err} (at {_where(err, None)})") from None
        raise UsageError(f"unknown grid {grid!r}; available grids: {', '.join(families())}") from None
    except UsageError:
        raise
    except Exception as err:  # a broken grid file: name it, no traceback
        text = err.msg if isinstance(err, SyntaxError) else str(err)
        raise UsageError(f"grid {grid!r} failed to import: {type(err).__name__}: {text} "
                         f"(at {_where(err, None)})") from None


def runs_of(module: ModuleType) -> dict[str, Callable[[], GridRun]]:
    """The registered runs of a family, in definition order."""
    return {name: obj for name, obj in vars(module).items()
            if callable(obj) and getattr(obj, RUN_MARK, False)}


def describe(fn: Callable[[], GridRun]) -> str:
    """A run's one-line description for `launch list`: the first line of its function's docstring."""
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def get_run(grid: str, run: str) -> GridRun:
    """Call run `run` of family `grid`; unknown runs list the family's runs."""
    return call_run(load_family(grid), grid, run)


def call_run(module: ModuleType, grid: str, run: str) -> GridRun:
    """Call run `run` of an imported family; its exceptions become UsageError naming file and line."""
    runs = runs_of(module)
    if run not in runs:
        raise UsageError(f"unknown run {run!r} in grid {grid!r}; its runs: {', '.join(runs) or '(none)'}")
    fn = runs[run]
    try:
        result = fn()
    except Exception as err:
        raise UsageError(f"grid {grid}.{run} raised {type(err).__name__}: {err} "
                         f"(at {_where(err, getattr(module, '__file__', None))})") from None
    if not isinstance(result, GridRun):
        raise UsageError(f"grid {grid}.{run} must return launcher.registry.GridRun(grid, folder, exclude), "
                         f"got {type(result).__name__}")
    return result
