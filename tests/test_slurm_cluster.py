"""`launch --cluster slurm`, `launch status` and `launch cancel` on a real SLURM cluster (its one-node default
partition; multi-node runs: test_slurm_distributed.py).

The cluster (scripts/slurm_cluster.sh) is started by the slurm_cluster fixture; runs are real trainer runs on
the digits data (tests/slurm_grids.py), seconds each. Nothing here is mocked.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import submitit

from launcher import cli
from launcher.slurm.executor import LOG_DIR
from slurm_grids import empty_cifar10
from slurm_fixture import REPO, finished, launch, read, run_dirs, slurm_cluster, wait_until  # noqa: F401
from trainer import runfiles

GRIDS = str(Path(__file__).with_name("slurm_grids.py"))
pytestmark = pytest.mark.usefixtures("slurm_cluster")


def test_array_with_packing_and_throttling_then_relaunch_submits_nothing(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "small", "--root", str(tmp_path)]
    out = launch(capsys, *args, "--cluster", "slurm", "--runs-per-task", "2", "--array-parallelism", "1",
                 "--partition", "debug", "--mem-gb", "1.5", "--time-min", "10")
    array_id = re.search(r"submitted job (\d+): 4 runs in 2 array tasks", out).group(1)
    assert "logs:" in out
    dirs = run_dirs(tmp_path, "small")
    jobs = [read(d / runfiles.JOB) for d in dirs]
    assert sorted(j["job_id"] for j in jobs) == [f"{array_id}_0"] * 2 + [f"{array_id}_1"] * 2
    # throttling: SLURM's %N on the array, as submitted
    script = (tmp_path / "small" / LOG_DIR / array_id / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --mem=1536MB" in script

    wait_until("the 4 runs to finish", lambda: all(finished(d) for d in dirs))
    for d in dirs:
        results = read(d / runfiles.RESULTS)
        assert results["status"] == "done" and results["niters"] == 400
        # 400 SGD steps on digits reach >85% validation accuracy (about 96% in practice) (10 classes; chance is 10%)
        assert results["final"]["Vacc"] > 85, (d, results["final"])
    # packing: the two runs of a task trained at the same time, in two processes: the task's log shows
    # both started before either ended (the "ended" lines are written when each process exits)
    for task in (f"{array_id}_0", f"{array_id}_1"):
        pair = [d for d in dirs if read(d / runfiles.JOB)["job_id"] == task]
        assert len({read(d / runfiles.STATUS)["pid"] for d in pair}) == 2
        log = Path(read(pair[0] / runfiles.JOB)["stderr"]).read_text().splitlines()
        events = [line.split(": ", 1)[1].split(" (")[0] for line in log if line.startswith("nuqlab ")]
        assert sorted(events[:2]) == sorted(f"started {d}" for d in pair), events
        assert sorted(events[2:]) == sorted(f"ended {d}" for d in pair), events
    out = launch(capsys, "status", *args)
    assert "summary: 4 done" in out
    out = launch(capsys, *args, "--cluster", "slurm")
    assert "submitted job" not in out
    assert [read(d / runfiles.JOB) for d in dirs] == jobs  # no run was resubmitted
    # --mode force over an all-done grid reaches the mode check (it needs --yes), not "nothing to launch"
    assert cli.main([*args, "--cluster", "slurm", "--mode", "force"]) == 2
    assert "add --yes" in capsys.readouterr().err


def test_failed_run_is_reported_and_mode_failed_reruns_only_it(tmp_path, capsys, monkeypatch):
    args = ["--grid", GRIDS, "--run", "broken", "--root", str(tmp_path)]
    bad_data = empty_cifar10()
    out = launch(capsys, *args, "--cluster", "slurm")
    array_id = re.search(r"submitted job (\d+)", out).group(1)
    script = (tmp_path / "broken" / LOG_DIR / array_id / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --time=15\n" in script and "#SBATCH --partition=debug\n" in script  # the grid's defaults
    dirs = run_dirs(tmp_path, "broken")
    wait_until("both runs to end", lambda: all(finished(d) for d in dirs))
    bad = next(d for d in dirs if read(d / runfiles.STATUS).get("state") == "failed")
    good = next(d for d in dirs if d != bad)
    out = launch(capsys, "status", *args, "--failed")
    assert "summary: 1 done, 1 failed" in out
    assert f"{bad_data}/data_batch_1" in out.split("summary:")[0]  # the error line names the unreadable file
    assert f"log: {bad / runfiles.LOG}" in out
    assert "as a CIFAR pickle batch" in out.split("summary:")[1]  # --failed prints the log's last lines (the traceback's end)

    # a cluster without accounting: squeue on PATH, sacct not
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").symlink_to(shutil.which("squeue"))
    monkeypatch.setenv("PATH", str(bin_dir))
    out = launch(capsys, "status", *args)
    assert "summary: 1 done, 1 failed" in out and bad_data in out
    assert "run folders alone" not in out
    # a laptop: neither squeue nor sacct; the run folders alone
    (bin_dir / "squeue").unlink()
    out = launch(capsys, "status", *args)
    assert "summary: 1 done, 1 failed" in out and "states come from the run folders alone" in out
    monkeypatch.undo()

    before_good, before_bad = read(good / runfiles.JOB), read(bad / runfiles.JOB)
    out = launch(capsys, *args, "--cluster", "slurm", "--mode", "failed")
    assert re.search(r"submitted job \d+: 1 runs", out)
    assert read(good / runfiles.JOB) == before_good
    assert read(bad / runfiles.JOB)["job_id"] != before_bad["job_id"]
    out = launch(capsys, "status", *args)
    assert re.search(r"(pending|running)\s.*" + re.escape(bad.name), out)  # the rerun, not the old failure
    wait_until("the rerun to end", lambda: finished(bad))
    assert read(bad / runfiles.STATUS)["state"] == "failed"  # the data is still missing: it fails again

    # --mode force retrains everything, but only with --yes when a run is done, and never overwrites it
    assert cli.main([*args, "--cluster", "slurm", "--mode", "force"]) == 2
    assert "add --yes" in capsys.readouterr().err
    out = launch(capsys, *args, "--cluster", "slurm", "--mode", "force", "--yes")
    assert re.search(r"submitted job \d+: 2 runs", out)
    kept = [p for p in (tmp_path / "broken").iterdir() if p.name.startswith(good.name + ".old-")]
    assert len(kept) == 1 and read(kept[0] / runfiles.RESULTS)["status"] == "done"
    assert not (good / runfiles.RESULTS).exists() and read(good / runfiles.JOB)["job_id"] != before_good["job_id"]
    launch(capsys, "cancel", *args)


def reference_run(config_path: Path, where: Path) -> subprocess.Popen:
    """The same config trained uninterrupted, outside SLURM."""
    where.mkdir(parents=True)
    (where / runfiles.CONFIG).write_text(config_path.read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")  # as in a 1-CPU SLURM task
    return subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(where / runfiles.CONFIG)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_preempted_runs_resume_from_checkpoint_with_the_same_final_metrics(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "long", "--root", str(tmp_path / "runs")]
    launch(capsys, *args, "--cluster", "slurm", "--time-min", "10")
    dirs = run_dirs(tmp_path / "runs", "long")
    refs = [reference_run(d / runfiles.CONFIG, tmp_path / f"ref{i}") for i, d in enumerate(dirs)]
    mid = lambda d: read(d / runfiles.STATUS).get("iteration", 0) >= 300  # noqa: E731
    # run 0: submitit's simulated preemption (SIGTERM + SIGUSR2 -> checkpoint() -> requeue)
    wait_until("run 0 to be mid-training", lambda: mid(dirs[0]), every=0.1)
    job0 = read(dirs[0] / runfiles.JOB)["job_id"]
    submitit.SlurmJob(folder=tmp_path, job_id=job0)._interrupt()
    # run 1: the scheduler requeues the running task (SIGTERM to the trainer, which checkpoints)
    wait_until("run 1 to be mid-training", lambda: mid(dirs[1]), every=0.1)
    job1 = read(dirs[1] / runfiles.JOB)["job_id"]
    subprocess.run(["scontrol", "requeue", job1], check=True)
    # run 2: the time-limit warning (SIGUSR2 alone, as --signal=USR2@N sends it) -> checkpoint() -> requeue
    wait_until("run 2 to be mid-training", lambda: mid(dirs[2]), every=0.1)
    submitit.SlurmJob(folder=tmp_path, job_id=read(dirs[2] / runfiles.JOB)["job_id"])._interrupt(timeout=True)

    wait_until("the preempted runs to finish", lambda: all(finished(d) for d in dirs), timeout=300)
    for proc in refs:
        assert proc.wait(timeout=300) == 0
    # runs 0 and 2 went through submitit's handler: checkpoint() then requeue (not a kill and a fresh start)
    for d in (dirs[0], dirs[2]):
        task_log = Path(read(d / runfiles.JOB)["stderr"]).read_text()
        assert "submitit requeues this task" in task_log and "DUE TO JOB REQUEUE" in task_log
    for i, d in enumerate(dirs):
        log = (d / runfiles.LOG).read_text()
        resumed = [int(n) for n in re.findall(r"resuming at iteration (\d+)/6000", log)]
        assert resumed and 300 <= resumed[0] < 6000, log[-2000:]
        got, want = read(d / runfiles.RESULTS)["final"], read(tmp_path / f"ref{i}" / runfiles.RESULTS)["final"]
        # CPU training is bit-for-bit repeatable and the checkpoint holds the full state, so: exact equality
        assert {k: got[k] for k in ("Vacc", "Vloss", "loss")} == {k: want[k] for k in ("Vacc", "Vloss", "loss")}


def test_cancel_cancels_the_selected_runs(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "endless", "--root", str(tmp_path)]
    launch(capsys, *args, "--cluster", "slurm")
    dirs = run_dirs(tmp_path, "endless")
    seed1 = next(d for d in dirs if "seed_1" in d.name)
    wait_until("seed 1 to train", lambda: read(seed1 / runfiles.STATUS).get("iteration", 0) > 0)
    out = launch(capsys, "cancel", *args, "--only", "seed=1")
    assert "cancelled 1 array tasks" in out
    cancelled = read(seed1 / runfiles.JOB)["job_id"]
    # accounting records it as cancelled (slurmdbd is written asynchronously: poll)
    wait_until("sacct to record the cancellation", lambda: "CANCELLED" in subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", cancelled], capture_output=True, text=True).stdout)
    wait_until("the cancelled task to leave the queue", lambda: cancelled not in queued())
    # the trainer got SIGTERM and checkpointed: status shows it interrupted (resumable), not running
    wait_until("the trainer to checkpoint", lambda: read(seed1 / runfiles.STATUS).get("state") == "interrupted")
    out = launch(capsys, "status", *args)
    assert re.search(r"interrupted .*" + re.escape(seed1.name) + r"\n\s+note: job \S+ was cancelled", out), out
    other = read(next(d for d in dirs if d != seed1) / runfiles.JOB)["job_id"]
    assert other in queued()  # the run not selected is untouched
    assert "cancelled 1 array tasks" in launch(capsys, "cancel", *args)
    wait_until("the other task to leave the queue", lambda: other not in queued())
    assert "nothing to cancel" in launch(capsys, "cancel", *args)


def queued() -> list[str]:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
