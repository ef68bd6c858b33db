"""Aggregate a grid's runs into a results table (terminal, Markdown, CSV, LaTeX or JSON).

`launch aggregate --grid G --run R` reads every selected run folder, takes each run's metrics at
`--at` (final, best:<metric>, iter=N), groups seeds (mean ± std, n) and prints the table with a caption
that counts and names the runs that are missing, failed or unfinished (never averaged in).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

from launcher.errors import UsageError
from launcher.stages import stage_of, upstream_dir
from launcher.results.table import Table, build_table, parse_by, title_of
from launcher.results.table_points import (DEFAULT_METRICS, RunRecord, TableError, available_metrics, default_metrics,
                                   load_records, parse_at)
from launcher.results.table_format import FORMATS, format_for_path, render
from trainer import runfiles


def make_table(runs: Iterable[tuple[str, str | Path, dict]], state_of: Callable[[Path], str],
               varying: Sequence[str], metrics: Sequence[str] | None = None, at: str = "final",
               by: str | None = None, pivot: str | None = None, mark: bool = True,
               title: str = "", upstream: Sequence[str] = ()) -> tuple[Table, list[str]]:
    """The table of runs (name, dir, config) and the warnings met reading them; TableError on bad input.

    `by` is the --by text (None: group seeds when they vary); `varying` the keys that vary in the grid;
    `upstream` metrics are also shown as each run's upstream run had them (see add_upstream_metrics).
    """
    point = parse_at(at)
    groups = parse_by(by, varying)
    runs = list(runs)
    best = [point.metric] if point.metric else []
    # read only the tags the table needs: the asked metrics, or the default candidates first
    wanted = list(metrics) if metrics is not None else [m for names in DEFAULT_METRICS for m in names]
    records = load_records(runs, state_of, [*wanted, *best])
    if metrics is None and not set(available_metrics(records)) & set(wanted):
        records = load_records(runs, state_of)  # none of the usual metrics: show whatever was logged
    chosen = list(metrics) if metrics is not None else default_metrics(records)
    if upstream:
        if point.kind != "final":
            raise TableError(f"--upstream shows the upstream runs' final values; use it with --at final, not {at}")
        chosen = add_upstream_metrics(records, upstream, chosen)
    table = build_table(records, chosen, point, list(varying), groups, pivot, mark, title)
    return table, [w for rec in records for w in rec.metrics.warnings]


def add_upstream_metrics(records: Sequence[RunRecord], metrics: Sequence[str], chosen: list[str]) -> list[str]:
    """Give each record of a later stage the final `metrics` of the run it started from, as
    '<upstream stage>.<metric>' values; return `chosen` with each such column just before its metric."""
    names: dict[str, dict[str, None]] = {m: {} for m in metrics}  # metric -> its upstream column names
    for rec in records:
        up = upstream_dir(rec.dir, rec.config)
        if up is None:
            continue
        final = (runfiles.read_json(up / runfiles.RESULTS) or {}).get("final") or {}
        stage = stage_of(_config_of(up)) or "upstream"
        if rec.metrics.results is None:
            rec.metrics.results = {}
        mine = rec.metrics.results.setdefault("final", {})
        for metric in metrics:
            names[metric][f"{stage}.{metric}"] = None
            if isinstance(final.get(metric), (int, float)):
                mine[f"{stage}.{metric}"] = final[metric]
    if not any(names.values()):
        raise TableError("--upstream: none of the selected runs starts from another run (select a later stage "
                         "with --stage)")
    out = list(chosen)
    for metric, columns in names.items():
        if metric not in out:
            out.append(metric)
        at = out.index(metric)
        out[at:at] = [c for c in columns if c not in out]
    return out


def _config_of(run_dir: Path) -> dict:
    try:
        return runfiles.read_config(run_dir / runfiles.CONFIG)
    except ValueError:  # an unreadable upstream config only loses the stage name in the column title
        return {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.selection import add_selection_arguments, positive_int

    add_selection_arguments(parser)
    parser.add_argument("--at", default="final", help="final (default) | best:<metric> (other metrics at "
                        "that metric's best step) | iter=<N>")
    parser.add_argument("--metric", default=None, metavar="M1,M2",
                        help="columns: logged tags, results.json numbers (wall_s...) or config keys "
                             "(default: Vacc, est_var and bits per coordinate)")
    parser.add_argument("--by", default=None, metavar="K1,K2",
                        help="group by these keys, mean ± std and n over the rest (default: every varying "
                             "key but seed; 'run': one row per run; 'all': one row)")
    parser.add_argument("--upstream", default=None, metavar="M1,M2",
                        help="also show these metrics of the run each run started from (its upstream stage's "
                             "final values), next to the run's own: e.g. --stage ft --upstream Vacc")
    parser.add_argument("--pivot", default=None, metavar="KEY", help="spread KEY's values across columns")
    parser.add_argument("--format", default=None, choices=sorted(FORMATS),
                        help="output format (default: from --out's suffix, else term)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the table to FILE instead of stdout")
    parser.add_argument("--digits", type=positive_int, default=4, help="significant digits (default 4)")
    parser.add_argument("--no-mark", action="store_true", help="do not mark the best value per column")


def names_of(text: str | None) -> list[str]:
    """The names of a comma list option ('Vacc, est_var' -> ['Vacc', 'est_var']; None -> [])."""
    return [m.strip() for m in (text or "").split(",") if m.strip()]


def main(args: argparse.Namespace) -> int:
    from launcher.elsewhere import require_results_dir, unmatched_note
    from launcher.selection import select_runs
    from launcher.state import run_state

    selection = select_runs(args)
    require_results_dir(selection)
    metrics = None if args.metric is None else names_of(args.metric)
    title = title_of(selection.meta.grid, selection.meta.run)
    try:
        table, warnings = make_table(((r.name, r.dir, r.config) for r in selection.runs), run_state,
                                     selection.varying_keys, metrics, args.at, args.by, args.pivot,
                                     not args.no_mark, title, names_of(args.upstream))
    except TableError as err:
        raise UsageError(str(err)) from None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    note = unmatched_note(selection)
    if note:
        print(note, file=sys.stderr)
    fmt = args.format or (format_for_path(args.out) if args.out else "term")
    text = render(table, fmt, args.digits)
    if not FORMATS[fmt].holds_caption:
        print("\n".join(table.caption_lines()), file=sys.stderr)
    if args.out:
        runfiles.atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
