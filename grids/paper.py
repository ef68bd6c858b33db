"""The paper's own grids, under their own names: every function of grid/nuq.py and grid/abl.py of
Tabrizian/learning-to-quantize (ALQ/AMQ, NeurIPS 2020), in the paper's OrderedDict format.

`launch --grid paper --run cifar10_full_resnet32` expands exactly what the paper's
`python grid_run.py --grid nuq --run_name cifar10_full_resnet32` expands, in the same order
(tests/golden/paper/<run>.jsonl pin every run; docs/grids.md says how they were checked).
The values are the paper's data and stay as the paper wrote them (lists of one value included).

How a paper function maps here: it took `args` (a list to append to) and returned
`(args, log_dir, module_name, exclude)`. `args` becomes the grid, `log_dir` the results folder (so runs
land under <root>/runs_cifar10_full/... as they did under runs/runs_cifar10_full/), `exclude` the keys
left out of run names; `module_name` was always `main.gvar`, the paper's trainer, which is our
`python -m trainer`. The paper's grid_run.py also numbered runs with a prefix (`1_000_...`); our names
end with a hash of the config instead (docs/grids.md).

grid/abl.py defines `bits` twice; Python keeps the later definition, which is the one below (the two
are identical in the paper's file).
"""
from __future__ import annotations

from collections import OrderedDict

from launcher.registry import GridRun, register

# The paper's `exclude` lists (keys left out of run names).
EXCLUDE_MNIST = ("dataset", "epochs", "lr_decay_epoch", "g_epoch")
EXCLUDE_IMAGENET = ("dataset", "epochs", "lr_decay_epoch", "g_epoch",
                    "pretrained", "niters", "epoch_iters",
                    "gvar_log_iter", "gvar_start", "g_bsnap_iter",
                    "g_optim_start", "nuq_truncated_interval",
                    "nuq_number_of_samples", "chkpt_iter", "g_osnap_iter")
EXCLUDE_CIFAR10 = ("dataset", "epochs", "lr_decay_epoch", "g_epoch",
                   "pretrained", "niters", "epoch_iters",
                   "gvar_log_iter", "gvar_start", "g_bsnap_iter",
                   "g_optim_start", "nuq_truncated_interval", "train_accuracy",
                   "nuq_number_of_samples", "chkpt_iter", "g_osnap_iter")

# The paper's `log_dir`s.
RUNS_MNIST = "runs_mnist_nuq"
RUNS_CIFAR10 = "runs_cifar10_full"
RUNS_IMAGENET = "runs_imagenet_full"


def amq_method(*extra: tuple) -> tuple:
    return ("amq", OrderedDict([("nuq_amq_lr", 0.7), *extra]))


def amq_nb_method(*extra: tuple) -> tuple:
    return ("amq_nb", OrderedDict([("nuq_amq_lr", 0.7), *extra]))


# The four ALQ-N variants the paper sweeps (symmetric and/or inverse update, then plain).
ALQ_NB = [
    ("alq_nb", OrderedDict([("nuq_cd_epochs", 30), ("nuq_sym", ""), ("nuq_inv", "")])),
    ("alq_nb", OrderedDict([("nuq_cd_epochs", 30), ("nuq_inv", "")])),
    ("alq_nb", OrderedDict([("nuq_cd_epochs", 30), ("nuq_sym", "")])),
    ("alq_nb", OrderedDict([("nuq_cd_epochs", 30)])),
]
ALQ = ("alq", OrderedDict([("nuq_cd_epochs", 30)]))
NUQ = ("nuq", OrderedDict([("nuq_mul", 0.5)]))

# grid/nuq.py's CIFAR-10 method list; grid/abl.py adds 'trn'; the ImageNet grids leave out nuq_amq_epochs.
METHODS_CIFAR10 = [amq_method(("nuq_amq_epochs", 40)), amq_nb_method(("nuq_amq_epochs", 40)), ALQ, "qinf", *ALQ_NB, NUQ]
METHODS_ABLATION = [amq_method(("nuq_amq_epochs", 40)), amq_nb_method(("nuq_amq_epochs", 40)), ALQ, "qinf", "trn",
                    *ALQ_NB, NUQ]
