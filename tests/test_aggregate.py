"""`launch aggregate`: table values, grouping math, --at semantics, formats and missing-run reporting.

The run folders are written with the trainer's own logging code (RunLogger for metrics.jsonl and event
files, StatusWriter for status.json, the runfiles helpers for results.json), with values chosen here so
every number in the table can be checked. A toy grid file selects them through the real launcher.
"""
from __future__ import annotations

import json
import math
import statistics
import textwrap
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from launcher import cli
from launcher.results.aggregate import make_table
from launcher.state import run_state
from launcher.results.table import build_table
from launcher.results.table_points import TableError, load_records, parse_at
from launcher.results.table_format import FORMATS, render
from trainer import runfiles
from trainer.logger import RunLogger
from trainer.runinfo import StatusWriter

GRID = textwrap.dedent('''
    from launcher.registry import GridRun, register

    @register
    def toy():
        return GridRun({"dataset": "digits", "nuq_method": ["q", "nuq", "alq"], "seed": [1, 2, 3],
                        "niters": 100}, "toy")
''')
METHOD_BASE = {"q": 80.0, "nuq": 85.0, "alq": 90.0}
VACC_STEPS = [20, 40, 60, 80, 100]
VAR_STEPS = list(range(10, 101, 10))


def vacc(method: str, seed: int) -> list[float]:
    """Validation accuracy per VACC_STEPS: best at step 40, final a bit lower."""
    base = METHOD_BASE[method] + seed
    return [base - 10, base + 5, base, base + 2, base + 1]


def est_var(method: str, seed: int, step: int) -> float:
    return 0.001 * step + 0.1 * seed + (0.5 if method == "q" else 0.0)


def vloss(method: str, seed: int, step: int) -> float:
    """Lowest at step 60 (so best:Vloss, a minimum, differs from best:Vacc)."""
    return 1.0 + abs(step - 60) / 100 + seed / 10


# (method, seed) -> what the fixture makes of that run
KIND = {("q", 2): "corrupt", ("nuq", 2): "events_only", ("nuq", 3): "failed",
        ("alq", 2): "running", ("alq", 3): "missing"}


