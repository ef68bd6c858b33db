"""Benchmark: one data-parallel gradient exchange, fp32 all-reduce vs quantized bit-packed messages.

Spawns real torch.distributed ranks (2 by default: gloo on CPU, NCCL when every rank has a GPU) with
launcher.executors.distributed, averages a resnet32-sized gradient (464,154 values) and measures per exchange:
bytes each rank's message has, the step time (encode + exchange + decode/average, slowest rank), and
encode / decode of one message alone beside the quantize kernel (and bare pack/unpack) on the same
vector. Times are the best of --reps (the machine may be shared; the best is the intrinsic cost); the
encode/quantize and decode/quantize ratios are medians of per-round ratios of calls made side by side. From the measured
encode/decode times and the bytes it models the step's communication time on 8 and 64 workers at 10 and
100 Gb/s (ring all-reduce for fp32; all_gather and all-to-all for the quantized messages).

    PYTHONPATH=$PWD python bench/bench_ddp.py            # writes bench/results/ddp.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESNET32_NUMEL = 464_154  # parameters of the CIFAR-10 resnet32 (trainer.models)
WORKERS = (8, 64)
LINKS_GBPS = (10, 100)


def _best_time(fn, reps: int, sync, before=None) -> float:
    """Best of `reps` timings: the intrinsic cost, robust to other processes sharing the cores.
    `before` runs untimed before each timing (a barrier, so collective steps start together)."""
    times = []
    for _ in range(reps):
        (before or sync)()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _interleaved_times(fns, reps: int, sync) -> list[list[float]]:
    """Each function's time in each of `reps` rounds, the functions taking turns so a round sees one load."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            times[i].append(_best_time(fn, 1, sync))
    return times


def _paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a_i / b_i: two costs compared side by side, so a slow spell of a shared machine
    (which stretches both, and can last longer than all the rounds of one function) cancels out."""
    return statistics.median(x / y for x, y in zip(a, b))


def rank_main(args_json: str, out_path: str) -> None:
    """Body of each rank: measure everything, rank 0 writes the slowest rank's numbers to out_path."""
    import torch
    import torch.distributed as dist

    from trainer.distributed import init_process_group_from_env
    from nuq import codec, exchange, kernel, packing
    from nuq.levels import METHODS

    args = json.loads(args_json)
    backend = init_process_group_from_env(no_cuda=not args["cuda"])
    device = torch.device("cuda") if backend == "nccl" else torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    n, bucket, reps = args["n"], args["bucket"], args["reps"]
    x = torch.randn(n, generator=torch.Generator().manual_seed(rank)).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def together() -> None:
        sync()
        dist.barrier()

    def slowest(seconds: float) -> float:
        t = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def allreduce_mean() -> None:
        y = x.clone()
        dist.all_reduce(y)
        y /= world

    for _ in range(3):
        allreduce_mean()
    res = {"fp32": {"bytes_per_rank": 4 * n, "step_s": slowest(_best_time(allreduce_mean, reps, sync, together)),
                    "encode_ms": 0.0, "decode_ms": 0.0}}
    extra = {}
    for bits in args["bits"]:
        q = exchange.Quant(METHODS["q"].init_levels(bits, 0.5).to(device), bucket, "l2")
        calls = iter(range(10 ** 9))

        def step(name: str) -> None:
            exchange.EXCHANGES[name](x, q, exchange.Stream(rank, next(calls) * n))

        for name in exchange.EXCHANGES:
            step(name)
        step_s = {name: slowest(_best_time(lambda: step(name), reps, sync, together))
                  for name in exchange.EXCHANGES}
        msg = codec.encode(x, q.levels, bucket, "l2", rank, 0)
        idx, _ = kernel.quantize_indices(x, q.levels, bucket, "l2", rank, 0)
        packed = packing.pack(idx, bits)
        enc, dec, qnt, pck, unp = _interleaved_times([
            lambda: codec.encode(x, q.levels, bucket, "l2", rank, 0),
            lambda: codec.decode(msg, n, q.levels, bucket),
            lambda: kernel.quantize(x, q.levels, bucket, "l2", rank, 0),
            lambda: packing.pack(idx, bits),
            lambda: packing.unpack(packed, bits, n)], reps, sync)
        res[str(bits)] = {"bytes_per_rank": int(msg.numel()), "step_s": step_s["allgather"],
                          "encode_ms": 1e3 * slowest(min(enc)), "decode_ms": 1e3 * slowest(min(dec))}
        extra[str(bits)] = {"alltoall_step_s": step_s["alltoall"], "quantize_ms": 1e3 * slowest(min(qnt)),
                            "pack_ms": 1e3 * slowest(min(pck)), "unpack_ms": 1e3 * slowest(min(unp)),
                            "encode_vs_quantize": slowest(_paired_ratio(enc, qnt)),
                            "decode_vs_quantize": slowest(_paired_ratio(dec, qnt))}
    hooks = {name: hook_row(name, args, device, slowest, together, sync) for name in args["hooks"]}
    if rank == 0:
        setup = {"world": world, "backend": backend, "device": str(device), "n": n, "bucket_size": bucket,
                 "reps": reps, "threads_per_rank": torch.get_num_threads(), "torch": torch.__version__,
                 "hook_batch": args["hook_batch"], "hook_reps": args["hook_reps"]}
        Path(out_path).write_text(json.dumps({"results": res, "extra": extra, "hooks": hooks, "setup": setup}))
    dist.destroy_process_group()


