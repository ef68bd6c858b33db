"""Runs a selection does not see: a missing results folder, and run folders that other --set values made.

`launch status` and `launch aggregate` read only the folders of the selected configs. A results folder
that does not exist (another current directory, a wrong --root) or that holds runs made with other
`--set` values would otherwise look like "nothing ran"; these helpers say where the runs are instead.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from launcher.errors import UsageError
from launcher.naming import config_hash, format_value, name_hash
from launcher.selection import Selection
from trainer import runfiles

MAX_SHOWN = 3  # --set suggestions listed


def require_results_dir(selection: Selection) -> None:
    """UsageError naming the absolute path when the selection's results folder does not exist."""
    where = selection.meta.results_dir
    if not where.is_dir():
        raise UsageError(f"no results folder {where.absolute()} (run folders are looked up under --root, "
                         f"relative to the current folder {Path.cwd()}); pass --root DIR where the runs are")


def _stored_configs(results_dir: Path, known: set[str]) -> list[dict[str, Any]]:
    """The configs of run folders whose config hash is not in `known`."""
    out = []
    for path in sorted(results_dir.glob(f"*/{runfiles.CONFIG}")):
        if name_hash(path.parent.name) in known:
            continue
        try:
            out.append(runfiles.read_config(path))
        except ValueError:  # unreadable: not a run this note can describe
            continue
    return out


def _differing(stored: dict[str, Any], selected: list[dict[str, Any]]) -> tuple[str, ...]:
    """'key=value' settings that turn the closest selected config into the stored one."""
    best: tuple[str, ...] | None = None
    for config in selected:
        diff = tuple(f"{k}={format_value(v)}" for k, v in stored.items() if config.get(k, object()) != v)
        if best is None or len(diff) < len(best):
            best = diff
    return best or ()


def unmatched_note(selection: Selection) -> str | None:
    """'DIR also holds N runs ...; add --set k=v (M) to select them' when the folder holds runs that no
    config of the grid (with this --set) names; --only and --limit do not count as "not matched"."""
    results_dir = selection.meta.results_dir
    if not results_dir.is_dir():
        return None
    grid = selection.grid_configs or [r.config for r in selection.runs]
    others = _stored_configs(results_dir, {config_hash(c) for c in grid})
    if not others:
        return None
    selected = grid
    counts = Counter(_differing(stored, selected) for stored in others)
    hints = [f"{' '.join('--set ' + s for s in diff)} ({n})" for diff, n in counts.most_common(MAX_SHOWN) if diff]
    tail = f"; add {', or '.join(hints)} to select them" if hints else ""
    return f"note: {results_dir.absolute()} also holds {len(others)} runs this selection does not match{tail}"
