"""Gradient estimators: a registry (`@register_estimator`), not an if/elif chain.

Importing the package is light (no torch): `estim.names` holds the names the option schema offers.
`estim.get_estimator_class(name)` first imports every module of the package (`load_all`), so every
`@register_estimator` has run; `estim.GradientEstimator`, `estim.register_estimator` come from estim.base.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

_FROM_BASE = ("GradientEstimator", "get_estimator_class", "register_estimator")


def load_all() -> None:
    """Import every module of the package (each registers its estimators)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from estim import base
        return getattr(base, name)
    raise AttributeError(f"module 'estim' has no attribute {name!r}")