METHODS_IMAGENET = [amq_method(), amq_nb_method(), ALQ, "qinf", *ALQ_NB, NUQ]


def cifar10_shared(arch: str) -> list[tuple]:
    return [("dataset", "cifar10"),
            ("optim", ["sgd"]),
            ("arch", [arch]),
            ("batch_size", 128),
            ("lr", [0.1]),
            ("chkpt_iter", 2000),
            ("momentum", 0.9),
            ("weight_decay", 1e-4),
            ("niters", 80000),
            ("lr_decay_epoch", "40000,60000"),
            ("train_accuracy", "")]


def imagenet_shared(archs: list[str], lr_decay_epoch: str) -> list[tuple]:
    return [("dataset", "imagenet"),
            ("arch", archs),
            ("batch_size", 64),
            ("niters", 60 * 10000),
            ("chkpt_iter", 2000),
            ("lr", 0.1),
            ("lr_decay_epoch", lr_decay_epoch),
            ("momentum", 0.9),
            ("weight_decay", 1e-4)]


def gvar_args(g_osnap_iter: str | list[str] = "100,2000,10000", g_optim: bool = True) -> list[tuple]:
    """The paper's gvar_args; some grids comment out g_optim and g_optim_start."""
    optim = [("g_optim", ""), ("g_optim_start", 0)] if g_optim else []
    return [("gvar_log_iter", 100),
            ("gvar_start", 0),
            ("g_osnap_iter", g_osnap_iter),
            ("g_bsnap_iter", 10000),
            *optim]


def quantized(bits: int | list[int], bucket_sizes: int | list[int], dist_num: int, methods: list) -> list[tuple]:
    """The paper's args_nuq / args_nuq_sgd: the quantized runs."""
    return [("g_estim", ["nuq"]),
            ("nuq_bits", bits),
            ("nuq_bucket_size", bucket_sizes),
            ("nuq_ngpu", 4),
            ("dist_num", [dist_num]),
            ("nuq_layer", ""),
            ("nuq_ig_sm_bkts", ""),
            ("nuq_truncated_interval", 1),
            ("nuq_number_of_samples", 10),
            ("nuq_method", methods)]


ARGS_SGD = [("g_estim", ["sgd"])]
# args_super_sgd: full-precision gradients averaged over 4 workers
ARGS_SUPER_SGD = [("g_estim", ["nuq"]),
                  ("nuq_ngpu", 4),
                  ("nuq_truncated_interval", 1),
                  ("nuq_number_of_samples", 10),
                  ("nuq_method", ["none"])]


def paper_family(shared: list[tuple], gvar: list[tuple], nuq: list[tuple],
                 super_sgd: list[tuple] = ARGS_SUPER_SGD) -> list[OrderedDict]:
    """SGD, the quantized runs, then SuperSGD: the paper's three `args +=` of most grids."""
    return [OrderedDict(shared + gvar + ARGS_SGD),
            OrderedDict(shared + gvar + nuq),
            OrderedDict(shared + gvar + super_sgd)]


# grid/nuq.py

@register
def mnist() -> GridRun:
    """MNIST CNN: SGD; q, qinf, nuq at 4 bits over 3 bucket sizes and 2 or 4 workers."""
    shared = [("dataset", "mnist"),
              ("lr", .1),
              ("weight_decay", 0),
              ("momentum", 0),
              ("epochs", [(30, OrderedDict([("lr_decay_epoch", 30)]))]),
              ("arch", ["cnn"])]
    gvar = [("gvar_log_iter", 1000),
            ("gvar_start", 0),
            ("g_optim", ""),
            ("g_optim_start", 0)]
    nuq = [("g_estim", ["nuq"]),
           ("nuq_bits", 4),
           ("nuq_bucket_size", [1024, 4096, 8192]),
           ("nuq_ngpu", [2, 4]),
           ("nuq_method", ["q", "qinf", NUQ])]
    args = [OrderedDict(shared + gvar + ARGS_SGD), OrderedDict(shared + gvar + nuq)]
    return GridRun(args, RUNS_MNIST, EXCLUDE_MNIST)


