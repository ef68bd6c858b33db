"""The library example in docs/adaptive.md runs as written."""
import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "adaptive.md"


def test_docs_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)
    res = ns["res"]
    assert res.levels.numel() == 8 and res.levels[0].item() == -1.0 and res.levels[-1].item() == 1.0
    torch.testing.assert_close(res.levels, -res.levels.flip(0), atol=0, rtol=0)  # nuq_sym=True
    assert len(capsys.readouterr().out.splitlines()) == 3