def write_run(run_dir: Path, method: str, seed: int, kind: str) -> None:
    """One run folder as the trainer leaves it, for each fixture kind."""
    if kind == "missing":
        return
    status = StatusWriter(run_dir, niters=100)
    last = 100 if kind in ("done", "corrupt", "events_only") else 60
    with RunLogger(run_dir) as log:
        for step in VAR_STEPS:
            if step > last:
                break
            log.scalar("est_var", step, est_var(method, seed, step))
            if step in VACC_STEPS:
                log.scalar("Vacc", step, vacc(method, seed)[VACC_STEPS.index(step)])
                log.scalar("Vloss", step, vloss(method, seed, step))
            status.beat(step)
        final = dict(log.last)
    status.iteration = last
    if kind == "failed":
        status.write(runfiles.FAILED, error="FloatingPointError: loss is nan")
        return
    if kind == "running":
        status.write(runfiles.RUNNING)
        return
    status.write(runfiles.DONE)
    runfiles.atomic_write_json(run_dir / runfiles.RESULTS, {
        "status": "done", "niters": 100, "final": final, "best": {"Vacc": max(vacc(method, seed)), "iter": 40},
        "wall_s": 10.0 * seed, "step_s": 0.1, "peak_mem_mb": 100.0})
    metrics = run_dir / runfiles.METRICS
    if kind == "events_only":
        metrics.unlink()
    if kind == "corrupt":
        lines = metrics.read_text().splitlines(keepends=True)
        lines.insert(3, '{"tag": "Vacc", "step": 3, "val\n')  # line 4: cut mid-record
        metrics.write_text("".join(lines))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy grid file, its results root, and the folder of each (method, seed)."""
    base = tmp_path_factory.mktemp("toy")
    grid = base / "toygrid.py"
    grid.write_text(GRID)
    root = base / "runs"
    from argparse import Namespace
    from launcher.selection import select_runs
    selection = select_runs(Namespace(grid=str(grid), run="toy", only=[], set=[], limit=None, root=str(root)))
    dirs = {}
    for spec in selection.runs:
        key = (spec.config["nuq_method"], spec.config["seed"])
        dirs[key] = spec.dir
        write_run(spec.dir, *key, KIND.get(key, "done"))
    return {"grid": grid, "root": root, "selection": selection, "dirs": dirs}


def table_of(toy, **kwargs):
    sel = toy["selection"]
    table, warnings = make_table([(r.name, r.dir, r.config) for r in sel.runs], run_state,
                                 sel.varying_keys, **kwargs)
    return table, warnings


def per_run(table) -> dict[tuple, dict]:
    """(method, seed) -> {column label: value, 'status': ...} of a per-run table."""
    out = {}
    for i in range(table.nrows):
        row = table.left.iloc[i]
        out[(row["nuq_method"], row["seed"])] = {"status": row["status"], "step": row["step"],
                                                  **{c.label: c.mean[i] for c in table.columns}}
    return out


def grouped(table) -> dict[str, dict]:
    out = {}
    for i in range(table.nrows):
        row = table.left.iloc[i]
        out[row["nuq_method"]] = {"n": row["n"], "runs": row["runs"],
                                  **{c.label: (c.mean[i], c.std[i], c.n[i]) for c in table.columns}}
    return out


def test_states_of_the_fixture_runs(toy):
    states = {key: run_state(d) for key, d in toy["dirs"].items()}
    assert states[("nuq", 3)] == "failed" and states[("alq", 2)] == "running"
    assert states[("alq", 3)] == "not submitted" and states[("q", 2)] == "done"


def test_per_run_final_values(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var", "wall_s"], by="run")
    rows = per_run(table)
    assert rows[("q", 1)]["Vacc"] == pytest.approx(vacc("q", 1)[-1])
    assert rows[("q", 1)]["est_var"] == pytest.approx(est_var("q", 1, 100))
    assert rows[("q", 3)]["wall_s"] == 30.0  # a results.json number as a column
    assert rows[("q", 1)]["step"] == 100
    # the corrupt line is skipped, the rest of that file is read
    assert rows[("q", 2)]["Vacc"] == pytest.approx(vacc("q", 2)[-1])
    # the events-only run is read from its event files (float32 there: relative rounding error <= 2^-24)
    assert rows[("nuq", 2)]["Vacc"] == pytest.approx(vacc("nuq", 2)[-1], rel=2 ** -24)
    assert rows[("nuq", 2)]["est_var"] == pytest.approx(est_var("nuq", 2, 100), rel=2 ** -24)
    # not counted: shown with their state, no values
    assert rows[("nuq", 3)]["status"] == "failed 60/100"
    assert rows[("alq", 2)]["status"] == "running 60/100"
    assert rows[("alq", 3)]["status"] == "not submitted"
    for key in [("nuq", 3), ("alq", 2), ("alq", 3)]:
        assert math.isnan(rows[key]["Vacc"]) and math.isnan(rows[key]["est_var"])
    assert len(rows) == 9


def test_grouping_mean_std_n_over_counted_runs_only(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var"], by="nuq_method")
    rows = grouped(table)
    q = [vacc("q", s)[-1] for s in (1, 2, 3)]
    mean, std, n = rows["q"]["Vacc"]
    assert (rows["q"]["n"], rows["q"]["runs"], n) == (3, 3, 3)
    assert mean == pytest.approx(statistics.mean(q)) and std == pytest.approx(statistics.stdev(q))
    # nuq: the failed seed 3 is not averaged in
    nuq = [vacc("nuq", s)[-1] for s in (1, 2)]
    mean, std, n = rows["nuq"]["Vacc"]
    assert (rows["nuq"]["n"], rows["nuq"]["runs"], n) == (2, 3, 2)
    # seed 2 is read from event files (float32): its value 88 is off by at most 88 * 2^-24 = 5.3e-6, so the
    # mean is within 2.7e-6 (rel 3e-8) and the std |a - b| / sqrt(2) of two values 1 apart within 3.8e-6
    assert mean == pytest.approx(statistics.mean(nuq), rel=1e-7)
    assert std == pytest.approx(statistics.stdev(nuq), abs=4e-6)
    # alq: only seed 1 is done (seed 2 running, seed 3 missing): n = 1, std undefined
    mean, std, n = rows["alq"]["Vacc"]
    assert (rows["alq"]["n"], rows["alq"]["runs"], n) == (1, 3, 1)
    assert mean == pytest.approx(vacc("alq", 1)[-1]) and math.isnan(std)


def test_default_groups_seeds_and_picks_default_metrics(toy):
    table, _ = table_of(toy)
    assert table.grouped and list(table.left.columns[:1]) == ["nuq_method"]
    assert [c.label for c in table.columns] == ["Vacc", "est_var"]  # no 'bits' tag, nuq_bits never set


def test_best_reads_other_metrics_at_the_best_step(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var", "Vloss"], at="best:Vacc", by="run")
    rows = per_run(table)
    for seed in (1, 2, 3):
        row = rows[("q", seed)]
        assert row["step"] == 40
        assert row["Vacc"] == pytest.approx(max(vacc("q", seed)))
        assert row["est_var"] == pytest.approx(est_var("q", seed, 40))
        assert row["Vloss"] == pytest.approx(vloss("q", seed, 40))
    # a loss is best at its minimum
    table, _ = table_of(toy, metrics=["Vacc", "Vloss"], at="best:Vloss", by="run")
    row = per_run(table)[("q", 1)]
    assert row["step"] == 60 and row["Vacc"] == pytest.approx(vacc("q", 1)[2])


def test_iter_reads_the_latest_point_at_or_before_n(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var"], at="iter=50", by="run")
    row = per_run(table)[("q", 1)]
    assert row["step"] == 50
    assert row["Vacc"] == pytest.approx(vacc("q", 1)[1])      # Vacc logged at 40
    assert row["est_var"] == pytest.approx(est_var("q", 1, 50))
    # a running run is not counted even past the step: unfinished runs are never averaged in
    assert math.isnan(per_run(table)[("alq", 2)]["Vacc"])


def test_corrupt_line_warning_names_file_and_line(toy):
    _, warnings = table_of(toy, metrics=["Vacc"])
    corrupt = toy["dirs"][("q", 2)] / runfiles.METRICS
    assert len(warnings) == 1
    assert str(corrupt) in warnings[0] and "line 4" in warnings[0]


def test_caption_counts_and_names_runs_not_counted(toy):
    table, _ = table_of(toy, metrics=["Vacc"])
    caption = "\n".join(table.caption_lines())
    assert "9 runs, 6 counted" in caption
    assert "1 failed" in caption and "1 running" in caption and "1 not submitted" in caption
    names = {toy["selection"].runs[i].name for i in range(9)
             if (toy["selection"].runs[i].config["nuq_method"], toy["selection"].runs[i].config["seed"])
             in [("nuq", 3), ("alq", 2), ("alq", 3)]}
    assert all(name in caption for name in names)
    assert table.counts == {"done": 6, "failed": 1, "running": 1, "not submitted": 1}


def test_pivot_spreads_a_key_across_columns(toy):
    table, _ = table_of(toy, metrics=["Vacc"], by="run", pivot="nuq_method")
    assert [c.label for c in table.columns] == ["q", "nuq", "alq"]
    assert list(table.left["seed"]) == [1, 2, 3]
    q = next(c for c in table.columns if c.label == "q")
    assert q.mean == pytest.approx([vacc("q", s)[-1] for s in (1, 2, 3)])
    # best per row across the methods: seed 1 alq; seed 2 nuq (alq 2 is running); seed 3 has only q: none
    assert table.best == {(0, 2), (1, 1)}


def test_best_marking_per_column(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var"], by="nuq_method")
    labels = [c.label for c in table.columns]
    methods = list(table.left["nuq_method"])
    best = {(methods[i], labels[j]) for i, j in table.best}
    # highest accuracy: alq (only seed 1: 92); lowest final variance: alq (0.1 + 0.1 * 1) < nuq (mean 0.25)
    assert best == {("alq", "Vacc"), ("alq", "est_var")}
    assert not table_of(toy, metrics=["Vacc"], by="nuq_method", mark=False)[0].best


def test_every_format(toy):
    table, _ = table_of(toy, metrics=["Vacc", "est_var"], by="nuq_method")
    q_mean = statistics.mean(vacc("q", s)[-1] for s in (1, 2, 3))
    term = render(table, "term")
    assert "9 runs, 6 counted" in term and "nuq_method" in term and "2/3" in term and " *" in term
    assert f"{q_mean:.4g} ± " in term
    md = render(table, "md")
    assert md.startswith("| nuq_method | n | Vacc | est_var |") and "**" in md and "| --- |" in md
    frame = pd.read_csv(StringIO(render(table, "csv")))
    assert list(frame.columns) == ["nuq_method", "n", "runs", "Vacc", "Vacc std", "Vacc n",
                                   "est_var", "est_var std", "est_var n"]
    assert frame.loc[frame.nuq_method == "q", "Vacc"].item() == pytest.approx(q_mean)
    assert frame.loc[frame.nuq_method == "alq", "n"].item() == 1
    latex = render(table, "latex")
    assert r"\begin{tabular}{llrr}" in latex and r"nuq\_method" in latex and r"$\pm$" in latex
    assert r"\textbf{" in latex and r"\caption{" in latex and "_" not in latex.replace(r"\_", "")
    doc = json.loads(render(table, "json"))
    assert doc["counts"]["done"] == 6
    assert {r["reason"] for r in doc["not_counted"]} == {"failed", "running", "not submitted"}
    alq = next(r for r in doc["rows"] if r["nuq_method"] == "alq")
    assert alq["Vacc std"] is None and alq["Vacc n"] == 1
    assert set(FORMATS) == {"term", "md", "csv", "latex", "json"}


def test_bad_requests_name_the_value_and_the_choices(toy):
    with pytest.raises(TableError, match="unknown metric 'Vaccc'.*Vacc"):
        table_of(toy, metrics=["Vaccc"])
    with pytest.raises(TableError, match="best:<metric>"):
        table_of(toy, at="bestish")
    with pytest.raises(TableError, match="iter=2000"):
        table_of(toy, at="iter=-5")
    with pytest.raises(TableError, match="--by 'sed' is not a config key; did you mean seed"):
        table_of(toy, by="sed")
    with pytest.raises(TableError, match="--pivot"):
        table_of(toy, by="run", pivot="lr")


def run_cli(toy, capsys, *args):
    code = cli.main(["aggregate", "--grid", str(toy["grid"]), "--run", "toy", "--root", str(toy["root"]), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prints_the_table_and_warnings(toy, capsys):
    code, out, err = run_cli(toy, capsys)
    assert code == 0
    assert "toygrid.toy: 9 runs, 6 counted; values at final" in out and "nuq_method" in out
    assert "warning:" in err and "line 4" in err


def test_cli_out_file_takes_format_from_suffix(toy, capsys, tmp_path):
    out_file = tmp_path / "table.json"
    code, out, _ = run_cli(toy, capsys, "--metric", "Vacc", "--out", str(out_file))
    assert code == 0 and out == ""
    assert json.loads(out_file.read_text())["columns"][0] == "nuq_method"
    code, _, err = run_cli(toy, capsys, "--format", "csv", "--by", "run")
    assert code == 0 and "not counted" in err  # csv holds no caption: it goes to stderr


def test_cli_bad_input_is_one_line_and_exit_2(toy, capsys):
    code, _, err = run_cli(toy, capsys, "--at", "best:Nope")
    assert code == 2 and "unknown metric 'Nope'" in err and "Traceback" not in err
    code, _, err = run_cli(toy, capsys, "--format", "xls")
    assert code == 2 and "xls" in err


def test_build_table_with_no_runs_logged_yet(tmp_path):
    records = load_records([("a", tmp_path / "a", {"seed": 1}), ("b", tmp_path / "b", {"seed": 2})],
                           run_state)
    table = build_table(records, ["Vacc"], parse_at("final"), ["seed"], by=[])
    assert table.nrows == 1 and table.left["n"][0] == 0 and table.left["runs"][0] == 2
    assert "2 not submitted" in "\n".join(table.caption_lines())
    assert "—" in render(table, "term")


def test_grouped_pivot_cells_show_n_when_below_the_largest(toy):
    table, _ = table_of(toy, metrics=["Vacc"], by="all", pivot="nuq_method")
    assert table.nrows == 1 and [c.n[0] for c in table.columns] == [3, 2, 1]
    term = render(table, "term")
    assert "columns: Vacc for each nuq_method" in term
    q_mean = statistics.mean(vacc("q", s)[-1] for s in (1, 2, 3))
    assert f"{q_mean:.4g} ± " in term and "(n=2)" in term and "(n=1)" in term and "(n=3)" not in term


def test_iter_past_the_end_of_a_done_run_is_not_counted(toy):
    table, _ = table_of(toy, metrics=["Vacc"], at="iter=500", by="run")
    reasons = dict(table.not_counted)
    run = next(r.name for r in toy["selection"].runs if (r.config["nuq_method"], r.config["seed"]) == ("q", 1))
    assert reasons[run] == "done before iter=500"
    assert all(math.isnan(v) for v in table.columns[0].mean)


def test_results_json_alone_gives_final_values(tmp_path):
    runfiles.atomic_write_json(tmp_path / "r" / runfiles.RESULTS,
                               {"status": "done", "final": {"Vacc": 91.5}, "wall_s": 12.0})
    records = load_records([("r", tmp_path / "r", {"seed": 1})], run_state)
    table = build_table(records, ["Vacc", "wall_s"], parse_at("final"), ["seed"])
    assert [c.mean[0] for c in table.columns] == [91.5, 12.0]
    best = build_table(records, ["Vacc"], parse_at("best:Vacc"), ["seed"])
    assert math.isnan(best.columns[0].mean[0])  # no series: there is no best step to read


def test_key_columns_implied_by_earlier_ones_are_hidden_from_displays(tmp_path):
    configs = [{"g_estim": "sgd", "seed": 1}, {"g_estim": "nuq", "nuq_bits": 3, "nuq_method": "q", "seed": 1},
               {"g_estim": "nuq", "nuq_bits": 3, "nuq_method": "alq", "seed": 1}]
    records = load_records([(f"r{i}", tmp_path / f"r{i}", c) for i, c in enumerate(configs)], run_state)
    keys = ["g_estim", "nuq_bits", "nuq_method"]
    table = build_table(records, ["Vacc"], parse_at("final"), keys + ["seed"], by=keys)
    assert table.hidden == ["nuq_bits"]  # 3 for every nuq run, unset for sgd: follows from g_estim
    assert "nuq_bits" not in render(table, "term").split("\n\n")[1]
    assert "nuq_bits" in render(table, "csv").splitlines()[0]  # data formats keep every key


def test_best_needs_a_logged_history(toy):
    with pytest.raises(TableError, match="best:wall_s.*no logged history"):
        table_of(toy, metrics=["Vacc"], at="best:wall_s")
