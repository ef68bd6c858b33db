"""End to end with the real trainer: run folders from `trainer.run` (done, interrupted, failed) aggregate.

Short digits runs on CPU (a few seconds); checks that the table reads exactly what the trainer wrote.
"""
from __future__ import annotations

import math

import pytest

import trainer
from launcher.results.aggregate import make_table
from launcher.state import run_state
from trainer import runfiles
from trainer.loop import Interrupted, request_stop

BASE = {"dataset": "digits", "batch_size": 32, "niters": 30, "chkpt_iter": 10, "tblog_interval": 10,
        "log_interval": 10}


def stop_at(step):
    def on_iteration(it):
        if it == step:
            request_stop()
    return on_iteration


def test_trainer_written_runs_aggregate(tmp_path):
    configs = {"done": {**BASE, "seed": 1}, "stopped": {**BASE, "seed": 2}, "broken": {**BASE, "seed": 3, "niters": 0, "epochs": 0}}
    dirs = {name: tmp_path / name for name in configs}
    results = trainer.run(configs["done"], dirs["done"])
    with pytest.raises(Interrupted):
        trainer.loop.run(configs["stopped"], dirs["stopped"], on_iteration=stop_at(15))
    with pytest.raises(ValueError, match="nothing to train"):
        trainer.run(configs["broken"], dirs["broken"])
    assert [run_state(dirs[n]) for n in configs] == ["done", "interrupted", "failed"]

    runs = [(name, dirs[name], cfg) for name, cfg in configs.items()]
    table, warnings = make_table(runs, run_state, ["seed"], ["Vacc", "Vloss", "wall_s"], by="run")
    assert warnings == []
    values = {c.label: c.mean for c in table.columns}
    assert values["Vacc"][0] == results["final"]["Vacc"]
    assert values["Vloss"][0] == results["final"]["Vloss"]
    assert values["wall_s"][0] == results["wall_s"]
    assert all(math.isnan(values["Vacc"][i]) for i in (1, 2))
    assert list(table.left["status"]) == ["done", "interrupted 15/30", "failed"]
    assert table.not_counted == [("stopped", "interrupted"), ("broken", "failed")]

    best, _ = make_table(runs, run_state, ["seed"], ["Vacc"], at="best:Vacc", by="run")
    assert best.left["step"][0] == results["best"]["iter"]
    assert best.columns[0].mean[0] == results["best"]["Vacc"]

    (dirs["done"] / runfiles.METRICS).unlink()  # only the event files are left
    table, _ = make_table(runs[:1], run_state, ["seed"], ["Vacc"], by="run")
    assert table.columns[0].mean[0] == pytest.approx(results["final"]["Vacc"], rel=2 ** -23)
