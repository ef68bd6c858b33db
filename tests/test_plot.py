"""`launch plot`: curves with bands over seeds, bars, smoothing, headless PNG/PDF files.

Run folders are written with the trainer's RunLogger/StatusWriter; figures are inspected (lines, bands,
bars) before their files are checked.
"""
from __future__ import annotations

import textwrap
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from launcher import cli
from launcher.results.plot import band, file_stem, plot_bars, plot_lines, save_figure, smooth
from launcher.selection import select_runs
from launcher.state import run_state
from launcher.results.table_points import load_records, parse_at
from trainer import runfiles
from trainer.logger import RunLogger
from trainer.runinfo import StatusWriter

GRID = textwrap.dedent('''
    from launcher.registry import GridRun, register

    @register
    def curves():
        return GridRun({"g_estim": "nuq", "g_optim": "", "nuq_method": ["q", "nuq", "alq"], "seed": [1, 2],
                        "niters": 50}, "curves")
''')
STEPS = [10, 20, 30, 40, 50]


def curve(method: str, seed: int) -> list[float]:
    offset = {"q": 0.0, "nuq": 10.0, "alq": 20.0}[method]
    return [offset + seed * step / 10 for step in STEPS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """3 methods x 2 seeds; alq seed 2 failed after step 30 (drawn nowhere, never averaged in)."""
    base = tmp_path_factory.mktemp("plot")
    grid = base / "grid.py"
    grid.write_text(GRID)
    root = base / "runs"
    selection = select_runs(Namespace(grid=str(grid), run="curves", only=[], set=[], limit=None, root=str(root)))
    for spec in selection.runs:
        method, seed = spec.config["nuq_method"], spec.config["seed"]
        failed = (method, seed) == ("alq", 2)
        status = StatusWriter(spec.dir, niters=50)
        with RunLogger(spec.dir) as log:
            for step, value in zip(STEPS, curve(method, seed)):
                if failed and step > 30:
                    break
                log.scalar("Vacc", step, value)
        if failed:
            status.write(runfiles.FAILED, error="RuntimeError: boom")
            continue
        status.write(runfiles.DONE)
        runfiles.atomic_write_json(spec.dir / runfiles.RESULTS, {"status": "done", "niters": 50, "final": {}})
    records = load_records([(r.name, r.dir, r.config) for r in selection.runs], run_state)
    return {"grid": grid, "root": root, "selection": selection, "records": records}


def test_band_mean_and_sample_std():
    x = np.array([0.0, 1.0, 2.0])
    grid, mean, std, n = band([(x, np.array([1.0, 2.0, 3.0])), (x, np.array([3.0, 4.0, 5.0]))])
    assert grid.tolist() == [0, 1, 2] and mean.tolist() == [2, 3, 4]
    # two values a, b: sample std = |a - b| / sqrt(2)
    assert std == pytest.approx([2 / np.sqrt(2)] * 3) and n.tolist() == [2, 2, 2]


def test_band_counts_only_curves_covering_a_point():
    grid, mean, std, n = band([(np.array([0.0, 2.0]), np.array([0.0, 2.0])),
                               (np.array([0.0, 1.0]), np.array([4.0, 4.0]))])
    assert grid.tolist() == [0, 1, 2]
    assert n.tolist() == [2, 2, 1]
    assert mean.tolist() == [2.0, 2.5, 2.0]     # at x=1 the first curve is interpolated to 1
    assert np.isnan(std[2])                     # one curve: no spread


def test_smooth_is_a_trailing_mean():
    assert smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert smooth(np.array([1.0, 3.0]), 1).tolist() == [1.0, 3.0]


def test_line_plot_one_line_and_band_per_group(runs):
    fig = plot_lines(runs["records"], "Vacc", ["nuq_method"])
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"QSGD (n=2)", "NUQSGD (n=2)", "ALQ"}  # alq: its failed seed is left out
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # a band needs two runs
    q = lines["QSGD (n=2)"]
    expected = np.mean([curve("q", 1), curve("q", 2)], axis=0)
    assert q.get_xdata().tolist() == STEPS and q.get_ydata() == pytest.approx(expected)
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "validation accuracy (%)"
    assert ax.get_legend() is None and len(fig.legends) == 1  # the legend sits outside the axes


