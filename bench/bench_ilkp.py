"""Times one ILKP refit on the CPU: a CIFAR-10 ResNet-110 (every kernel of its 108 shared 3x3 convs, 190,976
kernels, matched against the 48 kernels of the stem) per matching criterion and version, and a CIFAR-10
MobileNetV2 (its depthwise kernels on the first depthwise conv's 32, and its pointwise sub-vectors of 8 on
every window of the first pointwise conv's rows).

Writes bench/results/ilkp.json: {"kernels", "refs", "threads", "refit_s": {"<match>/<version>": s},
"mobilenetv2": {"sets": {name: {"vectors", "refs"}}, "refit_s": {...}}}. Times are the best of --repeats
refits (the machine is shared: the best is the least disturbed one).

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


def time_refits(arch: str, combos: list[tuple[str, str]], repeats: int) -> tuple[dict[str, float], object]:
    """Best refit time per (match, version) on a freshly initialised `arch`, and the last plugin."""
    torch.manual_seed(0)
    model = create_model(arch, 10, (3, 32, 32))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times, plugin = {}, None
    for match, version in combos:
        opt = full_config({"plugins": "ilkp", "arch": arch, "ilkp_match": match, "ilkp_version": version})
        plugin = get_plugin_class("ilkp")(opt)
        plugin.configure_model(model)
        best = float("inf")
        for _ in range(repeats):
            model.load_state_dict(state)
            start = time.perf_counter()
            plugin.refit()
            best = min(best, time.perf_counter() - start)
        times[f"{match}/{version}"] = best
        print(f"{arch:18s} {match:8s} {version:5s} refit {best:7.3f} s   err {plugin.err_all:.3f}   "
              f"compression {plugin.scalars()['compression']:.2f}x")
    return times, plugin


def set_sizes(plugin) -> dict[str, dict[str, int]]:
    """Shared vectors and references of each kernel set."""
    return {s.name: {"vectors": sum(layer.weight.numel() // s.length for layer in s.layers[1:]),
                     "refs": int(s.references().shape[0])} for s in plugin.sets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    combos = [(m, v) for m in ("l1", "abs_pcc") for v in ("v2", "v2qq", "v2nb")]
    times, plugin = time_refits("resnet110", combos, args.repeats)
    sizes = set_sizes(plugin)["3x3"]
    mb_times, mb_plugin = time_refits("mobilenetv2_cifar", [("l1", "v2qq"), ("abs_pcc", "v2qq")], args.repeats)
    mb_sizes = set_sizes(mb_plugin)
    atomic_write_json(RESULTS, {"kernels": sizes["vectors"], "refs": sizes["refs"], "threads": args.threads,
                                "refit_s": times, "mobilenetv2": {"sets": mb_sizes, "refit_s": mb_times}})
    print(f"resnet110: {sizes['vectors']} kernels x {sizes['refs']} references; mobilenetv2_cifar: "
          + ", ".join(f"{n} {s['vectors']} vectors x {s['refs']} references" for n, s in mb_sizes.items())
          + f"; {args.threads} thread(s); wrote {RESULTS}")


if __name__ == "__main__":
    main()
