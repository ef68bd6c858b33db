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
from types import ModuleType

OPTIONS_SUFFIX = "_options"


def _options_modules() -> dict[str, ModuleType]:
    """Each shipped plugin's torch-free `<name>_options` module by plugin name."""
    return {info.name.removesuffix(OPTIONS_SUFFIX): importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
            if info.name.endswith(OPTIONS_SUFFIX)}


def shipped_options() -> dict[str, dict[str, tuple]]:
    """Each shipped plugin's OPTIONS by plugin name."""
    return {name: dict(module.OPTIONS) for name, module in _options_modules().items()}


def shipped_effects() -> dict[str, tuple]:
    """Each shipped plugin's EFFECTS (key -> (applies, needs)), merged over the plugins."""
    return {key: rule for module in _options_modules().values() for key, rule in getattr(module, "EFFECTS", {}).items()}
