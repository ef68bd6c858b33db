"""`launch list`: the grid families, their runs, how many configs each expands to, and what each is.

A run's description is the first line of its function's docstring (launcher.registry.describe)."""
from __future__ import annotations

import argparse
from types import ModuleType

from launcher.display import format_table
from launcher.errors import UsageError
from launcher.grid import GridError, expand
from launcher.registry import call_run, describe, families, load_family, runs_of
from trainer.options import ConfigError, validate_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", default=None, help="list only this family (a name or a grid .py file)")


def _count(module: ModuleType, grid: str, run: str) -> tuple[str, str]:
    """(configs, results folder) of a run, or ('error', message) when it cannot expand."""
    try:
        spec = call_run(module, grid, run)
        configs = expand(spec.grid)
        for i, config in enumerate(configs):
            validate_config(config, f"{grid}.{run}[{i}]")
        return str(len(configs)), spec.folder
    except (UsageError, GridError, ConfigError) as err:
        return "error", str(err)


def main(args: argparse.Namespace) -> int:
    names = [args.grid] if args.grid else families()
    rows, errors = [], 0
    for family in names:
        try:
            module = load_family(family)
        except UsageError as err:
            if args.grid:
                raise
            rows.append([family, "-", "error", str(err), ""])
            errors += 1
            continue
        for run, fn in runs_of(module).items():
            count, folder = _count(module, family, run)
            errors += count == "error"
            rows.append([family, run, count, folder, describe(fn)])
    print(format_table(["grid", "run", "configs", "results folder", "description"], rows))
    return 1 if errors else 0
