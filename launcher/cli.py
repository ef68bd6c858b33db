"""The `launch` console script: `launch --grid G --run R ...` launches; `launch <subcommand> ...` does the rest.

Subcommands are modules with `add_arguments(parser)` and `main(args) -> int`, looked up by name in
SUBCOMMANDS and imported only when used (so `launch --dry-run` never pays for pandas or torch).
Bad input (UsageError, ConfigError, argparse errors) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import NoReturn, Sequence

from launcher.errors import UsageError
from trainer.runfiles import EXIT_USAGE

PROG = "launch"
LAUNCH_MODULE = "launcher.launch"
SUBCOMMANDS: dict[str, str] = {
    "list": "launcher.listing",
    "show": "launcher.show",
    "options": "launcher.options_cmd",
    "status": "launcher.status",
    "cancel": "launcher.cancel",
    "aggregate": "launcher.results.aggregate",
    "plot": "launcher.results.plot",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line naming the problem (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _load(name: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise UsageError(f"`{PROG} {name}` is not available in this installation "
                         f"(module {module} is missing)") from None


def _epilog() -> str:
    return ("subcommands: " + ", ".join(SUBCOMMANDS)
            + f" (`{PROG} <subcommand> --help`); with none, {PROG} launches the selected runs")


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, ModuleType]:
    """The parser and module of the subcommand named by argv[0], else of the launch command."""
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        module = _load(name, SUBCOMMANDS[name])
        parser = Parser(prog=f"{PROG} {name}", description=(module.__doc__ or "").strip().splitlines()[0])
    else:
        module = _load("", LAUNCH_MODULE)
        parser = Parser(prog=PROG, description=(module.__doc__ or "").strip().splitlines()[0], epilog=_epilog())
    module.add_arguments(parser)
    return parser, module


def run(argv: Sequence[str]) -> int:
    """Parse argv and run the command; raises UsageError on bad input."""
    from trainer.options import ConfigError

    try:
        parser, module = build_parser(argv)
        args = parser.parse_args(list(argv[1:] if argv and argv[0] in SUBCOMMANDS else argv))
        return int(module.main(args) or 0)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `launch` and `python -m launcher`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(argv)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `launch show ... | head`
        return 0
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
