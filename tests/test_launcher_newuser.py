"""A new user's first hour (issue 22): bad values fail at dry-run, results found from any folder, runs made
with other --set values are pointed at. Each test runs the real `launch` (python -m launcher) in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import runfiles

REPO = Path(__file__).resolve().parents[1]


def launch(cwd, *argv, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="100")
    proc = subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def write_grid(tmp_path, body: str, name: str = "g") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text("from launcher.grid import Cond\nfrom launcher.registry import GridRun, register\n" + body)
    return str(path)


# ---- 2: ranges and combinations are checked at expansion ------------------------------------------------

@pytest.mark.parametrize("assignment, expected", [
    ("nuq_bits=99", "bad value for 'nuq_bits': 99 is outside the accepted range 1..8"),
    ("nuq_bits=0", "the accepted range 1..8"),
    ("batch_size=0", "bad value for 'batch_size': 0 is outside the accepted range >= 1"),
    ("nuq_mul=1.5", "the accepted range (0, 1)"),
    ("lr=-0.1", "the accepted range >= 0"),
    ("optim=rmsprop", "bad value for 'optim': 'rmsprop' is not one of sgd, adam"),
])
def test_out_of_range_values_fail_the_dry_run_in_one_line(tmp_path, assignment, expected):
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--dry-run", "--set", assignment)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "jobs").exists()


def test_an_unregistered_arch_warns_at_dry_run_and_stops_a_launch(tmp_path):
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--dry-run", "--set", "arch=resnet33")
    assert code == 0 and "warning: arch resnet33 in 20 runs of nuq.digits: not a registered model (linear, " in err
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--cluster", "local", "--set", "arch=resnet33")
    assert code == 2 and err.strip().endswith("--set arch=NAME picks another; nothing was launched"), err
    assert "wrn<depth>-<k>" in err and not (tmp_path / "runs").exists()


def test_an_adaptive_method_without_g_optim_is_a_warning_naming_the_key(tmp_path):
    # a warning, not an error: the paper's own grids (grids/paper.py, golden) run amq without g_optim
    grid = write_grid(tmp_path, """
@register
def r():
    return GridRun({"g_estim": "nuq", "nuq_method": ["qinf", "amq", "alq"]}, "r")
""")
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--dry-run")
    assert code == 0 and "warning: nuq_method amq, alq in 2 runs of g.r adapt their levels only with g_optim" in err
    assert "--set g_optim=" in err
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--dry-run", "--set", "g_optim=")
    assert code == 0 and "warning" not in err, err


def test_a_sweep_that_cannot_have_an_effect_is_an_error_naming_the_key_to_set(tmp_path):
    grid = write_grid(tmp_path, """
@register
def r():
    return GridRun({"g_estim": "nuq", "nuq_method": "q", "nuq_amq_epochs": [40, 50]}, "r")
""")
    code, _, err = launch(tmp_path, "--grid", grid, "--run", "r", "--dry-run")
    assert code == 2 and "nuq_amq_epochs is swept (40, 50) in 2 runs where it has no effect" in err
    assert "set g_optim (and nuq_method amq or amq_nb)" in err


def test_a_fixed_key_without_effect_is_a_warning_at_dry_run(tmp_path):
    grid = write_grid(tmp_path, """
@register
def r():
    return GridRun({"g_estim": "nuq", "nuq_method": ["q", "qinf"], "nuq_cd_epochs": 10}, "r")
