"""Fixtures shared by several test modules."""
import pytest

from launcher import cli


@pytest.fixture
def launch(tmp_path, monkeypatch, capsys):
    """Run `launch ARGS` in-process from tmp_path; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run
