"""Plain-text tables for the terminal (runs with their state and varying keys)."""
from __future__ import annotations

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
