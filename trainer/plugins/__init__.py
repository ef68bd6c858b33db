"""Trainer plugins: method families (weight quantization, activation compression, sparsity, ...) hosted by
the one training loop through optional hooks (docs/plugins.md).

A shipped plugin `<name>` is two modules here: `<name>_options.py`, torch-free, whose `OPTIONS` dict
(key -> (kind, default, help[, choices]), every key `<name>_...`) joins the option schema of
`trainer/options.py`, so the launcher validates grids without importing torch (and, optionally, whose
`EFFECTS` dict, key -> (applies(full config) -> bool, what to set), says when an option can change a run:
setting it where it cannot is a warning at expansion, sweeping it there an error); and `<name>.py`, the class,
registered with `@register_plugin("<name>")` (`trainer.plugins.base`). This module stays torch-free.
"""
from __future__ import annotations

import importlib
import pkgutil

OPTIONS_SUFFIX = "_options"


def shipped_options() -> dict[str, dict[str, tuple]]:
    """Each shipped plugin's OPTIONS by plugin name, read from its `<name>_options` module."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.endswith(OPTIONS_SUFFIX):
            module = importlib.import_module(f"{__name__}.{info.name}")
            found[info.name.removesuffix(OPTIONS_SUFFIX)] = dict(module.OPTIONS)
    return found


def shipped_effects() -> dict[str, tuple]:
    """Each shipped plugin's EFFECTS (key -> (applies, needs)), merged over the `<name>_options` modules."""
    found: dict[str, tuple] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.endswith(OPTIONS_SUFFIX):
            found.update(getattr(importlib.import_module(f"{__name__}.{info.name}"), "EFFECTS", {}))
    return found
