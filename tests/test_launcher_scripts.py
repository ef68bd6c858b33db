"""Generated job scripts: values with spaces, quotes, $(), backticks and ../ stay inert, single words.

The scripts are executed for real with bash; only the Python they finally exec is swapped (NUQLAB_PYTHON)
for a recorder, because a real trainer run is not what is under test here.
"""
import json
import os
import shlex
import signal
import stat
import subprocess
import textwrap
import time
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


# --runs-per-task K in a dry-run: K runs per task script, started together, like the paper's pjobs/*.sh.

PAPER_JOB = REPO / "tests" / "golden" / "pjobs_resnet32.txt"
FAILING_RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$(dirname "$4")/argv.txt"
case "$4" in *"$FAIL_ON"*) exit 7;; esac
"""


def paper_value(value) -> str:
    """A config value as the paper's grid_run.py wrote it on a command line ('' for a flag, 1 for 1.0)."""
    if value is True:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def as_paper_command(line: str) -> str:
    """Our `"$python" -m trainer --config DIR/config.yaml &` as the paper's `python -m main.gvar --k v ... &`."""
    words = shlex.split(line)
    assert words[:4] == ["$python", "-m", "trainer", "--config"] and words[5:] == ["&"], line
    config = yaml.safe_load(Path(words[4]).read_text())
    return " ".join(["python -m main.gvar"] + [f"--{k} {paper_value(v)}" for k, v in config.items()] + ["&"])


def dry_run(tmp_path, *argv):
    jobs = tmp_path / "jobs"
    code = cli.main(["--root", str(tmp_path / "runs"), "--jobs-dir", str(jobs), "--prefix", "p", "--dry-run", *argv])
    assert code == 0
    return jobs


def run_packed(script: Path, tmp_path, fail_on: str = "no run has this in its name"):
    recorder = tmp_path / "recorder.sh"
    recorder.write_text(FAILING_RECORDER)
    recorder.chmod(0o755)
    env = dict(os.environ, NUQLAB_PYTHON=str(recorder), FAIL_ON=fail_on)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)


def background_lines(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if line.endswith(" &")]


def test_packed_dry_run_writes_the_papers_resnet32_job(tmp_path, capsys):
    jobs = dry_run(tmp_path, "--grid", "nuq", "--run", "cifar10_resnet32", "--runs-per-task", "9")
    assert "1 task scripts (9 runs each" in capsys.readouterr().out
    assert sorted(p.name for p in jobs.iterdir()) == ["p_0.sh", "p_slurm.sbatch"]
    assert "#SBATCH --array=0\n" in (jobs / "p_slurm.sbatch").read_text()
    proc = run_packed(jobs / "p_0.sh", tmp_path)  # writes the 9 config.yaml files, "trains" with the recorder
    assert proc.returncode == 0, proc.stderr
    ours = [as_paper_command(line) for line in background_lines(jobs / "p_0.sh")]
    paper = [line for line in PAPER_JOB.read_text().splitlines() if not line.startswith("#")]
    assert paper[-1] == "wait" and ours == paper[:-1]  # same 9 commands, same flags, same order, one job
    assert len(list((tmp_path / "runs").rglob("argv.txt"))) == 9


def test_packed_task_waits_for_every_run_and_fails_when_one_fails(tmp_path):
    jobs = dry_run(tmp_path, "--grid", "nuq", "--run", "cifar10_resnet32", "--runs-per-task", "4")
    assert sorted(p.name for p in jobs.iterdir()) == ["p_0.sh", "p_1.sh", "p_2.sh", "p_slurm.sbatch"]
    assert [len(background_lines(jobs / f"p_{t}.sh")) for t in range(3)] == [4, 4, 1]
    proc = run_packed(jobs / "p_1.sh", tmp_path, fail_on="nuq_method_qinf")  # runs 4..7, the qinf run is 4
    assert proc.returncode == 7
    assert len(list((tmp_path / "runs").rglob("argv.txt"))) == 4  # the other three still ran
    assert run_packed(jobs / "p_2.sh", tmp_path, fail_on="nuq_method_qinf").returncode == 0


def test_packed_tasks_of_a_paper_grid_keep_its_order(tmp_path):
    jobs = dry_run(tmp_path, "--grid", "paper", "--run", "interval", "--runs-per-task", "12")
    lines = [line for t in range(3) for line in background_lines(jobs / f"p_{t}.sh")]
    for t in range(3):
        assert run_packed(jobs / f"p_{t}.sh", tmp_path).returncode == 0
    configs = [yaml.safe_load(Path(shlex.split(line)[4]).read_text()) for line in lines]
    golden = [json.loads(line) for line in (REPO / "tests/golden/paper/interval.jsonl").read_text().splitlines()]
    assert [list(c) for c in configs] == [list(g) for g in golden]
    assert [c["g_osnap_iter"] for c in configs] == [g["g_osnap_iter"] for g in golden]


def test_packed_task_passes_a_stop_signal_to_its_runs(tmp_path):
    jobs = dry_run(tmp_path, "--grid", "nuq", "--run", "cifar10_resnet32", "--runs-per-task", "2")
    trainer = tmp_path / "trainer.sh"  # stands in for the trainer: checkpoints (exit 3) on SIGUSR2
    trainer.write_text('#!/usr/bin/env bash\nrun="$(dirname "$4")"\n'
                       'trap \'touch "$run/stopped"; exit 3\' USR2\ntouch "$run/ready"\n'
                       'for _ in $(seq 400); do sleep 0.05; done\n')  # gives up after ~20 s if the signal never comes
    trainer.chmod(0o755)
    proc = subprocess.Popen(["bash", str(jobs / "p_0.sh")], env=dict(os.environ, NUQLAB_PYTHON=str(trainer)),
                            cwd=tmp_path)
    deadline = time.monotonic() + 20
    while len(list(tmp_path.rglob("ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=20) == 3
    assert len(list(tmp_path.rglob("stopped"))) == 2
