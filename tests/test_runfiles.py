"""Atomic run-folder writes: a reader never sees half a file and a failed write leaves the old one."""
import json
import os

import pytest

from trainer import runfiles


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "status.json"
    runfiles.atomic_write_json(path, {"state": "running", "iteration": 1})
    runfiles.atomic_write_json(path, {"state": "done", "iteration": 2})
    assert json.loads(path.read_text()) == {"state": "done", "iteration": 2}
    assert os.listdir(path.parent) == ["status.json"]


def test_failed_write_keeps_previous_content(tmp_path):
    path = tmp_path / "results.json"
    runfiles.atomic_write_json(path, {"status": "done"})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        runfiles.atomic_write_json(path, {"x": Unserialisable()})
    assert runfiles.read_json(path) == {"status": "done"}
    assert os.listdir(tmp_path) == ["results.json"]


def test_read_json_tolerates_missing_corrupt_and_non_object(tmp_path):
    assert runfiles.read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text('{"state": "runn')
    assert runfiles.read_json(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert runfiles.read_json(tmp_path / "list.json") is None
