"""Which runs a command acts on: --grid --run --only --set --limit --root, shared by every subcommand.

Pipeline: expand the grid -> apply --set -> validate every config against trainer.options -> name it
-> keep those matching every --only -> first --limit. A RunSpec's index is its position in the full
expansion, so it stays the same whatever --only/--limit select.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import UsageError
from launcher.grid import GridError, expand
from launcher.naming import grid_title, name_hash, run_name, safe_token, swept_keys
from launcher.registry import get_run
from launcher.stages import INIT_RUN, STAGE, has_stages, resolve
from trainer.names import MODEL_PATTERNS, MODELS, unknown_arch
from trainer.options import (ConfigError, closest_keys, frozen_adaptive_method, ineffective_keys, OPTIONS,
                             validate_config, validate_value)

DEFAULT_ROOT = "./runs"


@dataclass(frozen=True)
class RunSpec:
    """One run: its index in the full grid, folder name, folder and validated config."""
    index: int
    name: str
    dir: Path
    config: dict[str, Any]


@dataclass(frozen=True)
class GridMeta:
    """The grid a selection came from."""
    grid: str
    run: str
    folder: str              # results folder name under --root
    results_dir: Path        # <root>/<folder>
    exclude: tuple[str, ...]  # keys left out of run names
    total: int               # configs in the full expansion (before --only/--limit)
    slurm: dict[str, Any] | None = None  # the grid's SLURM resource defaults (GridRun.slurm)


@dataclass
class Selection:
    meta: GridMeta
    runs: list[RunSpec]
    varying_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown by launch (dry-run included); never fatal
    grid_configs: list[dict[str, Any]] = field(default_factory=list)  # every config, before --only/--limit


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def add_selection_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The flags every subcommand uses to pick runs."""
    group = parser.add_argument_group("run selection")
    group.add_argument("--grid", required=required, help="grid family (a module of grids/) or a path to a grid .py file")
    group.add_argument("--run", required=required, help="run of the family (a registered function)")
    group.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                       help="keep configs whose KEY equals VALUE (repeatable; same key: any of, different keys: all of)")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
                       help="override KEY in every config (repeatable; part of run identity; 'KEY=' sets a flag)")
    group.add_argument("--stage", default=None, metavar="S1,S2",
                       help="keep the runs of these stages of a multi-stage grid (comma list)")
    group.add_argument("--limit", type=positive_int, default=None, metavar="N", help="keep the first N selected runs")
    group.add_argument("--root", default=DEFAULT_ROOT, metavar="DIR", help=f"results root (default {DEFAULT_ROOT})")


def parse_scalar(text: str, flag: str) -> Any:
    """A --set/--only value read as a YAML scalar: '200' -> 200, '0.1' -> 0.1, '' -> '' (a flag), 'amq' -> 'amq'."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(f"{flag}: cannot read value {text!r} (quote strings with special characters)") from None
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        raise UsageError(f"{flag}: value {text!r} must be a single value, not a {type(value).__name__}")
    return value


def parse_assignment(text: str, flag: str) -> tuple[str, Any]:
    """'key=value' -> (key, scalar); the key must be a trainer option."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{flag} {text!r}: expected KEY=VALUE, e.g. {flag} niters=200")
    if key not in OPTIONS:
        near = closest_keys(key)
        hint = f"did you mean {', '.join(near)}?" if near else "see `launch options` for the valid keys"
        raise UsageError(f"{flag} {text!r}: unknown config key {key!r}; {hint}")
    value = parse_scalar(raw, f"{flag} {key}")
    try:
        value = validate_value(key, value, run=flag)
    except ConfigError as err:
        raise UsageError(f"{flag} {text!r}: {str(err).removeprefix(f'run {flag}: ')}") from None
    return key, value


