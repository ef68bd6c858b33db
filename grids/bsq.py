"""BSQ (bit-level sparsity mixed precision, docs/bsq.md) as one chain of stages per run:

pretrain (full precision) -> convert (8-bit planes, eval_only) -> bsq (group Lasso + pruning, an alpha sweep)
-> finetune (the learned per-layer bits fixed). Each stage starts from the previous one through init_from;
the per-layer bits carry from `bsq` into `finetune`. The finetune stage repeats the alpha list so each of
its runs pairs with the bsq run of the same alpha (docs/grids.md, "Stages").
"""
from __future__ import annotations

from launcher.registry import GridRun, register

EXCLUDE = ("dataset", "arch", "batch_size", "test_batch_size", "epoch_iters", "epochs", "lr", "lr_decay_epoch",
           "lr_decay_rate", "weight_decay", "momentum", "chkpt_iter", "log_interval", "tblog_interval",
           "gvar_log_iter", "plugins", "bsq_mode", "bsq_interval", "bsq_nbits", "eval_only", "init_from", "niters")


def _chain(base: dict, pretrain: dict, bsq: dict, finetune: dict, alphas: list[float]) -> list[dict]:
    convert = {"plugins": "bsq", "bsq_mode": "convert", "bsq_nbits": 8, "eval_only": True}
    return [
        {"stage": "pretrain", **base, **pretrain},
        {"stage": "convert", "init_from": "pretrain", **base, **convert},
        {"stage": "bsq", "init_from": "convert", **base, **bsq, "plugins": "bsq", "bsq_mode": "train",
         "bsq_alpha": alphas},
        {"stage": "finetune", "init_from": "bsq", **base, **finetune, "plugins": "bsq", "bsq_mode": "finetune",
         "bsq_alpha": alphas},
    ]


@register
def cifar10_resnet20() -> GridRun:
    """The study's recipe on CIFAR-10 ResNet-20 (ReLU6, 1x1 downsample): 350 fp epochs, 350 BSQ epochs with
    pruning every 50 (lr 0.1, x0.1 at 250), 250 fine-tuning epochs at lr 1e-4; alpha around the study's 0.01."""
    ep = 391  # iterations per epoch: 50000 / 128, rounded up
    base = {"dataset": "cifar10", "arch": "bsq_resnet20", "batch_size": 128, "test_batch_size": 100,
            "epoch_iters": ep, "momentum": 0.9, "weight_decay": 1e-4, "chkpt_iter": ep, "log_interval": 100,
            "tblog_interval": 100, "gvar_log_iter": 0}
    pretrain = {"epochs": 350, "lr": 0.1, "lr_decay_epoch": f"{150 * ep},{250 * ep},{325 * ep}"}
    bsq = {"epochs": 350, "lr": 0.1, "lr_decay_epoch": f"{250 * ep}", "bsq_interval": 50}
    finetune = {"epochs": 250, "lr": 1e-4}
    return GridRun(_chain(base, pretrain, bsq, finetune, [0.0, 0.003, 0.01, 0.03]), "bsq_cifar10_resnet20", EXCLUDE)


@register
def digits() -> GridRun:
    """The chain in minutes on two CPU cores: digits_cnn, pruning every epoch of 20 iterations; the digits'
    layers are small, so alpha is far larger than on CIFAR for planes to empty within 80 iterations. The
    alphas trace compression 4x to 20x (docs/bsq.md); at 20 the group Lasso empties whole layers."""
    base = {"dataset": "digits", "arch": "digits_cnn", "batch_size": 32, "epoch_iters": 20, "weight_decay": 1e-4,
            "log_interval": 20, "tblog_interval": 20, "gvar_log_iter": 0}
    pretrain = {"niters": 200, "chkpt_iter": 200, "lr": 0.05}
    bsq = {"niters": 80, "chkpt_iter": 20, "lr": 0.01, "bsq_interval": 1}
    finetune = {"niters": 40, "chkpt_iter": 40, "lr": 0.002}
    return GridRun(_chain(base, pretrain, bsq, finetune, [0.0, 1.0, 3.0, 5.0, 7.0, 10.0]), "bsq_digits", EXCLUDE)
