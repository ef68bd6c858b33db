"""Executors by --cluster name: dryrun (= --dry-run), debug (in-process), local (submitit), slurm (plug-in).

An executor receives the prepared runs (config.yaml written, done runs already skipped) and the parsed
args. Another module adds one with `@register_executor("name")` on a subclass of Executor; the modules in
BUILTIN are always imported, those in PLUGINS when present (launcher/slurm/executor.py registers `slurm`
without editing this file).
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, TypeVar

from launcher.errors import UsageError
from launcher.selection import RunSpec, Selection

BUILTIN = ("launcher.executors.dryrun", "launcher.executors.debug", "launcher.executors.local")
PLUGINS = {"slurm": "launcher.slurm.executor"}  # --cluster name -> the module that registers it, if installed


class Executor:
    """Base class: override `launch`; add flags of your own in `add_arguments`."""
    name = ""
    help = ""
    writes_run_folders = True  # False for dryrun: launch then writes no config.yaml before calling it
    selects_runs = False  # True when the executor re-decides from the whole selection (slurm's --mode)
    checks_data = True  # the runs' data folders are checked from this host before launch (not for dryrun)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this executor's flags to the `launch` parser (names must not clash with other executors')."""

    def launch(self, runs: list[RunSpec], selection: Selection, args: argparse.Namespace) -> int:
        """Run or submit `runs`; return the exit code."""
        raise NotImplementedError


EXECUTORS: dict[str, Executor] = {}
E = TypeVar("E", bound=type[Executor])


def register_executor(name: str) -> Callable[[E], E]:
    """Class decorator: make an Executor subclass available as --cluster NAME (a name is taken once)."""
    def deco(cls: E) -> E:
        if name in EXECUTORS and type(EXECUTORS[name]) is not cls:
            raise ValueError(f"executor {name!r} is already registered by {type(EXECUTORS[name]).__qualname__}")
        instance = cls()
        instance.name = name
        EXECUTORS[name] = instance
        return cls
    return deco


def load_executors() -> dict[str, Executor]:
    """The registry with the built-in executors and every plug-in that is installed."""
    for module in BUILTIN:
        importlib.import_module(module)
    for module in PLUGINS.values():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    return EXECUTORS


def get_executor(name: str) -> Executor:
    executors = load_executors()
    if name not in executors:
        if name in PLUGINS:
            raise UsageError(f"--cluster {name} is not available in this installation "
                             f"(module {PLUGINS[name]} is missing); available: {', '.join(sorted(executors))}")
        raise UsageError(f"unknown --cluster {name!r}; available: {', '.join(sorted(executors))}")
    return executors[name]


SUMMARY_KEYS = ("Vacc", "Vloss", "est_nvar")


def summary(results: Any) -> str:
    """A short line from a results dict: the headline metrics only, not every scalar."""
    final = results.get("final", {}) if isinstance(results, dict) else {}
    parts = [f"{key} {final[key]:.4g}" for key in SUMMARY_KEYS if isinstance(final.get(key), (int, float))]
    return ", ".join(parts) or "finished"
