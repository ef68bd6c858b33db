"""Times one ILKP refit of a CIFAR-10 ResNet-110 on the CPU: every kernel of its 108 shared 3x3 convs
(190,976 kernels) matched against the 48 kernels of the stem, per matching criterion and version.

Writes bench/results/ilkp.json: {"kernels", "refs", "threads", "refit_s": {"<match>/<version>": s}}. Times are
the best of --repeats refits (the machine is shared: the best is the least disturbed one).

    PYTHONPATH=$PWD python bench/bench_ilkp.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from trainer.models import create_model
from trainer.options import full_config
from trainer.plugins.base import get_plugin_class
from trainer.runfiles import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "ilkp.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("resnet110", 10, (3, 32, 32))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times, plugin = {}, None
    for match in ("l1", "abs_pcc"):
        for version in ("v2", "v2qq", "v2nb"):
            opt = full_config({"plugins": "ilkp", "arch": "resnet110", "ilkp_match": match, "ilkp_version": version})
            plugin = get_plugin_class("ilkp")(opt)
            plugin.configure_model(model)
            best = float("inf")
            for _ in range(args.repeats):
                model.load_state_dict(state)
                start = time.perf_counter()
                plugin.refit()
                best = min(best, time.perf_counter() - start)
            times[f"{match}/{version}"] = best
            print(f"{match:8s} {version:5s} refit {best:7.3f} s   err {plugin.err_all:.3f}   "
                  f"compression {plugin.scalars()['compression']:.2f}x")
    kernels = sum(layer.weight.numel() // 9 for layer in plugin.layers[1:])
    atomic_write_json(RESULTS, {"kernels": kernels, "refs": plugin.layers[0].weight.numel() // 9,
                                "threads": args.threads, "refit_s": times})
    print(f"{kernels} kernels x {plugin.layers[0].weight.numel() // 9} references, {args.threads} thread(s); "
          f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
