"""What every executor runs for one run: load the folder's config.yaml and train.

Kept tiny and picklable by reference (submitit sends `run_one` to a fresh process); torch is only
imported here, through the trainer, never by the rest of the launcher.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer import runfiles


def run_one(run_dir: str) -> dict[str, Any]:
    """Train the run in run_dir from its config.yaml; returns the trainer's results dict."""
    import trainer

    folder = Path(run_dir)
    config = runfiles.read_config(folder / runfiles.CONFIG)
    return trainer.run(config, folder)
