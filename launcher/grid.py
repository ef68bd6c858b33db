"""Grid algebra: turn a grid definition into the ordered list of configs it stands for.

A grid is one of
- a dict (or the paper's OrderedDict): the product of its entries, in key order. A list value is swept,
  any other value is fixed; `None` leaves the key out;
- a list of grids: their union, in order;
- `Zip(a=[...], b=[...])`: the values paired up position by position instead of crossed;
- `Product(g1, g2, ...)`: every config of g1 merged with every config of g2, ...
A value may carry a conditional sub-grid that applies only with that value: `Cond(value, grid)`, or the
paper's tuple `(value, OrderedDict(...))`. Expansion is deterministic: earlier keys vary slowest, and a
sub-grid's keys follow the key that brought them.
No torch here: the launcher expands 10,000-config grids in well under a second.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Config = dict[str, Any]


class GridError(ValueError):
    """A grid definition that cannot be expanded; the message says which key and why."""


@dataclass(frozen=True)
class Cond:
    """A value that brings a sub-grid: e.g. Cond('amq', {'nuq_amq_lr': 0.7, 'nuq_amq_epochs': 40})."""
    value: Any
    grid: Any


class Zip:
    """Paired values: Zip(lr=[0.1, 0.05], batch_size=[128, 64]) is 2 configs, not 4."""

    def __init__(self, columns: Mapping[str, list] | None = None, **kwargs: list) -> None:
        self.columns: dict[str, list] = dict(columns or {}, **kwargs)
        lengths = {key: len(col) if isinstance(col, list) else None for key, col in self.columns.items()}
        bad = [key for key, n in lengths.items() if n is None]
        if bad:
            raise GridError(f"Zip column {bad[0]!r} must be a list, got {self.columns[bad[0]]!r}")
        if len(set(lengths.values())) > 1:
            raise GridError(f"Zip columns must have equal lengths, got {lengths}")

    def __repr__(self) -> str:
        return f"Zip({self.columns!r})"


class Product:
    """The cross product of several grids (their keys must not overlap)."""

    def __init__(self, *grids: Any) -> None:
        self.grids = grids

    def __repr__(self) -> str:
        return f"Product{self.grids!r}"


def expand(grid: Any) -> list[Config]:
    """Every config of `grid`, in definition order."""
    if isinstance(grid, Mapping):
        return _expand_mapping(grid)
    if isinstance(grid, list):
        return [cfg for part in grid for cfg in expand(part)]
    if isinstance(grid, Zip):
        return _expand_zip(grid)
    if isinstance(grid, Product):
        return _expand_product(grid)
    raise GridError(f"not a grid: {grid!r} (expected a dict, a list of grids, Zip or Product)")


def _is_subgrid(obj: Any) -> bool:
    return isinstance(obj, (Mapping, list, Zip, Product))


def _choice(key: str, value: Any) -> tuple[Any, list[Config]]:
    """One value of `key` and the configs its sub-grid adds ([{}] when it has none)."""
    if isinstance(value, Cond):
        return value.value, expand(value.grid)
    if isinstance(value, tuple) and len(value) == 2 and _is_subgrid(value[1]):
        return value[0], expand(value[1])  # the paper's (value, OrderedDict(...))
    if isinstance(value, (Mapping, tuple, set, Zip, Product)):
        raise GridError(f"key {key!r}: value {value!r} is not a scalar; "
                        "use a list to sweep or Cond(value, grid) for a conditional sub-grid")
    return value, [{}]


def _choices(key: str, value: Any) -> list[tuple[Any, list[Config]]]:
    if isinstance(value, list):
        if not value:
            raise GridError(f"key {key!r} sweeps an empty list (it would remove every config)")
        return [_choice(key, v) for v in value]
    return [_choice(key, value)]


def _merge(base: Config, extra: Config, why: str) -> Config:
    clash = base.keys() & extra.keys()
    if clash:
        raise GridError(f"key {sorted(clash)[0]!r} is set twice ({why})")
    merged = dict(base)
    merged.update(extra)
    return merged


def _product_step(partial: list[Config], key: str, choices: list[tuple[Any, list[Config]]]) -> list[Config]:
    """Cross the configs built so far with the choices of one more key."""
    if len(choices) == 1 and choices[0][0] is None and choices[0][1] == [{}]:
        return partial  # None leaves the key out
    out: list[Config] = []
    for cfg in partial:
        if key in cfg:
            raise GridError(f"key {key!r} is set twice")
        for value, subs in choices:
            for sub in subs:
                new = dict(cfg)
                if value is not None:
                    new[key] = value
                out.append(_merge(new, sub, f"by the sub-grid of {key}={value!r}") if sub else new)
    return out


def _expand_mapping(grid: Mapping) -> list[Config]:
    partial: list[Config] = [{}]
    for key, value in grid.items():
        if not isinstance(key, str):
            raise GridError(f"config keys must be strings, got {key!r}")
        partial = _product_step(partial, key, _choices(key, value))
    return partial


def _expand_zip(grid: Zip) -> list[Config]:
    rows = zip(*grid.columns.values()) if grid.columns else []
    out: list[Config] = []
    for row in rows:
        partial: list[Config] = [{}]
        for key, value in zip(grid.columns, row):
            partial = _product_step(partial, key, [_choice(key, value)])
        out.extend(partial)
    return out


def _expand_product(grid: Product) -> list[Config]:
    partial: list[Config] = [{}]
    for part in grid.grids:
        configs = expand(part)
        partial = [_merge(a, b, "by two factors of a Product") for a in partial for b in configs]
    return partial