HOOK_ROWS = {"allreduce": {"ddp_hook": "allreduce"}, "fp16": {"ddp_hook": "fp16"}, "bf16": {"ddp_hook": "bf16"},
             **{f"powersgd{r}": {"ddp_hook": "powersgd", "ddp_powersgd_rank": r} for r in (1, 2, 4)}}


class _Done:
    """What a loopback all_reduce returns: a finished Work whose future holds the tensor itself."""

    def __init__(self, tensor) -> None:
        import torch
        self.fut = torch.futures.Future()
        self.fut.set_result([tensor])

    def get_future(self):
        return self.fut

    def wait(self) -> bool:
        return True


def _hook_codec_s(hook, state, buckets) -> tuple[float, float]:
    """(encode, decode) seconds of `hook` on DDP's real buckets, its all-reduces replaced by a loopback
    (a finished future holding the input, so every callback runs inline and only compute is timed).
    decode: from the hook's last all_reduce call to its end; encode: everything before."""
    import torch.distributed as dist
    original, calls = dist.all_reduce, []

    def loopback(tensor, *args, **kwargs):
        calls.append(time.perf_counter())
        return _Done(tensor)

    enc = dec = 0.0
    dist.all_reduce = loopback
    try:
        for b in buckets:
            calls.clear()
            t0 = time.perf_counter()
            hook(state, b).wait()
            t1 = time.perf_counter()
            enc, dec = enc + calls[-1] - t0, dec + t1 - calls[-1]
    finally:
        dist.all_reduce = original
    return enc, dec


def hook_row(name: str, args: dict, device, slowest, together, sync) -> dict:
    """One DDP communication hook (estim.ddp_hook) on the resnet32 model through a real
    DistributedDataParallel: the bytes its all-reduces carry per step (counted at dist.all_reduce), the
    exchange alone (the hook called on DDP's own gradient buckets, real all-reduces: encode + exchange +
    decode, like the quantized rows' step_s), its encode/decode compute (the same calls, all-reduce
    replaced by a loopback), and the whole DDP step (forward + backward + hook) beside its compute alone."""
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from estim.ddp_hook import BUCKET_CAP_MB, AllreduceCounter, count_allreduce_bytes, make_hook
    from trainer.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet32", 10, (3, 32, 32)).to(device)
    ddp = DistributedDataParallel(model, bucket_cap_mb=BUCKET_CAP_MB)  # as the estimator: one bucket
    state, hook = make_hook({**HOOK_ROWS[name], "seed": 1})
    buckets: dict[int, object] = {}

    def capturing(state, bucket):
        buckets[bucket.index()] = bucket
        return hook(state, bucket)
    ddp.register_comm_hook(state, capturing)
    gen = torch.Generator().manual_seed(torch.distributed.get_rank())
    x = torch.randn(args["hook_batch"], 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args["hook_batch"],), generator=gen).to(device)

    def ddp_step() -> None:
        F.cross_entropy(ddp(x), y).backward()

    def compute_only() -> None:
        with ddp.no_sync():
            ddp_step()

    for _ in range(3):  # DDP rebuilds its buckets after step 1; PowerSGD compresses from step 2
        buckets.clear()
        ddp_step()
    counter = AllreduceCounter()
    with count_allreduce_bytes(counter):
        ddp_step()
    ordered = [buckets[i] for i in sorted(buckets)]

    def exchange() -> None:
        for b in ordered:
            hook(state, b).wait()
    reps = args["hook_reps"]
    step_s = slowest(_best_time(exchange, reps, sync, together))
    codec = min((_hook_codec_s(hook, state, ordered) for _ in range(reps)), key=sum)
    ddp_s = slowest(_best_time(ddp_step, reps, sync, together))
    compute_s = slowest(_best_time(compute_only, reps, sync, together))
    return {"bytes_per_rank": counter.nbytes, "step_s": step_s, "encode_ms": 1e3 * slowest(codec[0]),
            "decode_ms": 1e3 * slowest(codec[1]), "ddp_step_s": ddp_s, "compute_s": compute_s,
            "buckets": len(ordered), "allreduce_calls": counter.calls}


