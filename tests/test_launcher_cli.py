"""The `launch` command: dry-run, --json, show, list, options, executor plug-ins, every bad-input case."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from launcher import cli
from launcher.executors import base as executors
from launcher.executors.base import Executor, load_executors, register_executor
from trainer import runfiles
from trainer.options import OPTIONS

REPO = Path(__file__).resolve().parents[1]
HEADER = "from collections import OrderedDict\nfrom launcher.registry import GridRun, register\n"



def grid_file(tmp_path, body, name="mygrid"):
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def json_runs(launch, *argv):
    code, out, err = launch(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_dry_run_of_the_paper_grid(launch, tmp_path):
    code, out, err = launch("--grid", "nuq", "--run", "cifar10_resnet32", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("idx"))
    assert lines[header].split()[:3] == ["idx", "state", "g_estim"] and lines[header].split()[-1] == "name"
    rows = lines[header + 1:header + 10]
    assert [r.split()[0] for r in rows] == [str(i) for i in range(9)]
    assert all("not submitted" in r for r in rows)
    names = [r["name"] for r in json_runs(launch, "--grid", "nuq", "--run", "cifar10_resnet32")]
    assert all(r.endswith(n) for r, n in zip(rows, names))
    jobs = tmp_path / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == sorted(
        [f"nuq_cifar10_resnet32_{i}.sh" for i in range(9)] + ["nuq_cifar10_resnet32_slurm.sbatch"])
    sbatch = (jobs / "nuq_cifar10_resnet32_slurm.sbatch").read_text()
    assert "#SBATCH --array=0-8" in sbatch and "nuq_cifar10_resnet32_\"${SLURM_ARRAY_TASK_ID}\".sh" in sbatch
    for i in range(9):
        script = (jobs / f"nuq_cifar10_resnet32_{i}.sh").read_text()
        assert "-m trainer --config \"$run_dir/config.yaml\"" in script and names[i] in script
        subprocess.run(["bash", "-n", str(jobs / f"nuq_cifar10_resnet32_{i}.sh")], check=True)
    assert not (tmp_path / "runs").exists()  # a dry run prepares no run folder and runs nothing


def test_dry_run_shows_done_and_failed_and_skips_done(launch, tmp_path):
    runs = json_runs(launch, "--grid", "nuq", "--run", "cifar10_resnet32")
    runfiles.atomic_write_json(Path(runs[0]["dir"]) / runfiles.RESULTS, {"status": "done"})
    runfiles.atomic_write_json(Path(runs[1]["dir"]) / runfiles.STATUS, {"state": "failed", "error": "x"})
    code, out, err = launch("--grid", "nuq", "--run", "cifar10_resnet32", "--dry-run", "--jobs-dir", "out jobs",
                            "--prefix", "p")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isdigit()}
    assert rows["0"].split()[1] == "done" and rows["1"].split()[1] == "failed"
    assert "skipping 1 runs that are done" in out
    jobs = tmp_path / "out jobs"
    assert not (jobs / "p_0.sh").exists() and (jobs / "p_1.sh").exists()
    assert "#SBATCH --array=1-8" in (jobs / "p_slurm.sbatch").read_text()


def test_json_lists_name_dir_config(launch, tmp_path):
    runs = json_runs(launch, "--grid", "nuq", "--run", "digits", "--only", "nuq_method=amq", "--root", "res")
    assert [set(r) for r in runs] == [{"name", "dir", "config"}] * 2
    assert [r["config"]["seed"] for r in runs] == [1, 2]
    assert all(r["dir"] == os.path.join("res", "digits", r["name"]) for r in runs)
    code, out, _ = launch("show", "--grid", "nuq", "--run", "digits", "--only", "nuq_method=amq", "--root", "res",
                          "--json")
    assert code == 0 and json.loads(out) == runs
    assert not (tmp_path / "res").exists() and not (tmp_path / "jobs").exists()


def test_show_prints_expanded_configs(launch):
    code, out, err = launch("show", "--grid", "nuq", "--run", "cifar10_resnet32", "--limit", "2")
    assert code == 0, err
    assert "2 of 9 configs" in out and "[0] " in out and "[1] " in out and "[2] " not in out
    assert "  nuq_method: amq" in out and "  nuq_amq_epochs: 40" in out


def test_list_shows_families_runs_and_counts(launch):
    code, out, err = launch("list")
    assert code == 0, err
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("nuq", "cifar10_resnet32", "9") in rows and ("nuq", "digits", "20") in rows


def test_list_reports_a_broken_grid_without_crashing(launch, tmp_path):
    path = grid_file(tmp_path, """
        @register
        def good():
            return GridRun({"lr": [0.1, 0.2]}, "good")

        @register
        def bad():
            return GridRun({"lr": []}, "bad")

        @register
        def typo():
            return GridRun({"nitres": 3}, "typo")
        """)
    code, out, err = launch("list", "--grid", path)
    assert code == 1
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[1:3] for r in rows] == [["good", "2"], ["bad", "error"], ["typo", "error"]]
    assert "empty list" in out and "did you mean niters" in out


def test_options_prints_the_schema(launch):
    code, out, _ = launch("options")
    assert code == 0 and all(key in out for key in OPTIONS)
    code, out, _ = launch("options", "--markdown")
    assert code == 0 and out.startswith("| key | type | default | meaning |")
    assert out.count("\n") == len(OPTIONS) + 2


@pytest.mark.parametrize("argv, message", [
    (["--grid", "nope", "--run", "x"], "unknown grid 'nope'; available grids: actnn, bsq, examples, "),
    (["--grid", "../etc", "--run", "x"], "no such file"),
    (["--grid", "nuq", "--run", "nope"], "unknown run 'nope' in grid 'nuq'; its runs: cifar10_resnet32, "),
    (["--grid", "nuq", "--run", "digits", "--set", "niters"], "--set 'niters': expected KEY=VALUE"),
    (["--grid", "nuq", "--run", "digits", "--set", "nitres=3"], "unknown config key 'nitres'; did you mean niters"),
    (["--grid", "nuq", "--run", "digits", "--set", "niters=ten"], "bad value for 'niters': expected an int"),
    (["--grid", "nuq", "--run", "digits", "--only", "seed"], "--only 'seed': expected KEY=VALUE"),
    (["--grid", "nuq", "--run", "digits", "--only", "seed=9"], "--only selects none of the 20 runs"),
    (["--grid", "nuq", "--run", "digits", "--limit", "0"], "argument --limit: '0' must be at least 1"),
    (["--grid", "nuq", "--run", "digits", "--limit", "x"], "argument --limit: invalid positive_int value"),
    (["--grid", "nuq"], "the following arguments are required: --run"),
    (["--grid", "nuq", "--run", "digits", "--cluster", "moon"], "unknown --cluster 'moon'; available: debug, dryrun, local"),
    (["--grid", "nuq", "--run", "digits", "--bogus"], "unrecognized arguments: --bogus"),
    (["show", "--grid", "nuq", "--run", "nope"], "unknown run 'nope'"),
    (["list", "--grid", "nope"], "unknown grid 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(launch, argv, message):
    code, out, err = launch(*argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_run_lists_the_grids_runs(launch):
    _, _, err = launch("--grid", "nuq", "--run", "nope")
    assert "cifar10_resnet32" in err and "digits" in err and "ours_cifar10_resnet8" in err


@pytest.mark.parametrize("body, message, line", [
    ("@register\ndef r():\n    x = 1\n    return GridRun({'lr': 1 / 0}, 'f')\n", "raised ZeroDivisionError", 6),
    ("@register\ndef r():\n    return GridRun({'nuq_bitz': 3}, 'f')\n",
     "r[0]: unknown config key 'nuq_bitz'; did you mean nuq_bits", None),
    ("@register\ndef r():\n    return GridRun({'niters': 'many'}, 'f')\n", "bad value for 'niters'", None),
    ("@register\ndef r():\n    return {'lr': 0.1}\n", "must return launcher.registry.GridRun", None),
    ("@register\ndef r():\n    return GridRun({'lr': 0.1}, '../../etc')\n", "must be one plain folder name", None),
    ("@register\ndef r():\n    return GridRun({'lr': [0.1, 0.1]}, 'f')\n", "configs 0 and 1 are identical", None),
    ("@register\ndef r():\n    return GridRun({'lr': {'a': 1}}, 'f')\n", "is not a scalar", None),
    ("x = [\n@register\ndef r():\n    pass\n", "SyntaxError: '[' was never closed (at", 3),
    ("import no_such_module_xyz\n", "No module named 'no_such_module_xyz'", 3),
    ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import", 3),
])
def test_broken_grid_files_name_file_and_line(launch, tmp_path, body, message, line):
    path = grid_file(tmp_path, body)
    code, _, err = launch("--grid", path, "--run", "r", "--dry-run")
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if line is not None:
        assert f"{path}:{line}" in err


def test_refuses_a_folder_whose_config_differs(launch, tmp_path):
    runs = json_runs(launch, "--grid", "nuq", "--run", "cifar10_resnet32")
    path = Path(runs[3]["dir"]) / runfiles.CONFIG
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(dict(runs[3]["config"], nuq_cd_epochs=99)))
    code, _, err = launch("--grid", "nuq", "--run", "cifar10_resnet32", "--dry-run")
    assert code == 2 and "refusing run 3" in err and "nuq_cd_epochs: 99 -> 30" in err
    assert yaml.safe_load(path.read_text())["nuq_cd_epochs"] == 99  # never overwritten
    assert not (tmp_path / "jobs").exists()


def test_unavailable_subcommand_says_so(launch, monkeypatch):
    monkeypatch.setitem(cli.SUBCOMMANDS, "frobnicate", "launcher.no_such_module_here")
    code, _, err = launch("frobnicate")
    assert code == 2 and "`launch frobnicate` is not available" in err and "Traceback" not in err


def test_missing_executor_plugin_says_so(launch, monkeypatch):
    monkeypatch.setattr(executors, "PLUGINS", {**executors.PLUGINS, "no_such_cluster": "launcher.no_such_cluster"})
    code, _, err = launch("--grid", "nuq", "--run", "digits", "--cluster", "no_such_cluster")
    assert code == 2 and "--cluster no_such_cluster is not available in this installation" in err


def test_every_subcommand_of_others_is_mapped():
    assert {"list", "show", "status", "cancel", "aggregate", "plot"} <= set(cli.SUBCOMMANDS)
    assert cli.SUBCOMMANDS["status"] == "launcher.status" and cli.SUBCOMMANDS["plot"] == "launcher.results.plot"


class Recorder(Executor):
    """A test executor (the real local/slurm ones need a trainer or a cluster): records what it receives,
    to check the plug-in registry and what `launch` hands to any executor."""
    received: list = []

    def add_arguments(self, parser):
        parser.add_argument("--recorder-tag", default="t")

    def launch(self, runs, selection, args):
        Recorder.received = [(r.index, r.dir, args.recorder_tag) for r in runs]
        return 0


def test_executor_plugins_receive_prepared_runs(launch, monkeypatch):
    load_executors()
    monkeypatch.setattr(executors, "EXECUTORS", dict(executors.EXECUTORS))  # restored after the test
    register_executor("recorder")(Recorder)
    runs = json_runs(launch, "--grid", "nuq", "--run", "digits", "--limit", "3")
    runfiles.atomic_write_json(Path(runs[1]["dir"]) / runfiles.RESULTS, {"status": "done"})
    code, out, err = launch("--grid", "nuq", "--run", "digits", "--limit", "3", "--cluster", "recorder",
                            "--recorder-tag", "x")
    assert code == 0, err
    assert Recorder.received == [(0, Path(runs[0]["dir"]), "x"), (2, Path(runs[2]["dir"]), "x")]
    for i in (0, 2):  # config.yaml written before the executor ran
        assert yaml.safe_load((Path(runs[i]["dir"]) / runfiles.CONFIG).read_text()) == runs[i]["config"]
    assert not (Path(runs[1]["dir"]) / runfiles.CONFIG).exists()  # the done run is left alone


def test_python_dash_m_launcher_and_no_torch_on_dry_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = ("import sys; from launcher.cli import main; "
            "rc = main(['--grid', 'nuq', '--run', 'cifar10_resnet32', '--dry-run']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'dry-run imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "launcher", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "subcommands: list, show" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "launcher", "--grid", "nope", "--run", "x"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("launch: error: unknown grid")
