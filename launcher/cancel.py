"""`launch cancel --grid G --run R [--only ...]`: scancel the SLURM array tasks of the selected runs.

Only runs that are queued or running are cancelled. With --runs-per-task K a task holds K runs, so
cancelling one run stops the task's other runs too. A cancelled trainer checkpoints on
SIGTERM, so a later `launch ... --cluster slurm` resumes it.
"""
from __future__ import annotations

import argparse

from launcher.slurm import query as slurm_query
from launcher.errors import UsageError
from launcher.selection import add_selection_arguments, select_runs
from launcher.stages import WAITING
from launcher.state import PENDING, RUNNING
from launcher.status import collect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)


def main(args: argparse.Namespace) -> int:
    selection = select_runs(args)
    rows, _ = collect(selection.runs)
    active = [r for r in rows if r.state in (PENDING, RUNNING, WAITING) and r.job_id]
    if not active:
        print(f"nothing to cancel: none of the {len(rows)} selected runs is queued or running on SLURM")
        return 0
    job_ids = list(dict.fromkeys(r.job_id for r in active))
    error = slurm_query.cancel(job_ids)
    if error:
        raise UsageError(f"cannot cancel jobs {', '.join(job_ids)}: {error}")
    print(f"cancelled {len(job_ids)} array tasks ({', '.join(job_ids)}) holding {len(active)} selected runs")
    return 0