def model_comm_ms(entry: dict, extra: dict | None, n: int, workers: int, gbps: float, exchange_name: str) -> float:
    """Modelled communication time of one step in ms: compute measured here, transfers at the link rate."""
    rate = gbps * 1e9 / 8  # bytes per second per link
    if extra is None:  # fp32 ring all-reduce: each rank sends 2(W-1)/W of the vector
        return 1e3 * 2 * (workers - 1) / workers * 4 * n / rate
    msg, enc, dec = entry["bytes_per_rank"], entry["encode_ms"], entry["decode_ms"]
    if exchange_name == "allgather":  # ring all_gather of W messages, then W messages decoded
        return enc + 1e3 * (workers - 1) * msg / rate + workers * dec
    # all-to-all of 1/W of each message, decode W pieces of n/W, all_gather the fp32 chunk means
    return enc + 1e3 * (workers - 1) / workers * (msg + 4 * n) / rate + dec


def hook_comm_ms(entry: dict, workers: int, gbps: float) -> float:
    """Modelled communication time of a DDP hook: its encode/decode plus a ring all-reduce of its bytes."""
    return entry["encode_ms"] + entry["decode_ms"] + 1e3 * 2 * (workers - 1) / workers * entry["bytes_per_rank"] / (
        gbps * 1e9 / 8)


def modelled(results: dict, extra: dict, n: int, hooks: dict) -> dict:
    out = {}
    for key, entry in hooks.items():
        out[f"hook_{key}"] = {f"{w}w_{g}gbps": hook_comm_ms(entry, w, g) for w in WORKERS for g in LINKS_GBPS}
    for key, entry in results.items():
        for workers in WORKERS:
            for gbps in LINKS_GBPS:
                tag = f"{workers}w_{gbps}gbps"
                if key == "fp32":
                    out.setdefault(key, {})[tag] = model_comm_ms(entry, None, n, workers, gbps, "")
                else:
                    for name in ("allgather", "alltoall"):
                        out.setdefault(f"{key}_{name}", {})[tag] = model_comm_ms(entry, extra[key], n, workers,
                                                                                 gbps, name)
    return out


