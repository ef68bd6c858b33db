"""Optimizer parameter groups (trainer/optim.py): `wd_norm: false` exempts normalization parameters from
weight decay, and the default keeps one group over every parameter (runs before the option unchanged)."""
import torch
from torch import nn

from trainer.optim import make_optimizer
from trainer.options import full_config


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LayerNorm(16),
                        nn.Linear(16, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # no parameter at 0, where decay would not show
    return net


def _one_step_with_zero_gradients(config):
    """Only weight decay moves a parameter when its gradient is zero: which ones moved."""
    model = _net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(full_config({"lr": 0.5, "weight_decay": 0.1, "momentum": 0.0, **config}), model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer, {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_wd_norm_false_leaves_normalization_parameters_undecayed():
    optimizer, moved = _one_step_with_zero_gradients({"wd_norm": False})
    assert moved == {"0.weight", "0.bias", "5.weight", "5.bias"}  # conv and linear, not batch/layer norm
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_by_default_every_parameter_is_decayed_in_one_group():
    optimizer, moved = _one_step_with_zero_gradients({})
    assert moved == {n for n, _ in _net().named_parameters()} and len(optimizer.param_groups) == 1
