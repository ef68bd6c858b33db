"""docs/plugins.md shows the shipped example plugin's files as they are (each `# file: PATH` block)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_code_blocks_are_the_files_they_name():
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.S)
    assert [path for path, _ in blocks] == ["trainer/plugins/l1clip_options.py", "trainer/plugins/l1clip.py"]
    for path, text in blocks:
        assert text == (ROOT / path).read_text(), f"docs/plugins.md shows an old {path}: paste the file in"