""")
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--dry-run")
    assert code == 0, err
    assert "warning: nuq_cd_epochs=10 has no effect in 2 runs" in err and "needs g_optim" in err


def test_the_readme_grid_example_expands_without_warnings(tmp_path):
    readme = (REPO / "README.md").read_text()
    start = readme.index("# grids/mystudy.py")
    body = readme[start:readme.index("```", start)]
    path = tmp_path / "mystudy.py"
    path.write_text(body)
    code, out, err = launch(tmp_path, "--grid", str(path), "--run", "lr_sweep", "--dry-run")
    assert code == 0 and "warning" not in err, err
    assert "12 of 12 runs" in out


# ---- 4: results looked up from another folder ------------------------------------------------------------

def test_status_from_a_folder_without_results_names_the_absolute_path(tmp_path):
    code, out, err = launch(tmp_path, "status", "--grid", "nuq", "--run", "digits")
    assert code == 2 and "not submitted" not in out
    assert f"no results folder {tmp_path / 'runs' / 'digits'}" in err and "--root" in err
    code, out, err = launch(tmp_path, "aggregate", "--grid", "nuq", "--run", "digits")
    assert code == 2 and f"no results folder {tmp_path / 'runs' / 'digits'}" in err


def test_root_pointing_at_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    for cmd in (["status"], ["aggregate"], []):
        code, out, err = launch(tmp_path, *cmd, "--grid", "nuq", "--run", "digits", "--root", "afile",
                                *(["--dry-run"] if not cmd else []))
        assert code == 2 and err.strip() == f"launch: error: --root afile: {tmp_path / 'afile'} is a file, " \
                                             "not a folder of results", err


# ---- 5: runs made with another --set are pointed at ------------------------------------------------------

def _finish(cwd: Path, run: dict, final: dict | None = None) -> None:
    """A run folder as a finished trainer leaves it (config, results) without training."""
    from launcher.rundirs import dump_config
    path = cwd / run["dir"]
    runfiles.atomic_write_text(path / runfiles.CONFIG, dump_config(run["config"]))
    runfiles.atomic_write_json(path / runfiles.RESULTS, {"status": "done", "final": final or {"Vacc": 90.0}})


def test_runs_made_with_another_set_are_counted_with_the_keys_that_select_them(tmp_path):
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--set", "niters=100", "--json")
    assert code == 0, err
    runs = json.loads(out)
    for run in runs[:5]:
        _finish(tmp_path, run)
    for cmd in ("aggregate", "status"):
        code, out, err = launch(tmp_path, cmd, "--grid", "nuq", "--run", "digits")
        assert code == 0, err
        assert f"{tmp_path / 'runs' / 'digits'} also holds 5 runs this selection does not match; " \
               "add --set niters=100 (5) to select them" in out + err
    # the matching selection sees them and says nothing more
    code, out, err = launch(tmp_path, "status", "--grid", "nuq", "--run", "digits", "--set", "niters=100")
    assert code == 0 and "5 done" in out and "does not match" not in out + err
    # --only narrows the selection but the grid's other runs are not "unmatched"
    code, out, err = launch(tmp_path, "status", "--grid", "nuq", "--run", "digits", "--set", "niters=100",
                            "--only", "seed=2")
    assert code == 0 and "does not match" not in out + err


# ---- 10: small ones ----------------------------------------------------------------------------------------

def test_a_smaller_dry_run_removes_the_prefix_s_old_task_scripts(tmp_path):
    assert launch(tmp_path, "--grid", "nuq", "--run", "digits", "--dry-run")[0] == 0
    other = tmp_path / "jobs" / "nuq_digits_x_3.sh"
    other.write_text("# another prefix's script\n")
    assert len(list((tmp_path / "jobs").glob("nuq_digits_*.sh"))) == 21
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--dry-run", "--only", "seed=1")
    assert code == 0, err
    kept = sorted(p.name for p in (tmp_path / "jobs").glob("nuq_digits_*.sh"))
    assert kept == sorted([f"nuq_digits_{i}.sh" for i in [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]] + [other.name])


AMQ_GRID = """
@register
def r():
    return GridRun({"g_estim": "nuq", "g_optim": "",
                    "nuq_method": ["qinf", Cond("amq", {"nuq_amq_epochs": 40})], "seed": [1, 2]}, "r")
