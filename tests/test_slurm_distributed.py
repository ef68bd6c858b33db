"""Runs on several torch.distributed ranks through SLURM (`launch --cluster slurm --nodes N --gpus-per-node G`).

On the real test cluster (scripts/slurm_cluster.sh): two slurmd daemons on this host, nodes nuqlab1 and
nuqlab2 in partition `all`, two fake GPUs each (gres; torch sees no CUDA, so the ranks use gloo). Every
rank is a real SLURM task running a real trainer process; nothing is mocked. The reference for each run is
the same config trained uninterrupted by `launcher.executors.distributed` on 2 local processes: CPU training with the
same per-rank random streams is bit-for-bit repeatable, so the metrics must match exactly.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from launcher import cli
from slurm_fixture import REPO, finished, launch, read, run_dirs, slurm_cluster, wait_until  # noqa: F401
from trainer import runfiles

GRIDS = str(Path(__file__).with_name("slurm_grids.py"))
pytestmark = pytest.mark.usefixtures("slurm_cluster")
METRICS = ("Vacc", "Vloss", "loss")


def local_reference(config_path: Path, where: Path) -> subprocess.Popen:
    """The same config trained uninterrupted on 2 local ranks (one thread each, as in a 1-CPU task)."""
    where.mkdir(parents=True)
    (where / runfiles.CONFIG).write_text(config_path.read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "launcher.executors.distributed", "--nprocs", "2",
                             "--config", str(where / runfiles.CONFIG)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def final(run_dir: Path) -> dict:
    return {k: read(run_dir / runfiles.RESULTS)["final"][k] for k in METRICS}


def sacct(job_id: str) -> list[list[str]]:
    """sacct rows (job id, state, node list) of a job and its steps."""
    out = subprocess.run(["sacct", "-n", "-P", "-j", job_id, "-o", "JobID,State,NodeList"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]


def rank_pids(run_dir: Path) -> dict[int, int]:
    """The trainer processes of a distributed run on this host, by rank (from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item)
        except (OSError, ValueError):
            continue
        if b"--worker" in cmd and str(run_dir / runfiles.CONFIG).encode() in cmd and b"RANK" in env:
            found[int(env[b"RANK"])] = int(proc.name)
    return found


def test_a_run_on_two_nodes_trains_like_two_local_ranks(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "dist", "--root", str(tmp_path / "runs")]
    out = launch(capsys, *args, "--cluster", "slurm", "--nodes", "2", "--gpus-per-node", "1",
                 "--partition", "all", "--time-min", "10")
    assert "1 runs in 1 array tasks (each on 2 ranks: 2 nodes x 1 tasks" in out
    (run_dir,) = run_dirs(tmp_path / "runs", "dist")
    ref = local_reference(run_dir / runfiles.CONFIG, tmp_path / "ref")
    job_id = read(run_dir / runfiles.JOB)["job_id"]
    assert f"logs: {tmp_path / 'runs' / 'dist' / '.slurm' / job_id}/ ;" in out  # the folder submitit writes
    script = Path(read(run_dir / runfiles.JOB)["stdout"]).parent / f"{job_id}_submission.sh"
    for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--partition=all"):
        assert f"#SBATCH {line}\n" in script.read_text(), line
    wait_until("the 2-node run to finish", lambda: finished(run_dir))
    assert ref.wait(timeout=300) == 0
    assert read(run_dir / runfiles.RESULTS)["status"] == "done"
    # one rank on each node, both exited cleanly; the job step spanned both nodes
    exits = [read(run_dir / f"rank{k}.exit.json") for k in range(2)]
    assert [(e["rank"], e["world"], e["node"], e["code"]) for e in exits] == [(0, 2, "nuqlab1", 0),
                                                                            (1, 2, "nuqlab2", 0)]
    assert [job_id, "COMPLETED", "nuqlab[1-2]"] in sacct(job_id)
    assert final(run_dir) == final(tmp_path / "ref")
    metrics = read(run_dir / runfiles.RESULTS)["final"]
    assert 3.0 < metrics["comm/bits_per_coord"] < 3.2  # 3-bit indices + one float32 norm per 256 values
    assert "summary: 1 done" in launch(capsys, "status", *args)
    assert "submitted job" not in launch(capsys, *args, "--cluster", "slurm", "--nodes", "2", "--partition", "all")


