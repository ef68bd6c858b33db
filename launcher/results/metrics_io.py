"""Read the scalar metrics of one run folder: metrics.jsonl, TensorBoard event files, results.json.

Aggregation must be fast on thousands of runs and must never crash on a half-written or damaged file:
metrics.jsonl is parsed in one `json.loads` call when it is clean and line by line (skipping bad lines with
a warning naming file and line) when it is not. Runs that only have event files are read from those with
the protobufs tensorboardX ships (no TensorFlow/TensorBoard needed). Import-light: no torch.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

import numpy as np

from trainer import runfiles

# results.json top-level numbers that can be asked for like metrics (e.g. --metric Vacc,wall_s).
RESULT_FIELDS = ("niters", "wall_s", "step_s", "peak_mem_mb")


@dataclass
class Series:
    """One tag's points, sorted by step, one point per step (the last one written wins)."""

    steps: np.ndarray   # int64
    values: np.ndarray  # float64; NaN where the trainer logged a non-finite value
    walls: np.ndarray   # float64 unix seconds

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class RunMetrics:
    """Everything aggregation reads from one run folder."""

    series: dict[str, Series]
    results: dict[str, Any] | None
    status: dict[str, Any] | None
    source: str                       # "metrics.jsonl", "events" or "none"
    warnings: list[str] = field(default_factory=list)

    @property
    def last_step(self) -> int | None:
        """The largest step any tag was logged at (None when nothing was logged)."""
        ends = [int(s.steps[-1]) for s in self.series.values() if len(s)]
        return max(ends) if ends else None


