"""Weight/activation quantization (the `wq` plugin, docs/wq.md): the published resnet20 CIFAR-10 study and
the same methods on the embedded digits.

`cifar10_resnet20` is the study's 8 runs (onion-rain/MCTS, READMEs/quantize_README.md at 9868b20) with its
recipe: its resnet20 (`resnet20_mcts`, 1.11 M parameters), SGD momentum 0.9, weight decay 1e-4, batch 100,
lr 0.1 (0.01 for DoReFa a2w2), 100 epochs with the lr x0.1 at epochs 50 and 75, crop+flip augmentation (the
CIFAR loader's), evaluated every epoch in batches of the training batch size (the study's loaders share one
batch_size, and its DoReFa activations are normalised by the batch's max, so the test batch matters).
`launch aggregate --grid wq --run cifar10_resnet20 --at best:Vacc` gives its table's metric, the best test
top-1 over the epochs. `digits` runs the same methods in minutes on a CPU.
"""
from __future__ import annotations

from launcher.grid import Product, Zip
from launcher.registry import GridRun, register

# (wq_a_bits, wq_w_bits, lr) of the study's DoReFa rows; a2w2 trained at lr 0.01 (the others at the shared lr)
DOREFA = Zip(wq_a_bits=[1, 2, 4, 8, 16], wq_w_bits=[1, 2, 4, 8, 16], lr=[0.1, 0.01, 0.1, 0.1, 0.1])
METHODS_KEYS = ("wq_method", "wq_a_bits", "wq_w_bits", "lr")


def _methods(shared: dict) -> list:
    """The study's 8 rows: full precision, XNOR (a1w1), ternary (a32w2), DoReFa a1w1 .. a16w16."""
    rest = {key: value for key, value in shared.items() if key != "lr"}
    return [{**shared, "wq_method": ["none", "xnor", "ternary"]},
            Product({**rest, "wq_method": "dorefa"}, DOREFA)]


CIFAR10_EPOCH_ITERS = 500  # 50,000 images / batch 100
CIFAR10 = {
    "dataset": "cifar10", "arch": "resnet20_mcts", "plugins": "wq", "optim": "sgd", "momentum": 0.9,
    "weight_decay": 1e-4, "batch_size": 100, "lr": 0.1, "epochs": 100,
    "lr_decay_epoch": f"{50 * CIFAR10_EPOCH_ITERS},{75 * CIFAR10_EPOCH_ITERS}", "lr_decay_rate": 0.1,
    "chkpt_iter": CIFAR10_EPOCH_ITERS, "tblog_interval": 100, "log_interval": 100, "gvar_log_iter": 0,
    "test_batch_size": 100, "seed": 1,
}

DIGITS_EPOCH_ITERS = 44  # 1,438 training digits // batch 32
DIGITS = {
    "dataset": "digits", "arch": "resnet20_mcts_small", "plugins": "wq", "optim": "sgd", "momentum": 0.9,
    "weight_decay": 1e-4, "batch_size": 32, "lr": 0.1, "epochs": 6, "lr_decay_epoch": 4 * DIGITS_EPOCH_ITERS,
    "chkpt_iter": DIGITS_EPOCH_ITERS, "tblog_interval": DIGITS_EPOCH_ITERS, "log_interval": DIGITS_EPOCH_ITERS,
    "test_batch_size": 32, "gvar_log_iter": 0, "seed": 1,
}


def _grid_run(shared: dict, folder: str) -> GridRun:
    grid = _methods(shared)
    return GridRun(grid, folder, tuple(k for k in shared if k not in METHODS_KEYS))


@register
def cifar10_resnet20() -> GridRun:
    """The study's table: resnet20_mcts full precision, XNOR, ternary, DoReFa a1w1/a2w2/a4w4/a8w8/a16w16."""
    return _grid_run(CIFAR10, "wq_cifar10_resnet20")


@register
def digits() -> GridRun:
    """The same 8 configs on the 8x8 digits with resnet20_mcts_small (widths / 4), 6 epochs, on a CPU."""
    return _grid_run(DIGITS, "wq_digits")
