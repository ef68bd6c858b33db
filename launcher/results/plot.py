"""Plot a grid's runs: curves (a line per group, a band over seeds), bars, or a metric against another.

The kinds (--kind) are the KINDS registry: line and bar here, xy in launcher/results/plot_xy.py.

Figures are built with matplotlib's object API (no pyplot, no display), so they render headless on a
cluster login node, and are written as PNG and PDF. Like the table, only done runs are drawn; the others
are listed, never averaged in.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from launcher.errors import UsageError
from launcher.results.aggregate import names_of
from launcher.results.metrics_io import Series
from launcher.results.plot_style import decorate, file_stem, is_log_metric, metric_label, save_figure
from launcher.results.plot_xy import xy_figures
from launcher.results.table import implied_keys, parse_by, title_of
from launcher.results.table_points import (DONE, At, RunRecord, TableError, available_metrics, default_metrics,
                                   load_records, parse_at, point_values)
from trainer.options import method_label


@dataclass(frozen=True)
class XAxis:
    label: str
    values: Callable[[Series, float], np.ndarray]  # (series, run start wall time) -> x


X_AXES: dict[str, XAxis] = {
    "niters": XAxis("iteration", lambda s, start: s.steps.astype(float)),
    "wall": XAxis("wall-clock time (s)", lambda s, start: s.walls - start),
}


def group_runs(records: Sequence[RunRecord], by: Sequence[str] | None) -> dict[tuple, list[RunRecord]]:
    """Runs by their values of `by` keys, in grid order (by=None: every run its own group)."""
    groups: dict[tuple, list[RunRecord]] = {}
    for rec in records:
        key = (rec.name,) if by is None else tuple(rec.option(k) for k in by)
        groups.setdefault(key, []).append(rec)
    return groups


METHOD_KEYS = ("g_estim", "nuq_method")
def group_labels(by: Sequence[str] | None, keys: Sequence[tuple],
                 configs: Sequence[dict] | None = None) -> list[str]:
    """Legend labels of groups, as a researcher names them: the method ('SGD', 'QSGD', 'AMQ-N', from a
    run's config when given, else from the keys) when `by` holds g_estim or nuq_method, then the other
    keys that tell groups apart (keys implied by earlier ones are left out, as in tables): a lone key
    as its value, several as 'key=value'; unset keys skipped."""
    if by is None:
        return [str(key[0]) for key in keys]
    if not by:
        return ["all runs" for _ in keys]
    hidden = set(implied_keys(pd.DataFrame(list(keys), columns=list(by)), by)) if len(by) > 1 else set()
    others = [i for i, k in enumerate(by) if k not in hidden and k not in METHOD_KEYS]
    with_method = any(k in METHOD_KEYS for k in by)
    labels = []
    for n, key in enumerate(keys):
        parts = []
        if with_method:
            given = {k: v for k, v in zip(by, key) if v is not None}
            # without configs, a set nuq_method means a quantized run, an unset one an SGD run
            config = configs[n] if configs else {"g_estim": "nuq" if "nuq_method" in given else "sgd", **given}
            parts.append(method_label(config))
        shown = [i for i in others if key[i] is not None]
        if len(others) == 1 and not with_method:
            parts += [str(key[i]) for i in shown] or [f"({by[others[0]]} unset)"]
        else:
            parts += [f"{by[i]}={key[i]}" for i in shown]
        labels.append(", ".join(parts))
    return labels


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (NaNs skipped), so curves keep their first points."""
    if window <= 1:
        return values
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, std, n) over curves put on the union of their x values (linear interpolation inside
    each curve's own range, nothing outside it); std is the sample std (n-1), NaN where n < 2."""
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    ys = np.full((len(curves), len(grid)), np.nan)
    for k, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[k, inside] = np.interp(grid[inside], x, y)
    finite = np.isfinite(ys)
    n = finite.sum(axis=0)
    total = np.where(finite, ys, 0.0).sum(axis=0)
    mean = np.divide(total, n, out=np.full(len(grid), np.nan), where=n > 0)
    sq = np.where(finite, (ys - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(np.divide(sq, n - 1, out=np.full(len(grid), np.nan), where=n > 1))
    return grid, mean, std, n


def _curve(rec: RunRecord, metric: str, x_axis: XAxis, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, smoothed y) of one run's metric, sorted by x; None when it has no point with a finite x."""
    series = rec.metrics.series.get(metric)
    if series is None or not len(series):
        return None
    walls = [s.walls[np.isfinite(s.walls)] for s in rec.metrics.series.values()]
    firsts = [w.min() for w in walls if len(w)]
    x = x_axis.values(series, min(firsts) if firsts else np.nan)
    y = smooth(series.values, window)
    keep = np.isfinite(x)
    if not keep.any():
        return None
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order]


def log_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(x, geometric mean, low, high, n): `band` of log10(y), back-transformed, so a band over seeds of
    a positive quantity stays positive on a log axis (non-positive values are left out)."""
    logged = [(x, np.log10(np.where(y > 0, y, np.nan))) for x, y in curves]
    grid, mean, std, n = band(logged)
    return grid, 10 ** mean, 10 ** (mean - std), 10 ** (mean + std), n


def plot_lines(records: Sequence[RunRecord], metric: str, by: Sequence[str] | None, x: str = "niters",
               window: int = 1, logy: bool = False, title: str = "") -> Figure:
    """One line per group of done runs (mean over its runs) with a shaded mean ± std band; variances
    (and --logy) on a log axis with the geometric mean and a band of ± one std in log space."""
    x_axis = X_AXES[x]
    log = logy or is_log_metric(metric)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    groups = group_runs([r for r in records if r.state == DONE], by)
    configs = [runs[0].config for runs in groups.values()]
    for label, runs in zip(group_labels(by, list(groups), configs), groups.values()):
        curves = [c for c in (_curve(r, metric, x_axis, window) for r in runs) if c is not None]
        if not curves:
            continue
        if log:
            grid, mean, low, high, n = log_band(curves)
        else:
            grid, mean, std, n = band(curves)
            low, high = mean - std, mean + std
        label += f" (n={len(curves)})" if len(curves) > 1 else ""
        (line,) = ax.plot(grid, mean, label=label, linewidth=1.5)
        if (n > 1).any():
            ax.fill_between(grid, low, high, where=n > 1, color=line.get_color(), alpha=0.2, linewidth=0)
    band_note = "band: ±1 std over seeds" + (" in log space" if log else "")
    decorate(fig, ax, x_axis.label, metric_label(metric), log, title, legend_title=band_note)
    return fig


def plot_bars(records: Sequence[RunRecord], metric: str, by: Sequence[str] | None, at: At = At("final"),
              logy: bool = False, title: str = "") -> Figure:
    """One bar per group: mean of its counted runs at `at`, error bar one sample std (for variances and
    --logy: geometric mean on a log axis, the error bar one std in log space)."""
    log = logy or is_log_metric(metric)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    labels, means, lows, highs = [], [], [], []
    groups = group_runs(records, by)
    configs = [runs[0].config for runs in groups.values()]
    for label, runs in zip(group_labels(by, list(groups), configs), groups.values()):
        values = np.array([v[0] for why, _, v in (point_values(r, [metric], at) for r in runs) if why is None])
        values = values[np.isfinite(values) & ((values > 0) if log else True)]
        if not len(values):
            continue
        labels.append(label + (f"\n(n={len(values)})" if len(values) > 1 else ""))
        data = np.log10(values) if log else values
        mean, std = data.mean(), (data.std(ddof=1) if len(data) > 1 else 0.0)
        centre = 10 ** mean if log else mean
        means.append(centre)
        lows.append(centre - (10 ** (mean - std) if log else mean - std))
        highs.append((10 ** (mean + std) if log else mean + std) - centre)
    positions = np.arange(len(labels))
    ax.bar(positions, means, yerr=[lows, highs], capsize=4, color=[f"C{i % 10}" for i in positions])
    ax.set_xticks(positions, labels)
    decorate(fig, ax, "", f"{metric_label(metric)}, {at}", log, title, legend=False)
    return fig


# ---------------------------------------------------------------------------------------------- CLI
Figures = tuple[list[tuple[str, Figure]], str]  # (file stem, figure) pairs and the line printed after them


def _metrics(asked: list[str] | None, series_only: bool, records: Sequence[RunRecord],
             read_all: Callable[[], list[RunRecord]]) -> list[str]:
    """The metrics to plot: `asked`, checked against what the runs logged (`series_only`: as curves; else
    also results.json values), else the table's defaults. `read_all` re-reads every tag, only to list them
    when an asked one is missing."""
    def usable(recs: Sequence[RunRecord]) -> set[str]:
        logged = {tag for r in recs for tag in r.metrics.series}
        return logged if series_only else logged | set(available_metrics(recs))

    if asked is None:
        chosen = [m for m in default_metrics(records) if m in usable(records)]
        if not chosen:
            raise UsageError("no run has logged metrics yet; nothing to plot")
        return chosen
    missing = [m for m in asked if m not in usable(records)]
    if missing:
        have = usable(read_all())
        raise UsageError(f"--metric {missing[0]!r} was not logged by any run; logged: "
                         f"{', '.join(sorted(have)) or 'nothing yet'}")
    return asked


def _line(records: Sequence[RunRecord], metric: str, by: list[str] | None, at: At,
          args: argparse.Namespace, title: str) -> Figure:
    x = args.x or "niters"
    if x not in X_AXES:
        raise UsageError(f"--x {x!r} is not an x axis of --kind line; use {' or '.join(sorted(X_AXES))} "
                         "(or --kind xy to put a metric on x)")
    return plot_lines(records, metric, by, x, args.smooth, args.logy, title)


def _bar(records: Sequence[RunRecord], metric: str, by: list[str] | None, at: At,
         args: argparse.Namespace, title: str) -> Figure:
    return plot_bars(records, metric, by, at, args.logy, title)


def _per_group(draw: Callable[..., Figure], series_only: bool, kind: str) -> Callable[..., Figures]:
    """A kind drawing each metric from the runs' records (line, bar): `draw(records, metric, by, at, args, title)`."""
    def figures(args: argparse.Namespace, selection, title: str) -> Figures:
        from launcher.state import run_state

        try:
            at = parse_at(args.at)
            by = parse_by(args.by, selection.varying_keys)
        except TableError as err:
            raise UsageError(str(err)) from None
        runs = [(r.name, r.dir, r.config) for r in selection.runs]
        asked = None if args.metric is None else names_of(args.metric)
        records = load_records(runs, run_state,
                               None if asked is None else [*asked, *([at.metric] if at.metric else [])])
        for rec in records:
            for warning in rec.metrics.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        metrics = _metrics(asked, series_only, records, lambda: load_records(runs, run_state))
        out = [(file_stem(selection.meta.run, m, kind), draw(records, m, by, at, args, title)) for m in metrics]
        not_done = [r for r in records if r.state != DONE]
        note = (f"{len(records) - len(not_done)} of {len(records)} runs drawn (done runs only)"
                + (": not drawn " + ", ".join(f"{r.name} ({r.state})" for r in not_done[:12])
                   + (" ..." if len(not_done) > 12 else "") if not_done else ""))
        return out, note
    return figures


@dataclass(frozen=True)
class PlotKind:
    """A --kind: its figures for the parsed arguments, the selection and the title, and its help."""

    figures: Callable[[argparse.Namespace, object, str], Figures]
    help: str
    upstream: bool = False  # takes --upstream


KINDS: dict[str, PlotKind] = {
    "line": PlotKind(_per_group(_line, True, "line"), "curves over --x (niters or wall), a band over seeds"),
    "bar": PlotKind(_per_group(_bar, False, "bar"), "one bar per group at --at"),
    "xy": PlotKind(xy_figures, "one point per row of `launch aggregate`'s table: --metric at --at against "
                               "--x (a metric), e.g. accuracy against compression across an alpha sweep", upstream=True),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.selection import add_selection_arguments, positive_int

    add_selection_arguments(parser)
    parser.add_argument("--metric", default=None, metavar="M1,M2",
                        help="metrics to plot, one figure each (default: Vacc and est_var when logged)")
    parser.add_argument("--x", default=None, metavar="AXIS",
                        help=f"x axis: {' | '.join(sorted(X_AXES))} for --kind line (default niters); a metric "
                             "(or config key) for --kind xy")
    parser.add_argument("--by", default=None, metavar="K1,K2",
                        help="one line (xy: point) per value of these keys, band (xy: error bars) over the rest "
                             "(default: every varying key but seed; 'run': one per run; 'all': one)")
    parser.add_argument("--smooth", type=positive_int, default=1, metavar="K",
                        help="trailing moving average over K points before averaging (default 1: none)")
    parser.add_argument("--kind", default="line", choices=list(KINDS),
                        help="; ".join(f"{name}: {kind.help}" for name, kind in KINDS.items()))
    parser.add_argument("--at", default="final", help="for --kind bar and xy: final | best:<metric> | iter=<N>")
    parser.add_argument("--upstream", default=None, metavar="M1,M2",
                        help="for --kind xy: also draw these metrics as each run's upstream run had them (as "
                             "`launch aggregate --upstream`), e.g. --stage finetune --upstream Vacc")
    parser.add_argument("--logy", action="store_true", help="log-scale y axis (e.g. for variances)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for the PNG and PDF files (default <root>/<results folder>/plots)")


def main(args: argparse.Namespace) -> int:
    from launcher.elsewhere import require_results_dir
    from launcher.selection import select_runs

    kind = KINDS[args.kind]
    if args.upstream and not kind.upstream:
        takes = ", ".join(name for name, k in KINDS.items() if k.upstream)
        raise UsageError(f"--upstream is not an option of --kind {args.kind}; use --kind {takes}")
    selection = select_runs(args)
    require_results_dir(selection)
    figures, note = kind.figures(args, selection, title_of(selection.meta.grid, selection.meta.run))
    out_dir = Path(args.out) if args.out else selection.meta.results_dir / "plots"
    for stem, fig in figures:
        for path in save_figure(fig, out_dir, stem):
            print(path)
    print(note)
    return 0
