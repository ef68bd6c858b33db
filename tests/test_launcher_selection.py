"""Run selection (--only/--set/--limit/--root), run identity and naming, run state, run-folder preparation."""
import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launcher.errors import UsageError
from launcher.naming import config_hash, run_name
from launcher.rundirs import check_runs, dump_config, prepare_runs
from launcher.selection import parse_scalar, select_runs, varying_keys
from launcher.state import run_state
from trainer import runfiles

REPO = Path(__file__).resolve().parents[1]


def select(run="cifar10_resnet32", grid="nuq", **kw):
    args = argparse.Namespace(grid=grid, run=run, only=kw.get("only", []), set=kw.get("set", []),
                              limit=kw.get("limit"), root=kw.get("root", "runs"))
    return select_runs(args)


@pytest.mark.parametrize("text, value", [
    ("200", 200), ("0.1", 0.1), ("1e-4", "1e-4"), ("1.0e-4", 1e-4), ("amq", "amq"), ("", ""), ("''", ""),
    ("'3'", "3"), ("true", True), ("40000,60000", "40000,60000"),
])
def test_set_values_parse_as_yaml_scalars(text, value):
    assert parse_scalar(text, "--set") == value
    assert type(parse_scalar(text, "--set")) is type(value)


def test_set_overrides_every_config_and_is_part_of_identity():
    base = select()
    smoke = select(set=["niters=200", "nuq_ig_sm_bkts="])
    assert all(r.config["niters"] == 200 and r.config["nuq_ig_sm_bkts"] is True for r in smoke.runs)
    assert all(type(r.config["niters"]) is int for r in smoke.runs)
    # niters is excluded from names, yet the hash (and so the folder) changes
    assert all(a.name != b.name and a.name.rsplit(",", 1)[0] == b.name.rsplit(",", 1)[0]
               for a, b in zip(base.runs[1:8], smoke.runs[1:8]))
    # a key the grid did not set is appended
    assert all(list(r.config)[-1] == "seed" for r in select(set=["seed=7"]).runs)


def test_only_selects_and_keeps_grid_indices():
    sel = select(only=["nuq_method=qinf"])
    assert [(r.index, r.config["nuq_method"]) for r in sel.runs] == [(4, "qinf")]
    both = select(only=["nuq_method=qinf", "nuq_method=trn"])  # same key: any of
    assert [r.index for r in both.runs] == [4, 5]
    assert [r.index for r in select(only=["g_estim=nuq", "nuq_bits=3"]).runs] == list(range(1, 8))  # all of
    flags = select(only=["nuq_layer="])  # '' is a flag, matching True
    assert [r.index for r in flags.runs] == list(range(1, 8))
    full = {r.index: r.name for r in select().runs}
    assert all(full[r.index] == r.name for r in both.runs)


def test_limit_keeps_the_first_n():
    assert [r.index for r in select(limit=3).runs] == [0, 1, 2]
    assert [r.index for r in select(only=["g_estim=nuq"], limit=2).runs] == [1, 2]


def test_only_matching_nothing_lists_the_values():
    with pytest.raises(UsageError, match=r"nuq_bits takes 3"):
        select(only=["nuq_bits=5"])


@pytest.mark.parametrize("flag, text, message", [
    ("set", "niters", "expected KEY=VALUE"),
    ("set", "=3", "expected KEY=VALUE"),
    ("set", "nitres=3", "unknown config key 'nitres'; did you mean niters"),
    ("set", "niters=abc", "bad value for 'niters': expected an int"),
    ("set", "niters=[1, 2]", "must be a single value"),
    ("set", "niters={a: 1", "cannot read value"),
    ("only", "nuq_method=zzz", "'zzz' is not one of"),
    ("only", "foo", "expected KEY=VALUE"),
])
def test_malformed_set_and_only(flag, text, message):
    with pytest.raises(UsageError, match=message):
        select(**{flag: [text]})


def test_varying_keys():
    configs = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "c": True}, {"a": 1, "b": 1, "c": 1}]
    assert varying_keys(configs) == ["b", "c"]
    assert select().varying_keys[:2] == ["g_estim", "nuq_bits"]


