"""When adaptive levels are re-fitted (`g_osnap_iter`), and the comma-list-of-ints values it is written in.

Import-light (no torch): trainer/options.py parses its int-list options with `parse_int_list` from here.
"""
from __future__ import annotations


def parse_int_list(value: str | int) -> list[int]:
    """'100,2000,10000' -> [100, 2000, 10000]; 30 -> [30]; ValueError on a part that is not an int."""
    if isinstance(value, int):
        return [value]
    return [int(part) for part in value.split(",") if part.strip()]


class RefitSchedule:
    """`g_osnap_iter` '100,2000,10000': re-fit at 100 and 2000, then every 10000 (0, 10000, 20000, ...),
    counted from `gvar_start` as the paper does, and never before `g_optim_start`."""

    def __init__(self, spec: str | int, gvar_start: int = 0, optim_start: int = 0) -> None:
        try:
            items = parse_int_list(spec)
        except (ValueError, AttributeError):
            items = []
        if not items or any(i <= 0 for i in items):
            raise ValueError(f"g_osnap_iter must be positive ints like '100,2000,10000', got {spec!r}")
        self.listed, self.every = set(items[:-1]), items[-1]
        self.gvar_start, self.optim_start = gvar_start, optim_start

    def due(self, step: int) -> bool:
        rel = step - self.gvar_start
        if rel < 0 or step < self.optim_start:
            return False
        return rel in self.listed or rel % self.every == 0
