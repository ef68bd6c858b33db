"""Reading one run's metrics: metrics.jsonl (clean and damaged) and TensorBoard event files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from launcher.results.metrics_io import read_event_files, read_metrics_jsonl, read_run_metrics
from trainer import runfiles
from trainer.logger import RunLogger


def write_lines(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def rec(tag, step, value):
    return {"tag": tag, "step": step, "value": value, "wall": 1.0e9 + step}


def test_jsonl_sorted_by_step_last_written_wins(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [rec("a", 2, 2.0), rec("a", 1, 1.0), rec("b", 1, 5.0), rec("a", 2, 20.0), rec("a", 3, None)])
    series = read_metrics_jsonl(path)
    assert series["a"].steps.tolist() == [1, 2, 3]
    assert series["a"].values[:2].tolist() == [1.0, 20.0] and math.isnan(series["a"].values[2])
    assert series["b"].walls.tolist() == [1.0e9 + 1]
    assert set(read_metrics_jsonl(path, tags={"b"})) == {"b"}


def test_jsonl_bad_lines_are_skipped_with_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [rec("a", 1, 1.0), "not json", rec("a", 2, 2.0), "",
                       json.dumps({"tag": "a", "step": "3", "value": 3.0}),  # step must be an int
                       json.dumps({"tag": "a", "step": 4, "value": 4.0}), '{"tag": "a", "st'])
    warnings: list[str] = []
    series = read_metrics_jsonl(path, warnings=warnings)
    assert series["a"].steps.tolist() == [1, 2, 4]
    assert [w.split(": ")[1] for w in warnings] == ["line 2", "line 5", "line 7"]
    assert all(w.startswith(str(path)) for w in warnings)


def test_event_files_match_the_jsonl_from_the_same_logger(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 21):
            log.scalar("loss", step, 1.0 / step)
            if step % 5 == 0:
                log.scalar("Vacc", step, 50.0 + step)
    jsonl = read_metrics_jsonl(tmp_path / runfiles.METRICS)
    events = read_event_files(tmp_path)
    assert set(events) == {"loss", "Vacc"}
    for tag in events:
        assert events[tag].steps.tolist() == jsonl[tag].steps.tolist()
        # event files hold float32: relative rounding error at most 2^-24
        assert events[tag].values == pytest.approx(jsonl[tag].values, rel=2 ** -23)


def test_event_files_honour_a_resumed_writers_purge(tmp_path):
    first = SummaryWriter(str(tmp_path), filename_suffix=".a")
    for step in range(1, 11):
        first.add_scalar("loss", float(step), step)
    first.close()
    resumed = SummaryWriter(str(tmp_path), purge_step=6, filename_suffix=".b")
    for step in range(6, 9):
        resumed.add_scalar("loss", 100.0 + step, step)
    resumed.close()
    series = read_event_files(tmp_path)["loss"]
    assert series.steps.tolist() == list(range(1, 9))  # 9 and 10 of the first writer are purged
    assert series.values.tolist() == [1, 2, 3, 4, 5, 106, 107, 108]


def test_truncated_event_file_tail_is_ignored(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 6):
            log.scalar("loss", step, float(step))
    (path,) = tmp_path.glob("events.out.tfevents.*")
    path.write_bytes(path.read_bytes()[:-7])  # the last record cut mid-way
    series = read_event_files(tmp_path)["loss"]
    assert series.steps.tolist() == [1, 2, 3, 4]


def test_run_falls_back_to_event_files_and_reads_status_and_results(tmp_path):
    with RunLogger(tmp_path) as log:
        log.scalar("Vacc", 10, 90.0)
    (tmp_path / runfiles.METRICS).write_text("")  # an empty metrics.jsonl is no better than none
    runfiles.atomic_write_json(tmp_path / runfiles.RESULTS, {"status": "done", "wall_s": 3.0})
    metrics = read_run_metrics(tmp_path)
    assert metrics.source == "events" and metrics.last_step == 10
    assert metrics.results["wall_s"] == 3.0 and metrics.status is None
    assert read_run_metrics(tmp_path / "absent").source == "none"


def test_large_clean_file_uses_every_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    steps = np.arange(5000)
    write_lines(path, [rec("x", int(s), float(s) * 0.5) for s in steps])
    series = read_metrics_jsonl(path)["x"]
    assert len(series) == 5000 and series.values[-1] == 4999 * 0.5


def test_tag_filter_reads_only_those_tags_and_still_warns(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [rec("loss", 1, 9.0), rec("Vloss", 1, 8.0), rec("Vacc", 1, 90.0), '{"tag": "loss", "st'])
    warnings: list[str] = []
    series = read_metrics_jsonl(path, tags={"loss"}, warnings=warnings)
    assert set(series) == {"loss"} and series["loss"].values.tolist() == [9.0]  # not Vloss's line
    assert len(warnings) == 1 and "line 4" in warnings[0]
    write_lines(path, [rec("Vacc", 1, 90.0), json.dumps({"tag": "Vacc", "step": 2, "value": "high"})])
    warnings.clear()
    series = read_metrics_jsonl(path, tags={"Vacc"}, warnings=warnings)
    assert series["Vacc"].steps.tolist() == [1] and "line 2" in warnings[0]


def test_unreadable_metrics_file_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    write_lines(tmp_path / runfiles.METRICS, [rec("a", 1, 1.0)])

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # tests run as root here, where chmod cannot make a file unreadable: the module's open() is replaced
    monkeypatch.setattr("launcher.results.metrics_io.open", denied, raising=False)
    metrics = read_run_metrics(tmp_path)
    assert metrics.series == {} and len(metrics.warnings) == 1
    assert "cannot read metrics" in metrics.warnings[0] and "Permission denied" in metrics.warnings[0]
