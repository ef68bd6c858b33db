"""What the two NUQ estimators share (`nuq`: simulated workers, `nuq_dist`: real ranks): the run's
QuantConfig, its levels (the method's initial ones, or the LevelAdapter's once it fitted), the scalars
they log (bits per coordinate, levels/<i>, the adapter's multiplier and error) and the state they checkpoint.
"""
from __future__ import annotations

from typing import Any

import torch

from estim.base import BatchStream, GradientEstimator, LossFn
from nuq.levels import get_method, level_scalars
from nuq.quantizer import QuantConfig, bits_per_coordinate

SEED_RANGE = 2 ** 63  # the Philox key is the run's seed modulo this


class QuantizedEstimator(GradientEstimator):
    """Base of the NUQ estimators. `calls` counts quantizations of this process over the whole run: the
    c-th uses Philox stream positions c*N .. (c+1)*N - 1 (N: the model's parameter count)."""

    def __init__(self, opt: dict[str, Any], model: torch.nn.Module, loss_fn: LossFn,
                 train_stream: BatchStream, aux_stream: BatchStream) -> None:
        super().__init__(opt, model, loss_fn, train_stream, aux_stream)
        self.cfg = QuantConfig.from_opt(opt)
        self.method = get_method(self.cfg.method)
        self.key = int(opt.get("seed", 1)) % SEED_RANGE
        self.sizes = [p.numel() for p in self.params()]
        self.calls = 0
        self.init_levels = self.cfg.init_levels()
        self.adapter = None
        if self.method.adaptive and opt.get("g_optim"):
            from nuq.adaptive import AdapterConfig, LevelAdapter  # heavy (scipy); only adaptive runs need it
            self.adapter = LevelAdapter(AdapterConfig.from_opt(opt), self.init_levels)

    @property
    def levels(self) -> torch.Tensor:
        """The levels the next quantization uses (the adapter's, once it fitted), on the CPU."""
        return self.adapter.levels if self.adapter is not None else self.init_levels

    def scalars(self) -> dict[str, float]:
        out = {"bits": bits_per_coordinate(self.sizes, self.levels, self.cfg)}
        out.update(self.adapter.scalars() if self.adapter is not None else level_scalars(self.levels))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "adapter": None if self.adapter is None else self.adapter.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])
        if self.adapter is not None and state.get("adapter") is not None:
            self.adapter.load_state_dict(state["adapter"])