def test_a_preempted_distributed_run_requeues_and_resumes_to_the_same_metrics(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "dist_resume", "--root", str(tmp_path / "runs")]
    launch(capsys, *args, "--cluster", "slurm", "--nodes", "1", "--gpus-per-node", "2", "--time-min", "10")
    (run_dir,) = run_dirs(tmp_path / "runs", "dist_resume")
    ref = local_reference(run_dir / runfiles.CONFIG, tmp_path / "ref")
    wait_until("the run to be mid-training", lambda: read(run_dir / runfiles.STATUS).get("iteration", 0) >= 200,
               every=0.1)
    # submitit's simulated preemption: SIGUSR2 to every task; rank 0's handler checkpoints and requeues
    submitit.SlurmJob(folder=tmp_path, job_id=read(run_dir / runfiles.JOB)["job_id"])._interrupt()
    wait_until("the preempted run to finish", lambda: finished(run_dir), timeout=300)
    assert ref.wait(timeout=300) == 0
    log = (run_dir / runfiles.LOG).read_text()
    stopped = [int(n) for n in re.findall(r"checkpoint saved at iteration (\d+)", log)]
    resumed = [int(n) for n in re.findall(r"resuming at iteration (\d+)/2000", log)]
    assert stopped and resumed == stopped[:1] and 200 <= resumed[0] < 2000, log[-2000:]
    task_log = Path(read(run_dir / runfiles.JOB)["stderr"]).read_text()
    assert "submitit requeues this task" in task_log and "DUE TO JOB REQUEUE" in task_log
    assert final(run_dir) == final(tmp_path / "ref")


def test_a_killed_rank_fails_the_run_at_once_naming_the_rank(tmp_path, capsys):
    args = ["--grid", GRIDS, "--run", "dist_long", "--root", str(tmp_path)]
    launch(capsys, *args, "--cluster", "slurm", "--nodes", "2", "--partition", "all", "--time-min", "10")
    (run_dir,) = run_dirs(tmp_path, "dist_long")
    wait_until("the run to train", lambda: read(run_dir / runfiles.STATUS).get("iteration", 0) >= 30, every=0.1)
    pids = rank_pids(run_dir)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], 9)  # as the OOM killer would
    killed = time.monotonic()
    wait_until("the run to fail", lambda: finished(run_dir), timeout=60)
    # rank 0 fails as soon as its peer's socket closes, long before the 300 s collective timeout
    assert time.monotonic() - killed < 30
    status = read(run_dir / runfiles.STATUS)
    assert status["state"] == "failed"
    assert status["error"].startswith("rank 1 of 2 (node nuqlab2) was killed by SIGKILL; its log: ")
    assert Path(status["error"].rsplit(" ", 1)[1]).exists()
    job_id = read(run_dir / runfiles.JOB)["job_id"]
    assert sacct(job_id)[0][:2] == [job_id, "FAILED"]
    assert not (run_dir / runfiles.RESULTS).exists()
    out = launch(capsys, "status", *args)
    assert "summary: 1 failed" in out


def test_a_run_that_does_not_exchange_gradients_is_refused_before_submission(tmp_path, capsys):
    code = cli.main(["--grid", GRIDS, "--run", "not_dist", "--root", str(tmp_path), "--cluster", "slurm",
                     "--nodes", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "g_estim 'sgd' does not exchange gradients" in err and "nuq_dist" in err
    assert not any(p.name == "job.json" for p in tmp_path.rglob("*"))


def test_dry_run_scripts_train_a_two_node_run_when_submitted_by_hand(tmp_path, capsys):
    jobs = tmp_path / "jobs"
    launch(capsys, "--grid", GRIDS, "--run", "dist", "--root", str(tmp_path / "runs"), "--dry-run",
           "--jobs-dir", str(jobs), "--prefix", "d", "--nodes", "2", "--partition", "all", "--time-min", "10")
    sbatch = (jobs / "d_slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2\n" in sbatch and "#SBATCH --ntasks-per-node=1\n" in sbatch
    assert "exec srun" in (jobs / "d_0.sh").read_text()
    env = dict(os.environ, NUQLAB_PYTHON=sys.executable)
    subprocess.run(["sbatch", "--wait", str(jobs / "d_slurm.sbatch")], check=True, env=env, timeout=300,
                   capture_output=True)
    (run_dir,) = run_dirs(tmp_path / "runs", "dist")
    results = read(run_dir / runfiles.RESULTS)
    assert results["status"] == "done" and results["final"]["Vacc"] > 60, json.dumps(results)[:500]
