"""Gradient estimators and the statistics/distributions behind adaptive levels.

Importing the package imports each of its modules so every `@register_estimator` runs (a registry,
not an if/elif chain); modules that need torch are only imported when someone imports `estim`.
"""
import importlib
import pkgutil

from estim.base import GradientEstimator, get_estimator_class, register_estimator  # noqa: F401

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
