"""`launch plot --kind xy`: one point per row of `launch aggregate`'s table, one metric against another
across runs (e.g. accuracy against compression over an alpha sweep), each point labelled by its keys.

The rows and their values come from launcher.results.aggregate.make_table, so --by, --at and --upstream
mean what they mean for the table (seeds grouped into mean ± std, only done runs counted); this module
only draws them: a line through the rows in the order of x, error bars of one std where a row groups
several runs, and a second line per --upstream metric (its values before this stage, at the same x).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from launcher.errors import UsageError
from launcher.results.aggregate import make_table, names_of
from launcher.results.plot_style import decorate, file_stem, is_log_metric, metric_label
from launcher.results.table import MISSING, Column, Table, key_text
from launcher.results.table_points import DEFAULT_METRICS, TableError
from launcher.stages import stage_of

NOT_KEYS = ("run", "status", "step", "n", "runs")  # the table's left columns that are not config keys


def row_labels(table: Table) -> list[str]:
    """Each row as its shown keys ('bsq_alpha=3.0', several joined by ', '), the run name when no key
    varies, and the number of runs of a grouped row with more than one."""
    keys = [c for c in table.left.columns if c not in NOT_KEYS and c not in table.hidden]
    labels = []
    for row in table.left.to_dict("records"):
        shown = [f"{k}={key_text(k, row[k])}" for k in keys if key_text(k, row[k]) != MISSING]
        text = ", ".join(shown) or str(row.get("run", "all runs"))
        n = int(row["n"]) if table.grouped else 1
        labels.append(text + (f" (n={n})" if n > 1 else ""))
    return labels


def _column(table: Table, metric: str) -> Column:
    return next(c for c in table.columns if c.metric == metric)


def _spread(col: Column) -> np.ndarray | None:
    return None if col.std is None else np.nan_to_num(col.std, nan=0.0)


def plot_xy(table: Table, x: str, series: Sequence[tuple[str, str]], ylabel: str, logy: bool = False,
            title: str = "") -> Figure:
    """A line per (column metric, legend label) of `series` through the table's rows with values of both
    x and that metric, sorted by x, each point annotated with its row's keys (error bars: one std)."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs, labels = _column(table, x), row_labels(table)
    for n, (metric, label) in enumerate(series):
        ys = _column(table, metric)
        keep = np.flatnonzero(np.isfinite(xs.mean) & np.isfinite(ys.mean))
        keep = keep[np.argsort(xs.mean[keep], kind="stable")]
        xerr, yerr = _spread(xs), _spread(ys)
        bars = ax.errorbar(xs.mean[keep], ys.mean[keep], xerr=None if xerr is None else xerr[keep],
                           yerr=None if yerr is None else yerr[keep], marker="o", capsize=3, label=label)
        for i in keep if n == 0 else ():  # the keys once, at the first line's points
            ax.annotate(labels[i], (xs.mean[i], ys.mean[i]), textcoords="offset points", xytext=(4, 4),
                        fontsize="x-small", color=bars.lines[0].get_color())
    decorate(fig, ax, metric_label(x), ylabel, logy, title, legend=len(series) > 1)
    return fig


def _check_values(table: Table, names: Sequence[str], flag: dict[str, str]) -> None:
    """A one-line error for a column no counted row has a value of (a config key no run sets, an
    --upstream metric the upstream runs lack, a metric only unfinished runs logged)."""
    for name in names:
        if not np.isfinite(_column(table, name).mean).any():
            raise UsageError(f"{flag.get(name, '--upstream')} {name!r}: no done run has a value of it at "
                             f"{table.at}; `launch aggregate` with the same selection lists what the runs have")


def xy_figures(args: argparse.Namespace, selection, title: str) -> tuple[list[tuple[str, Figure]], str]:
    """The --kind xy figures of a selection: one per --metric, against --x."""
    from launcher.state import run_state

    if not args.x:
        raise UsageError("--kind xy needs --x <metric> for the x axis, e.g. --x bsq/compression")
    x, ys, upstream = args.x, names_of(args.metric) or [DEFAULT_METRICS[0][0]], names_of(args.upstream)
    asked = list(dict.fromkeys([x, *ys]))
    try:
        table, warnings = make_table(((r.name, r.dir, r.config) for r in selection.runs), run_state,
                                     selection.varying_keys, asked, args.at, args.by, None, False, title, upstream)
    except TableError as err:
        raise UsageError(f"--kind xy: {err}") from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    extra = [c.metric for c in table.columns if c.metric not in asked]  # '<upstream stage>.<metric>'
    _check_values(table, [*asked, *extra], {x: "--x", **{y: "--metric" for y in ys}})
    stages = {stage_of(r.config) for r in selection.runs}
    stage = next(iter(stages)) if len(stages) == 1 else None
    own = f"{stage}." if stage and extra else ""  # 'finetune.Vacc' beside 'bsq.Vacc'; else just 'Vacc'
    figures = []
    for y in ys:
        series = [(y, own + y)] + [(m, m) for m in extra if y in upstream and m.endswith(f".{y}")]
        fig = plot_xy(table, x, series, metric_label(y), args.logy or is_log_metric(y), title)
        figures.append((file_stem(selection.meta.run, f"{y}_vs_{x}", "xy"), fig))
    drawn = int(np.sum(np.isfinite(_column(table, x).mean)))
    return figures, "\n".join([f"{drawn} of {table.nrows} rows drawn", *table.caption_lines()])

