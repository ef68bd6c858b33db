"""Inter-layer kernel sharing (ILKP, the `ilkp` plugin; docs/ilkp.md): the study's chains and a local one.

The study's recipe (its config.py): SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 128, 200
epochs, lr 0.1 x 0.98^epoch. Our schedule expresses the per-epoch exponential decay exactly: decay by
0.98 every epoch_iters iterations (CIFAR-10: 50000 // 128 = 390 batches an epoch). Post-hoc use (the
study's sh_v2qq_cifar_test.sh): fit once on the trained checkpoint and evaluate (an eval_only stage), then
retrain at lr 0.01. `ilkp_version: q` is the study's comparison: plain linear weight quantization of the
same layers at the same bits.
"""
from __future__ import annotations

from launcher.registry import GridRun, register

CIFAR_EPOCH = 390  # 50000 training images // batch 128
RECIPE = {"dataset": "cifar10", "optim": "sgd", "nesterov": True, "momentum": 0.9, "weight_decay": 5e-4,
          "batch_size": 128, "epoch_iters": CIFAR_EPOCH, "lr_decay_epoch": CIFAR_EPOCH, "lr_decay_rate": 0.98,
          "epochs": 200, "chkpt_iter": 10 * CIFAR_EPOCH}
BITS = [8, 6, 4, 3, 2]
EXCLUDE = tuple(RECIPE) + ("lr", "init_from", "eval_only", "plugins", "arch")


def _chain(base: dict, bits: list[int], retrain: dict, ste: bool = False) -> list[dict]:
    """base -> post-hoc fit + evaluation (v2; v2qq and the q baseline at each bit width) -> retraining (with
    `ste`, v2qq also retrained with the straight-through variant ilkp_ste, not the study's loop)."""
    post = [{"ilkp_version": "v2"}, {"ilkp_version": ["v2qq", "q"], "ilkp_qb": bits}]
    again = post + ([{"ilkp_version": "v2qq", "ilkp_qb": bits, "ilkp_ste": True}] if ste else [])
    return ([{"stage": "base", **base}]
            + [{"stage": "posthoc", "init_from": "base", **base, "plugins": "ilkp", "eval_only": True, **p}
               for p in post]
            + [{"stage": "retrain", "init_from": "posthoc", **base, **retrain, "plugins": "ilkp", **p}
               for p in again])


@register
def cifar10_resnet110() -> GridRun:
    """ResNet-110: baseline -> post-hoc v2 / v2qq / q at qb 8..2 (eval_only) -> retrain at lr 0.01."""
    base = {**RECIPE, "arch": "resnet110", "lr": 0.1, "seed": 1}
    return GridRun(_chain(base, BITS, {"lr": 0.01}), "ilkp_cifar10_resnet110", EXCLUDE)


@register
def cifar10_resnet110_scratch() -> GridRun:
    """ResNet-110 trained from scratch with the hook (the study's sh_v2qq_cifar_run.sh), v2qq at qb 8..2."""
    grid = [{**RECIPE, "arch": "resnet110", "lr": 0.1, "seed": 1, "plugins": "ilkp", "ilkp_version": "v2qq",
             "ilkp_qb": BITS}]
    return GridRun(grid, "ilkp_cifar10_resnet110_scratch", EXCLUDE)


DIGITS_EPOCH = 44  # 1437 training digits // batch 32
DIGITS = {"dataset": "digits", "optim": "sgd", "nesterov": True, "momentum": 0.9, "weight_decay": 5e-4,
          "batch_size": 32, "epoch_iters": DIGITS_EPOCH, "lr_decay_epoch": DIGITS_EPOCH, "lr_decay_rate": 0.98,
          "log_interval": DIGITS_EPOCH, "tblog_interval": DIGITS_EPOCH, "gvar_log_iter": 0, "lr": 0.1, "seed": 1}
DIGITS_EXCLUDE = EXCLUDE + ("log_interval", "tblog_interval", "gvar_log_iter", "epochs", "ilkp_every")


@register
def digits_chain() -> GridRun:
    """The same chain on the 8x8 digits with resnet8 (reference: the 1->16 stem, 16 kernels), minutes on
    two CPU cores: 8 epochs of training, post-hoc fits at qb 8, 4, 2, 3 epochs of retraining (v2qq also
    with ilkp_ste)."""
    grid = _chain({**DIGITS, "arch": "resnet8", "epochs": 8}, [8, 4, 2], {"lr": 0.01, "epochs": 3, "ilkp_every": 1},
                  ste=True)
    return GridRun(grid, "ilkp_digits_chain", DIGITS_EXCLUDE)


@register
def digits_mobilenetv2_chain() -> GridRun:
    """The chain with the CIFAR MobileNetV2 on the 8x8 digits (depthwise kernels and pointwise sub-vectors
    shared), minutes on two CPU cores: 8 epochs of training, post-hoc fits at qb 8, 4, 3 epochs of
    retraining (v2qq also with ilkp_ste)."""
    grid = _chain({**DIGITS, "arch": "mobilenetv2_cifar", "epochs": 8}, [8, 4],
                  {"lr": 0.01, "epochs": 3, "ilkp_every": 1}, ste=True)
    return GridRun(grid, "ilkp_digits_mobilenetv2_chain", DIGITS_EXCLUDE)