def print_tables(data: dict) -> None:
    res, extra, setup, model = data["results"], data["extra"], data["setup"], data["modelled_comm_ms"]
    fp32 = res["fp32"]
    print(f"{setup['world']} ranks, {setup['backend']} on {setup['device']}, n={setup['n']}, "
          f"bucket {setup['bucket_size']}, {setup['threads_per_rank']} thread(s) per rank, best of {setup['reps']}")
    nan = float("nan")
    print(f"{'':>6} {'bytes/rank':>11} {'vs fp32':>8} {'step_s':>9} {'a2a step_s':>10} {'encode_ms':>9} "
          f"{'decode_ms':>9} {'quant_ms':>8} {'enc/quant':>9} {'dec/quant':>9} {'pack_ms':>8} {'unpack_ms':>9}")
    for key, e in res.items():
        x = extra.get(key, {})
        qms = x.get("quantize_ms", nan)
        print(f"{key + ('' if key == 'fp32' else 'bit'):>6} {e['bytes_per_rank']:>11} "
              f"{e['bytes_per_rank'] / fp32['bytes_per_rank']:>8.3f} {e['step_s']:>9.5f} "
              f"{x.get('alltoall_step_s', nan):>10.5f} {e['encode_ms']:>9.3f} {e['decode_ms']:>9.3f} "
              f"{qms:>8.3f} {x.get('encode_vs_quantize', nan):>9.3f} {x.get('decode_vs_quantize', nan):>9.3f} "
              f"{x.get('pack_ms', nan):>8.3f} {x.get('unpack_ms', nan):>9.3f}")
    print("(times: best of the rounds; enc/quant, dec/quant: median over rounds of the ratio of side-by-side "
          "calls, the slower rank's)")
    hooks = data.get("hooks", {})
    if hooks:
        print(f"\nDDP communication hooks on resnet32 ({setup['hook_batch']} images per rank, best of "
              f"{setup['hook_reps']}): step_s = the hook on DDP's buckets (encode + all-reduce + decode)")
        print(f"{'':>10} {'bytes/rank':>11} {'vs fp32':>8} {'step_s':>9} {'encode_ms':>9} {'decode_ms':>9} "
              f"{'ddp_step_s':>10} {'compute_s':>9} {'buckets':>7}")
        for key, e in hooks.items():
            print(f"{key:>10} {e['bytes_per_rank']:>11} {e['bytes_per_rank'] / fp32['bytes_per_rank']:>8.3f} "
                  f"{e['step_s']:>9.5f} {e['encode_ms']:>9.3f} {e['decode_ms']:>9.3f} {e['ddp_step_s']:>10.4f} "
                  f"{e['compute_s']:>9.4f} {e['buckets']:>7}")
    tags = list(next(iter(model.values())))
    print("\nmodelled communication time per step, ms (measured encode/decode + bytes at the link rate)")
    print(f"{'':>16} " + " ".join(f"{t:>13}" for t in tags))
    for key, row in model.items():
        print(f"{key:>16} " + " ".join(f"{row[t]:>13.3f}" for t in tags))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--n", type=int, default=RESNET32_NUMEL, help="gradient values per rank")
    parser.add_argument("--bucket", type=int, default=8192, help="values per bucket (one float32 norm each)")
    parser.add_argument("--bits", default="2,3,4,8")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--hooks", default=",".join(HOOK_ROWS), help="DDP hook rows ('' for none): "
                        + ", ".join(HOOK_ROWS))
    parser.add_argument("--hook-batch", type=int, default=8, help="images per rank in the DDP steps of the hooks")
    parser.add_argument("--hook-reps", type=int, default=8)
    parser.add_argument("--cuda", action="store_true", help="NCCL on GPUs (one per rank) instead of gloo on CPU")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ddp.json"))
    args = parser.parse_args(argv)
    from launcher.executors.distributed import spawn_local
    from trainer import runfiles
    conf = {"n": args.n, "bucket": args.bucket, "bits": [int(b) for b in args.bits.split(",")],
            "reps": args.reps, "cuda": args.cuda, "hooks": [h for h in args.hooks.split(",") if h],
            "hook_batch": args.hook_batch, "hook_reps": args.hook_reps}
    unknown = sorted(set(conf["hooks"]) - set(HOOK_ROWS))
    if unknown:
        parser.error(f"unknown --hooks {', '.join(unknown)}; known: {', '.join(HOOK_ROWS)}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "rank0.json"
        result = spawn_local(args.ranks, [json.dumps(conf), str(raw)], log_dir=tmp, timeout_s=600,
                             target=f"{Path(__file__).resolve()}:rank_main")
        if result.failed_rank is not None:
            print(f"error: {result.message}", file=sys.stderr)
            return 1
        data = json.loads(raw.read_text())
    data["modelled_comm_ms"] = modelled(data["results"], data["extra"], args.n, data["hooks"])
    print_tables(data)
    out = {**data.pop("results"), **data}  # per bits value and fp32 at the top level
    os.makedirs(Path(args.out).parent, exist_ok=True)
    runfiles.atomic_write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
