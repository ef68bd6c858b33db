"""The training loop end to end on digits: files, exact resume, corrupt-checkpoint fallback, failures."""
import json
import os

import pytest
import torch

from trainer import checkpoint, loop, runfiles
from trainer.__main__ import main as trainer_main

BASE = {"niters": 40, "batch_size": 32, "chkpt_iter": 15, "tblog_interval": 5, "log_interval": 10,
        "train_accuracy": True, "lr": 0.05}


def _metrics(run_dir):
    lines = (run_dir / runfiles.METRICS).read_text().splitlines()
    return [(r["tag"], r["step"], r["value"]) for r in map(json.loads, lines)]


def _weights(run_dir):
    return torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)["model"]


def _stop_at(k):
    def hook(it):
        if it == k:
            loop.request_stop()
    return hook


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("ref")
    results = loop.run(BASE, run_dir)
    return run_dir, results


def test_successful_run_writes_the_run_files(reference):
    run_dir, results = reference
    assert results["status"] == "done" and results["niters"] == 40
    assert json.loads((run_dir / runfiles.RESULTS).read_text()) == json.loads(json.dumps(results))
    status = json.loads((run_dir / runfiles.STATUS).read_text())
    assert status["state"] == "done" and status["iteration"] == 40 and status["error"] is None
    assert status["Vacc"] == results["final"]["Vacc"]
    assert {"loss", "lr", "epoch", "niters", "Vloss", "Vacc", "Verror", "Tloss", "Tacc"} <= set(results["final"])
    evals = [(step, v) for tag, step, v in _metrics(run_dir) if tag == "Vacc"]
    assert [s for s, _ in evals] == [15, 30, 40]  # every chkpt_iter and at the end
    assert results["best"] == {"Vacc": max(v for _, v in evals), "iter": max(evals, key=lambda e: e[1])[0]}
    assert results["final"]["Vacc"] > 80  # digits_mlp learns the digits in 40 steps
    assert results["step_s"] > 0 and results["wall_s"] >= results["step_s"] * 40 and results["peak_mem_mb"] > 0
    repro = json.loads((run_dir / runfiles.REPRO).read_text())
    assert repro["versions"]["torch"] == torch.__version__ and "git_commit" in repro
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert "eval it 40" in (run_dir / runfiles.LOG).read_text()


def test_done_run_is_returned_unchanged(reference):
    run_dir, results = reference
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert loop.run({**BASE, "niters": 80}, run_dir) == json.loads(json.dumps(results))
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_same_seed_is_bit_for_bit_repeatable(reference, tmp_path):
    run_dir, results = reference
    again = loop.run(BASE, tmp_path)
    assert again["final"] == results["final"]
    assert _metrics(tmp_path) == _metrics(run_dir)


def test_interrupted_and_resumed_run_equals_uninterrupted(reference, tmp_path):
    run_dir, results = reference
    with pytest.raises(loop.Interrupted):
        loop.run(BASE, tmp_path, on_iteration=_stop_at(22))  # between checkpoints and log steps
    status = json.loads((tmp_path / runfiles.STATUS).read_text())
    assert status["state"] == "interrupted" and status["iteration"] == 22
    assert torch.load(tmp_path / runfiles.CHECKPOINT, weights_only=True)["iteration"] == 22
    resumed = loop.run(BASE, tmp_path)
    assert resumed["final"] == results["final"] and resumed["best"] == results["best"]
    assert _metrics(tmp_path) == _metrics(run_dir)
    ref_w, new_w = _weights(run_dir), _weights(tmp_path)
    assert all(torch.equal(ref_w[k], new_w[k]) for k in ref_w)