"""


def _fake_done_runs(tmp_path, grid, vacc=lambda i: 97.0):
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--json")
    assert code == 0, err
    for i, run in enumerate(json.loads(out)):
        _finish(tmp_path, run, {"Vacc": vacc(i), "est_var": 0.5 + 0.01 * i})


def test_int_keys_stay_ints_and_equal_seeds_get_no_plus_minus(tmp_path):
    grid = write_grid(tmp_path, AMQ_GRID)
    _fake_done_runs(tmp_path, grid, vacc=lambda i: 97.0 + (1e-12 if i % 2 else 0.0))  # equal up to rounding
    code, out, err = launch(tmp_path, "aggregate", "--grid", grid, "--run", "r", "--pivot", "nuq_amq_epochs")
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("nuq_method"))
    assert "Vacc 40" in header and "40.0" not in header and "nan" not in header
    code, out, err = launch(tmp_path, "aggregate", "--grid", grid, "--run", "r", "--by", "nuq_amq_epochs")
    rows = out.splitlines()[-2:]
    assert rows[1].split()[:3] == ["40", "2", "97"] and "±" not in rows[1].split("0.5")[0], out


def test_a_grid_given_as_a_path_is_named_alike_everywhere(tmp_path):
    grid = write_grid(tmp_path, AMQ_GRID, name="mystudy")
    spellings = ("mystudy.py", "./mystudy.py", grid)
    for spelling in spellings:
        code, out, err = launch(tmp_path, "--grid", spelling, "--run", "r", "--dry-run")
        assert code == 0 and out.startswith("grid mystudy.r: 4 of 4 runs"), out
        assert sorted(p.name for p in (tmp_path / "jobs").glob("*.sbatch")) == ["mystudy_r_slurm.sbatch"]
    _fake_done_runs(tmp_path, grid)
    for spelling in spellings:
        code, out, err = launch(tmp_path, "aggregate", "--grid", spelling, "--run", "r")
        assert out.startswith("mystudy.r: 4 runs"), out
        code, out, err = launch(tmp_path, "status", "--grid", spelling, "--run", "r")
        assert out.startswith("grid mystudy.r: 4 runs"), out


# ---- 7, 8: progress of a local grid, Ctrl-C --------------------------------------------------------------

def _digits_grid(tmp_path, niters: int, seeds: int) -> str:
    return write_grid(tmp_path, f"""
@register
def r():
    return GridRun({{"dataset": "digits", "arch": "digits_mlp", "batch_size": 32, "niters": {niters},
                    "chkpt_iter": 20, "gvar_log_iter": 1000, "seed": list(range(1, {seeds} + 1))}}, "r")
