"""The shipped example plugin's grid (grids/examples.py, `l1clip`) on the real SLURM test cluster: each run
trains with the plugin inside a SLURM array task, and its scalars reach results.json."""
from __future__ import annotations

import re

import pytest

from slurm_fixture import finished, launch, read, run_dirs, slurm_cluster, wait_until  # noqa: F401
from trainer import runfiles

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def test_example_plugin_grid_runs_on_slurm(tmp_path, capsys):
    args = ["--grid", "examples", "--run", "l1clip", "--root", str(tmp_path), "--set", "niters=40",
            "--set", "chkpt_iter=20", "--set", "tblog_interval=20"]
    out = launch(capsys, *args, "--cluster", "slurm", "--partition", "debug", "--runs-per-task", "3")
    assert re.search(r"submitted job \d+: 3 runs in 1 array tasks?", out), out
    dirs = run_dirs(tmp_path, "examples_l1clip")
    wait_until("the 3 runs to finish", lambda: all(finished(d) for d in dirs))
    finals = {d.name: read(d / runfiles.RESULTS).get("final", {}) for d in dirs}
    assert all(read(d / runfiles.RESULTS).get("status") == "done" for d in dirs), finals
    with_plugin = [d for d in dirs if runfiles.read_config(d / runfiles.CONFIG).get("plugins") == "l1clip"]
    assert len(with_plugin) == 2  # run names show only the swept keys: tell the runs apart by their config
    for d in with_plugin:
        final = finals[d.name]
        assert final["l1clip/weight_l1"] > 0 and 0 < final["l1clip/clipped_frac"] < 1 and final["Vacc"] > 50
    assert "plugins l1clip" in (with_plugin[0] / runfiles.LOG).read_text()
    assert "summary: 3 done" in launch(capsys, "status", *args)
