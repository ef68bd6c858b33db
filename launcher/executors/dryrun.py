"""`--cluster dryrun` (= `--dry-run`): write the job scripts (jobs/<prefix>_<i>.sh, jobs/<prefix>_slurm.sbatch)."""
from __future__ import annotations

import argparse
from pathlib import Path

from launcher.executors.base import EXECUTORS, Executor, register_executor
from launcher.executors.scripts import DEFAULT_DIRECTIVES, write_job_scripts
from launcher.naming import grid_title, safe_token
from launcher.selection import RunSpec, Selection
from launcher.stages import stage_groups, stage_of


def job_prefix(selection: Selection, args: argparse.Namespace) -> str:
    """--prefix, else '<grid>_<run>' (a grid given as a path contributes its file stem)."""
    if getattr(args, "prefix", None):
        return safe_token(args.prefix)
    return safe_token(grid_title(selection.meta.grid, selection.meta.run).replace(".", "_", 1))


@register_executor("dryrun")
class DryRunExecutor(Executor):
    """Writes jobs/<prefix>_<i>.sh (one per run, or per K runs with --runs-per-task K) and
    jobs/<prefix>_slurm.sbatch; runs and submits nothing."""
    help = "write the job scripts only (same as --dry-run)"
    writes_run_folders = False
    checks_data = False

    def launch(self, runs: list[RunSpec], selection: Selection, args: argparse.Namespace) -> int:
        slurm = EXECUTORS.get("slurm")
        directives = getattr(slurm, "sbatch_directives", None)
        directives = directives(args) if callable(directives) else DEFAULT_DIRECTIVES
        prefix = job_prefix(selection, args)
        distributed = any(getattr(args, k, None) is not None for k in ("nodes", "gpus_per_node"))
        per_task = getattr(args, "runs_per_task", None) or 1
        sbatch, tasks = write_job_scripts(runs, prefix, Path(args.jobs_dir), directives, distributed, per_task)
        packing = f" ({per_task} runs each, started together)" if per_task > 1 else ""
        print(f"dry run: wrote {len(tasks)} task scripts{packing} {tasks[0].parent}/{prefix}_<i>.sh and {sbatch}")
        print(f"submit by hand with: sbatch {sbatch}   (or run one: bash {tasks[0]})")
        groups = stage_groups(runs)
        if len(groups) > 1:
            order = " -> ".join(stage_of(g[0].config) or "(no stage)" for g in groups)
            print(f"stages {order}: each run needs its upstream done first; --cluster slurm chains them "
                  "with afterok dependencies, the sbatch above does not")
        return 0
