"""Tiny grids for the SLURM integration tests (`--grid tests/slurm_grids.py`): digits, seconds per run."""
from pathlib import Path

from launcher.registry import GridRun, register

BASE = {"dataset": "digits", "arch": "digits_mlp", "optim": "sgd", "batch_size": 32, "lr": 0.05,
        "niters": 60, "chkpt_iter": 20, "log_interval": 20, "tblog_interval": 20}


@register
def small() -> GridRun:
    """4 runs for the array test (packing 2 per task, 1 task at a time); 2 s of training each."""
    return GridRun({**BASE, "niters": 400, "chkpt_iter": 100, "lr": [0.05, 0.1], "seed": [1, 2]}, "small",
                   tuple(BASE))


EMPTY_CIFAR10 = "/tmp/nuqlab-empty-cifar10"  # on the test cluster's one host: what its nodes see


def empty_cifar10() -> str:
    """Create EMPTY_CIFAR10: every CIFAR-10 file name, each file empty; return its path."""
    from trainer.data_files import DATA_FILES
    folder = Path(EMPTY_CIFAR10)
    folder.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES["cifar10"].files:
        (folder / name).write_bytes(b"")
    return EMPTY_CIFAR10


@register
def broken() -> GridRun:
    """One good run and one that raises: cifar10 from a folder whose files are all there (the launcher's data
    check passes) but empty (`empty_cifar10()` makes it), so only the run itself finds the failure."""
    return GridRun([{**BASE, "seed": 1},
                    {**BASE, "dataset": "cifar10", "arch": "resnet8", "data": EMPTY_CIFAR10}],
                   "broken", tuple(BASE), slurm={"partition": "debug", "time_min": 15})  # grid defaults


@register
def long() -> GridRun:
    """Long enough (5-30 s of training, depending on the machine's load) to be preempted mid-way; 3 seeds."""
    return GridRun({**BASE, "niters": 6000, "chkpt_iter": 1000, "log_interval": 50, "tblog_interval": 100,
                    "seed": [1, 2, 3]}, "long", tuple(BASE))


@register
def endless() -> GridRun:
    """Runs that would take many minutes: they are cancelled."""
    return GridRun({**BASE, "niters": 1000000, "chkpt_iter": 100000, "seed": [1, 2]}, "endless", tuple(BASE))


DIST = {**BASE, "g_estim": "nuq_dist", "nuq_method": "q", "nuq_bits": 3, "nuq_bucket_size": 256, "niters": 40,
        "chkpt_iter": 20, "log_interval": 10, "tblog_interval": 10, "gvar_log_iter": 0}


@register
def dist() -> GridRun:
    """One 3-bit nuq_dist run for the multi-node tests (--nodes/--gpus-per-node, partition `all`)."""
    return GridRun(DIST, "dist", tuple(DIST))


@register
def dist_long() -> GridRun:
    """A nuq_dist run long enough to kill one of its ranks mid-way."""
    return GridRun({**DIST, "niters": 100000, "chkpt_iter": 50000}, "dist_long", tuple(DIST))


@register
def not_dist() -> GridRun:
    """A plain SGD run: refused on several ranks (it would train independent replicas)."""
    return GridRun(BASE, "not_dist", tuple(BASE))


@register
def dist_resume() -> GridRun:
    """A nuq_dist run of 10-30 s: preempted mid-way, it must resume to the uninterrupted run's metrics."""
    return GridRun({**DIST, "niters": 2000, "chkpt_iter": 500, "log_interval": 100, "tblog_interval": 100},
                   "dist_resume", tuple(DIST))
