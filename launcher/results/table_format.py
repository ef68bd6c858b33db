"""Render a launcher.results.table.Table as terminal text, Markdown, CSV, LaTeX or JSON (a registry by name).

Display formats (term, md, latex) show `mean ± std` cells, mark the best values and carry the caption;
data formats (csv, json) carry plain numbers (json also the caption and the not-counted runs).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from launcher.results.table import MISSING, Table, key_text


@dataclass(frozen=True)
class Format:
    render: Callable[[Table, int], str]
    holds_caption: bool   # False: the caller prints the caption elsewhere (stderr)
    suffixes: tuple[str, ...]


STD_NOISE = 1e-9  # a std below this fraction of its mean is float rounding of equal values: no ±


def _number(value: float, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _left_value(value: Any, key: str = "") -> str:
    return key_text(key, value)


def _cell(table: Table, i: int, j: int, digits: int, pm: str) -> str:
    col = table.columns[j]
    mean = col.mean[i]
    if col.n is None:
        return _number(mean, digits)
    n = int(col.n[i])
    if n == 0 or not math.isfinite(mean):
        return MISSING
    text = _number(mean, digits)
    if n >= 2 and abs(col.std[i]) > STD_NOISE * abs(mean):  # a zero spread (rounding noise) is left out
        text += f" {pm} {_number(col.std[i], 2)}"
    if n < _full_n(table, i):
        text += f" (n={n})"
    return text


def _full_n(table: Table, i: int) -> int:
    """The n a cell is compared with: its row's counted runs, or the table's largest n when pivoted."""
    if table.pivot is None:
        return int(table.left["n"].iloc[i])
    return max(int(c.n.max()) for c in table.columns if c.n is not None and len(c.n))


def _left(table: Table) -> tuple[list[str], list[list[str]]]:
    """Left-hand headers and cells; a grouped table shows n as 'counted/runs' when some did not count."""
    frame = table.left
    headers = [c for c in frame.columns if c != "runs" and c not in table.hidden]
    rows = []
    for i in range(len(frame)):
        row = []
        for name in headers:
            value = frame[name].iloc[i]
            if name == "n" and "runs" in frame and int(frame["runs"].iloc[i]) != int(value):
                row.append(f"{int(value)}/{int(frame['runs'].iloc[i])}")
            else:
                row.append(_left_value(value, name))
        rows.append(row)
    return headers, rows


def cells(table: Table, digits: int, pm: str, marker: Callable[[str], str],
          unmarked: Callable[[str], str] = lambda s: s) -> tuple[list[str], list[list[str]], int]:
    """Header, body rows and the number of left (key) columns, all as strings."""
    headers, rows = _left(table)
    nleft = len(headers)
    headers = headers + [c.label for c in table.columns]
    for i, row in enumerate(rows):
        for j in range(len(table.columns)):
            text = _cell(table, i, j, digits, pm)
            row.append(marker(text) if (i, j) in table.best else unmarked(text))
    return headers, rows, nleft


def render_term(table: Table, digits: int) -> str:
    headers, rows, nleft = cells(table, digits, "±", lambda s: s + " *",
                                 lambda s: s + "  " if table.best else s)
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(headers)]

    def line(items: list[str]) -> str:
        return "  ".join(s.ljust(w) if k < nleft else s.rjust(w)
                         for k, (s, w) in enumerate(zip(items, widths))).rstrip()

    body = [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    caption = table.caption_lines()
    if table.best:
        caption[-1] += " with *"
    return "\n".join(caption + [""] + body) + "\n"


def render_md(table: Table, digits: int) -> str:
    headers, rows, nleft = cells(table, digits, "±", lambda s: f"**{s}**" if s != MISSING else s)

    def line(items: list[str]) -> str:
        return "| " + " | ".join(s.replace("|", "\\|") for s in items) + " |"

    align = ["---" if k < nleft else "---:" for k in range(len(headers))]
    caption = table.caption_lines()
    if table.best:
        caption[-1] += " in bold"
    return "\n".join([line(headers), line(align)] + [line(r) for r in rows]
                     + [""] + [f"*{c}*" if c else c for c in caption]) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(table: Table, digits: int) -> str:
    """A booktabs table (\\usepackage{booktabs}) with the caption; best values in bold."""
    headers, rows, nleft = cells(table, digits, "±", lambda s: "\1" + s + "\2")  # \1 \2: bold markers

    def tex(s: str) -> str:
        s = latex_escape(s).replace(MISSING, "--")
        return s.replace("\1", r"\textbf{").replace("\2", "}")

    spec = "l" * nleft + "r" * (len(headers) - nleft)
    caption = ". ".join(table.caption_lines())
    if table.best:
        caption += " in bold"
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex(h) for h in headers) + r" \\",
             r"\midrule"]
    lines += [" & ".join(tex(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table, digits: int) -> str:
    return table.frame().to_csv(index=False)


def _plain(value: Any) -> Any:
    """JSON-safe scalar: NaN/NA -> null, numpy numbers -> Python numbers."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def render_json(table: Table, digits: int) -> str:
    frame = table.frame()
    rows = [{k: _plain(v) for k, v in rec.items()} for rec in frame.to_dict("records")]
    doc = {"at": str(table.at), "title": table.title, "caption": table.caption_lines(),
           "counts": table.counts, "grouped": table.grouped, "pivot": table.pivot,
           "not_counted": [{"run": run, "reason": why} for run, why in table.not_counted],
           "columns": [str(c) for c in frame.columns], "rows": rows,
           "best": [{"row": i, "column": table.columns[j].label} for i, j in sorted(table.best)]}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


FORMATS: dict[str, Format] = {
    "term": Format(render_term, True, (".txt",)),
    "md": Format(render_md, True, (".md",)),
    "csv": Format(render_csv, False, (".csv",)),
    "latex": Format(render_latex, True, (".tex",)),
    "json": Format(render_json, True, (".json",)),
}


def format_for_path(path: str) -> str:
    """The format a file name asks for by its suffix ('term' when none matches)."""
    for name, fmt in FORMATS.items():
        if any(path.endswith(suffix) for suffix in fmt.suffixes):
            return name
    return "term"


def render(table: Table, fmt: str, digits: int = 4) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[fmt].render(table, digits)
