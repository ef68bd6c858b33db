"""The experiments of "Adaptive Gradient Quantization for Data-Parallel SGD" (NeurIPS 2020), plus `digits`.

The CIFAR-10 grids keep the paper's own format (lists of OrderedDicts of (key, value) pairs, a list value is
swept, `(value, OrderedDict(...))` brings a conditional sub-grid, `''` is a flag) so they read like the
original; `digits` uses the plain-dict form. `launch list` shows every run with its config count.
"""
from __future__ import annotations

from collections import OrderedDict

from launcher.grid import Cond
from launcher.registry import GridRun, register

# Keys left out of run names (the paper's list): fixed per family, or bookkeeping.
EXCLUDE = ("dataset", "epochs", "lr_decay_epoch", "g_epoch", "pretrained", "niters", "epoch_iters",
           "gvar_log_iter", "gvar_start", "g_bsnap_iter", "g_optim_start", "nuq_truncated_interval",
           "train_accuracy", "nuq_number_of_samples", "chkpt_iter", "g_osnap_iter")

AMQ = OrderedDict([("nuq_amq_lr", 0.7), ("nuq_amq_epochs", 40)])
ALQ = OrderedDict([("nuq_cd_epochs", 30)])
NUQ = OrderedDict([("nuq_mul", 0.5)])

# The adaptive and fixed methods compared in the paper's CIFAR-10 tables, in the paper's order.
PAPER_METHODS = [("amq", AMQ), ("amq_nb", AMQ), ("alq", ALQ), "qinf", "trn", ("alq_nb", ALQ), ("nuq", NUQ)]
RESNET8_METHODS = PAPER_METHODS + [("alqg", ALQ), ("alqg_nb", ALQ)]
ABLATION_METHODS = [("amq", AMQ), ("alq", ALQ), "qinf", "trn", ("nuq", NUQ)]


def _cifar10_shared(arch: str) -> list[tuple]:
    return [("dataset", "cifar10"), ("optim", ["sgd"]), ("arch", [arch]), ("batch_size", 128), ("lr", [0.1]),
            ("chkpt_iter", 2000), ("momentum", 0.9), ("weight_decay", 1e-4), ("niters", 80000),
            ("lr_decay_epoch", "40000,60000"), ("train_accuracy", "")]


GVAR = [("gvar_log_iter", 100), ("gvar_start", 0), ("g_osnap_iter", "100,2000,10000"), ("g_bsnap_iter", 10000),
        ("g_optim", ""), ("g_optim_start", 0)]

SUPER_SGD = [("g_estim", ["nuq"]), ("nuq_truncated_interval", 1), ("nuq_number_of_samples", 10),
             ("nuq_ngpu", 4), ("nuq_ig_sm_bkts", ""), ("nuq_method", ["none"])]


def _quantized(bits, bucket_size, dist_num: int, methods: list) -> list[tuple]:
    return [("g_estim", ["nuq"]), ("nuq_bits", bits), ("nuq_bucket_size", bucket_size), ("nuq_ngpu", 4),
            ("dist_num", dist_num), ("nuq_layer", ""), ("nuq_ig_sm_bkts", ""), ("nuq_truncated_interval", 1),
            ("nuq_number_of_samples", 10), ("nuq_method", methods)]


def _paper_family(shared: list[tuple], quantized: list[tuple], gvar: list[tuple] = GVAR) -> list[OrderedDict]:
    """SGD, then the quantized methods, then full-precision SGD over 4 workers ("SuperSGD")."""
    return [OrderedDict(shared + gvar + [("g_estim", ["sgd"])]),
            OrderedDict(shared + gvar + quantized),
            OrderedDict(shared + gvar + SUPER_SGD)]


@register
def cifar10_resnet32() -> GridRun:
    """The paper's main CIFAR-10 table on ResNet-32: 9 runs."""
    grid = _paper_family(_cifar10_shared("resnet32"), _quantized(3, 8192, 50, PAPER_METHODS))
    return GridRun(grid, "cifar10_resnet32", EXCLUDE)


@register
def cifar10_resnet110() -> GridRun:
    grid = _paper_family(_cifar10_shared("resnet110"), _quantized(3, 16384, 150, PAPER_METHODS))
    return GridRun(grid, "cifar10_resnet110", EXCLUDE)


@register
def cifar10_resnet8() -> GridRun:
    """ResNet-8, adding the ALQ-G variants (alqg, alqg_nb)."""
    grid = _paper_family(_cifar10_shared("resnet8"), _quantized(3, 16384, 80, RESNET8_METHODS))
    return GridRun(grid, "cifar10_resnet8", EXCLUDE)


@register
def cifar10_resnet8_bucket_size() -> GridRun:
    """Ablation: bucket sizes 16, 32, ..., 32768 at 3 bits on ResNet-8."""
    buckets = [2 ** k for k in range(4, 16)]
    grid = [OrderedDict(_cifar10_shared("resnet8") + GVAR + [("g_estim", ["sgd"])]),
            OrderedDict(_cifar10_shared("resnet8") + GVAR + _quantized(3, buckets, 80, ABLATION_METHODS))]
    return GridRun(grid, "cifar10_resnet8_bucket_size", EXCLUDE)


@register
def cifar10_resnet8_bits() -> GridRun:
    """Ablation: 2 to 8 bits at bucket size 16384 on ResNet-8."""
    grid = [OrderedDict(_cifar10_shared("resnet8") + GVAR + [("g_estim", ["sgd"])]),
            OrderedDict(_cifar10_shared("resnet8") + GVAR + _quantized(list(range(2, 9)), 16384, 80,
                                                                        ABLATION_METHODS))]
    return GridRun(grid, "cifar10_resnet8_bits", EXCLUDE)


@register
def imagenet_resnet() -> GridRun:
    """ImageNet on ResNet-18 and ResNet-34 (60 epochs at batch 64 x 4 workers), the paper's methods."""
    shared = [("dataset", "imagenet"), ("arch", ["resnet18", "resnet34"]), ("batch_size", 64),
              ("niters", 600000), ("chkpt_iter", 2000), ("lr", 0.1), ("lr_decay_epoch", "300000,450000"),
              ("momentum", 0.9), ("weight_decay", 1e-4)]
    methods = [("amq", OrderedDict([("nuq_amq_lr", 0.7)])), ("amq_nb", OrderedDict([("nuq_amq_lr", 0.7)])),
               ("alq", ALQ), "qinf", "trn", ("alq_nb", ALQ), ("nuq", NUQ)]
    grid = _paper_family(shared, _quantized(3, 8192, 350, methods))
    return GridRun(grid, "imagenet_resnet", EXCLUDE)


@register
def mnist() -> GridRun:
    """MNIST CNN: fixed methods at 4 bits over bucket sizes and worker counts."""
    shared = [("dataset", "mnist"), ("lr", 0.1), ("weight_decay", 0), ("momentum", 0),
              ("epochs", [(30, OrderedDict([("lr_decay_epoch", 30)]))]), ("arch", ["cnn"])]
    gvar = [("gvar_log_iter", 1000), ("gvar_start", 0), ("g_optim", ""), ("g_optim_start", 0)]
    quantized = [("g_estim", ["nuq"]), ("nuq_bits", 4), ("nuq_bucket_size", [1024, 4096, 8192]),
                 ("nuq_ngpu", [2, 4]), ("nuq_method", ["q", "qinf", ("nuq", NUQ)])]
    grid = [OrderedDict(shared + gvar + [("g_estim", ["sgd"])]), OrderedDict(shared + gvar + quantized)]
    return GridRun(grid, "mnist", EXCLUDE)


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
