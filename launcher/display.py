"""Plain-text tables for the terminal (runs with their state and varying keys)."""
from __future__ import annotations

import shutil
from typing import Any, Sequence

from launcher.naming import format_value


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return format_value(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])] + [cells[-1]]
        return "  ".join(padded).rstrip()

    return "\n".join([line(list(header))] + [line(r) for r in text_rows])


def terminal_width() -> int:
    """Columns of the terminal (COLUMNS wins; 100 when not a terminal)."""
    return shutil.get_terminal_size((100, 24)).columns


def fit_last_column(header: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> tuple[list[list[Any]], bool]:
    """Rows whose last cell (a run name, ending with its hash) is cut from the left ('…' + tail) so every
    line fits `width` columns; and whether any was cut. The other columns are kept whole."""
    if not rows:
        return [list(r) for r in rows], False
    text = [[cell(v) for v in row[:-1]] for row in rows]
    used = sum(max([len(h)] + [len(r[i]) for r in text]) + 2 for i, h in enumerate(header[:-1]))
    room = max(width - used, 12)
    out, cut = [], False
    for row in rows:
        last = cell(row[-1])
        if len(last) > room:
            last, cut = "…" + last[-(room - 1):], True
        out.append(list(row[:-1]) + [last])
    return out, cut
