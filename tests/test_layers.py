"""The layers import downward only: grids -> launcher -> trainer -> (trainer.plugins, estim) -> nuq.

`lint-imports` (import-linter) checks the contracts in .importlinter on the real tree; the same check on a
copy of the tree with one upward import planted must fail, so the test shows the contract bites.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("grids", "launcher", "trainer", "estim", "nuq")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` run in `root` (its .importlinter), importing the packages found there."""
    exe = shutil.which("lint-imports")
    cmd = [exe] if exe else [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([*cmd, "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The five packages (sources only) and the contract file, copied."""
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def plant(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"\n{line}  # planted by tests/test_layers.py\n")


def test_the_tree_keeps_its_layers():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_the_copy_keeps_them_too(tree_copy):
    proc = lint_imports(tree_copy)  # the copy alone is fine: what breaks below is the planted line
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("module,line,shown", [
    ("nuq/levels.py", "from trainer.options import OPTIONS", "nuq.levels -> trainer.options"),
    ("estim/base.py", "import launcher.state", "estim.base -> launcher.state"),
    ("trainer/runfiles.py", "import launcher.errors", "trainer.runfiles -> launcher.errors"),
])
def test_a_planted_upward_import_breaks_the_layers(tree_copy, module, line, shown):
    plant(tree_copy / module, line)
    proc = lint_imports(tree_copy)
    assert proc.returncode != 0
    assert "grids -> launcher -> trainer -> (trainer.plugins, estim) -> nuq BROKEN" in proc.stdout
    assert shown in proc.stdout


def test_a_plugin_importing_the_loop_breaks_the_trainer_contract(tree_copy):
    # trainer.plugins is an optional layer: absent, the contract holds; present, it is checked
    plant(tree_copy / "trainer/plugins/__init__.py", "import trainer.runfiles")
    assert lint_imports(tree_copy).returncode == 0  # a plugin may use the trainer's shared modules
    plant(tree_copy / "trainer/plugins/__init__.py", "from trainer import loop")
    proc = lint_imports(tree_copy)
    assert proc.returncode != 0 and "trainer.plugins -> trainer.loop" in proc.stdout
