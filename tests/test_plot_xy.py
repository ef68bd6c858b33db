"""`launch plot --kind xy`: one point per row of the aggregate table, a metric against another across runs,
with the upstream stage's values as a second line. Run folders are written with the trainer's
RunLogger/StatusWriter (no training); the figure's points are read back before its files are checked."""
from __future__ import annotations

import textwrap
from argparse import Namespace

import numpy as np
import pytest
import yaml

from launcher import cli
from launcher.results.aggregate import make_table
from launcher.results.plot_xy import plot_xy
from launcher.selection import select_runs
from launcher.state import run_state
from trainer import runfiles
from trainer.logger import RunLogger
from trainer.runinfo import StatusWriter

GRID = textwrap.dedent('''
    from launcher.registry import GridRun, register

    @register
    def chain():
        sweep = {"lr": [0.1, 0.2, 0.4], "seed": [1, 2], "niters": 10}
        return GridRun([{"stage": "a", **sweep}, {"stage": "b", "init_from": "a", **sweep}], "chain")
''')
FAILED = ("b", 0.4, 2)  # never counted: the lr=0.4 row of stage b has one run


def size(lr: float) -> float:
    return 1 / lr  # falls as lr grows: the line must be sorted by x, not by the grid's order


def acc(stage: str, lr: float, seed: int) -> float:
    return {"a": 50.0, "b": 60.0}[stage] + 10 * lr + seed


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("xy")
    (base / "grid.py").write_text(GRID)
    args = Namespace(grid=str(base / "grid.py"), run="chain", only=[], set=[], limit=None, root=str(base / "runs"),
                     stage=None)
    for spec in select_runs(args).runs:
        stage, lr, seed = spec.config["stage"], spec.config["lr"], spec.config["seed"]
        status = StatusWriter(spec.dir, niters=10)
        runfiles.atomic_write_text(spec.dir / runfiles.CONFIG, yaml.safe_dump(spec.config))  # names the stage
        with RunLogger(spec.dir) as log:
            log.scalar("Vacc", 10, acc(stage, lr, seed))
            log.scalar("size", 10, size(lr))
        if (stage, lr, seed) == FAILED:
            status.write(runfiles.FAILED, error="RuntimeError: boom")
            continue
        status.write(runfiles.DONE)
        runfiles.atomic_write_json(spec.dir / runfiles.RESULTS, {"status": "done", "niters": 10, "final": {
            "Vacc": acc(stage, lr, seed), "size": size(lr)}})
    return base, args


def _line(fig, label):
    (container,) = [c for c in fig.axes[0].containers if c.get_label() == label]
    return container


def test_points_are_the_tables_rows_sorted_by_x_with_the_upstream_line_and_std_bars(chain):
    _, args = chain
    selection = select_runs(Namespace(**{**vars(args), "stage": "b"}))
    table, _ = make_table(((r.name, r.dir, r.config) for r in selection.runs), run_state, selection.varying_keys,
                          ["size", "Vacc"], by="lr", upstream=["Vacc"])
    fig = plot_xy(table, "size", [("Vacc", "b.Vacc"), ("a.Vacc", "a.Vacc")], "accuracy")
    own, up = _line(fig, "b.Vacc"), _line(fig, "a.Vacc")
    lrs = [0.4, 0.2, 0.1]  # by size = 1/lr, ascending
    assert own.lines[0].get_xdata().tolist() == pytest.approx([size(lr) for lr in lrs])
    seeds = {0.4: [1], 0.2: [1, 2], 0.1: [1, 2]}  # the failed seed is left out, not averaged in
    assert own.lines[0].get_ydata().tolist() == pytest.approx(
        [np.mean([acc("b", lr, s) for s in seeds[lr]]) for lr in lrs])
    assert up.lines[0].get_ydata().tolist() == pytest.approx(  # the upstream values of the same runs
        [np.mean([acc("a", lr, s) for s in seeds[lr]]) for lr in lrs])
    # error bars: one sample std over seeds (seeds 1 and 2: 1/sqrt(2)), none for the row of one run
    low, high = np.array([seg[:, 1] for seg in own.lines[2][-1].get_segments()]).T  # [-1]: the y bars
    assert (high - low).tolist() == pytest.approx([0, 2 / np.sqrt(2), 2 / np.sqrt(2)])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["lr=0.4", "lr=0.2 (n=2)", "lr=0.1 (n=2)"]
    assert fig.axes[0].get_xlabel() == "size" and len(fig.legends) == 1


def test_cli_writes_the_figure_and_says_what_it_drew(chain, tmp_path, capsys):
    base, args = chain
    argv = ["plot", "--grid", args.grid, "--run", "chain", "--root", args.root, "--stage", "b", "--kind", "xy",
            "--x", "size", "--metric", "Vacc", "--upstream", "Vacc", "--by", "lr", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain_Vacc_vs_size_xy.pdf", "chain_Vacc_vs_size_xy.png"]
    assert "3 of 3 rows drawn" in out and "not counted (1 failed)" in out


@pytest.mark.parametrize("extra, message", [
    (["--x", "size", "--metric", "Vacx"], "--kind xy: unknown metric 'Vacx'; the runs have: Vacc, niters, size"),
    (["--x", "nuq_bits"], "--x 'nuq_bits': no done run has a value of it at final"),
    (["--x", "size", "--upstream", "Vloss"], "--kind xy: unknown metric 'a.Vloss'; the runs have: Vacc, niters"),
    (["--metric", "Vacc"], "--kind xy needs --x <metric>"),
])
def test_a_metric_no_run_has_is_a_one_line_error(chain, capsys, extra, message):
    _, args = chain
    code = cli.main(["plot", "--grid", args.grid, "--run", "chain", "--root", args.root, "--stage", "b",
                     "--kind", "xy", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_upstream_belongs_to_the_xy_kind(chain, capsys):
    _, args = chain
    code = cli.main(["plot", "--grid", args.grid, "--run", "chain", "--root", args.root, "--upstream", "Vacc"])
    assert code == 2 and "--upstream is not an option of --kind line; use --kind xy" in capsys.readouterr().err


def test_a_root_without_the_results_folder_is_named(chain, tmp_path, capsys):
    _, args = chain
    code = cli.main(["plot", "--grid", args.grid, "--run", "chain", "--root", str(tmp_path), "--kind", "xy",
                     "--x", "size"])
    assert code == 2 and f"no results folder {tmp_path / 'chain'}" in capsys.readouterr().err
