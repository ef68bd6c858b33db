"""`launch --grid G --run R [--dry-run | --cluster NAME] [--json]`: select runs and hand them to an executor.

Before any executor acts, every selected run folder is checked (a different stored config is refused),
done runs are skipped and a table of the runs with their state is printed.
"""
from __future__ import annotations

import argparse
import json
import sys

from launcher.display import fit_last_column, format_table, terminal_width
from launcher.errors import UsageError
from launcher.executors.base import get_executor, load_executors
from launcher.rundirs import check_runs, prepare_runs, unreadable_message
from launcher.naming import grid_title, swept_keys
from launcher.selection import RunSpec, Selection, add_selection_arguments, select_runs, unknown_arch_text
from launcher.state import DONE, RUNNING, run_state
from trainer.data_files import missing_data
from trainer.names import unknown_arch
from trainer.options import OPTIONS

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
    group.add_argument("--repair-config", action="store_true",
                       help="rewrite an unreadable config.yaml from the grid (keeps the checkpoint); without it "
                            "such runs are skipped with a message")
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
    note = ("\n(names shortened to fit the terminal; full names and configs: --json or launch show --full)"
            if cut else "")
    return format_table(header, rows) + note


SHARED_FS_NOTE = ("checked from this host: on SLURM the folder must also be on a filesystem the compute "
                  "nodes share")


def check_data(runs: list[RunSpec], cluster: str) -> None:
    """UsageError, before anything is submitted, when a run's model is not registered or its dataset files
    are missing (each folder checked once)."""
    problems = {}
    for run in runs:
        key = (run.config.get("dataset", "digits"), run.config.get("data", "./data"))
        if key not in problems:
            problems[key] = missing_data(run.config)
    missing = [(key, why) for key, why in problems.items() if why]
    archs = sorted({arch for r in runs if unknown_arch(arch := r.config.get("arch", OPTIONS["arch"].default))})
    if archs:
        raise UsageError(f"arch {', '.join(archs)}: {unknown_arch_text()}; nothing was launched")
    if missing:
        n = sum(1 for r in runs if problems[(r.config.get("dataset", "digits"), r.config.get("data", "./data"))])
        note = f" ({SHARED_FS_NOTE})" if cluster == "slurm" else ""
        raise UsageError(f"{n} runs need data that is not there, nothing was launched{note}: "
                         + " | ".join(why for _, why in missing))


def main(args: argparse.Namespace) -> int:
    selection = select_runs(args)
    if args.json:
        print(runs_json(selection.runs))
        return 0
    executor = get_executor("dryrun" if args.dry_run else args.cluster)
    unreadable = check_runs(selection.runs)
    if not args.repair_config:
        for run in selection.runs:
            if run.index in unreadable:
                print(f"launch: warning: {unreadable_message(run, unreadable[run.index])}", file=sys.stderr)
    states = {r.index: run_state(r.dir) for r in selection.runs}
    meta = selection.meta
    print(f"grid {grid_title(meta.grid, meta.run)}: {len(selection.runs)} of {meta.total} runs -> {meta.results_dir}")
    for warning in selection.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(runs_table(selection, states))
    skip = {DONE, RUNNING}
    todo = [r for r in selection.runs if states[r.index] not in skip
            and (args.repair_config or r.index not in unreadable)]
    skipped = len(selection.runs) - len(todo)
    if skipped:
        print(f"skipping {skipped} runs that are done, running or have an unreadable config.yaml")
    if not todo and not executor.selects_runs:
        print("nothing to launch")
        return 0
    if executor.checks_data:
        check_data(todo, executor.name)
    if executor.writes_run_folders:
        todo, _ = prepare_runs(todo, repair=args.repair_config)
    sys.stdout.flush()
    return executor.launch(todo, selection, args)