def test_corrupt_checkpoint_falls_back_to_previous(reference, tmp_path):
    run_dir, results = reference
    with pytest.raises(loop.Interrupted):
        loop.run(BASE, tmp_path, on_iteration=_stop_at(20))  # checkpoints at 15 (prev) and 20
    ckpt = tmp_path / runfiles.CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # truncated, as by a crash
    resumed = loop.run(BASE, tmp_path)
    log = (tmp_path / runfiles.LOG).read_text()
    assert "checkpoint.pt" in log and "corrupt" in log and "falling back" in log
    assert "resuming at iteration 15" in log
    assert resumed["final"] == results["final"]
    assert _metrics(tmp_path) == _metrics(run_dir)


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
    for name in (runfiles.CHECKPOINT, runfiles.CHECKPOINT_PREV):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint.*Delete the checkpoint files"):
        loop.run(BASE, tmp_path)
    assert json.loads((tmp_path / runfiles.STATUS).read_text())["state"] == "failed"


class NotData:  # a pickled class: weights_only loading must refuse it
    pass


class RunsCode:  # a hostile checkpoint: unpickling it would run a shell command
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_holding_code_is_refused(tmp_path):
    torch.save({"version": 1, "payload": NotData()}, tmp_path / runfiles.CHECKPOINT)
    messages = []
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path, warn=messages.append)
    assert "checkpoint.pt" in messages[0]
    assert "NotData" in messages[0]  # the real reason, not the first line of PyTorch's advice


def test_hostile_checkpoint_message_names_the_reason_and_never_suggests_an_unsafe_load(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"version": 1, "payload": RunsCode(marker)}, tmp_path / runfiles.CHECKPOINT)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(tmp_path, warn=lambda _: None)
    message = str(info.value)
    assert "GLOBAL posix.system" in message and "refused" in message
    assert "weights_only" not in message.replace("weights_only=True", "") and "False" not in message
    assert "\n" not in message and not marker.exists()


def test_failing_run_marks_status_failed(tmp_path):
    config = {"dataset": "cifar10", "data": str(tmp_path / "no_cifar"), "arch": "resnet8"}
    with pytest.raises(Exception, match="data_batch_1"):
        loop.run(config, tmp_path)
    status = json.loads((tmp_path / runfiles.STATUS).read_text())
    assert status["state"] == "failed"
    assert status["error"].startswith("DataError: cifar10: data folder") and "no_cifar" in status["error"]
    assert "Traceback" in (tmp_path / runfiles.LOG).read_text()
    assert not (tmp_path / runfiles.RESULTS).exists()


def test_bad_config_key_fails_the_run(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'nitres'.*niters"):
        loop.run({"nitres": 5}, tmp_path)
    assert json.loads((tmp_path / runfiles.STATUS).read_text())["state"] == "failed"


def test_main_rejects_missing_and_malformed_config(tmp_path, capsys):
    assert trainer_main(["--config", str(tmp_path / "config.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("niters: [1, 2\n")
    assert trainer_main(["--config", str(tmp_path / "config.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("- 1\n- 2\n")
    assert trainer_main(["--config", str(tmp_path / "config.yaml")]) == 2
    assert "mapping" in capsys.readouterr().err


def test_cifar_run_with_augmentation_resumes_exactly(tmp_path):
    """Fake CIFAR-10 in the real pickle format through the loop: augmentation draws resume exactly too."""
    import pickle

    import numpy as np
    data = tmp_path / "cifar"
    data.mkdir()
    rs = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(data / name, "wb") as fh:
            pickle.dump({b"data": rs.randint(0, 256, (8, 3072), dtype=np.uint8),
                         b"labels": rs.randint(0, 10, 8).tolist()}, fh)
    config = {"dataset": "cifar10", "data": str(data), "arch": "resnet8", "batch_size": 8, "niters": 7,
              "chkpt_iter": 0, "tblog_interval": 1, "test_batch_size": 8}
    full = loop.run(config, tmp_path / "full")
    with pytest.raises(loop.Interrupted):
        loop.run(config, tmp_path / "split", on_iteration=_stop_at(3))  # mid-epoch (5 batches per epoch)
    resumed = loop.run(config, tmp_path / "split")
    assert resumed["final"] == full["final"]
    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "full")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
