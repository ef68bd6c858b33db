"""Build a results table from runs: metric values at a chosen point, grouped over seeds, pivoted.

Only runs that are *done* give values (or, for `iter=N`, runs that got past N): failed, unfinished and
missing runs still get a row (per-run tables) or are counted in `n` and the caption (grouped tables), so a
table never silently drops or averages in a run that did not finish. Import-light: no torch.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from launcher.metrics_io import RESULT_FIELDS, RunMetrics, Series, read_run_metrics
from trainer import options

DONE = "done"
# Default table columns: the first name of each tuple that some run has (a logged tag or a config key).
DEFAULT_METRICS: tuple[tuple[str, ...], ...] = (("Vacc",), ("est_var",), ("bits", "nuq_bits"))
# Keys a default table averages over (one row per setting, mean ± std over seeds).
SEED_KEYS = ("seed",)
# Metrics whose name ends with one of these are better when higher; all others (losses, variances) lower.
HIGHER_IS_BETTER_SUFFIXES = ("acc", "accuracy", "snr")


class TableError(ValueError):
    """Bad table request (unknown metric, key or --at); the message names the value and the choices."""


def title_of(grid: str, run: str) -> str:
    """'family.run' for captions and figure titles ('nuq.digits'; a grid file shows its stem)."""
    return f"{Path(grid).stem if grid.endswith('.py') else grid}.{run}"


def higher_is_better(metric: str) -> bool:
    return metric.lower().endswith(HIGHER_IS_BETTER_SUFFIXES)


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


# ---------------------------------------------------------------------------------------------- --at
@dataclass(frozen=True)
class At:
    """Where in a run's history values are read: its final values, the best step of a metric, or a step."""

    kind: str                  # "final" | "best" | "iter"
    metric: str | None = None  # for "best"
    step: int | None = None    # for "iter"

    def __str__(self) -> str:
        return {"final": "final", "best": f"best:{self.metric}", "iter": f"iter={self.step}"}[self.kind]


def _parse_final(rest: str) -> At:
    if rest:
        raise TableError(f"--at final takes no argument, got 'final{rest}'")
    return At("final")


def _parse_best(rest: str) -> At:
    if not rest.startswith(":") or not rest[1:]:
        raise TableError("--at best needs a metric, e.g. best:Vacc")
    return At("best", metric=rest[1:])


def _parse_iter(rest: str) -> At:
    try:
        step = int(rest[1:]) if rest.startswith("=") else -1
    except ValueError:
        step = -1
    if step < 0:
        raise TableError(f"--at iter needs a non-negative step, e.g. iter=2000, got 'iter{rest}'")
    return At("iter", step=step)


AT_PARSERS: dict[str, Callable[[str], At]] = {"final": _parse_final, "best": _parse_best, "iter": _parse_iter}


def parse_at(text: str) -> At:
    """'final' | 'best:<metric>' | 'iter=<N>' -> At."""
    name = re.split(r"[:=]", text, maxsplit=1)[0]
    parser = AT_PARSERS.get(name)
    if parser is None:
        raise TableError(f"unknown --at {text!r}; use final, best:<metric> or iter=<N>")
    return parser(text[len(name):])


# ---------------------------------------------------------------------------------------------- runs
@dataclass
class RunRecord:
    """A run of the selection with what was read from its folder."""

    name: str
    dir: Path
    config: dict[str, Any]
    state: str
    metrics: RunMetrics

    def option(self, key: str) -> Any:
        """The run's value of config key `key` as the grid set it (None when it did not: an sgd run has
        no nuq_method, and showing the schema default there would be misleading)."""
        return hashable(self.config.get(key))


def load_records(runs: Iterable[tuple[str, str | Path, dict]], state_of: Callable[[Path], str],
                 tags: Sequence[str] | None = None) -> list[RunRecord]:
    """Read every run folder (only `tags` when given); `state_of(dir)` is launcher.state.run_state."""
    records = []
    for name, run_dir, config in runs:
        run_dir = Path(run_dir)
        records.append(RunRecord(name, run_dir, dict(config), state_of(run_dir),
                                 read_run_metrics(run_dir, tags)))
    return records