def test_line_plot_per_run_and_smoothing(runs):
    fig = plot_lines(runs["records"], "Vacc", None, window=2)
    assert len(fig.axes[0].get_lines()) == 5  # every done run its own line
    line = fig.axes[0].get_lines()[0]
    raw = curve("q", 1)
    assert line.get_ydata()[1] == pytest.approx((raw[0] + raw[1]) / 2)


def test_wall_clock_axis_starts_at_zero(runs):
    fig = plot_lines(runs["records"], "Vacc", ["nuq_method"], x="wall")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("wall-clock")
    assert min(line.get_xdata().min() for line in ax.get_lines()) == pytest.approx(0.0, abs=1.0)


def test_bar_plot_one_bar_per_group_at_final(runs):
    fig = plot_bars(runs["records"], "Vacc", ["nuq_method"], parse_at("final"))
    bars = fig.axes[0].patches
    assert len(bars) == 3
    heights = [b.get_height() for b in bars]
    assert heights == pytest.approx([np.mean([curve(m, 1)[-1], curve(m, 2)[-1]]) for m in ("q", "nuq")]
                                    + [curve("alq", 1)[-1]])


def test_files_are_written_headless(runs, tmp_path):
    fig = plot_lines(runs["records"], "Vacc", ["nuq_method"])
    paths = save_figure(fig, tmp_path / "out", file_stem("curves", "Vacc", "line"))
    assert [p.name for p in paths] == ["curves_Vacc.png", "curves_Vacc.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert file_stem("r", "train/loss", "bar") == "r_train_loss_bar"


def test_cli_writes_png_and_pdf(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    code = cli.main(["plot", "--grid", str(runs["grid"]), "--run", "curves", "--root", str(runs["root"]),
                     "--metric", "Vacc", "--by", "nuq_method", "--smooth", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["curves_Vacc.pdf", "curves_Vacc.png"]
    assert "5 of 6 runs drawn" in printed and "failed" in printed
    code = cli.main(["plot", "--grid", str(runs["grid"]), "--run", "curves", "--root", str(runs["root"]),
                     "--kind", "bar", "--out", str(out)])
    assert code == 0 and (out / "curves_Vacc_bar.pdf").is_file()


def test_cli_unknown_metric_is_a_usage_error(runs, capsys):
    code = cli.main(["plot", "--grid", str(runs["grid"]), "--run", "curves", "--root", str(runs["root"]),
                     "--metric", "Vloss"])
    err = capsys.readouterr().err
    assert code == 2 and "'Vloss' was not logged" in err and "Vacc" in err


def test_group_labels_name_methods_as_researchers_do_and_skip_implied_and_unset_keys():
    from launcher.results.plot import group_labels
    by = ["g_estim", "nuq_bits", "nuq_method"]
    keys = [("sgd", None, None), ("nuq", 3, "q"), ("nuq", 3, "alq")]
    assert group_labels(by, keys) == ["SGD", "QSGD", "ALQ"]  # nuq_bits follows from g_estim: hidden
    keys = [("sgd", None, None), ("nuq", 3, "amq_nb"), ("nuq", 4, "amq_nb")]
    assert group_labels(by, keys) == ["SGD", "AMQ-N, nuq_bits=3", "AMQ-N, nuq_bits=4"]
    assert group_labels(["nuq_method"], [("q",)]) == ["QSGD"] and group_labels([], [()]) == ["all runs"]
    # sgd runs leave nuq_method unset: they are SGD, not "(nuq_method unset)"
    assert group_labels(["nuq_method"], [(None,), ("none",)]) == ["SGD", "SuperSGD"]
    assert group_labels(["nuq_method"], [("q",)], [{"g_estim": "nuq_dist", "nuq_method": "q"}]) == ["QSGD (distributed)"]
    assert group_labels(["nuq_bits"], [(3,), (None,)]) == ["3", "(nuq_bits unset)"]


# ---- figures a person looks at (issue 22): written to tests/output/plots/ for checking by eye -----------

FIG_DIR = Path(__file__).resolve().parent / "output" / "plots"
PAPER_GRID = textwrap.dedent('''
    from launcher.grid import Cond
    from launcher.registry import GridRun, register

    @register
    def methods():
        return GridRun([{"g_estim": "sgd", "seed": [1, 2], "niters": 300},
                        {"g_estim": "nuq", "g_optim": "", "nuq_method": ["q", "qinf", "amq"], "seed": [1, 2],
                         "niters": 300}], "methods")
''')
# est_var per method: (level, seed-to-seed factor). SGD's two seeds differ ~20x, as in the README's table
# (0.05805 ± 0.048): a linear mean ± std band would reach below zero.
VARIANCE = {None: (0.05, 20.0), "q": (0.045, 1.2), "qinf": (0.027, 1.5), "amq": (0.024, 1.3)}


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper")
    (base / "grid.py").write_text(PAPER_GRID)
    selection = select_runs(Namespace(grid=str(base / "grid.py"), run="methods", only=[], set=[], limit=None,
                                      root=str(base / "runs")))
    steps = np.arange(25, 301, 25)
    for spec in selection.runs:
        method, seed = spec.config.get("nuq_method"), spec.config["seed"]
        level, spread = VARIANCE[method]
        with RunLogger(spec.dir) as log:
            for i, step in enumerate(steps):
                decay = 1.0 / (1 + i / 3)
                log.scalar("est_var", int(step), level * decay * (spread if seed == 2 else 1.0))
                offset = {None: 0.0, "q": -3.0, "qinf": -1.5, "amq": 1.0}[method]
                log.scalar("Vacc", int(step), 97.5 - 60 * decay + offset * (1 - decay) + seed * 0.8)
        StatusWriter(spec.dir, niters=300).write(runfiles.DONE)
        runfiles.atomic_write_json(spec.dir / runfiles.RESULTS, {"status": "done", "niters": 300, "final": {}})
    return load_records([(r.name, r.dir, r.config) for r in selection.runs], run_state)


def test_variance_figure_is_on_a_log_axis_with_positive_bands_and_readable_labels(paper_runs):
    fig = plot_lines(paper_runs, "est_var", ["g_estim", "nuq_method"], title="methods")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "gradient estimate variance"
    assert [line.get_label() for line in ax.get_lines()] == ["SGD (n=2)", "QSGD (n=2)", "QSGD-inf (n=2)", "AMQ (n=2)"]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lows = np.concatenate([b.get_paths()[0].vertices[:, 1] for b in bands])
    assert len(bands) == 4 and lows.min() > 0  # the band of a variance never reaches zero
    sgd = ax.get_lines()[0].get_ydata()
    assert sgd[0] == pytest.approx(0.05 * np.sqrt(20.0))  # geometric mean of the two seeds
    assert ax.get_legend() is None and fig.legends[0].get_title().get_text() == "band: ±1 std over seeds in log space"
    paths = save_figure(fig, FIG_DIR, "methods_est_var")
    assert paths[0].stat().st_size > 10_000


def test_accuracy_and_bar_figures_are_written_for_checking(paper_runs):
    fig = plot_lines(paper_runs, "Vacc", ["g_estim", "nuq_method"], title="methods")
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylabel() == "validation accuracy (%)"
    save_figure(fig, FIG_DIR, "methods_Vacc")
    fig = plot_bars(paper_runs, "est_var", ["g_estim", "nuq_method"], parse_at("final"), title="methods")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and [t.get_text() for t in ax.get_xticklabels()][0] == "SGD\n(n=2)"
    low_ends = [b.get_height() for b in ax.patches]
    assert min(low_ends) > 0
    save_figure(fig, FIG_DIR, "methods_est_var_bar")
