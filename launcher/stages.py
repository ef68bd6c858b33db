"""Multi-stage grids: a run of stage B with `init_from: A` starts from the final weights of one run of stage A.

Stages are config keys (`stage`, `init_from`), so they work in every grid form, the paper's OrderedDicts
included. At expansion each downstream config gets `init_run: <upstream run name>` (the name ends with the
upstream's config hash), so its own name and hash change whenever its upstream changes. The upstream is the
one run of stage A that agrees with the downstream config on every key both set that varies within stage A
(arch, seed, ...); keys fixed for the whole of stage A (its lr, niters) may differ downstream. No match or
several matches is an error naming the run and the candidates. A stage must be listed before the runs that
start from it, so grid order is an order in which every upstream comes first. No torch here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from launcher.errors import UsageError
from trainer import runfiles

STAGE, INIT_FROM, INIT_RUN = "stage", "init_from", "init_run"
WAITING, BLOCKED = "waiting", "blocked"  # `launch status` states of runs that have not started (launcher/status.py)
# keys that say how a run is chained, never what it trains: never used to match runs
CHAIN_KEYS = frozenset({STAGE, INIT_FROM, INIT_RUN, "init_checkpoint", "eval_only"})
MAX_SHOWN = 6

Config = dict[str, Any]


def has_stages(configs: Sequence[Config]) -> bool:
    return any(INIT_FROM in c or STAGE in c for c in configs)


def stage_of(config: Config) -> str:
    return config.get(STAGE, "") or ""


def distinguishing_keys(configs: Sequence[Config]) -> list[str]:
    """Keys whose value (or presence) differs between the configs, chain keys left out."""
    from launcher.selection import varying_keys  # (selection imports this module)
    return [k for k in varying_keys(list(configs)) if k not in CHAIN_KEYS]


def _describe(config: Config, keys: Sequence[str]) -> str:
    shown = [f"{k}={config[k]!r}" for k in keys if k in config]
    return ", ".join(shown) or "(no distinguishing keys)"


def resolve(configs: list[Config], name_of: Callable[[Config], str], where: str) -> None:
    """Set `init_run` of every config that has `init_from` (in place); UsageError on a bad chain.

    `name_of` names a config (launcher.naming.run_name with the grid's excluded keys); `where` is 'grid.run'.
    """
    members: dict[str, list[int]] = {}
    keys_of: dict[str, list[str]] = {}  # stage -> the keys its runs are told apart by
    for index, cfg in enumerate(configs):
        if stage_of(cfg):
            members.setdefault(stage_of(cfg), []).append(index)
    for index, cfg in enumerate(configs):
        source = cfg.get(INIT_FROM)
        if not source:
            continue
        label = f"run {where}[{index}]"
        if cfg.get(INIT_RUN):
            raise UsageError(f"{label}: init_run is set by the launcher from init_from; leave it out of the grid")
        if source == stage_of(cfg):
            raise UsageError(f"{label}: init_from {source!r} is its own stage")
        if source not in members:
            raise UsageError(f"{label}: init_from {source!r} is not a stage of this grid; its stages: "
                             f"{', '.join(members) or '(none: set the key stage in the upstream configs)'}")
        if members[source][-1] > index:
            raise UsageError(f"{label}: stage {source!r} must be listed before the runs that start from it "
                             f"(its run {where}[{members[source][-1]}] comes after)")
        candidates = [configs[j] for j in members[source]]
        if source not in keys_of:
            keys_of[source] = distinguishing_keys(candidates)
        keys = keys_of[source]
        matches = [c for c in candidates if all(c[k] == cfg[k] for k in keys if k in c and k in cfg)]
        if len(matches) != 1:
            raise UsageError(_match_error(label, cfg, source, keys, matches or candidates, name_of, bool(matches)))
        cfg[INIT_RUN] = name_of(matches[0])


def _match_error(label: str, cfg: Config, source: str, keys: list[str], shown: list[Config],
                 name_of: Callable[[Config], str], several: bool) -> str:
    what = (f"matches {len(shown)} runs of stage {source!r}" if several
            else f"matches none of the {len(shown)} runs of stage {source!r}")
    listing = "; ".join(f"{name_of(c)} ({_describe(c, keys)})" for c in shown[:MAX_SHOWN])
    more = f"; and {len(shown) - MAX_SHOWN} more" if len(shown) > MAX_SHOWN else ""
    fix = ("set one of the keys that tell them apart" if several
           else "the keys that vary within the upstream stage must agree")
    own = f" ({_describe(cfg, keys)})" if any(k in cfg for k in keys) else ""
    return (f"{label}{own}: init_from {source!r} {what} on the keys "
            f"{', '.join(keys) or '(none vary)'}; {fix}; candidates: {listing}{more}")


def upstream_dir(run_dir: Path, config: Config) -> Path | None:
    """The upstream run folder of a downstream run (None for a run that starts from scratch)."""
    name = config.get(INIT_RUN)
    return runfiles.upstream_dir(run_dir, name) if name else None


def stage_groups(runs: Sequence[Any]) -> list[list[Any]]:
    """RunSpecs grouped by stage, in the order stages first appear (which is an upstream-first order)."""
    groups: dict[str, list[Any]] = {}
    for run in runs:
        groups.setdefault(stage_of(run.config), []).append(run)
    return list(groups.values())


def require_upstreams(runs: Sequence[Any], state_of: Callable[[Path], str]) -> None:
    """Refuse (UsageError) runs whose upstream is neither done nor among `runs` (local and debug executors,
    which run a chain within one launch)."""
    names = {run.name for run in runs}
    for run in runs:
        up = upstream_dir(run.dir, run.config)
        if up is None or up.name in names:
            continue
        state = state_of(up)
        if state != runfiles.DONE:
            raise UsageError(f"run {run.index} ({run.name}) starts from {up.name}, which is {state} and not "
                             f"selected; launch its stage too (e.g. without --only/--stage) or wait until it is done")


def take_ready(queue: list[Any], unfinished: set[str], blocked_by: dict[str, str]) -> tuple[Any, list[tuple[Any, str]]]:
    """Pop from `queue` the first run whose upstream is not still to run in this launch (None if none is).

    Runs whose upstream failed (or is itself blocked) are popped too and returned with the failed run that
    blocks them; `blocked_by` (run name -> failed run name) is updated, `unfinished` holds the names of the
    runs of this launch that are queued or running.
    """
    blocked = []
    for run in list(queue):  # grid order: a blocked upstream is met before its downstream
        up = run.config.get(INIT_RUN)
        if up in blocked_by:
            queue.remove(run)
            blocked_by[run.name] = blocked_by[up]
            blocked.append((run, blocked_by[up]))
    for run in queue:
        if run.config.get(INIT_RUN) not in unfinished:
            queue.remove(run)
            return run, blocked
    return None, blocked
