"""The trainer: one validated config in, one trained run folder out.

`trainer.run(config)` is what the launcher submits; imported lazily so `import trainer.options`
stays torch-free for the launcher.
"""
from typing import Any


def run(config: dict[str, Any]) -> dict[str, Any]:
    from trainer.loop import run as _run
    return _run(config)
