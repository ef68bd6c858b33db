"""`launch list`: the grid families, their runs and how many configs each expands to."""
from __future__ import annotations

import argparse

from launcher.display import format_table
from launcher.errors import UsageError
from launcher.grid import GridError, expand
from launcher.registry import families, get_run, load_family, runs_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", default=None, help="list only this family (a name or a grid .py file)")


def _count(grid: str, run: str) -> tuple[str, str]:
    """(configs, results folder) of a run, or ('error', message) when it cannot expand."""
    try:
        spec = get_run(grid, run)
        return str(len(expand(spec.grid))), spec.folder
    except (UsageError, GridError) as err:
        return "error", str(err)


def main(args: argparse.Namespace) -> int:
    names = [args.grid] if args.grid else families()
    rows, errors = [], 0
    for family in names:
        try:
            runs = list(runs_of(load_family(family)))
        except UsageError as err:
            if args.grid:
                raise
            rows.append([family, "-", "error", str(err)])
            errors += 1
            continue
        for run in runs:
            count, folder = _count(family, run)
            errors += count == "error"
            rows.append([family, run, count, folder])
    print(format_table(["grid", "run", "configs", "results folder"], rows))
    return 1 if errors else 0
