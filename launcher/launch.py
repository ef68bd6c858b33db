"""`launch --grid G --run R [--dry-run | --cluster NAME] [--json]`: select runs and hand them to an executor.

Before any executor acts, every selected run folder is checked (a different stored config is refused),
done runs are skipped and a table of the runs with their state is printed.
"""
from __future__ import annotations

import argparse
import json
import sys

from launcher.display import fit_last_column, format_table, terminal_width
from launcher.executors import get_executor, load_executors
from launcher.rundirs import check_runs, prepare_runs
from launcher.naming import grid_title, swept_keys
from launcher.selection import RunSpec, Selection, add_selection_arguments, select_runs
from launcher.state import DONE, RUNNING, run_state

DEFAULT_JOBS_DIR = "./jobs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    executors = load_executors()
    group = parser.add_argument_group("launching")
    group.add_argument("--dry-run", action="store_true",
                       help="show the runs and write job scripts into --jobs-dir; run and submit nothing")
    choices = "; ".join(f"{name}: {e.help}" for name, e in sorted(executors.items()))
    group.add_argument("--cluster", default="local", metavar="NAME", help=f"where to run (default local): {choices}")
    group.add_argument("--json", action="store_true",
                       help="print the selected runs as JSON ([{name, dir, config}]) and do nothing else")
    group.add_argument("--jobs-dir", default=DEFAULT_JOBS_DIR, metavar="DIR",
                       help=f"where job scripts are written (default {DEFAULT_JOBS_DIR})")
    group.add_argument("--prefix", default=None, help="job script name prefix (default <grid>_<run>)")
    for executor in executors.values():
        executor.add_arguments(group)


def runs_json(runs: list[RunSpec]) -> str:
    return json.dumps([{"name": r.name, "dir": str(r.dir), "config": r.config} for r in runs], indent=1)


def runs_table(selection: Selection, states: dict[int, str], width: int | None = None) -> str:
    """The runs with their state and the keys that take several values, fitted to the terminal: run
    names are cut from the left (their hash, the identity, stays); --json has everything."""
    swept = swept_keys(r.config for r in selection.runs)
    keys = [k for k in selection.varying_keys if k in swept]
    header = ["idx", "state"] + keys + ["name"]
    rows = [[r.index, states[r.index]] + [r.config.get(k) for k in keys] + [r.name] for r in selection.runs]
    rows, cut = fit_last_column(header, rows, width or terminal_width())
    note = "\n(names shortened to fit the terminal; full names and configs: --json or launch show --full)" if cut else ""
    return format_table(header, rows) + note


def main(args: argparse.Namespace) -> int:
    selection = select_runs(args)
    if args.json:
        print(runs_json(selection.runs))
        return 0
    executor = get_executor("dryrun" if args.dry_run else args.cluster)
    check_runs(selection.runs)
    states = {r.index: run_state(r.dir) for r in selection.runs}
    meta = selection.meta
    print(f"grid {grid_title(meta.grid, meta.run)}: {len(selection.runs)} of {meta.total} runs -> {meta.results_dir}")
    for warning in selection.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(runs_table(selection, states))
    skip = {DONE, RUNNING}
    todo = [r for r in selection.runs if states[r.index] not in skip]
    skipped = len(selection.runs) - len(todo)
    if skipped:
        print(f"skipping {skipped} runs that are done or running (never overwritten)")
    if not todo and not executor.selects_runs:
        print("nothing to launch")
        return 0
    if executor.writes_run_folders:
        todo, _ = prepare_runs(todo)
    sys.stdout.flush()
    return executor.launch(todo, selection, args)
