"""Starting a run from another run's weights (stages, docs/grids.md) and evaluate-only runs.

What a downstream run takes from its upstream's final checkpoint: the model weights and the `carry` entry
(the state plugins say must carry over, e.g. a bit representation), never the optimizer, the random
streams or the iteration counter. The weights must fit the model exactly: a missing, unexpected or
differently shaped parameter is an error naming it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainer import runfiles
from trainer.logger import RunLogger

if TYPE_CHECKING:
    from trainer.loop import Training

CARRY = "carry"  # checkpoint key: plugin state that a downstream run starts from (see apply_carry)


class InitError(ValueError):
    """The run's starting point is missing, unfinished or does not fit its model."""


def init_source(opt: dict[str, Any], run_dir: Path) -> Path | None:
    """The checkpoint file this run starts from: its upstream run's (init_run) or init_checkpoint; None: scratch."""
    if opt["init_run"] and opt["init_checkpoint"]:
        raise InitError("init_run (from init_from) and init_checkpoint are both set; keep one")
    if opt["init_checkpoint"]:
        path = Path(opt["init_checkpoint"]).expanduser()
        if not path.is_file():
            raise InitError(f"init_checkpoint {str(path)!r}: no such file")
        return path
    if not opt["init_run"]:
        if opt["eval_only"]:
            raise InitError("eval_only needs weights to evaluate: set init_from (a stage) or init_checkpoint")
        return None
    upstream = runfiles.upstream_dir(run_dir, opt["init_run"])
    if not runfiles.is_done(upstream):
        raise InitError(f"upstream run {opt['init_run']} is not done (no done results.json in {upstream}); "
                        "it must finish before this run starts")
    return upstream / runfiles.CHECKPOINT


def read_start(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, carried plugin state) of a checkpoint file, read as plain data."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InitError(f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise InitError(f"checkpoint {str(path)!r} holds no 'model' weights (is it a nuqlab checkpoint.pt?)")
    return state["model"], dict(state.get(CARRY) or {})


def check_fit(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights that do not fit the model, naming the first parameter that does not."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in weights:
            raise InitError(f"checkpoint {str(path)!r} has no parameter {name!r} of this model")
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise InitError(f"parameter {name!r}: checkpoint {str(path)!r} has shape {tuple(weights[name].shape)}, "
                            f"this model {tuple(tensor.shape)}")
    extra = [name for name in weights if name not in own]
    if extra:
        raise InitError(f"checkpoint {str(path)!r} has parameter {extra[0]!r}, which this model lacks")


def apply_carry(training: "Training", carry: dict[str, Any]) -> None:
    """THE place where state carried over from the upstream run is applied to this run.

    Plugins say what must carry over through their carry_state() hook, saved under the checkpoint's
    `carry` key as {plugin: state}. Each enabled plugin of the same name gets its entry through
    load_state_dict, before the weights are loaded, as on resume (it may give parameters the upstream's
    shapes). Entries of plugins not enabled here are kept and passed on in this run's own checkpoints, so
    a chain of stages never drops them.
    """
    training.carry = dict(carry)
    training.load_plugins(carry)


def start_from(training: "Training", run_dir: Path) -> Path | None:
    """Load the starting weights and carried state of a fresh run (not a resume); the file used, or None."""
    path = init_source(training.opt, run_dir)
    if path is None:
        return None
    weights, carry = read_start(path)
    apply_carry(training, carry)
    weights = training.plugins.start_weights(weights)
    check_fit(training.model, weights, path)
    training.model.load_state_dict(weights)
    training.plugins.after_load(training.model)
    training.log.info(f"starting from the weights of {path}")
    return path


def evaluate_only(training: "Training") -> dict[str, Any]:
    """Evaluate the loaded weights, save them as this run's checkpoint (a later stage may start from it)
    and return the results dict; no training step is taken."""
    start = time.monotonic()
    logger = RunLogger(training.run_dir)
    try:
        training.evaluate(logger, 0)
        if training.plugins:
            logger.scalars(training.plugins.scalars(), 0)
    finally:
        logger.close()
    training.save_checkpoint()
    from trainer.loop import _peak_mem_mb
    return {"status": runfiles.DONE, "niters": 0, "final": dict(logger.last), "best": dict(training.progress.best),
            "wall_s": time.monotonic() - start, "step_s": 0.0, "peak_mem_mb": _peak_mem_mb(training.device)}
