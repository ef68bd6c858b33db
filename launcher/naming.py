"""Run identity: a readable, path- and shell-safe folder name plus a short hash of the whole config.

The same validated config always maps to the same name, whatever order its keys came in; any change of
any key (excluded from the readable part or not) changes the hash.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Collection, Iterable

HASH_LEN = 8
MAX_READABLE = 240  # + "," + 8-char hash stays under the usual 255-byte file-name limit
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]")


def config_hash(config: dict[str, Any]) -> str:
    """Short sha1 of the canonical JSON of the config (sorted keys)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:HASH_LEN]


def format_value(value: Any) -> str:
    """The readable form of a value: flags as 'True'/'False', floats in their shortest repr."""
    return repr(value) if isinstance(value, float) else str(value)


def safe_token(text: str) -> str:
    """Only [A-Za-z0-9.+-] survive; anything else (/, spaces, quotes, $, commas...) becomes '_'."""
    return _UNSAFE.sub("_", text)


@functools.lru_cache(maxsize=65536, typed=True)  # typed: True and 1 are different values here
def _token(key: str, value: Any) -> str:
    return safe_token(key) if value is True else f"{safe_token(key)}_{safe_token(format_value(value))}"


def run_name(config: dict[str, Any], exclude: Iterable[str] = (), keys: Collection[str] | None = None) -> str:
    """'key_value,key_value,...,<hash>' from the non-excluded keys in config order (only those in `keys`,
    the keys the grid sweeps, when given: the hash already makes the name unique).

    A flag that is True shows as its key alone. Each token starts with a key (an identifier), and the
    hash ends the name, so no name is '.', '..', starts with '-' or contains '/'.
    """
    skip = set(exclude)
    parts = [_token(key, value) for key, value in config.items()
             if key not in skip and (keys is None or key in keys)]
    readable = ",".join(parts)[:MAX_READABLE].rstrip(",")
    digest = config_hash(config)
    return f"{readable},{digest}" if readable else f"h{digest}"


def grid_title(grid: str, run: str) -> str:
    """'family.run' wherever a grid is named ('nuq.digits'); a grid given as a file path shows its stem, so
    `--grid ./mystudy.py` and `--grid /abs/mystudy.py` are named alike in every command and file."""
    family = Path(grid).stem if grid.endswith(".py") or "/" in grid else grid
    return f"{family}.{run}"


def swept_keys(configs: Iterable[dict[str, Any]]) -> set[str]:
    """Keys that take two or more values among the configs that set them: what run names show. A key
    only some configs set, always to one value (nuq_amq_epochs of AMQ runs), follows from the others."""
    first: dict[str, tuple[type, Any]] = {}
    swept: set[str] = set()
    for config in configs:
        for key, value in config.items():
            if key in swept:
                continue
            seen = first.setdefault(key, (type(value), value))
            if seen != (type(value), value):
                swept.add(key)
    return swept


def name_hash(name: str) -> str | None:
    """The config hash that ends a run folder name ('...,1a2b3c4d' or 'h1a2b3c4d'), else None."""
    tail = name.rsplit(",", 1)[-1] if "," in name else name[1:] if name.startswith("h") else ""
    return tail if len(tail) == HASH_LEN and all(c in "0123456789abcdef" for c in tail) else None
