"""Build a results table from runs' values (launcher.results.table_points): grouped over seeds, pivoted, best marked.

Only runs that are *done* give values (for `iter=N`, done runs that reached N): failed, unfinished and
missing runs still get a row (per-run tables) or are counted in `n` and the caption (grouped tables), so a
table never silently drops or averages in a run that did not finish. Import-light: no torch.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from launcher.results.table_points import (At, RunRecord, TableError, check_metrics, higher_is_better,
                                   point_values, status_text)
from launcher.naming import grid_title
from trainer import options

MISSING = "—"  # an unset key or a value no run gave


def key_text(key: str, value: Any) -> str:
    """A config value as a table shows it: unset as MISSING, an int option as an int even after pandas
    turned its column into floats (a column with unset cells: nuq_amq_epochs 40, not 40.0)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    opt = options.OPTIONS.get(key)
    if opt is not None and opt.kind == "int" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# Keys a default table averages over (one row per setting, mean ± std over seeds).
SEED_KEYS = ("seed",)


def title_of(grid: str, run: str) -> str:
    """'family.run' for captions and figure titles (launcher.naming.grid_title)."""
    return grid_title(grid, run)

def default_by(varying: Sequence[str]) -> list[str] | None:
    """Group over seeds when seeds vary (by every other varying key); otherwise one row per run."""
    if not any(key in SEED_KEYS for key in varying):
        return None
    return [key for key in varying if key not in SEED_KEYS]


def parse_by(text: str | None, varying: Sequence[str]) -> list[str] | None:
    """--by: None -> default_by; 'run' -> one row per run (None); 'all' -> one group; else config keys."""
    if text is None:
        return default_by(varying)
    if text == "run":
        return None
    if text == "all":
        return []
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        if key not in options.OPTIONS:
            near = options.closest_keys(key)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise TableError(f"--by {key!r} is not a config key; {hint}varying keys here: "
                             f"{', '.join(varying) or 'none'} (or 'run', 'all')")
    return keys

def value_column(metric: str) -> str:
    """The run_rows column of a metric ('@' keeps a config-key metric such as nuq_bits apart from its key column)."""
    return f"@{metric}"


def run_rows(records: Sequence[RunRecord], metrics: Sequence[str], at: At,
             keys: Sequence[str]) -> pd.DataFrame:
    """One row per run: run, keys..., status, step, @metric..., counted (bool), state (or why not counted)."""
    rows = []
    for rec in records:
        why_not, step, values = point_values(rec, metrics, at)
        row: dict[str, Any] = {"run": rec.name}
        row.update({key: rec.option(key) for key in keys})
        row.update({"status": status_text(rec), "step": step})
        row.update(zip(map(value_column, metrics), values))
        row.update({"counted": why_not is None, "state": why_not or rec.state})
        rows.append(row)
    columns = ["run", *keys, "status", "step", *map(value_column, metrics), "counted", "state"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["step"] = frame["step"].astype("Int64")
    return frame


# ---------------------------------------------------------------------------------------------- table
@dataclass
class Column:
    """One column of numbers: a metric (or a metric at one value of the pivot key)."""

    label: str
    metric: str
    mean: np.ndarray
    std: np.ndarray | None = None  # grouped tables only
    n: np.ndarray | None = None    # grouped tables only: runs with a value


@dataclass
class Table:
    """A table ready for formatting: left-hand key columns, metric columns and what the caption says."""

    left: pd.DataFrame
    columns: list[Column]
    at: At
    grouped: bool
    pivot: str | None
    counts: dict[str, int]
    not_counted: list[tuple[str, str]]
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column index) of marked cells
    title: str = ""
    hidden: list[str] = field(default_factory=list)  # key columns display formats leave out (implied)

    @property
    def nrows(self) -> int:
        return len(self.left)

    def caption_lines(self, max_names: int = 12) -> list[str]:
        total = sum(self.counts.values())
        counted = total - len(self.not_counted)
        head = f"{self.title}: " if self.title else ""
        lines = [f"{head}{total} runs, {counted} counted; values at {self.at}"]
        if self.grouped:
            lines.append("mean ± std over the runs of each row (sample std, n-1); n = runs counted"
                         + (" / runs in the row" if self.not_counted else ""))
        if self.not_counted:
            by_state = Counter(state for _, state in self.not_counted)
            parts = ", ".join(f"{k} {state}" for state, k in by_state.items())
            names = ", ".join(name for name, _ in self.not_counted[:max_names])
            more = f" and {len(self.not_counted) - max_names} more" if len(self.not_counted) > max_names else ""
            lines.append(f"not counted ({parts}): {names}{more}")
        if self.pivot:
            metrics = ", ".join(dict.fromkeys(c.metric for c in self.columns))
            lines.append(f"columns: {metrics} for each {self.pivot}")
        if self.hidden:
            lines.append(f"not shown (follow from the keys shown): {', '.join(self.hidden)}")
        if self.best:
            where = "row (across the pivot columns of a metric)" if self.pivot else "column"
            lines.append(f"best value per {where} marked")
        return lines

    def frame(self) -> pd.DataFrame:
        """Plain numbers for csv/json: left columns, then each column's value (and std, n when grouped)."""
        out = self.left.copy()
        for col in self.columns:
            out[col.label] = col.mean
            if col.std is not None:
                out[f"{col.label} std"] = col.std
                out[f"{col.label} n"] = col.n
        return out


