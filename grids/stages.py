"""A multi-stage example on digits: full precision -> 3-bit quantized from it -> fine-tuned from that.

Each run of a later stage starts from the final weights of the run of the earlier stage with the same seed
(docs/grids.md, "Stages"); on SLURM the three stages are three job arrays chained with afterok dependencies.
The iteration counts are tiny so the tests run the whole chain in seconds.
"""
from __future__ import annotations

from collections import OrderedDict

from launcher.registry import GridRun, register

BASE = {"dataset": "digits", "arch": "digits_mlp", "batch_size": 32, "log_interval": 20, "tblog_interval": 20,
        "gvar_log_iter": 0}
EXCLUDE = tuple(BASE) + ("niters", "chkpt_iter", "lr", "init_from", "nuq_method", "nuq_bucket_size", "nuq_ngpu")
QUANT = {"g_estim": "nuq", "nuq_method": "q", "nuq_bits": 3, "nuq_bucket_size": 64, "nuq_ngpu": 2}


@register
def digits_chain() -> GridRun:
    """fp (SGD) -> quant (3-bit QSGD from fp) -> ft (fine-tuned from quant at a lower lr); seeds 1 and 2."""
    grid = [
        {"stage": "fp", **BASE, "g_estim": "sgd", "lr": 0.05, "niters": 60, "chkpt_iter": 60, "seed": [1, 2]},
        {"stage": "quant", "init_from": "fp", **BASE, **QUANT, "lr": 0.05, "niters": 40, "chkpt_iter": 40,
         "seed": [1, 2]},
        {"stage": "ft", "init_from": "quant", **BASE, **QUANT, "lr": 0.01, "niters": 40, "chkpt_iter": 40,
         "seed": [1, 2]},
    ]
    return GridRun(grid, "digits_chain", EXCLUDE)


@register
def digits_chain_paper() -> GridRun:
    """The first two stages of digits_chain in the paper's OrderedDict format, plus an eval_only stage."""
    base = [(key, value) for key, value in BASE.items()]
    grid = [
        OrderedDict([("stage", "fp")] + base + [("g_estim", ["sgd"]), ("lr", 0.05), ("niters", 60),
                                                  ("chkpt_iter", 60), ("seed", [1, 2])]),
        OrderedDict([("stage", "quant"), ("init_from", "fp")] + base + list(QUANT.items())
                    + [("lr", 0.05), ("niters", 40), ("chkpt_iter", 40), ("seed", [1, 2])]),
        OrderedDict([("stage", "eval"), ("init_from", "quant"), ("eval_only", ""), ("seed", [1, 2])]),
    ]
    return GridRun(grid, "digits_chain_paper", EXCLUDE)
