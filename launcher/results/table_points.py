"""What each run contributes to a table: the point of its history (--at) and its metric values there.

Only runs that are *done* give values (never a failed or unfinished one); each other run carries the
reason it does not count, so tables and plots can show and count it. Import-light: no torch.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from launcher.results.metrics_io import RESULT_FIELDS, RunMetrics, Series, read_run_metrics
from trainer import options
from trainer.runfiles import DONE

# Default table columns: the first name of each tuple that some run has (a logged tag or a config key).
DEFAULT_METRICS: tuple[tuple[str, ...], ...] = (("Vacc",), ("est_var",), ("bits", "nuq_bits"))
# Metrics whose name ends with one of these are better when higher; all others (losses, variances) lower.
HIGHER_IS_BETTER_SUFFIXES = ("acc", "accuracy", "snr")


class TableError(ValueError):
    """Bad table request (unknown metric, key or --at); the message names the value and the choices."""


def higher_is_better(metric: str) -> bool:
    return metric.lower().endswith(HIGHER_IS_BETTER_SUFFIXES)


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
