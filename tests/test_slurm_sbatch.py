"""SLURM submission logic that needs no cluster: the sbatch text (golden files), flags, modes, state refinement.

Regenerate the golden files after an intended change with NUQLAB_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import cli
from launcher.slurm import task as slurm_task
from launcher.errors import UsageError
from launcher.selection import RunSpec
from launcher.slurm.executor import (DEFAULTS, SBATCH_KEYS, add_slurm_arguments, move_aside, options_from_args, pack,
                            parse_sbatch, sbatch_directives, sbatch_text, select_for_mode)
from launcher.status import refine

GOLDEN = Path(__file__).with_name("golden")
FOLDER = "/results/cifar10_resnet32/.slurm/%j"
COMMAND = "/usr/bin/python3 -u -m submitit.core._submit /results/cifar10_resnet32/.slurm/%j"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_slurm_arguments(parser)
    return parser.parse_args(list(argv))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NUQLAB_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"sbatch text differs from {path} (NUQLAB_UPDATE_GOLDEN=1 to accept)"


def test_sbatch_defaults_golden():
    text = sbatch_text(options_from_args(parse()), "nuqlab-nuq-cifar10_resnet32", FOLDER, 7, COMMAND)
    check_golden("slurm_defaults.sbatch", text)
    assert "#SBATCH --array=0-6%7" in text and "#SBATCH --time=1440" in text and "#SBATCH --cpus-per-task=1" in text


def test_sbatch_all_flags_golden():
    args = parse("--partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "8", "--mem-gb", "30",
                 "--time-min", "2880", "--account", "lab", "--qos", "high", "--constraint", "volta32gb",
                 "--exclude", "node[1-2]", "--sbatch", "mail-type=END", "--sbatch", "mail_user=me@example.org",
                 "--setup", "module load cuda/12.1", "--setup", "source ~/venv/bin/activate",
                 "--runs-per-task", "4", "--array-parallelism", "16")
    opts = options_from_args(args)
    text = sbatch_text(opts, "nuqlab-nuq-cifar10_resnet32", FOLDER, 200 // opts.runs_per_task, COMMAND)
    check_golden("slurm_all_flags.sbatch", text)
    for line in ("--partition=gpu", "--gres=gpu:1", "--cpus-per-task=8", "--mem=30GB", "--time=2880",
                 "--account=lab", "--qos=high", "--constraint=volta32gb", "--exclude='node[1-2]'",
                 "--mail-type=END", "--mail-user=me@example.org", "--array=0-49%16", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in text, line
    setup = text.index("module load cuda/12.1")
    assert setup < text.index("source ~/venv/bin/activate") < text.index("srun")


def test_cpus_default_to_one_per_packed_run_and_fractional_memory():
    opts = options_from_args(parse("--runs-per-task", "3", "--mem-gb", "1.5"))
    assert opts.resources["cpus_per_task"] == 3
    assert "#SBATCH --mem=1536MB" in sbatch_text(opts, "j", FOLDER, 1, COMMAND)


def test_grid_defaults_fill_missing_flags_and_flags_win():
    selection = SimpleNamespace(meta=SimpleNamespace(slurm={"partition": "long", "time_min": 600, "setup": ["a"]}))
    opts = options_from_args(parse("--time-min", "30", "--setup", "b"), selection)
    assert opts.resources["partition"] == "long" and opts.resources["time_min"] == 30 and opts.setup == ["a", "b"]
    bad = SimpleNamespace(meta=SimpleNamespace(slurm={"partitoin": "x"}))
    with pytest.raises(UsageError, match="'partitoin'.*partition"):
        options_from_args(parse(), bad)
    bad = SimpleNamespace(meta=SimpleNamespace(slurm={"time_min": "two days"}))
    with pytest.raises(UsageError, match="time_min='two days'"):
        options_from_args(parse(), bad)


def test_bad_resource_values_are_refused_by_the_parser(capsys):
    for argv in (["--gpus-per-task", "-1"], ["--mem-gb", "0"], ["--time-min", "soon"]):
        with pytest.raises(SystemExit):
            parse(*argv)
        assert argv[1] in capsys.readouterr().err


def test_unknown_and_reserved_sbatch_keys_are_refused_with_the_valid_list():
    with pytest.raises(UsageError) as err:
        parse_sbatch(["mail-typo=END"])
    assert "mail-typo" in str(err.value) and "mail-type" in str(err.value) and "gres," not in str(err.value)
    with pytest.raises(UsageError, match="use --partition instead"):
        parse_sbatch(["partition=gpu"])
    with pytest.raises(UsageError, match="set by the launcher"):
        parse_sbatch(["ntasks=4"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_sbatch(["exclusive"])
    assert parse_sbatch(["--exclusive=user", "nice=10"]) == {"exclusive": "user", "nice": "10"}
    assert "mail-type" in SBATCH_KEYS


def test_bad_sbatch_flag_is_one_line_exit_2_before_any_folder_is_written(tmp_path, capsys):
    grids = str(Path(__file__).with_name("slurm_grids.py"))
    code = cli.main(["--grid", grids, "--run", "small", "--root", str(tmp_path), "--cluster", "slurm",
                     "--sbatch", "bogus=1"])
    err = capsys.readouterr().err
    assert code == 2 and "bogus" in err and "valid keys" in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_short_jobs_get_the_checkpoint_signal_early_enough():
    assert "#SBATCH --signal=USR2@30\n" in sbatch_text(options_from_args(parse("--time-min", "2")), "j", FOLDER, 1,
                                                       COMMAND)


def test_force_moves_a_started_run_aside_never_overwriting_it(tmp_path):
    run = RunSpec(0, "r0", tmp_path / "r0", {})
    run.dir.mkdir()
    (run.dir / "results.json").write_text('{"status": "done"}')
    first = move_aside(run)
    run.dir.mkdir()
    second = move_aside(run)
    assert first != second and not run.dir.exists()
    assert (first / "results.json").read_text() == '{"status": "done"}' and first.name.startswith("r0.old-")


def test_sbatch_directives_for_dry_run_scripts():
    flags = sbatch_directives(parse("--partition", "gpu", "--gpus-per-task", "1", "--sbatch", "nice=5"))
    assert flags[:2] == ("--partition=gpu", "--gres=gpu:1")
    assert "--time=1440" in flags and "--nice=5" in flags and "--cpus-per-task=1" in flags


def runs(n: int) -> list[RunSpec]:
    return [RunSpec(i, f"r{i}", Path(f"/x/r{i}"), {}) for i in range(n)]


STATES = {0: "done", 1: "failed", 2: "running", 3: "pending", 4: "not submitted", 5: "interrupted", 6: "stale"}


def test_modes_select_the_right_runs():
    rs = runs(7)
    pick = lambda mode, states=STATES, yes=False: [r.index for r in select_for_mode(mode, states, rs, yes)]  # noqa: E731
    assert pick("missing") == [1, 4, 5, 6]
    assert pick("failed") == [1]
    with pytest.raises(UsageError, match="2 runs are queued or running"):
        pick("force")
    idle = {i: s for i, s in STATES.items() if s not in ("running", "pending")} | {2: "failed", 3: "failed"}
    with pytest.raises(UsageError, match="retrain 1 done runs.*--yes"):
        pick("force", idle)
    assert pick("force", idle, True) == list(range(7))


def test_pack_groups_consecutive_runs():
    assert [[r.index for r in g] for g in pack(runs(5), 2)] == [[0, 1], [2, 3], [4]]
    assert DEFAULTS["runs_per_task"] == 1


@pytest.mark.parametrize("files, slurm, answered, want", [
    ("done", "RUNNING", True, ("done", None)),                      # results.json is the truth
    ("failed", None, True, ("failed", None)),
    ("pending", "PENDING", True, ("pending", None)),
    ("pending", "RUNNING", True, ("running", None)),                # started, trainer not yet writing
    ("interrupted", "PENDING", True, ("pending", "requeued")),      # preempted and requeued
    ("running", None, True, ("stale", "job 7_1 is no longer in the queue")),
    ("running", "OUT_OF_MEMORY", True, ("failed", "job 7_1 ran out of memory")),
    ("running", "CANCELLED", True, ("interrupted", "job 7_1 was cancelled")),
    ("pending", "COMPLETED", True, ("failed", "job 7_1 completed but the run did not finish")),
    ("running", None, False, ("running", None)),                    # no squeue/sacct: files alone
    ("interrupted", None, False, ("interrupted", None)),
])
def test_refine_combines_files_and_slurm(files, slurm, answered, want):
    assert refine(files, slurm, "7_1", answered) == want


def test_children_split_the_task_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = slurm_task.child_env(4)
    assert env["OMP_NUM_THREADS"] == "2" and env["PYTHONPATH"].split(os.pathsep)[0] == str(slurm_task.REPO_ROOT)
    assert slurm_task.trainer_command("/r/x")[-2:] == ["--config", "/r/x/config.yaml"]


def test_distributed_runs_become_multi_task_jobs_one_rank_per_gpu():
    opts = options_from_args(parse("--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu"))
    assert opts.distributed and opts.ranks == 8
    text = sbatch_text(opts, "j", FOLDER, 3, COMMAND)
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--array=0-2%3"):
        assert f"#SBATCH {line}\n" in text, line
    assert "--gres" not in text
    # CPU nodes: one gloo rank per node, no GPU request
    opts = options_from_args(parse("--nodes", "3"))
    assert opts.ranks == 3 and opts.task_parameters() == {"nodes": 3, "ntasks_per_node": 1}
    assert "--gpus-per-node" not in sbatch_text(opts, "j", FOLDER, 1, COMMAND)
    assert not options_from_args(parse()).distributed and options_from_args(parse()).task_parameters() == {}
    flags = sbatch_directives(parse("--nodes", "2", "--gpus-per-node", "1"))
    assert "--nodes=2" in flags and "--ntasks-per-node=1" in flags and "--gpus-per-node=1" in flags


def test_distributed_flags_refuse_what_cannot_go_with_them(capsys):
    with pytest.raises(UsageError, match="--runs-per-task 2 with --nodes"):
        options_from_args(parse("--nodes", "2", "--runs-per-task", "2"))
    with pytest.raises(UsageError, match="drop --gpus-per-task"):
        options_from_args(parse("--gpus-per-node", "2", "--gpus-per-task", "1"))
    with pytest.raises(UsageError, match="use --nodes instead"):
        parse_sbatch(["nodes=2"])
    with pytest.raises(UsageError, match="use --gpus-per-node instead"):
        parse_sbatch(["ntasks-per-node=2"])
    for argv in (["--nodes", "0"], ["--gpus-per-node", "-1"]):
        with pytest.raises(SystemExit):
            parse(*argv)
        assert argv[1] in capsys.readouterr().err
    selection = SimpleNamespace(meta=SimpleNamespace(slurm={"nodes": 4, "gpus_per_node": 8}))
    assert options_from_args(parse(), selection).ranks == 32  # a grid may declare its runs' shape


def test_rank_mode_outside_slurm_is_a_clear_usage_error(monkeypatch, capsys):
    from launcher.executors import distributed
    from trainer import distributed as rank_side, runfiles
    for name in ("SLURM_JOB_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert rank_side.main(["--slurm", "--config", "/nonexistent/config.yaml"]) == runfiles.EXIT_USAGE
    assert "not inside a SLURM task" in capsys.readouterr().err
    assert distributed.slurm_parameters(2, 4) == {"nodes": 2, "ntasks_per_node": 4, "gpus_per_node": 4}
    with pytest.raises(ValueError, match="nodes must be an int >= 1, got 0"):
        distributed.slurm_parameters(0, 1)


def test_stage_dependencies_are_afterok_lines_that_keep_a_given_dependency():
    from submitit.slurm.slurm import _make_sbatch_string
    from launcher.slurm.executor import dependency_parameters
    assert dependency_parameters([]) == {}
    extra = dependency_parameters(["12_0", "12_1"], given="after:7")
    text = _make_sbatch_string(command=COMMAND, folder=FOLDER, map_count=2, additional_parameters=extra)
    assert "#SBATCH --dependency=after:7,afterok:12_0:12_1\n" in text and "#SBATCH --kill-on-invalid-dep=yes\n" in text
