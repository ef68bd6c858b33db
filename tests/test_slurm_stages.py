"""Multi-stage grids on the real SLURM test cluster: one array per stage chained with afterok dependencies,
waiting/blocked runs in `launch status`, and relaunching a partly done chain. Nothing is mocked; every wait
is bounded (slurm_fixture.wait_until)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.slurm.executor import LOG_DIR
from slurm_fixture import finished, launch, read, slurm_cluster, wait_until  # noqa: F401
from test_stages import BASE, grid_file, select
from trainer import runfiles

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def submission(results: Path, job_id: str) -> str:
    array = job_id.split("_")[0]
    return (results / LOG_DIR / array / f"{array}_submission.sh").read_text()


def job_of(run) -> str:
    return read(run.dir / runfiles.JOB)["job_id"]


def queued() -> list[str]:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()


def test_the_digits_chain_is_three_arrays_chained_by_afterok_and_runs_in_order(tmp_path, capsys):
    argv = ["--grid", "stages", "--run", "digits_chain", "--root", str(tmp_path)]
    out = launch(capsys, *argv, "--cluster", "slurm", "--time-min", "10")
    ids = re.findall(r"submitted job (\d+) \(stage (\w+)\): 2 runs in 2 array tasks", out)
    assert [stage for _, stage in ids] == ["fp", "quant", "ft"], out
    runs = select("stages", "digits_chain", tmp_path)
    stage = {s: [r for r in runs if r.config["stage"] == s] for s in ("fp", "quant", "ft")}
    results = tmp_path / "digits_chain"
    assert "--dependency" not in submission(results, job_of(stage["fp"][0]))
    for up, down in (("fp", "quant"), ("quant", "ft")):
        script = submission(results, job_of(stage[down][0]))
        after = ":".join(job_of(r) for r in stage[up])  # the upstream array's tasks, e.g. 12_0:12_1
        assert f"#SBATCH --dependency=afterok:{after}\n" in script and "#SBATCH --kill-on-invalid-dep=yes\n" in script
    status = launch(capsys, "status", *argv)
    assert re.search(r"waiting .*" + re.escape(stage["ft"][0].name) + r"\s+\(waiting on quant\)", status), status

    wait_until("the chain to finish", lambda: all(finished(r.dir) for r in runs), timeout=400)
    by_name = {r.name: r for r in runs}
    for run in stage["quant"] + stage["ft"]:
        up = by_name[run.config["init_run"]]
        assert read(run.dir / runfiles.RESULTS)["status"] == "done"
        # status.json: the downstream trainer started after its upstream had finished (its last heartbeat)
        assert read(run.dir / runfiles.STATUS)["started"] >= read(up.dir / runfiles.STATUS)["heartbeat"]
        assert read(up.dir / runfiles.STATUS)["state"] == "done"
    assert "summary: 6 done" in launch(capsys, "status", *argv)
    table = launch(capsys, "aggregate", *argv, "--by", "stage", "--metric", "Vacc", "--format", "csv")
    assert [line.split(",")[0] for line in table.strip().splitlines()[1:]] == ["fp", "quant", "ft"]
    assert "nothing to submit" in launch(capsys, *argv, "--cluster", "slurm")  # a finished chain: nothing


def test_a_failed_upstream_blocks_its_downstream_and_a_relaunch_submits_only_what_is_missing(tmp_path, capsys):
    start = tmp_path / "start.pt"  # seed 2's starting weights: missing, so its fp run fails
    grid = grid_file(tmp_path, f"[{{**BASE, 'stage': 'fp', 'seed': 1}},"
                               f" {{**BASE, 'stage': 'fp', 'seed': 2, 'init_checkpoint': {str(start)!r}}},"
                               " {**BASE, 'stage': 'q', 'init_from': 'fp', 'seed': [1, 2]}]")
    argv = ["--grid", grid, "--run", "r", "--root", str(tmp_path)]
    launch(capsys, *argv, "--cluster", "slurm", "--time-min", "10")
    fp1, fp2, q1, q2 = select(grid, root=tmp_path)
    first_q = job_of(q1)

    def blocked() -> bool:
        text = launch(capsys, "status", *argv)
        return text.count(f"(blocked by {fp2.name} (failed))") == 2
    wait_until("the fp runs to end", lambda: finished(fp1.dir) and finished(fp2.dir), timeout=300)
    wait_until("the q runs to be reported blocked", blocked, timeout=120)
    # their array can never start: it is cancelled (by SLURM's kill-on-invalid-dep, or by status), not left pending
    array = first_q.split("_")[0]
    wait_until("the blocked array to leave the queue", lambda: not any(j.split("_")[0] == array for j in queued()),
               timeout=120)
    status = launch(capsys, "status", *argv)
    assert "summary: 2 blocked, 1 done, 1 failed" in status, status
    assert "no such file" in status and not (q1.dir / runfiles.STATUS).exists()

    shutil.copy(fp1.dir / runfiles.CHECKPOINT, start)  # fix the cause; the configs are unchanged
    fp1_job = read(fp1.dir / runfiles.JOB)
    out = launch(capsys, *argv, "--cluster", "slurm", "--mode", "failed")
    assert re.search(r"submitted job (\d+) \(stage fp\): 1 runs", out) and "(stage q): 2 runs" in out, out
    assert read(fp1.dir / runfiles.JOB) == fp1_job  # the done upstream is not resubmitted
    # the q array waits only on the rerun of the failed upstream, not on the done one
    assert f"#SBATCH --dependency=afterok:{job_of(fp2)}\n" in submission(tmp_path / "res", job_of(q1))
    assert job_of(q1) != first_q
    wait_until("the relaunched chain to finish", lambda: all(finished(r.dir) for r in (fp2, q1, q2)), timeout=300)
    assert all(read(r.dir / runfiles.RESULTS).get("status") == "done" for r in (fp1, fp2, q1, q2))
    assert read(q2.dir / runfiles.STATUS)["started"] >= read(fp2.dir / runfiles.STATUS)["heartbeat"]
    out = launch(capsys, "status", *argv)
    assert "summary: 4 done" in out


def test_a_later_stage_launched_alone_depends_on_its_queued_upstream(tmp_path, capsys):
    grid = grid_file(tmp_path, "[{**BASE, 'stage': 'fp', 'niters': 100000, 'chkpt_iter': 100000},"
                               " {**BASE, 'stage': 'q', 'init_from': 'fp'}]")
    argv = ["--grid", grid, "--run", "r", "--root", str(tmp_path)]
    launch(capsys, *argv, "--stage", "fp", "--cluster", "slurm", "--time-min", "10")
    fp, q = select(grid, root=tmp_path)
    out = launch(capsys, *argv, "--stage", "q", "--cluster", "slurm", "--time-min", "10")
    assert "(stage q): 1 runs" in out
    assert f"#SBATCH --dependency=afterok:{job_of(fp)}\n" in submission(tmp_path / "res", job_of(q))
    assert "(waiting on fp)" in launch(capsys, "status", *argv, "--stage", "q")
    launch(capsys, "cancel", *argv)
    wait_until("both jobs to leave the queue", lambda: not {job_of(fp), job_of(q)} & set(queued()), timeout=120)