def available_metrics(records: Sequence[RunRecord]) -> list[str]:
    """Names usable as --metric: logged tags, results.json numbers (wall_s...), then option keys."""
    tags: dict[str, None] = {}
    for rec in records:
        tags.update(dict.fromkeys(sorted(rec.metrics.series)))
        results = rec.metrics.results or {}
        tags.update(dict.fromkeys(sorted((results.get("final") or {}))))
        tags.update(dict.fromkeys(f for f in RESULT_FIELDS if f in results))
    return list(tags)


def default_metrics(records: Sequence[RunRecord]) -> list[str]:
    """DEFAULT_METRICS present in these runs; every logged metric when none of them is."""
    have = set(available_metrics(records))
    set_keys = {key for rec in records for key in rec.config}
    chosen = []
    for alternatives in DEFAULT_METRICS:
        for name in alternatives:
            if name in have or name in set_keys:
                chosen.append(name)
                break
    if not have:  # nothing logged yet: show the usual columns, all missing
        return [alternatives[0] for alternatives in DEFAULT_METRICS]
    if not any(name in have for name in chosen):
        return sorted(have)
    return chosen


def check_metrics(records: Sequence[RunRecord], metrics: Sequence[str]) -> None:
    have = set(available_metrics(records))
    if not have:  # no run has logged anything: nothing to check names against, every value is missing
        return
    for name in metrics:
        if name not in have and name not in options.OPTIONS:
            shown = ", ".join(sorted(have)) or "none (no run has logged anything yet)"
            raise TableError(f"unknown metric {name!r}; the runs have: {shown} (or any config key)")


def _as_of(series: Series, step: int) -> float:
    """The value at the latest logged step <= step (NaN before the first point)."""
    i = int(np.searchsorted(series.steps, step, side="right")) - 1
    return float(series.values[i]) if i >= 0 else math.nan


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _best_step(rec: RunRecord, metric: str) -> int | None:
    series = rec.metrics.series.get(metric)
    if series is None or not np.isfinite(series.values).any():
        return None
    pick = np.nanargmax if higher_is_better(metric) else np.nanargmin  # first of equal bests
    return int(series.steps[pick(series.values)])


def _value(rec: RunRecord, metric: str, at: At, step: int | None) -> float:
    """One metric of a counted run: from its series; else results.json (its numbers such as wall_s hold
    for any point, its final values only for --at final); else the run's config value; else NaN."""
    series = rec.metrics.series.get(metric)
    if series is not None and len(series):
        return float(series.values[-1]) if at.kind == "final" else _as_of(series, step)
    results = rec.metrics.results or {}
    if metric in RESULT_FIELDS and metric in results:
        return _number(results[metric])
    final = results.get("final") or {}
    if at.kind == "final" and metric in final:
        return _number(final[metric])
    if metric in options.OPTIONS:
        return _number(rec.option(metric))  # a config key as a column (e.g. nuq_bits)
    return math.nan


def point_values(rec: RunRecord, metrics: Sequence[str], at: At) -> tuple[str | None, int | None, list[float]]:
    """(why_not_counted, step, values) of one run at `at`.

    Only done runs count (never a failed or unfinished one); for iter=N the run must also have reached N.
    A run that does not count gets NaN values and the reason (its state) instead of None.
    """
    last = rec.metrics.last_step
    if rec.state != DONE:
        return rec.state, None, [math.nan] * len(metrics)
    if at.kind == "iter" and (last is None or last < at.step):
        why = "done, nothing logged" if last is None else f"done before iter={at.step}"
        return why, None, [math.nan] * len(metrics)
    if at.kind == "best":
        step = _best_step(rec, at.metric)
        if step is None:  # done, but never logged a finite value of the metric: counted, no values
            return None, None, [math.nan] * len(metrics)
    else:
        step = last if at.kind == "final" else at.step
    return None, step, [_value(rec, m, at, step) for m in metrics]


def status_text(rec: RunRecord) -> str:
    """The run's state, with its progress when it did not finish (e.g. 'running 1200/5000')."""
    status = rec.metrics.status or {}
    if rec.state != DONE and isinstance(status.get("iteration"), int) and status.get("niters"):
        return f"{rec.state} {status['iteration']}/{status['niters']}"
    return rec.state


def hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return str(value)
    return value


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

            label = str(value) if len(metrics) == 1 else f"{metric} {value}"
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
