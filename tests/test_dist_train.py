"""End to end: the digits run trained by 2 real gloo processes with g_estim=nuq_dist (launcher.executors.distributed).

Needs the compiled quantize kernel nuq._quant (`python setup.py build_ext --inplace`), as any nuq run does.
"""
import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from launcher.executors.distributed import DistributedRunError, check_config, run_local

WORKERS = Path(__file__).with_name("dist_workers.py")
TARGET = f"{WORKERS}:train_digits"

CONFIG = {"dataset": "digits", "arch": "digits_mlp", "g_estim": "nuq_dist", "nuq_method": "q", "nuq_bits": 3,
          "nuq_bucket_size": 256, "niters": 30, "batch_size": 32, "lr": 0.05, "tblog_interval": 10,
          "log_interval": 10, "chkpt_iter": 30, "gvar_log_iter": 0}


def _write_config(run_dir: Path, **changes) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def _metrics(run_dir: Path) -> dict[str, float]:
    last = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        last[row["tag"]] = row["value"]
    return last


def test_two_ranks_train_and_hold_identical_weights_and_levels(tmp_path):
    # ALQ levels re-fitted at steps 0, 10 and 20 (rank 0 fits, broadcasts): identical on both ranks
    config = _write_config(tmp_path / "run", nuq_method="alq", g_optim=True, g_osnap_iter="10,20",
                           nuq_number_of_samples=2)
    run_local(config, 2, timeout_s=60, grace_s=5, target=TARGET)
    run_dir = config.parent
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "done"
    assert results["final"]["Vacc"] > 60  # 30 steps of 3-bit SGD on digits; chance is 10%
    states = [torch.load(run_dir / f"rank{r}.pt") for r in range(2)]
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
    est0, est1 = states[0]["estimator"], states[1]["estimator"]
    assert est0["calls"] == est1["calls"] == 30 and est0["world"] == 2
    assert est0["adapter"]["nfits"] == est1["adapter"]["nfits"] == 3
    assert torch.equal(est0["adapter"]["levels"], est1["adapter"]["levels"])
    from nuq.levels import METHODS
    assert not torch.equal(est0["adapter"]["levels"], METHODS["alq"].init_levels(3, 0.5))  # really re-fitted
    # metrics: the message of the digits MLP's gradient at 3 bits, per layer buckets of 256
    m = _metrics(run_dir)
    n = sum(v.numel() for v in states[0]["model"].values())
    assert 3.0 < m["comm/bits_per_coord"] < 3.0 + 32 * 8 / 256  # indices + at most one norm per 256 values per layer
    assert m["comm/message_bytes"] == m["comm/bytes_sent"] == pytest.approx(m["comm/bits_per_coord"] * n / 8)
    assert m["comm/comm_ms"] > 0 and m["comm/encode_ms"] > 0 and m["comm/decode_ms"] > 0


def test_two_ranks_rebuild_optimizer_and_estimator_when_a_plugin_widens_the_model(tmp_path):
    # tests/plugins_for_tests.py `widen` at each of 3 epoch boundaries, and l1clip's loss term and clamping
    config = _write_config(tmp_path / "run", plugins="widen,l1clip", widen_units=2, epoch_iters=10,
                           l1clip_l1=1e-4, l1clip_clip=0.2)
    run_local(config, 2, timeout_s=60, grace_s=5, target=TARGET)
    run_dir = config.parent
    assert json.loads((run_dir / "results.json").read_text())["final"]["widen/width"] == 134.0
    states = [torch.load(run_dir / f"rank{r}.pt") for r in range(2)]
    assert states[0]["model"]["1.weight"].shape == (134, 64)
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
    assert states[0]["estimator"]["calls"] == 30  # the estimator's state survived its rebuilds
    assert "epoch 3: plugin widen changed the parameters" in (run_dir / "train.log").read_text()


def test_killed_rank_fails_the_training_run_cleanly(tmp_path, monkeypatch):
    config = _write_config(tmp_path / "run", niters=1000)
    monkeypatch.setenv("NUQ_TEST_KILL", "1:5")
    with pytest.raises(DistributedRunError, match="rank 1 of 2 was killed by SIGKILL"):
        run_local(config, 2, timeout_s=300, grace_s=10, target=TARGET)
    # the survivor fails as soon as its peer's socket closes, long before the 300 s collective timeout
    died = float((config.parent / "victim_dies").read_text())
    assert time.time() - died < 30
    status = json.loads((config.parent / "status.json").read_text())
    assert status["state"] == "failed"
    assert "rank 1 of 2 was killed by SIGKILL" in status["error"]
    assert not (config.parent / "results.json").exists()


def test_preemption_notice_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, monkeypatch):
    config = _write_config(tmp_path / "run", niters=1000)
    monkeypatch.setenv("NUQ_TEST_TERM", "1:7")  # only rank 1 gets SIGTERM, during iteration 7
    assert run_local(config, 2, timeout_s=60, grace_s=5, target=TARGET) == "interrupted"
    run_dir = config.parent
    states = [torch.load(run_dir / f"rank{r}.pt") for r in range(2)]
    # the signal lands just before step 7 (0-based), whose start all-reduces the flag: both ranks finish
    # step 7 and stop with 8 iterations done; without the agreement rank 0 would run on into step 8 alone
    assert states[0]["iteration"] == states[1]["iteration"] == 8
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"] == 8
    assert not (run_dir / "results.json").exists()


def test_an_estimator_without_exchange_is_refused_on_several_processes(tmp_path):
    config = _write_config(tmp_path / "run", g_estim="sgd")
    with pytest.raises(ValueError, match="g_estim 'sgd' does not exchange gradients"):
        run_local(config, 2)  # refused before any process starts, and status.json says why
    assert "does not exchange gradients" in json.loads((config.parent / "status.json").read_text())["error"]
    check_config({"g_estim": "sgd"}, 1)
    check_config({"g_estim": "nuq_dist"}, 4)


def test_ddp_hook_ranks_give_a_plugin_its_sample_indices_before_the_forward(tmp_path):
    # actnn's per-sample gradient scales need each batch's dataset indices: g_estim=ddp_hook's batches
    # carry them through the same objective as every estimator (it used to unpack (x, y) and fail)
    config = _write_config(tmp_path / "run", g_estim="ddp_hook", plugins="actnn", actnn_mode="qlinear",
                           actnn_cabits=2, niters=10, chkpt_iter=10)
    run_local(config, 2, timeout_s=60, grace_s=5, target=TARGET)
    run_dir = config.parent
    assert json.loads((run_dir / "results.json").read_text())["status"] == "done"
    states = [torch.load(run_dir / f"rank{r}.pt") for r in range(2)]
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
