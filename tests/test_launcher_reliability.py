"""Issue 15 end to end with the real launcher, submitit and trainer: corrupt files, kill -9, preemption signals
under --cluster local, and concurrent launches on one grid and root."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_trainer_signal import _wait_for
from trainer import runfiles

ROOT = Path(__file__).resolve().parent.parent
GRID = """
from launcher.registry import GridRun, register

@register
def rel():
    base = {{"dataset": "digits", "arch": "digits_mlp", "niters": {niters}, "chkpt_iter": {chkpt},
             "log_interval": 0, "batch_size": 32}}
    return GridRun([{{**base, "seed": {seeds}}}], "rel")
"""


def _grid(tmp_path, niters=4, chkpt=2, seeds=(1, 2)):
    (tmp_path / "rel.py").write_text(GRID.format(niters=niters, chkpt=chkpt, seeds=list(seeds)))
    return ["--grid", "rel.py", "--run", "rel"]


def _dirs(launch, argv):
    code, out, _ = launch(*argv, "--json")
    assert code == 0
    return [Path(r["dir"]) for r in json.loads(out)]


def _launch_proc(tmp_path, *argv):
    return subprocess.Popen([sys.executable, "-m", "launcher", *argv], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc, timeout):
    """The output of a launch subprocess; on timeout its whole session is killed (no trainer left behind)."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return out


def _status(run_dir):
    return runfiles.read_json(run_dir / runfiles.STATUS) or {}


def test_corrupt_results_is_its_own_state_and_a_relaunch_finishes_from_the_checkpoint(launch, tmp_path):
    argv = _grid(tmp_path, seeds=[1])
    code, _, err = launch(*argv, "--cluster", "debug")
    assert code == 0, err
    (run,) = _dirs(launch, argv)
    (run / runfiles.RESULTS).write_text('{"status": "do')  # a torn write from another tool, a full disk
    code, out, _ = launch("status", *argv)
    assert code == 0 and " corrupt " in out and str(run / runfiles.RESULTS) in out
    code, out, err = launch(*argv, "--cluster", "debug")
    assert code == 0, err
    assert runfiles.read_json(run / runfiles.RESULTS)["status"] == "done"
    (aside,) = run.glob("results.json.corrupt-*")
    assert aside.read_text() == '{"status": "do'  # kept, not deleted
    assert "resuming at iteration 4/4" in (run / runfiles.LOG).read_text()


def test_unreadable_config_skips_that_run_only_and_repair_keeps_the_checkpoint(launch, tmp_path):
    argv = _grid(tmp_path)
    first, second = _dirs(launch, argv)
    code, _, err = launch(*argv, "--only", "seed=1", "--cluster", "debug")
    assert code == 0, err
    os.replace(first / runfiles.RESULTS, first / "results.saved")  # a run with a checkpoint, not done
    (first / runfiles.CONFIG).write_text("seed: [1\n")
    code, out, err = launch(*argv, "--cluster", "debug")
    assert code == 0, out + err
    assert str(first / runfiles.CONFIG) in err and "--repair-config" in err
    assert runfiles.read_json(second / runfiles.RESULTS)["status"] == "done"  # the other run was not refused
    assert not (first / runfiles.RESULTS).exists()
    code, out, err = launch(*argv, "--cluster", "debug", "--repair-config")
    assert code == 0, out + err
    assert "seed: 1" in (first / runfiles.CONFIG).read_text()
    assert "resuming at iteration 4/4" in (first / runfiles.LOG).read_text()  # the checkpoint was kept
    assert runfiles.read_json(first / runfiles.RESULTS)["status"] == "done"


def test_sigusr2_and_sigterm_under_local_checkpoint_and_end_interrupted(launch, tmp_path):
    argv = _grid(tmp_path, niters=1_000_000, chkpt=0)
    runs = _dirs(launch, argv)
    proc = _launch_proc(tmp_path, *argv, "--cluster", "local", "--max-parallel", "2")
    try:
        # a trainer's pid in status.json: it runs, and the job process forwards signals to it
        assert _wait_for(lambda: all(_status(d).get("pid") for d in runs), 120), "the runs did not start"
        trainer = runfiles.read_json(runs[0] / runfiles.STATUS)["pid"]
        job_process = int(Path(f"/proc/{trainer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(job_process, signal.SIGUSR2)  # what submitit's local timeout sends to the job's process
        controller = int(runfiles.read_json(runs[1] / runfiles.JOB)["job_id"])
        os.kill(controller, signal.SIGTERM)  # what a kill of the local job sends (forwarded by submitit)
    finally:
        out = _finish(proc, 120)
    for run in runs:
        status = runfiles.read_json(run / runfiles.STATUS)
        assert status["state"] == "interrupted", out
        import torch
        assert torch.load(run / runfiles.CHECKPOINT, weights_only=True)["iteration"] == status["iteration"]
    assert out.count("interrupted: checkpoint saved at iteration") == 2, out


def test_kill_9_of_a_local_trainer_is_reported_at_once_and_relaunch_resumes(launch, tmp_path):
    argv = _grid(tmp_path, niters=1_000_000, chkpt=20, seeds=[1])
    (run,) = _dirs(launch, argv)
    proc = _launch_proc(tmp_path, *argv, "--cluster", "local")
    killed = time.monotonic()
    try:
        assert _wait_for(lambda: (run / runfiles.CHECKPOINT).exists(), 120), "no checkpoint"
        os.kill(runfiles.read_json(run / runfiles.STATUS)["pid"], signal.SIGKILL)
        killed = time.monotonic()
    finally:
        out = _finish(proc, 60)
    noticed = time.monotonic() - killed
    assert "killed by SIGKILL (signal 9)" in out and noticed < 15, (noticed, out)
    status = runfiles.read_json(run / runfiles.STATUS)
    assert status["state"] == "failed" and "SIGKILL" in status["error"]
    code, out, _ = launch("status", *argv)
    assert " failed " in out and "SIGKILL" in out
    code, out, _ = launch(*argv, "--dry-run")  # relaunchable at once: no 10-minute stale wait
    assert "skipping" not in out and " failed " in out
    (run / runfiles.CONFIG).write_text((run / runfiles.CONFIG).read_text().replace("1000000", "60"))
    done = subprocess.run([sys.executable, "-m", "trainer", "--config", str(run / runfiles.CONFIG)], timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming at iteration" in (run / runfiles.LOG).read_text()


def test_three_concurrent_launches_train_each_run_exactly_once(launch, tmp_path):
    argv = _grid(tmp_path, niters=10, chkpt=5, seeds=[1, 2, 3, 4])
    runs = _dirs(launch, argv)
    procs = [_launch_proc(tmp_path, *argv, "--cluster", "local", "--max-parallel", "2") for _ in range(3)]
    outs = [_finish(p, 300) for p in procs]
    for run in runs:
        log = (run / runfiles.LOG).read_text()
        assert log.count("starting iteration 0") == 1, (run, log, outs)
        assert "resuming" not in log, (run, log)
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert runfiles.read_json(run / runfiles.RESULTS)["status"] == "done"
    assert all(p.returncode == 0 for p in procs), outs