def _matches(config: dict[str, Any], only: dict[str, list[Any]]) -> bool:
    return all(key in config and config[key] in values for key, values in only.items())


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Keys whose value (or presence) differs between configs, in first-seen order."""
    keys: dict[str, None] = {}
    for cfg in configs:
        keys.update(dict.fromkeys(cfg))
    missing = object()
    return [k for k in keys if len({repr(cfg.get(k, missing)) for cfg in configs}) > 1]


def _results_folder(folder: str, where: str) -> str:
    if not folder or safe_token(folder) != folder or folder in (".", ".."):
        raise UsageError(f"grid {where}: results folder {folder!r} must be one plain folder name "
                         "(letters, digits, '.', '+', '-')")
    return folder


def select_runs(args: argparse.Namespace) -> Selection:
    """Expand, override, validate, name and filter the runs named by the selection flags in `args`."""
    where = f"{args.grid}.{args.run}"
    spec = get_run(args.grid, args.run)
    try:
        configs = expand(spec.grid)
    except GridError as err:
        raise UsageError(f"grid {where}: {err}") from None
    overrides = dict(parse_assignment(text, "--set") for text in getattr(args, "set", []) or [])
    only: dict[str, list[Any]] = {}
    for text in getattr(args, "only", []) or []:
        key, value = parse_assignment(text, "--only")
        only.setdefault(key, []).append(value)
    limit = getattr(args, "limit", None)

    folder = _results_folder(spec.folder, where)
    root = Path(getattr(args, "root", DEFAULT_ROOT) or DEFAULT_ROOT)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--root {root}: {root.absolute()} is a file, not a folder of results")
    results_dir = root / folder
    exclude = tuple(spec.exclude) + (INIT_RUN,)  # the upstream shows in the hash, not the readable name
    no_effect: dict[str, dict[str, Any]] = {}  # key -> {what to set, values seen where it does nothing}
    frozen: dict[str, int] = {}  # adaptive method -> runs that never adapt it (no g_optim)
    no_model: dict[str, int] = {}  # arch naming no registered model -> runs
    validated: list[dict[str, Any]] = []
    for index, raw in enumerate(configs):
        raw.update(overrides)
        label = f"{where}[{index}]"
        try:
            config = validate_config(raw, run=label)
        except ConfigError as err:
            raise UsageError(str(err)) from None
        for key, needs in ineffective_keys(config).items():
            no_effect.setdefault(key, {"needs": needs, "values": []})["values"].append(config[key])
        if (method := frozen_adaptive_method(config)) is not None:
            frozen[method] = frozen.get(method, 0) + 1
        if unknown_arch(arch := config.get("arch", OPTIONS["arch"].default)):
            no_model[arch] = no_model.get(arch, 0) + 1
        validated.append(config)
    names = swept_keys(validated)  # from the whole grid, so --only/--limit never rename a run
    existing = _folders_by_hash(results_dir)

    def folder_name(config: dict[str, Any]) -> str:
        """The run's folder name; a folder named before the grid changed (or by an older naming rule)
        that ends with the same config hash is that folder."""
        name = run_name(config, exclude, names)
        return existing.get(name_hash(name), name) if existing else name

    if has_stages(validated):  # upstream names first: they are part of the downstream identity
        resolve(validated, folder_name, where)
    stages = _stage_filter(getattr(args, "stage", None), validated, where)
    runs: list[RunSpec] = []
    first_index: dict[str, int] = {}
    for index, config in enumerate(validated):
        if only and not _matches(config, only) or stages and config.get(STAGE) not in stages:
            continue
        name = folder_name(config)
        if first_index.setdefault(name, index) != index:
            raise UsageError(f"grid {where}: configs {first_index[name]} and {index} are identical "
                             f"({name}); remove the duplicate")
        runs.append(RunSpec(index, name, results_dir / name, config))
    if limit is not None:
        runs = runs[:limit]  # after validating every config: a bad one is an error even beyond the limit
    if not runs:
        raise UsageError(_nothing_selected(where, configs, only))
    meta = GridMeta(args.grid, args.run, folder, results_dir, tuple(spec.exclude), len(configs), spec.slurm)
    varying = [k for k in varying_keys([r.config for r in runs]) if k != INIT_RUN]  # one per upstream: no column
    title = grid_title(args.grid, args.run)
    warnings = _no_effect_warnings(title, no_effect)
    if frozen:
        warnings.append(f"nuq_method {', '.join(frozen)} in {sum(frozen.values())} runs of {title} adapt their "
                        "levels only with g_optim, which they do not set: their levels stay the initial ones; "
                        "set g_optim: '' in the grid (or --set g_optim=) to adapt them")
    if no_model:
        runs_n = sum(no_model.values())
        warnings.append(f"arch {', '.join(no_model)} in {runs_n} runs of {title}: {unknown_arch_text()}")
    return Selection(meta, runs, varying, warnings, validated)


def unknown_arch_text() -> str:
    return (f"not a registered model ({', '.join(MODELS)}, {', '.join(s for s, _ in MODEL_PATTERNS)}); "
            "launching them is refused, --set arch=NAME picks another")


def _folders_by_hash(results_dir: Path) -> dict[str, str]:
    """{config hash: folder name} of the run folders already in results_dir (one listdir)."""
    try:
        entries = os.listdir(results_dir)
    except OSError:
        return {}
    return {h: name for name in sorted(entries) if (h := name_hash(name))}


def _no_effect_warnings(where: str, no_effect: dict[str, dict[str, Any]]) -> list[str]:
    """A sweep of a key that cannot change its runs is an error (the runs would be duplicates in all but
    name); a fixed value that does nothing is a warning naming the key to set."""
    warnings = []
    for key, info in no_effect.items():
        values = sorted({repr(v) for v in info["values"]})
        n = len(info["values"])
        if len(values) > 1:
            raise UsageError(f"grid {where}: {key} is swept ({', '.join(values)}) in {n} runs where it has "
                             f"no effect; set {info['needs']} for it to matter, or stop sweeping it")
        warnings.append(f"{key}={values[0]} has no effect in {n} runs of {where}; it needs {info['needs']}")
    return warnings


def _stage_filter(text: str | None, configs: list[dict[str, Any]], where: str) -> set[str]:
    """--stage A,B -> {A, B} (empty: every stage); an unknown stage lists the grid's stages."""
    if not text:
        return set()
    known = list(dict.fromkeys(c[STAGE] for c in configs if c.get(STAGE)))
    wanted = {s.strip() for s in text.split(",") if s.strip()}
    bad = sorted(wanted - set(known))
    if bad:
        raise UsageError(f"--stage {bad[0]!r}: grid {where} has the stages {', '.join(known) or '(none)'}")
    return wanted


def _nothing_selected(where: str, configs: list[dict[str, Any]], only: dict[str, list[Any]]) -> str:
    if not configs:
        return f"grid {where} expands to no configs"
    parts = []
    for key in only:
        seen = sorted({repr(c[key]) for c in configs if key in c})
        parts.append(f"{key} takes {', '.join(seen) if seen else 'no value (never set)'}")
    return f"--only selects none of the {len(configs)} runs of {where}: " + "; ".join(parts)
