"""Multi-stage grids (launcher/stages.py, trainer/init_from.py): upstream matching at expansion, identity,
starting from upstream weights, eval_only runs, and chains run in order by the local and debug executors.
Real trainer runs on the digits data; nothing is mocked. SLURM chains: tests/test_slurm_stages.py."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import trainer
from launcher.errors import UsageError
from launcher.selection import select_runs
from trainer import runfiles
from trainer.init_from import InitError

BASE = {"dataset": "digits", "arch": "digits_mlp", "batch_size": 32, "log_interval": 20, "tblog_interval": 20,
        "gvar_log_iter": 0, "niters": 20, "chkpt_iter": 20}


def grid_file(tmp_path: Path, body: str, name: str = "g") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text("from launcher.registry import GridRun, register\n"
                    f"BASE = {BASE!r}\n\n@register\ndef r():\n"
                    f"    return GridRun({body}, 'res', tuple(BASE) + ('init_checkpoint',))\n")
    return str(path)


def select(grid: str, run: str = "r", root: Path | None = None, **kw) -> list:
    args = argparse.Namespace(grid=grid, run=run, only=kw.get("only", []), set=kw.get("set", []), limit=None,
                              root=str(root or "runs"), stage=kw.get("stage"))
    return select_runs(args).runs


def test_missing_and_ambiguous_upstreams_are_errors_at_dry_run_naming_run_and_candidates(tmp_path, launch):
    fp = "{**BASE, 'stage': 'fp', 'seed': [1, 2]}"
    ambiguous = grid_file(tmp_path, f"[{fp}, {{**BASE, 'stage': 'q', 'init_from': 'fp', 'lr': 0.01}}]", "amb")
    code, out, err = launch("--grid", ambiguous, "--run", "r", "--dry-run")
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert f"run {ambiguous}.r[2]: init_from" in line and "init_from 'fp' matches 2 runs of stage 'fp' on the keys seed" in line
    assert "stage_fp" in line and "seed=1" in line and "seed=2" in line  # the candidates, by name and key
    missing = grid_file(tmp_path, f"[{fp}, {{**BASE, 'stage': 'q', 'init_from': 'fp', 'seed': 3}}]", "mis")
    code, _, err = launch("--grid", missing, "--run", "r", "--dry-run")
    assert code == 2 and f"run {missing}.r[2] (seed=3): init_from 'fp' matches none of the 2 runs" in err
    unknown = grid_file(tmp_path, f"[{fp}, {{**BASE, 'init_from': 'pre'}}]", "unk")
    code, _, err = launch("--grid", unknown, "--run", "r", "--dry-run")
    assert code == 2 and "init_from 'pre' is not a stage of this grid; its stages: fp" in err
    late = grid_file(tmp_path, f"[{{**BASE, 'stage': 'q', 'init_from': 'fp'}}, {fp}]", "late")
    code, _, err = launch("--grid", late, "--run", "r", "--dry-run")
    assert code == 2 and "stage 'fp' must be listed before the runs that start from it" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "jobs").exists()  # nothing written


def test_the_upstream_is_the_run_that_agrees_on_the_keys_varying_upstream(tmp_path):
    # fp sweeps seed and lr; q fixes its own lr (a key fixed upstream may differ; lr varies there, so it must
    # agree) and sweeps seed: each q run finds the fp run with its seed and lr
    grid = grid_file(tmp_path, "[{**BASE, 'stage': 'fp', 'lr': [0.1, 0.05], 'seed': [1, 2]},"
                               " {**BASE, 'stage': 'q', 'init_from': 'fp', 'lr': 0.05, 'niters': 7, 'seed': [2, 1]}]")
    runs = select(grid)
    by_name = {r.name: r for r in runs}
    for run in runs[4:]:
        up = by_name[run.config["init_run"]]
        assert up.config["stage"] == "fp" and (up.config["seed"], up.config["lr"]) == (run.config["seed"], 0.05)
    assert "init_run" not in runs[4].name  # the upstream is in the hash, not the readable name
    assert [r.config["stage"] for r in select(grid, stage="q")] == ["q", "q"]
    with pytest.raises(UsageError, match="--stage 'x': grid .* has the stages fp, q"):
        select(grid, stage="x")


def test_a_changed_upstream_config_gives_new_downstream_identities(tmp_path):
    chain = "[{**BASE, 'stage': 'fp', 'niters': %d}, {**BASE, 'stage': 'q', 'init_from': 'fp'}," \
            " {**BASE, 'stage': 'ft', 'init_from': 'q'}]"
    before = select(grid_file(tmp_path, chain % 20, "a"))
    after = select(grid_file(tmp_path, chain % 30, "b"))
    assert [r.config["stage"] for r in after] == ["fp", "q", "ft"]
    # q and ft set exactly the same keys, yet both get new names: q's upstream changed, hence ft's too
    for old, new in zip(before[1:], after[1:]):
        assert {k: v for k, v in old.config.items() if k != "init_run"} == \
               {k: v for k, v in new.config.items() if k != "init_run"}
        assert old.name != new.name and old.config["init_run"] != new.config["init_run"]
    assert after[2].config["init_run"] == after[1].name and after[1].config["init_run"] == after[0].name


def test_local_executor_runs_the_digits_chain_in_order_and_the_table_shows_the_three_stages(launch, tmp_path):
    argv = ["--grid", "stages", "--run", "digits_chain", "--only", "seed=1", "--root", str(tmp_path)]
    code, out, err = launch(*argv, "--cluster", "local", "--max-parallel", "2")
    assert code == 0, out + err
    runs = {r.config["stage"]: r for r in select("stages", "digits_chain", tmp_path, only=["seed=1"])}
    status = {s: runfiles.read_json(r.dir / runfiles.STATUS) for s, r in runs.items()}
    for up, down in (("fp", "quant"), ("quant", "ft")):
        assert status[down]["started"] >= status[up]["heartbeat"]  # started after its upstream ended
        assert runs[down].config["init_run"] == runs[up].name
        assert f"starting from the weights of {runs[up].dir / runfiles.CHECKPOINT}" in \
               (runs[down].dir / runfiles.LOG).read_text()
    code, out, _ = launch("aggregate", *argv, "--by", "stage", "--metric", "Vacc", "--format", "csv")
    assert code == 0 and [line.split(",")[0] for line in out.strip().splitlines()[1:]] == ["fp", "quant", "ft"]
    code, out, _ = launch("aggregate", *argv, "--stage", "ft", "--upstream", "Vacc", "--format", "json")
    table = json.loads(out)
    assert table["columns"][3:5] == ["quant.Vacc", "Vacc"]  # before and after fine-tuning, side by side
    quant = runfiles.read_json(runs["quant"].dir / runfiles.RESULTS)["final"]["Vacc"]
    ft = runfiles.read_json(runs["ft"].dir / runfiles.RESULTS)["final"]["Vacc"]
    assert (table["rows"][0]["quant.Vacc"], table["rows"][0]["Vacc"]) == (quant, ft)


def test_a_failed_upstream_blocks_its_downstream_runs_locally(launch, tmp_path):
    missing = tmp_path / "no_such.pt"
    grid = grid_file(tmp_path, f"[{{**BASE, 'stage': 'fp', 'init_checkpoint': {str(missing)!r}}},"
                               " {**BASE, 'stage': 'q', 'init_from': 'fp'}, {**BASE, 'stage': 'ft', 'init_from': 'q'}]")
    code, out, err = launch("--grid", grid, "--run", "r", "--cluster", "local")
    assert code == 1
    fp, q, ft = select(grid, root=tmp_path)
    assert f"[0] FAILED: InitError: init_checkpoint {str(missing)!r}: no such file" in out
    assert f"[1] BLOCKED by {fp.name} (failed)" in out and f"[2] BLOCKED by {fp.name} (failed)" in out
    assert not (q.dir / runfiles.STATUS).exists() and not (ft.dir / runfiles.STATUS).exists()  # never started
    # a later stage alone cannot be launched while its upstream is not done
    code, _, err = launch("--grid", grid, "--run", "r", "--stage", "q", "--cluster", "debug")
    assert code == 2 and f"starts from {fp.name}, which is failed and not selected" in err


def test_eval_only_evaluates_the_upstream_weights_and_writes_results(launch, tmp_path):
    argv = ["--grid", "stages", "--run", "digits_chain_paper", "--only", "seed=1", "--root", str(tmp_path)]
    code, out, err = launch(*argv, "--cluster", "debug")
    assert code == 0, out + err
    fp, quant, ev = select("stages", "digits_chain_paper", tmp_path, only=["seed=1"])
    results = runfiles.read_json(ev.dir / runfiles.RESULTS)
    assert results["status"] == "done" and results["niters"] == 0
    # the same weights on the same test set: exactly the upstream's final accuracy and loss
    want = runfiles.read_json(quant.dir / runfiles.RESULTS)["final"]
    assert {k: results["final"][k] for k in ("Vacc", "Vloss")} == {k: want[k] for k in ("Vacc", "Vloss")}
    # from a given checkpoint file, outside any grid; and without weights it is refused
    other = tmp_path / "other"
    got = trainer.run({**BASE, "eval_only": True, "init_checkpoint": str(fp.dir / runfiles.CHECKPOINT)}, other)
    want = runfiles.read_json(fp.dir / runfiles.RESULTS)["final"]
    assert got["final"]["Vacc"] == want["Vacc"] and runfiles.read_json(other / runfiles.RESULTS) == got
    with pytest.raises(InitError, match="eval_only needs weights"):
        trainer.run({**BASE, "eval_only": True}, tmp_path / "none")


def test_starting_weights_must_fit_and_the_carry_is_passed_on_but_not_the_iteration(tmp_path):
    up = tmp_path / "up"
    trainer.run(BASE, up)
    state = torch.load(up / runfiles.CHECKPOINT, weights_only=True)
    state["carry"] = {"bits": torch.tensor([3, 4])}  # what a plugin's carry_state() would save
    torch.save(state, tmp_path / "carry.pt")
    down = tmp_path / "down"
    results = trainer.run({**BASE, "niters": 5, "chkpt_iter": 5, "init_checkpoint": str(tmp_path / "carry.pt")}, down)
    assert results["niters"] == 5 and "starting iteration 0/5" in (down / runfiles.LOG).read_text()
    mine = torch.load(down / runfiles.CHECKPOINT, weights_only=True)
    assert mine["carry"]["bits"].tolist() == [3, 4] and mine["iteration"] == 5
    with pytest.raises(InitError, match=r"parameter '1.weight': checkpoint .* has shape \(128, 64\), "
                                        r"this model \(1024, 64\)"):
        trainer.run({**BASE, "arch": "mlp", "init_checkpoint": str(up / runfiles.CHECKPOINT)}, tmp_path / "mlp")
    assert runfiles.read_json(tmp_path / "mlp" / runfiles.STATUS)["error"].startswith("InitError: parameter '1.weight'")
