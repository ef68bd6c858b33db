"""Plugin options in the one schema: `plugins`, prefixed keys, validation at expansion, `launch options`,
the README's key table, paper-format grids, and the example grid through `launch --cluster local`."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.errors import UsageError
from launcher.selection import select_runs
from trainer import runfiles
from trainer.options import OPTIONS, ConfigError, closest_keys, validate_config

ROOT = Path(__file__).resolve().parent.parent


def test_plugins_is_a_validated_comma_list_of_declared_plugins():
    assert "l1clip" in OPTIONS["plugins"].choices
    assert validate_config({"plugins": " l1clip "}) == {"plugins": "l1clip"}
    assert validate_config({"plugins": ""}) == {"plugins": ""}
    with pytest.raises(ConfigError, match=r"run r: bad value for 'plugins': unknown 'l1clp'; one of: .*l1clip"):
        validate_config({"plugins": "l1clp"}, run="r")
    with pytest.raises(ConfigError, match="names a plugin twice"):
        validate_config({"plugins": "l1clip,l1clip"})


def test_a_plugin_option_needs_its_plugin_enabled():
    assert validate_config({"plugins": "l1clip", "l1clip_l1": 1e-3}) == {"plugins": "l1clip", "l1clip_l1": 1e-3}
    with pytest.raises(ConfigError, match=r"run g\[3\]: 'l1clip_clip' is an option of plugin 'l1clip', which is "
                                          r"not enabled; add l1clip to plugins \(plugins='l1clip'\)"):
        validate_config({"l1clip_clip": 0.1}, run="g[3]")
    with pytest.raises(ConfigError, match="bad value for 'l1clip_l1': expected a number"):
        validate_config({"plugins": "l1clip", "l1clip_l1": "big"})
    assert "l1clip_l1" in closest_keys("l1clip_l")


def _select(tmp_path, grid, *set_):
    """The runs of a paper-format grid file holding `grid` (source text), with --set KEY=VALUE assignments."""
    path = tmp_path / "pgrid.py"
    path.write_text("from collections import OrderedDict\nfrom launcher.registry import GridRun, register\n\n"
                    f"@register\ndef g():\n    return GridRun({grid}, 'g')\n")
    return select_runs(argparse.Namespace(grid=str(path), run="g", only=[], set=list(set_), limit=None, root="runs"))


def test_paper_format_grid_with_a_plugin_expands_and_plugin_options_are_checked_before_anything_runs(tmp_path):
    grid = ("[OrderedDict([('niters', 5), ('plugins', ['l1clip']), ('l1clip_l1', [1e-4, 1e-3]), "
            "('l1clip_skip_ends', '')])]")
    sel = _select(tmp_path, grid)
    assert [r.config["l1clip_l1"] for r in sel.runs] == [1e-4, 1e-3]
    assert all(r.config["l1clip_skip_ends"] is True for r in sel.runs)
    assert _select(tmp_path, grid, "l1clip_clip=0.2").runs[0].config["l1clip_clip"] == 0.2  # --set a plugin key
    with pytest.raises(UsageError, match=r"pgrid.py.g\[0\]: 'l1clip_l1' is an option of plugin 'l1clip'"):
        _select(tmp_path, "[OrderedDict([('niters', 5), ('l1clip_l1', 1e-4)])]")
    with pytest.raises(UsageError, match="is not enabled; add l1clip to plugins"):
        _select(tmp_path, grid, "plugins=")


def test_launch_options_lists_plugin_options_and_the_readme_table_is_its_output():
    out = subprocess.run([sys.executable, "-m", "launcher", "options", "--markdown"], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout
    assert "| `plugins` | names | `''` |" in out and re.search(r"Any of: [a-z0-9_, ]*\bl1clip\b", out)
    assert "| `l1clip_l1` | float | `0.0001` | Plugin l1clip: " in out
    readme = (ROOT / "README.md").read_text()
    assert out.strip() in readme, "README's key table is stale: paste `launch options --markdown` into it"


def test_example_grid_runs_through_launch_local(launch, tmp_path):
    argv = ["--grid", "examples", "--run", "l1clip", "--set", "niters=20", "--set", "chkpt_iter=10",
            "--set", "tblog_interval=10", "--root", str(tmp_path)]
    code, out, err = launch(*argv, "--cluster", "local", "--max-parallel", "2")
    assert code == 0, out + err
    assert "local: 3 finished, 0 failed" in out
    runs = sorted((tmp_path / "examples_l1clip").glob("*/" + runfiles.RESULTS))
    finals = {p.parent.name: runfiles.read_json(p)["final"] for p in runs}
    assert len(finals) == 3
    # run names show only the swept keys (l1clip_l1); whether a run has the plugin is in its config
    plugins = {p.parent.name: runfiles.read_config(p.parent / runfiles.CONFIG).get("plugins") for p in runs}
    with_plugin = [f for name, f in finals.items() if plugins[name] == "l1clip"]
    assert len(with_plugin) == 2 and all(0 < f["l1clip/clipped_frac"] < 1 for f in with_plugin)
    # the stronger L1 ends with the smaller penalised norm
    weak, strong = sorted(with_plugin, key=lambda f: -f["l1clip/weight_l1"])
    assert strong["l1clip/weight_l1"] < weak["l1clip/weight_l1"]
    baseline = [f for name, f in finals.items() if plugins[name] is None]
    assert len(baseline) == 1 and not any(k.startswith("l1clip/") for k in baseline[0])
