"""ActNN (activation-compressed training, issue 19; docs/actnn.md): the study's table and a digits version.

Configurations (cabits/ibits/pergroup/perlayer) 4/4/F/F, 2/2/F/F, 2/2/T/F, 2/8/T/F, 2/8/T/T x modes
qlinear, quantize, plus the uncompressed `fanin` baseline (plugin off: the same kaiming fan_in model).

- `cifar10`, `cifar100`: the study's recipe (its resnet/train_cifar): preact_resnet56, 200 epochs, batch
  128, lr 0.1, momentum 0.9, per-epoch cosine without warmup, wd 1e-4 not on BN parameters.
- `cifar10_var`, `cifar100_var`: the variance protocol as the study's (one epoch-10 checkpoint for every
  row): stage `fp` trains 10 epochs at full precision, at lr 0.1 (the 200-epoch cosine is above 0.0995
  until epoch 10; a 10-epoch run with `lr_schedule: cosine` would anneal to 0 instead); stage `var`
  starts each configuration from those weights and runs 10 steps at lr 0 (the weights stay the fp
  run's; the same seed gives every row the same batches), then 10 batches x 3 compressed backward
  passes (actnn/var, actnn/bias, actnn/sample_var in results.json `final`).
- `digits`: the same table on the 8x8 digits with preact_resnet20, each configuration trained 60 steps
  with its own compression then measured (~25 minutes on two CPU cores):
  `launch --grid actnn --run digits --cluster local --max-parallel 2`, then
  `launch aggregate --grid actnn --run digits --metric actnn/var,actnn/bias,actnn/sample_var,Vacc --by run`.
- `digits_var`: the variance protocol as `cifar10_var` on the digits: a 60-step fp run, then every
  configuration measured on its weights and the same 10 batches (~6 minutes), so the rows differ only
  by the compression.
"""
from __future__ import annotations

from launcher.grid import Cond, Product, Zip
from launcher.registry import GridRun, register

TABLE = Zip(actnn_cabits=[4, 2, 2, 2, 2], actnn_ibits=[4, 2, 2, 8, 8],
            actnn_pergroup=[False, False, True, True, True], actnn_perlayer=[False, False, False, False, True])
ACTNN = Cond("actnn", Product({"actnn_mode": ["qlinear", "quantize"]}, TABLE))
KEYS = ("dataset", "arch", "batch_size", "lr", "momentum", "weight_decay", "wd_norm", "epochs", "niters", "lr_schedule",
        "chkpt_iter", "log_interval", "tblog_interval", "actnn_var_at", "actnn_var_batches")

CIFAR_ITERS = 50000 // 128  # iterations per epoch
CIFAR = {"arch": "preact_resnet56", "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
         "wd_norm": False, "epochs": 200, "lr_schedule": "cosine"}


def _cifar(dataset: str) -> GridRun:
    grid = {**CIFAR, "dataset": dataset, "plugins": [None, ACTNN]}
    return GridRun(grid, f"actnn_{dataset}", KEYS)


def _var_chain(base: dict, fp: dict, folder: str) -> GridRun:
    """Stage fp: one full-precision run (`fp` settings); stage var: the table x modes from its weights,
    10 steps at lr 0 with the same seed (same weights, same batches for every row), then the protocol."""
    measured = Cond("actnn", Product({"actnn_var_at": 10, "actnn_var_batches": 10,
                                      "actnn_mode": ["qlinear", "quantize"]}, TABLE))
    grid = [{"stage": "fp", **base, **fp},
            {"stage": "var", "init_from": "fp", **base, "lr": 0.0, "niters": 10, "chkpt_iter": 10, "log_interval": 10,
             "tblog_interval": 10, "plugins": measured}]
    return GridRun(grid, folder, KEYS + ("init_from",))


def _cifar_var(dataset: str) -> GridRun:
    iters = 10 * CIFAR_ITERS
    base = {k: v for k, v in CIFAR.items() if k not in ("lr", "epochs", "lr_schedule")}
    return _var_chain({**base, "dataset": dataset}, {"lr": 0.1, "niters": iters, "chkpt_iter": iters},
                      f"actnn_{dataset}_var")


@register
def cifar10() -> GridRun:
    """11 runs: fanin + 10 (modes x table) on CIFAR-10."""
    return _cifar("cifar10")


@register
def cifar100() -> GridRun:
    """11 runs: fanin + 10 on CIFAR-100."""
    return _cifar("cifar100")


@register
def cifar10_var() -> GridRun:
    """1 + 10 runs: 10 fp epochs, then the table x modes measured on those weights (CIFAR-10)."""
    return _cifar_var("cifar10")


@register
def cifar100_var() -> GridRun:
    """1 + 10 runs: 10 fp epochs, then the table x modes measured on those weights (CIFAR-100)."""
    return _cifar_var("cifar100")


@register
def digits() -> GridRun:
    """10 runs: the table x modes on the digits, 60 steps then the variance protocol on 5 batches."""
    grid = {"dataset": "digits", "arch": "preact_resnet20", "batch_size": 32, "lr": 0.05, "niters": 60,
            "chkpt_iter": 60, "log_interval": 30, "tblog_interval": 30,
            "plugins": Cond("actnn", Product({"actnn_var_at": 60, "actnn_var_batches": 5,
                                               "actnn_mode": ["qlinear", "quantize"]}, TABLE))}
    return GridRun(grid, "actnn_digits", KEYS)


@register
def digits_var() -> GridRun:
    """1 + 10 runs: preact_resnet20 trained 60 steps at full precision, then the table x modes measured
    on those weights and the same 10 batches."""
    return _var_chain({"dataset": "digits", "arch": "preact_resnet20", "batch_size": 32},
                      {"lr": 0.05, "niters": 60, "chkpt_iter": 60, "log_interval": 30, "tblog_interval": 30},
                      "actnn_digits_var")
