"""RunLogger: metrics.jsonl lines, TensorBoard files, and resume truncation."""
import json

from trainer import runfiles
from trainer.logger import RunLogger


def _lines(run_dir):
    return [json.loads(l) for l in (run_dir / runfiles.METRICS).read_text().splitlines()]


def test_scalar_writes_jsonl_and_tensorboard(tmp_path):
    with RunLogger(tmp_path) as log:
        log.scalar("loss", 1, 2.5)
        log.scalar("Vacc", 2, 90.0)
        log.scalar("bad", 3, float("nan"))
    recs = _lines(tmp_path)
    assert [(r["tag"], r["step"], r["value"]) for r in recs] == [("loss", 1, 2.5), ("Vacc", 2, 90.0), ("bad", 3, None)]
    assert all(isinstance(r["wall"], float) for r in recs)
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_resume_drops_lines_past_checkpoint_step(tmp_path):
    with RunLogger(tmp_path) as log:
        for step in range(1, 6):
            log.scalar("loss", step, step)
    with open(tmp_path / runfiles.METRICS, "a") as fh:
        fh.write('{"tag": "loss", "st')  # a line cut by a crash
    with RunLogger(tmp_path, resume_step=3) as log:
        log.scalar("loss", 4, 40.0)
    assert [(r["step"], r["value"]) for r in _lines(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_fresh_run_starts_empty(tmp_path):
    with RunLogger(tmp_path) as log:
        log.scalar("loss", 1, 1.0)
    with RunLogger(tmp_path) as log:
        log.scalar("loss", 1, 7.0)
    assert [r["value"] for r in _lines(tmp_path)] == [7.0]


def test_a_quick_resume_keeps_the_previous_attempts_event_file(tmp_path):
    """Two attempts within one second: tensorboardX names files by the second, so without a unique
    suffix the resume would reopen and wipe the first attempt's events."""
    from launcher.results.metrics_io import read_event_files

    with RunLogger(tmp_path) as log:
        log.scalar("loss", 1, 1.0)
        log.scalar("loss", 2, 2.0)
    with RunLogger(tmp_path, resume_step=2) as log:
        log.scalar("loss", 3, 3.0)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    steps = read_event_files(tmp_path)
    assert list(zip(steps["loss"].steps.tolist(), steps["loss"].values.tolist())) == [(1, 1.0), (2, 2.0), (3, 3.0)]
