"""Generated job scripts: values with spaces, quotes, $(), backticks and ../ stay inert, single words.

The scripts are executed for real with bash; only the Python they finally exec is swapped (NUQLAB_PYTHON)
for a recorder, because a real trainer run is not what is under test here.
"""
import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from launcher import cli
from launcher.executors.scripts import array_spec

NASTY = "it's a \"dir\" $(touch PWNED1) `touch PWNED2` ../../escape; touch PWNED3 \\ $HOME"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "nasty.py"
    grid.write_text(textwrap.dedent(f"""
        from launcher.registry import GridRun, register

        @register
        def r():
            return GridRun({{"data": [{NASTY!r}, "plain"], "arch": {NASTY!r}, "niters": 5}}, "results")
        """))
    root = tmp_path / "my runs 'x' $(touch PWNED4)"
    jobs = tmp_path / "jobs dir \"q\""
    argv = ["--grid", str(grid), "--run", "r", "--root", str(root), "--jobs-dir", str(jobs), "--prefix", "t"]
    code = cli.main(argv + ["--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert cli.main(argv + ["--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    recorder = tmp_path / "recorder.sh"
    recorder.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD"\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    return tmp_path, root, jobs, runs, recorder


def run_script(path, tmp_path, recorder, **env):
    env = dict(os.environ, NUQLAB_PYTHON=str(recorder), RECORD=str(tmp_path / "argv.txt"), **env)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, cwd=tmp_path)


def pwned(tmp_path):
    return [p for p in tmp_path.rglob("PWNED*")] + [p for p in REPO.glob("PWNED*")]


def test_task_scripts_quote_everything(setup):
    tmp_path, root, jobs, runs, recorder = setup
    assert len(runs) == 2 and runs[0]["config"]["data"] == NASTY
    for i, run in enumerate(runs):
        proc = run_script(jobs / f"t_{i}.sh", tmp_path, recorder)
        assert proc.returncode == 0, proc.stderr
        run_dir = Path(run["dir"]).absolute()
        assert run_dir.parent == root / "results"  # no ../ escape
        config_path = run_dir / "config.yaml"
        assert yaml.safe_load(config_path.read_text()) == run["config"]
        argv = (tmp_path / "argv.txt").read_text().splitlines()
        assert argv == ["-m", "trainer", "--config", str(config_path)]
    assert pwned(tmp_path) == []
    assert sorted(p.name for p in (root / "results").iterdir()) == sorted(r["name"] for r in runs)


def test_task_script_refuses_a_changed_config_and_accepts_its_own(setup):
    tmp_path, root, jobs, runs, recorder = setup
    assert run_script(jobs / "t_0.sh", tmp_path, recorder).returncode == 0
    assert run_script(jobs / "t_0.sh", tmp_path, recorder).returncode == 0  # same config again: fine
    config_path = Path(runs[0]["dir"]) / "config.yaml"
    config_path.write_text(config_path.read_text().replace("niters: 5", "niters: 6"))
    (tmp_path / "argv.txt").unlink()
    proc = run_script(jobs / "t_0.sh", tmp_path, recorder)
    assert proc.returncode == 2 and "refusing" in proc.stderr
    assert "niters: 6" in config_path.read_text() and not (tmp_path / "argv.txt").exists()


def test_sbatch_runs_the_array_task(setup):
    tmp_path, root, jobs, runs, recorder = setup
    sbatch = jobs / "t_slurm.sbatch"
    text = sbatch.read_text()
    assert "#SBATCH --array=0-1" in text
    assert "#SBATCH --output" not in text  # the jobs folder has spaces/quotes: sbatch cannot take it unquoted
    proc = run_script(sbatch, tmp_path, recorder, SLURM_ARRAY_TASK_ID="1")
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[-1] == str(Path(runs[1]["dir"]).absolute() / "config.yaml")
    assert pwned(tmp_path) == []


def test_array_spec():
    assert array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert array_spec([3]) == "3" and array_spec([2, 1, 2]) == "1-2"