@register
def cifar10_full_resnet110() -> GridRun:
    """CIFAR-10 ResNet-110: SGD; 9 methods at 3 and 4 bits, buckets 8192 and 16384; SuperSGD."""
    args = paper_family(cifar10_shared("resnet110"), gvar_args(),
                        quantized([3, 4], [8192, 8192 * 2], 350, METHODS_CIFAR10))
    return GridRun(args, RUNS_CIFAR10, EXCLUDE_CIFAR10)


@register
def cifar10_full_resnet32() -> GridRun:
    """CIFAR-10 ResNet-32: as cifar10_full_resnet110 with dist_num 50."""
    args = paper_family(cifar10_shared("resnet32"), gvar_args(),
                        quantized([3, 4], [8192, 8192 * 2], 50, METHODS_CIFAR10))
    return GridRun(args, RUNS_CIFAR10, EXCLUDE_CIFAR10)


@register
def imagenet_half() -> GridRun:
    """ImageNet MobileNet-V2 and ResNet-18, lr decay at 150k/225k, no level adaptation (g_optim off)."""
    args = paper_family(imagenet_shared(["mobilenet_v2", "resnet18"], "150000,225000"), gvar_args(g_optim=False),
                        quantized([3, 4], [8192, 8192 * 2], 250, METHODS_IMAGENET))
    return GridRun(args, RUNS_IMAGENET, EXCLUDE_IMAGENET)


@register
def imagenet_full() -> GridRun:
    """ImageNet ResNet-18, lr decay at 300k/450k: SGD; 9 methods at 3 and 4 bits, 2 bucket sizes; SuperSGD."""
    args = paper_family(imagenet_shared(["resnet18"], "300000,450000"), gvar_args(),
                        quantized([3, 4], [8192, 8192 * 2], 350, METHODS_IMAGENET))
    return GridRun(args, RUNS_IMAGENET, EXCLUDE_IMAGENET)


# grid/abl.py (ablations on CIFAR-10 ResNet-8)

@register
def bucket_size() -> GridRun:
    """Ablation, ResNet-8: 11 bucket sizes (16 ... 32768) at 3 bits, 10 methods, g_optim off."""
    buckets = [16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 8192 * 2, 8192 * 4]
    args = paper_family(cifar10_shared("resnet8"), gvar_args(g_optim=False),
                        quantized([3], buckets, 350, METHODS_ABLATION))
    return GridRun(args, RUNS_CIFAR10, EXCLUDE_CIFAR10)


@register
def bits() -> GridRun:
    """Ablation, ResNet-8: 2 ... 7 bits at bucket size 16384, 10 methods."""
    args = paper_family(cifar10_shared("resnet8"), gvar_args(),
                        quantized([2, 3, 4, 5, 6, 7], [8192 * 2], 350, METHODS_ABLATION))
    return GridRun(args, RUNS_CIFAR10, EXCLUDE_CIFAR10)


@register
def interval() -> GridRun:
    """Ablation, ResNet-8: 3 level-update schedules (g_osnap_iter) x SGD, 10 methods at 3 bits, SuperSGD."""
    schedules = ["0,80000,80000", "40000,60000,80000", "100,1000,2000,40000,60000,80000"]
    args = paper_family(cifar10_shared("resnet8"), gvar_args(g_osnap_iter=schedules),
                        quantized([3], [8192 * 2], 350, METHODS_ABLATION))
    return GridRun(args, RUNS_CIFAR10, EXCLUDE_CIFAR10)
