"""The paper's main CIFAR-10 table as its job script ran it, our variants of it, and `digits`.

`cifar10_resnet32` is the 9 runs of the paper's pjobs/resnet32.sh (ALQ/AMQ, NeurIPS 2020; a dry-run with
--runs-per-task 9 writes the same commands, tests/test_launcher_scripts.py). The `ours_*` runs are our
variants of it on ResNet-110 and ResNet-8; the paper's own grid functions, under their own names, are the
`paper` family (grids/paper.py). The CIFAR-10 grids keep the paper's format (lists of OrderedDicts of
(key, value) pairs, a list value is swept, `(value, OrderedDict(...))` brings a conditional sub-grid, `''`
is a flag); `digits` uses the plain-dict form. `launch list` shows every run with its config count.
"""
from __future__ import annotations

from grids.paper import (ALQ, ALQ_NB, EXCLUDE_CIFAR10 as EXCLUDE, NUQ, amq_method, amq_nb_method, cifar10_shared,
                         gvar_args, paper_family, quantized)
from launcher.grid import Cond
from launcher.registry import GridRun, register

# The methods of the paper's pjobs/resnet32.sh, in its order; ResNet-8 adds ALQ-G.
PAPER_METHODS = [amq_method(("nuq_amq_epochs", 40)), amq_nb_method(("nuq_amq_epochs", 40)), ALQ, "qinf", "trn",
                 ALQ_NB[-1], NUQ]
RESNET8_METHODS = PAPER_METHODS + [("alqg", ALQ[1]), ("alqg_nb", ALQ[1])]
# pjobs/resnet32.sh's SuperSGD: the same keys as grids.paper.ARGS_SUPER_SGD, in another order, plus nuq_ig_sm_bkts
SUPER_SGD = [("g_estim", ["nuq"]), ("nuq_truncated_interval", 1), ("nuq_number_of_samples", 10),
             ("nuq_ngpu", 4), ("nuq_ig_sm_bkts", ""), ("nuq_method", ["none"])]


def _table(arch: str, bucket_size: int, dist_num: int, methods: list) -> list:
    return paper_family(cifar10_shared(arch), gvar_args(), quantized(3, bucket_size, dist_num, methods), SUPER_SGD)


@register
def cifar10_resnet32() -> GridRun:
    """The paper's main CIFAR-10 table on ResNet-32, the 9 runs of its pjobs/resnet32.sh."""
    grid = _table("resnet32", 8192, 50, PAPER_METHODS)
    return GridRun(grid, "cifar10_resnet32", EXCLUDE)


@register
def ours_cifar10_resnet110() -> GridRun:
    """Ours: the cifar10_resnet32 table on ResNet-110 (dist_num 150, bucket 16384)."""
    grid = _table("resnet110", 16384, 150, PAPER_METHODS)
    return GridRun(grid, "cifar10_resnet110", EXCLUDE)  # its folder from before the rename


@register
def ours_cifar10_resnet8() -> GridRun:
    """Ours: the cifar10_resnet32 table on ResNet-8 (dist_num 80, bucket 16384), adding alqg and alqg_nb."""
    grid = _table("resnet8", 16384, 80, RESNET8_METHODS)
    return GridRun(grid, "cifar10_resnet8", EXCLUDE)  # its folder from before the rename


# The embedded main job: every method on scikit-learn's 8x8 digits, small enough for 2 CPU cores.
DIGITS_SHARED = {
    "dataset": "digits", "arch": "digits_mlp", "optim": "sgd", "batch_size": 32, "lr": 0.05, "niters": 300,
    "chkpt_iter": 100, "gvar_log_iter": 25, "gvar_estim_iter": 5, "g_osnap_iter": "20,100,1000",
    "g_optim": "",
}
DIGITS_QUANT = {"nuq_bits": 3, "nuq_ngpu": 4, "nuq_bucket_size": 64, "nuq_layer": "", "dist_num": 20}
DIGITS_METHODS = ["none", "q", "qinf", "nuq", "trn",
                  Cond("alq", {"nuq_cd_epochs": 10}), Cond("alq_nb", {"nuq_cd_epochs": 10}),
                  Cond("amq", {"nuq_amq_epochs": 20}), Cond("amq_nb", {"nuq_amq_epochs": 20})]
SEEDS = [1, 2]


@register
def digits() -> GridRun:
    """SGD and 9 quantizers (3 bits, 4 simulated workers, buckets of 64) x 2 seeds = 20 runs."""
    grid = [
        {**DIGITS_SHARED, "g_estim": "sgd", "seed": SEEDS},
        {**DIGITS_SHARED, "g_estim": "nuq", **DIGITS_QUANT, "nuq_method": DIGITS_METHODS, "seed": SEEDS},
    ]
    exclude = EXCLUDE + tuple(DIGITS_SHARED) + tuple(DIGITS_QUANT)
    return GridRun(grid, "digits", exclude)
