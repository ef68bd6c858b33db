"""`launch show --grid G --run R [--full] [--json]`: the expanded configs of the selected runs."""
from __future__ import annotations

import argparse
from dataclasses import replace

from launcher.launch import runs_json
from launcher.naming import format_value
from launcher.naming import grid_title
from launcher.selection import add_selection_arguments, select_runs
from launcher.state import run_state
from trainer.options import full_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print [{name, dir, config}] as JSON")
    parser.add_argument("--full", action="store_true",
                        help="every option of each run, defaults included (what the trainer runs with)")


def main(args: argparse.Namespace) -> int:
    selection = select_runs(args)
    if args.full:
        selection.runs = [replace(r, config=full_config(r.config, r.name)) for r in selection.runs]
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
