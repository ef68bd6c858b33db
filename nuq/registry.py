"""The rule every registry of names keeps: a name is registered once, and (where the option schema offers the
names) only a name of its torch-free table. Torch-free, and in the lowest layer so every layer's registries
(nuq methods and fits, estimators, datasets, models, optimizers) can use it.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


class Registry(dict):
    """A dict of name -> registered thing whose `add` refuses a duplicate name or one missing from `table`."""

    def __init__(self, kind: str, table: Sequence[str] | None = None, home: str = "") -> None:
        super().__init__()
        self.kind, self.table, self.home = kind, table, home

    def add(self, name: str, value: Any) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.table is not None and name not in self.table:
            raise ValueError(f"{self.kind} {name!r} is not in {self.home}; add it there so configs can select it")
        self[name] = value

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds what it decorates under `name` and returns it unchanged."""
        def wrap(value: T) -> T:
            self.add(name, value)
            return value
        return wrap