""")


def test_a_local_grid_shows_done_running_and_time_left(tmp_path):
    grid = _digits_grid(tmp_path, niters=10, seeds=3)
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--cluster", "local", "--max-parallel", "2",
                            timeout=600)
    assert code == 0, err
    progress = err.replace("\r", "\n")
    assert "0/3 done, 2 running, ~? left" in progress and "3/3 done, 0 running" in progress, progress
    assert out.count("] done: Vacc") == 3


def test_ctrl_c_is_one_line_marks_runs_interrupted_and_a_relaunch_takes_them_again(tmp_path):
    import signal
    import time

    grid = _digits_grid(tmp_path, niters=100000, seeds=3)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "--grid", grid, "--run", "r", "--cluster", "local",
                             "--max-parallel", "2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    statuses = lambda: list((tmp_path / "runs" / "r").glob(f"*/{runfiles.STATUS}"))  # noqa: E731
    deadline = time.monotonic() + 300
    while len(statuses()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert len(statuses()) == 2, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and " done, " not in line]
    assert proc.returncode == 130 and lines == ["launch: interrupted: 2 running runs marked interrupted, "
                                                "1 not started; run the same command again to resume them"], err
    code, out, err = launch(tmp_path, "status", "--grid", grid, "--run", "r")
    assert "summary: 2 interrupted, 1 not submitted" in out, out
    code, out, err = launch(tmp_path, "--grid", grid, "--run", "r", "--dry-run")
    assert code == 0 and out.count("interrupted") == 2 and "skipping" not in out, out


# ---- 9: names and tables sized to what varies ----------------------------------------------------------

def test_names_show_only_swept_keys_and_old_named_finished_runs_are_still_found(tmp_path):
    from launcher.naming import run_name
    from launcher.registry import get_run

    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--json")
    runs = json.loads(out)
    assert runs[19]["name"].rsplit(",", 1)[0] == "g_estim_nuq,nuq_method_amq_nb,seed_2"  # nuq_amq_epochs: fixed
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--json", "--only", "nuq_method=amq_nb")
    assert [r["name"] for r in json.loads(out)] == [runs[18]["name"], runs[19]["name"]]  # --only renames nothing
    # a run finished under the old naming rule (every non-excluded key) keeps being found by its hash
    old = dict(runs[19], dir=str(Path(runs[19]["dir"]).parent / run_name(runs[19]["config"], get_run("nuq", "digits").exclude)))
    assert old["dir"] != runs[19]["dir"] and "nuq_amq_epochs_20" in old["dir"]
    _finish(tmp_path, old)
    code, out, err = launch(tmp_path, "status", "--grid", "nuq", "--run", "digits")
    line = next(row for row in out.splitlines() if row.split()[0] == "19")
    assert "done" in line and line.endswith(Path(old["dir"]).name) and "does not match" not in out
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "digits", "--dry-run")
    assert "skipping 1 runs that are done" in out


def test_the_dry_run_table_fits_the_terminal_and_the_full_config_is_one_flag_away(tmp_path):
    env_cols = {"COLUMNS": "60"}
    proc = subprocess.run([sys.executable, "-m", "launcher", "--grid", "nuq", "--run", "cifar10_resnet32",
                           "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **env_cols))
    table = proc.stdout.splitlines()[1:11]
    assert proc.returncode == 0 and table[0].split() == ["idx", "state", "g_estim", "nuq_method", "name"]
    assert all(len(line) <= 60 for line in table), table
    assert "names shortened to fit the terminal; full names and configs: --json or launch show --full" in proc.stdout
    assert all(line.split()[-1].startswith("…") or "," in line for line in table[1:])
    code, out, err = launch(tmp_path, "show", "--grid", "nuq", "--run", "cifar10_resnet32", "--limit", "1")
    assert "data:" not in out and "arch: resnet32" in out
    code, out, err = launch(tmp_path, "show", "--grid", "nuq", "--run", "cifar10_resnet32", "--limit", "1", "--full")
    assert "data: ./data" in out and "nuq_clip: False" in out and "arch: resnet32" in out


# ---- 3: missing data is found before anything is submitted --------------------------------------------------

@pytest.mark.parametrize("cluster", ["local", "slurm"])
def test_missing_cifar_is_one_error_before_submitting(tmp_path, cluster):
    code, out, err = launch(tmp_path, "--grid", "nuq", "--run", "cifar10_resnet32", "--cluster", cluster)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"9 runs need data that is not there, nothing was launched" in err
    assert f"no data in {tmp_path / 'data'} and {tmp_path / 'data' / 'cifar-10-batches-py'}; expected " \
           "data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch." in err
    assert err.count("data_batch_1") == 1 and "https://www.cs.toronto.edu/~kriz/cifar.html" in err
    assert "--set data=DIR" in err
    assert ("filesystem the compute nodes share" in err) == (cluster == "slurm")
    assert not (tmp_path / "runs").exists()


def test_the_data_check_accepts_the_folder_or_the_archive_s_own_folder(tmp_path):
    from trainer.data_files import DATA_FILES, missing_data

    config = {"dataset": "cifar10", "data": str(tmp_path)}
    assert "no data in" in missing_data(config)
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in DATA_FILES["cifar10"].files:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(b"")
    assert missing_data(config) is None
    assert missing_data({"dataset": "digits"}) is None and missing_data({"dataset": "10class"}) is None
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    assert "t10k-images-idx3-ubyte" in missing_data({"dataset": "mnist", "data": str(tmp_path)})
