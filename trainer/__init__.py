"""The trainer: one validated config in, one trained run folder out.

`trainer.run(config, run_dir)` is what the launcher submits; the import of the loop is lazy so
`import trainer.options` stays torch-free for the launcher.
"""
from __future__ import annotations

import os
from typing import Any


def run(config: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """Train (or resume) the run of `config` in `run_dir`; see trainer.loop.run."""
    from trainer.loop import run as _run
    return _run(config, run_dir)