def _unique_in_order(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _group_stats(rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of `by`: runs, n (counted), and mean/std/count of each metric over counted runs."""
    keyed = rows.assign(_all="all") if not by else rows
    keys = list(by) or ["_all"]
    groups = keyed.groupby(keys, sort=False, dropna=False)
    stats = groups.size().rename("runs").to_frame()
    stats["n"] = groups["counted"].sum().astype(int)
    counted = keyed[keyed["counted"]]
    if len(metrics):
        values = [value_column(m) for m in metrics]
        agg = counted.groupby(keys, sort=False, dropna=False)[values].agg(["mean", "std", "count"])
        stats = stats.join(agg.set_axis([f"{c[1:]}\t{s}" for c, s in agg.columns], axis=1), how="left")
    for metric in metrics:
        if f"{metric}\tmean" not in stats:
            stats[[f"{metric}\tmean", f"{metric}\tstd", f"{metric}\tcount"]] = math.nan
        stats[f"{metric}\tcount"] = stats[f"{metric}\tcount"].fillna(0).astype(int)
    stats = stats.reset_index()
    return stats.drop(columns=["_all"]) if not by else stats


def _pivot_columns(stats: pd.DataFrame, row_keys: Sequence[str], pivot: str, metrics: Sequence[str],
                   grouped: bool) -> tuple[pd.DataFrame, list[Column]]:
    """Spread `pivot` across columns: one column per (metric, pivot value), rows by the other keys."""
    row_ids = _unique_in_order(tuple(r) for r in stats[list(row_keys)].itertuples(index=False))
    pivot_values = _unique_in_order(stats[pivot])
    where = {(tuple(r[:-1]), r[-1]): i for i, r in
             enumerate(stats[[*row_keys, pivot]].itertuples(index=False))}
    if len(where) != len(stats):
        raise TableError(f"--pivot {pivot}: several runs share a row and a {pivot} value; "
                         f"group them with --by (e.g. --by {','.join([*row_keys, pivot])})")
    columns = []
    for metric in metrics:
        for value in pivot_values:
            pick = [where.get((rid, value)) for rid in row_ids]

            def take(col: str, fill: float = math.nan) -> np.ndarray:
                data = stats[col].to_numpy()
                return np.array([data[i] if i is not None else fill for i in pick], dtype=float)

            text = key_text(pivot, value)
            label = text if len(metrics) == 1 else f"{metric} {text}"
            if grouped:
                columns.append(Column(label, metric, take(f"{metric}\tmean"), take(f"{metric}\tstd"),
                                      take(f"{metric}\tcount", 0).astype(int)))
            else:
                columns.append(Column(label, metric, take(value_column(metric))))
    left = pd.DataFrame(row_ids, columns=list(row_keys)) if row_keys else pd.DataFrame(index=range(len(row_ids)))
    return left, columns


def implied_keys(left: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Key columns whose value follows from the key columns before them, e.g. nuq_bits when every
    nuq run has 3 bits and sgd runs none: displays leave them out so the table shows what varies."""
    kept: list[str] = []
    hidden = []
    for key in keys:
        if kept and left.groupby(kept, dropna=False, sort=False)[key].nunique(dropna=False).max() <= 1:
            hidden.append(key)
        else:
            kept.append(key)
    return hidden


def mark_best(table: Table) -> set[tuple[int, int]]:
    """Cells holding the best value per column, or per row among one metric's columns when pivoted."""
    marks: set[tuple[int, int]] = set()

    def mark(cells: list[tuple[int, int]], values: list[float], metric: str) -> None:
        finite = [v for v in values if math.isfinite(v)]
        if len(set(finite)) < 2:  # nothing to tell apart (one value, or all equal like a config key)
            return
        best = max(finite) if higher_is_better(metric) else min(finite)
        marks.update(cell for cell, v in zip(cells, values) if v == best)

    if table.pivot is None:
        for j, col in enumerate(table.columns):
            mark([(i, j) for i in range(table.nrows)], list(col.mean), col.metric)
    else:
        for metric in _unique_in_order(c.metric for c in table.columns):
            js = [j for j, c in enumerate(table.columns) if c.metric == metric]
            for i in range(table.nrows):
                mark([(i, j) for j in js], [table.columns[j].mean[i] for j in js], metric)
    return marks


def build_table(records: Sequence[RunRecord], metrics: Sequence[str], at: At, keys: Sequence[str],
                by: Sequence[str] | None = None, pivot: str | None = None, mark: bool = True,
                title: str = "") -> Table:
    """The table of `records`: per run (by=None) or grouped by `by` keys; `keys` are the varying keys."""
    metrics = list(metrics)
    if at.kind == "best":
        check_metrics(records, [at.metric])
        logged = {tag for rec in records for tag in rec.metrics.series}
        if logged and at.metric not in logged:
            raise TableError(f"--at best:{at.metric}: {at.metric!r} has no logged history to find a best "
                             f"step in; logged: {', '.join(sorted(logged))}")
    check_metrics(records, metrics)
    grouped = by is not None
    by = list(by or [])
    if pivot is not None and grouped and pivot not in by:
        by.append(pivot)
    row_keys = list(keys) if not grouped else by
    if pivot is not None and pivot not in options.OPTIONS:
        raise TableError(f"--pivot {pivot!r} is not a config key; varying keys here: {', '.join(keys) or 'none'}")
    if pivot is not None and pivot not in row_keys:
        raise TableError(f"--pivot {pivot!r} is not a varying key; use one of: {', '.join(row_keys) or 'none'}")
    rows = run_rows(records, metrics, at, _unique_in_order([*keys, *by]))
    counts = dict(Counter(rec.state for rec in records))
    not_counted = [(r.run, r.state) for r in rows.itertuples() if not r.counted]
    if grouped:
        stats = _group_stats(rows, by, metrics)
    else:
        stats = rows
    if pivot is not None:
        left, columns = _pivot_columns(stats, [k for k in row_keys if k != pivot], pivot, metrics, grouped)
    elif grouped:
        left = stats[[*by, "n", "runs"]].reset_index(drop=True)
        columns = [Column(m, m, stats[f"{m}\tmean"].to_numpy(float), stats[f"{m}\tstd"].to_numpy(float),
                          stats[f"{m}\tcount"].to_numpy(int)) for m in metrics]
    else:
        left = rows[["run", *keys, "status", "step"]].reset_index(drop=True)
        columns = [Column(m, m, rows[value_column(m)].to_numpy(float)) for m in metrics]
    key_columns = [c for c in left.columns if c in row_keys]
    table = Table(left=left, columns=columns, at=at, grouped=grouped, pivot=pivot, counts=counts,
                  not_counted=not_counted, title=title, hidden=implied_keys(left, key_columns))
    if mark:
        table.best = mark_best(table)
    return table
