"""`launch show --grid G --run R`: the expanded configs of the selected runs (or --json)."""
from __future__ import annotations

import argparse

from launcher.launch import runs_json
from launcher.naming import format_value
from launcher.naming import grid_title
from launcher.selection import add_selection_arguments, select_runs
from launcher.state import run_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print [{name, dir, config}] as JSON")


def main(args: argparse.Namespace) -> int:
    selection = select_runs(args)
    if args.json:
        print(runs_json(selection.runs))
        return 0
    meta = selection.meta
    print(f"grid {grid_title(meta.grid, meta.run)}: {len(selection.runs)} of {meta.total} configs; "
          f"varying: {', '.join(selection.varying_keys) or '(none)'}")
    for run in selection.runs:
        print(f"\n[{run.index}] {run.name}  ({run_state(run.dir)})\n  dir: {run.dir}")
        for key, value in run.config.items():
            print(f"  {key}: {format_value(value)}")
    return 0
