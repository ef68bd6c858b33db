"""Local (submitit) and debug (in-process) runs of the digits grid, end to end with the real trainer."""
import json
import sys
from pathlib import Path

import pytest

from launcher import cli
from launcher.errors import UsageError
from launcher.executors.local import visible_gpus
from trainer import runfiles

SMOKE = ["--grid", "nuq", "--run", "digits", "--only", "g_estim=sgd", "--set", "niters=10", "--set", "chkpt_iter=5"]



def run_dirs(launch, *argv):
    code, out, _ = launch(*argv, "--json")
    assert code == 0
    return [Path(r["dir"]) for r in json.loads(out)]


GRID = """
from launcher.registry import GridRun, register

@register
def smoke():
    base = {"dataset": "digits", "niters": 10, "chkpt_iter": 5}
    return GridRun([{**base, "arch": "digits_mlp", "seed": [1, 2]},
                    {**base, "dataset": "cifar10", "data": "bad_cifar", "arch": "resnet8"}], "smoke")
"""


def bad_cifar(folder: Path) -> None:
    """A CIFAR-10 folder whose files are all there (the launcher's data check passes) but empty, so the
    run fails when its loader reads them: a failure only the run itself can find."""
    from trainer.data_files import DATA_FILES
    (folder / "bad_cifar").mkdir()
    for name in DATA_FILES["cifar10"].files:
        (folder / "bad_cifar" / name).write_bytes(b"")


def test_local_runs_finish_failures_are_one_line_and_a_relaunch_skips_done(launch, tmp_path):
    (tmp_path / "smoke.py").write_text(GRID)
    bad_cifar(tmp_path)
    argv = ["--grid", "smoke.py", "--run", "smoke"]
    good = run_dirs(launch, *argv, "--only", "arch=digits_mlp")
    (bad,) = run_dirs(launch, *argv, "--only", "arch=resnet8")
    code, out, err = launch(*argv, "--cluster", "local", "--max-parallel", "2")
    assert code == 1, out + err  # one run failed
    assert "2 at a time" in out and "local: 2 finished, 1 failed" in out
    for d in good:
        assert runfiles.read_json(d / runfiles.RESULTS)["status"] == "done"
        job = runfiles.read_json(d / runfiles.JOB)
        assert job["cluster"] == "local" and Path(job["stdout"]).exists()
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("[2]") and "bad_cifar" in failed[0]
    assert "Traceback" not in out + err
    assert runfiles.read_json(bad / runfiles.STATUS)["state"] == "failed"

    before = [(d / runfiles.RESULTS).stat().st_mtime_ns for d in good]
    code, out, _ = launch(*argv, "--only", "arch=digits_mlp", "--cluster", "local")
    assert code == 0 and "skipping 2 runs" in out and "nothing to launch" in out
    assert [(d / runfiles.RESULTS).stat().st_mtime_ns for d in good] == before  # never overwritten
    code, out, _ = launch(*argv, "--dry-run")
    assert [line.split()[1] for line in out.splitlines() if line[:1].isdigit()] == ["done", "done", "failed"]


def test_debug_runs_in_process(launch, tmp_path):
    argv = [*SMOKE, "--limit", "1"]
    code, out, err = launch(*argv, "--cluster", "debug")
    assert code == 0, err
    (d,) = run_dirs(launch, *argv)
    assert runfiles.read_json(d / runfiles.RESULTS)["status"] == "done"
    assert runfiles.read_json(d / runfiles.JOB)["cluster"] == "debug"
    # in-process means the trainer's exception reaches the caller (for pdb), not a one-line summary
    bad_cifar(tmp_path)
    with pytest.raises(Exception, match="bad_cifar"):
        cli.main([*argv, "--set", "dataset=cifar10", "--set", "data=bad_cifar", "--cluster", "debug"])


def test_visible_gpus_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == [2, 3]  # physical indices: submitit sets each run's CUDA_VISIBLE_DEVICES
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert visible_gpus() == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1a2b")
    with pytest.raises(UsageError, match="integer GPU indices"):
        visible_gpus()


def test_procs_per_run_needs_the_distributed_module(launch, monkeypatch):
    monkeypatch.setitem(sys.modules, "launcher.executors.distributed", None)  # as if launcher/executors/distributed.py were absent
    code, _, err = launch(*SMOKE, "--limit", "1", "--cluster", "local", "--procs-per-run", "2")
    assert code == 2 and "--procs-per-run 2 is not available" in err


def test_summary_line_keeps_the_headline_metrics():
    from launcher.executors.base import summary
    assert summary({"final": {"Vacc": 97.7715, "Vloss": 0.0812, "levels/0": -1.0}}) == "Vacc 97.77, Vloss 0.0812"
    assert summary({"status": "done"}) == "finished" and summary(None) == "finished"
