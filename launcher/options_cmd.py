"""`launch options`: the config keys a grid may set (the trainer's option schema), as text or Markdown."""
from __future__ import annotations

import argparse

from launcher.display import format_table
from trainer.options import OPTIONS, Option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the docs)")


def _default(opt: Option) -> str:
    if opt.kind == "bool":
        return "flag, off" if opt.default is False else "flag, on"
    return repr(opt.default) if isinstance(opt.default, str) else str(opt.default)


def _help(opt: Option) -> str:
    which = "Any" if opt.kind == "names" else "One"  # a comma list takes several
    rng = opt.range_text()
    return (opt.help + (f" {which} of: {', '.join(opt.choices)}." if opt.choices else "")
            + (f" Range: {rng}." if rng else ""))


def markdown_table() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{o.name}` | {o.kind} | `{_default(o)}` | {_help(o).replace('|', '/')} |" for o in OPTIONS.values()]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
    else:
        print(format_table(["key", "type", "default", "meaning"],
                           [[o.name, o.kind, _default(o), _help(o)] for o in OPTIONS.values()]))
    return 0