def test_run_name_is_stable_and_order_independent():
    config = {"g_estim": "nuq", "nuq_method": "amq", "lr": 0.1, "nuq_layer": True, "niters": 100}
    reordered = dict(reversed(list(config.items())))
    assert config_hash(config) == config_hash(reordered)
    assert run_name(config, ["niters"]) == "g_estim_nuq,nuq_method_amq,lr_0.1,nuq_layer," + config_hash(config)
    # Pinned to the documented canonical form (sorted keys, compact JSON, sha1, 8 hex digits): run folders
    # outlive code versions, so the hash of a config must never change silently.
    canonical = b'{"g_estim":"nuq","lr":0.1,"niters":100,"nuq_layer":true,"nuq_method":"amq"}'
    assert config_hash(config) == hashlib.sha1(canonical).hexdigest()[:8]
    # ... and does not depend on the process (e.g. hash randomisation)
    code = ("from launcher.naming import config_hash; "
            f"print(config_hash({config!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "123"}, check=True).stdout.strip()
    assert out == config_hash(config)


def test_any_change_changes_the_name_and_flags_normalise():
    a = select(set=["lr=0.1"]).runs[0]
    b = select(set=["lr=0.2"]).runs[0]
    assert a.name != b.name
    assert select(set=["nuq_layer="]).runs[0].name == select(set=["nuq_layer=true"]).runs[0].name


@pytest.mark.parametrize("value", ["../../etc", "a b", "it's \"q\"", "$(touch pwned)", "`id`", "/abs/path", "..",
                                   "x;rm -rf ~", "é", "a" * 400])
def test_names_cannot_escape_the_results_root(value, tmp_path):
    run = select(set=[f"data={json.dumps(value)}", f"arch={json.dumps(value)}"], root=str(tmp_path)).runs[0]
    assert run.config["data"] == value
    assert "/" not in run.name and run.name not in (".", "..") and not run.name.startswith("-")
    assert len(run.name.encode()) <= 255
    assert run.dir.parent == tmp_path / "cifar10_resnet32"
    assert all(c.isalnum() or c in "._+-," for c in run.name)


def test_dump_config_round_trips():
    values = ["cifar10", "40000,60000", "yes", "No", "null", "", " x", "a: b", "#c", "$(x)", "it's", 'q"', "l\nb",
              "é", "1e5", "0x1f", "12:30", "2001-12-14", "~", 0, -5, 10 ** 20, 0.1, 1e-4, 1e-5, 1e16, -0.0,
              float("inf"), True, False]
    config = {f"k{i}": v for i, v in enumerate(values)}
    back = yaml.safe_load(dump_config(config))
    assert back == config and list(back) == list(config)
    assert [type(v) for v in back.values()] == [type(v) for v in values]


def _write(run_dir: Path, name: str, obj) -> None:
    runfiles.atomic_write_json(run_dir / name, obj)


def test_run_state_from_files(tmp_path):
    now = time.time()
    d = tmp_path / "r"
    assert run_state(d) == "not submitted"
    _write(d, runfiles.JOB, {"cluster": "local", "job_id": "1"})
    assert run_state(d) == "pending"
    _write(d, runfiles.STATUS, {"state": "running", "heartbeat": now - 5})
    assert run_state(d, now=now) == "running"
    assert run_state(d, now=now + 601) == "stale"  # heartbeat older than 10 minutes
    _write(d, runfiles.STATUS, {"state": "failed", "error": "boom"})
    assert run_state(d) == "failed"
    _write(d, runfiles.STATUS, {"state": "interrupted"})
    assert run_state(d) == "interrupted"
    _write(d, runfiles.RESULTS, {"status": "not yet"})
    assert run_state(d) == "interrupted"
    _write(d, runfiles.RESULTS, {"status": "done"})
    assert run_state(d) == "done"
    (d / runfiles.STATUS).write_text("{half a fi")  # unreadable files never crash the reader
    assert run_state(d) == "done"


def test_prepare_writes_configs_refuses_changed_ones_and_skips_done(tmp_path):
    runs = select(root=str(tmp_path)).runs
    todo, done = prepare_runs(runs)
    assert todo == runs and done == []
    assert all(runfiles.read_config(r.dir / runfiles.CONFIG) == r.config for r in runs)
    again, _ = prepare_runs(runs)  # same config: accepted
    assert again == runs

    _write(runs[0].dir, runfiles.RESULTS, {"status": "done"})
    todo, done = prepare_runs(runs)
    assert done == [runs[0]] and todo == runs[1:]

    path = runs[3].dir / runfiles.CONFIG
    changed = dict(runs[3].config, lr=0.5)
    path.write_text(dump_config(changed))
    before = {r.index: (r.dir / runfiles.CONFIG).read_bytes() for r in runs}
    fresh = select(root=str(tmp_path), set=["seed=3"]).runs  # folders that do not exist yet
    with pytest.raises(UsageError, match=r"refusing run 3 .*lr: 0.5 -> 0.1.*never overwritten"):
        prepare_runs(runs + fresh)
    assert {r.index: (r.dir / runfiles.CONFIG).read_bytes() for r in runs} == before
    assert not any(r.dir.exists() for r in fresh)  # a refused launch writes nothing

    path.write_text("- not a mapping\n")  # unreadable: that run is skipped, the others are not refused
    path_ok = runs[2].dir / runfiles.CONFIG
    assert check_runs(runs) == {3: f"config file {str(path)!r} must hold a mapping of option: value, got list"}
    todo, _ = prepare_runs(runs)
    assert runs[3] not in todo and runs[2] in todo and path.read_text() == "- not a mapping\n"
    todo, _ = prepare_runs(runs, repair=True)  # rewritten from the grid
    assert runs[3] in todo and runfiles.read_config(path) == runs[3].config and runfiles.read_config(path_ok) == runs[2].config


def test_grid_metadata_reaches_the_selection(tmp_path):
    grid = tmp_path / "meta.py"
    grid.write_text("from launcher.registry import GridRun, register\n\n"
                    "@register\ndef r():\n"
                    "    return GridRun({'lr': [0.1, 0.2]}, 'res', exclude=('lr',), slurm={'partition': 'gpu'})\n")
    sel = select(run="r", grid=str(grid), root=str(tmp_path / "root"))
    assert sel.meta.folder == "res" and sel.meta.results_dir == tmp_path / "root" / "res"
    assert sel.meta.exclude == ("lr",) and sel.meta.slurm == {"partition": "gpu"} and sel.meta.total == 2
    assert [r.name[0] for r in sel.runs] == ["h", "h"]  # every key excluded: the name is the hash alone
