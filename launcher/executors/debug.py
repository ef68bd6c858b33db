"""`--cluster debug`: every run in this process, one after another, so pdb and prints work."""
from __future__ import annotations

import argparse
import os
import sys

from launcher.executors.base import Executor, register_executor, summary
from launcher.selection import RunSpec, Selection
from launcher.stages import require_upstreams
from launcher.state import run_state
from trainer import runfiles


@register_executor("debug")
class DebugExecutor(Executor):
    """Runs each run in this process, one after another, so pdb and prints work."""
    help = "run in-process, sequentially (for pdb)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pdb", action="store_true", help="with --cluster debug: post-mortem pdb on an exception")

    def launch(self, runs: list[RunSpec], selection: Selection, args: argparse.Namespace) -> int:
        from launcher.executors.entry import run_one
        require_upstreams(runs, run_state)
        for run in runs:  # grid order: every upstream runs before the runs that start from it
            runfiles.write_job(run.dir, "debug", str(os.getpid()), None, None)
            print(f"[{run.index}] running in-process: {run.dir}", flush=True)
            try:
                results = run_one(str(run.dir))
            except Exception:
                if getattr(args, "pdb", False):
                    import pdb
                    pdb.post_mortem(sys.exc_info()[2])
                raise
            print(f"[{run.index}] done: {summary(results)}", flush=True)
        return 0