def _make_series(steps: Any, values: Any, walls: Any) -> Series:
    """Sort by step; keep the last point written for a repeated step (a resumed run re-logs them)."""
    s = np.asarray(steps, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(walls, dtype=np.float64)
    if len(s) > 1 and not bool(np.all(s[1:] > s[:-1])):
        # stable sort of the reversed arrays, then unique keeps the first = last written
        rev = slice(None, None, -1)
        order = np.argsort(s[rev], kind="stable")
        s, v, w = s[rev][order], v[rev][order], w[rev][order]
        s, first = np.unique(s, return_index=True)
        v, w = v[first], w[first]
    return Series(s, v, w)


_NUMBER_OR_NULL = {int, float, type(None)}


def _valid_record(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    step, value, wall = rec.get("step"), rec.get("value"), rec.get("wall")
    return (isinstance(rec.get("tag"), str) and type(step) is int
            and type(value) in _NUMBER_OR_NULL and type(wall) in _NUMBER_OR_NULL)


def _series_by_tag(records: list, tags: Collection[str] | None) -> dict[str, Series]:
    """Series per tag of valid records, column-wise (a million records in well under a second).

    Raises ValueError at any invalid record; the caller then re-reads the file line by line.
    """
    if not records:
        return {}
    try:
        tag_list = [r["tag"] for r in records]
        step_list = [r["step"] for r in records]
        value_list = [r["value"] for r in records]
        wall_list = [r.get("wall") for r in records]
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError("invalid record") from err
    if (set(map(type, tag_list)) != {str} or set(map(type, step_list)) != {int}
            or not set(map(type, value_list)) <= _NUMBER_OR_NULL or not set(map(type, wall_list)) <= _NUMBER_OR_NULL):
        raise ValueError("invalid record")
    tag_array = np.array(tag_list, dtype=object)
    steps = np.array(step_list, dtype=np.int64)
    values = np.array(value_list, dtype=np.float64)  # JSON null (a non-finite value) -> NaN
    walls = np.array(wall_list, dtype=np.float64)
    out = {}
    for tag in dict.fromkeys(tag_list):  # first-seen order
        if tags is None or tag in tags:
            mask = tag_array == tag
            out[tag] = _make_series(steps[mask], values[mask], walls[mask])
    return out


def _looks_clean(lines: list[str]) -> bool:
    """Every line is one {...} object: lines of tags that are not parsed can still be checked for a
    crash-cut or garbage line (which then sends the file down the slow path and gets its warning)."""
    return all(line[:1] == "{" and line[-1:] == "}" for line in lines)


def _lines_with_tags(lines: list[str], tags: Collection[str]) -> list[str]:
    """The lines that mention one of `tags` as a JSON string: a superset of their records, so records
    of other tags are never parsed."""
    needles = sorted({json.dumps(t) for t in tags} | {f'"{t}"' for t in tags})
    search = re.compile("|".join(re.escape(n) for n in needles)).search
    return [line for line in lines if search(line)]


def read_metrics_jsonl(path: str | os.PathLike, tags: Collection[str] | None = None,
                       warnings: list[str] | None = None) -> dict[str, Series]:
    """The series in a metrics.jsonl file, optionally only `tags`; bad lines are skipped with a warning.

    Fast path: the (wanted) lines are parsed as one JSON array. Any bad line sends the whole file
    down the slow path, which parses line by line and warns with the line number.
    """
    path = Path(path)
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    if tags is None or _looks_clean(lines):
        wanted = lines if tags is None else _lines_with_tags(lines, tags)
        try:
            return _series_by_tag(json.loads("[" + ",".join(wanted) + "]"), tags)
        except ValueError:
            pass
    return _series_by_tag(_valid_lines(path, lines, warnings), tags)


def _valid_lines(path: Path, lines: list[str], warnings: list[str] | None) -> list[dict]:
    """The valid records among lines; each bad line adds a warning naming file and line number."""
    good = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if _valid_record(rec):
            good.append(rec)
        elif warnings is not None:
            shown = line if len(line) <= 60 else line[:57] + "..."
            warnings.append(f"{path}: line {number}: skipped a malformed metrics record: {shown!r}")
    return good


def _tfrecords(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file; stops quietly at a truncated tail (a writer still running)."""
    with open(path, "rb") as fh:
        data = fh.read()
    pos, end = 0, len(data)
    while pos + 12 <= end:
        (length,) = struct.unpack_from("<Q", data, pos)
        start = pos + 12
        if start + length + 4 > end:
            return
        yield data[start:start + length]
        pos = start + length + 4


def read_event_files(run_dir: str | os.PathLike, tags: Collection[str] | None = None,
                     warnings: list[str] | None = None) -> dict[str, Series]:
    """Scalars of the run's `events.out.tfevents.*` files, read in file order.

    A resumed tensorboardX writer starts its file with a SessionLog START at the purge step: like
    TensorBoard, points at or after that step from earlier files are dropped.
    """
    from tensorboardX.proto.event_pb2 import Event, SessionLog  # protobufs only, no TensorBoard needed
    from google.protobuf.message import DecodeError

    points: dict[str, list[tuple[int, float, float]]] = {}
    for path in sorted(glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*"))):
        for record in _tfrecords(path):
            event = Event()
            try:
                event.ParseFromString(record)
            except DecodeError:
                if warnings is not None:
                    warnings.append(f"{path}: skipped an undecodable event record")
                continue
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for tag, pts in points.items():
                    points[tag] = [p for p in pts if p[0] < event.step]
                continue
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                if tags is not None and value.tag not in tags:
                    continue
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and len(value.tensor.float_val) == 1:
                    number = value.tensor.float_val[0]
                else:
                    continue
                number = number if math.isfinite(number) else math.nan
                points.setdefault(value.tag, []).append((event.step, number, event.wall_time))
    return {tag: _make_series(*zip(*pts)) for tag, pts in points.items() if pts}


def has_event_files(run_dir: str | os.PathLike) -> bool:
    return bool(glob.glob(os.path.join(str(run_dir), "events.out.tfevents.*")))


def read_run_metrics(run_dir: str | os.PathLike, tags: Collection[str] | None = None) -> RunMetrics:
    """Metrics of one run: metrics.jsonl when present, else its event files; plus results/status JSON."""
    run_dir = Path(run_dir)
    warnings: list[str] = []
    jsonl = run_dir / runfiles.METRICS
    source = "none"
    series: dict[str, Series] = {}
    try:
        if jsonl.is_file() and jsonl.stat().st_size > 0:
            series, source = read_metrics_jsonl(jsonl, tags, warnings), "metrics.jsonl"
        elif has_event_files(run_dir):  # no (or an empty) metrics.jsonl: e.g. runs of older code
            series, source = read_event_files(run_dir, tags, warnings), "events"
    except OSError as err:  # unreadable file: the run shows without values, the warning says why
        warnings.append(f"{run_dir}: cannot read metrics: {err}")
    return RunMetrics(series=series, results=runfiles.read_json(run_dir / runfiles.RESULTS),
                      status=runfiles.read_json(run_dir / runfiles.STATUS), source=source,
                      warnings=warnings)
