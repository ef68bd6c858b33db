"""Preparing run folders before anything runs: write config.yaml, refuse a folder holding another config.

Every selected run is checked before any file is written, so a refused launch changes nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from launcher.errors import UsageError
from launcher.selection import RunSpec
from launcher.state import is_done
from trainer import runfiles

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MISSING = "<missing>"


def dump_config(config: dict[str, Any]) -> str:
    """config.yaml text: keys in grid order, one per line."""
    return yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def load_config(path: str | Path) -> dict[str, Any]:
    """The config stored at path (raises OSError/yaml.YAMLError/ValueError when unreadable)."""
    with open(path, "r", encoding="utf-8") as fh:
        config = yaml.load(fh, Loader=_Loader)
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a mapping")
    return config


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'key: old -> new; ...' over the keys that differ, in new's order then old-only keys."""
    keys = list(new) + [k for k in old if k not in new]
    parts = [f"{k}: {old.get(k, _MISSING)!r} -> {new.get(k, _MISSING)!r}"
             for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]
    return "; ".join(parts)


def _conflict(run: RunSpec) -> str | None:
    """Why the folder cannot take this run's config, or None when it can."""
    path = run.dir / runfiles.CONFIG
    if not path.exists():
        return None
    try:
        stored = load_config(path)
    except (OSError, ValueError, yaml.YAMLError) as err:
        return f"its config.yaml is unreadable ({type(err).__name__})"
    if stored == run.config:
        return None
    return f"its config.yaml differs ({config_diff(stored, run.config)})"


def check_runs(runs: list[RunSpec]) -> None:
    """Refuse (UsageError) if any run folder holds a different config; writes nothing."""
    conflicts = [(run, why) for run in runs if (why := _conflict(run)) is not None]
    if conflicts:
        run, why = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UsageError(f"refusing run {run.index} in {run.dir}: {why}{more}; it is never overwritten - "
                         "move the folder away or use another --root")


def prepare_runs(runs: list[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """Check all runs, write missing config.yaml files; return (runs to launch, done runs skipped)."""
    check_runs(runs)
    todo, done = [], []
    for run in runs:
        if is_done(run.dir):
            done.append(run)
            continue
        if not (run.dir / runfiles.CONFIG).exists():
            runfiles.atomic_write_text(run.dir / runfiles.CONFIG, dump_config(run.config))
        todo.append(run)
    return todo, done
