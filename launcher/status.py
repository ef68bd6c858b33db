"""`launch status --grid G --run R [--failed]`: one line per run, from its folder, refined by squeue/sacct.

The run folders are the truth (status.json heartbeats, results.json, job.json), so status works after the
submitting shell is gone and on a laptop. When squeue/sacct answer they refine it: a queued job is pending,
a job that died without the trainer noticing (cancelled, out of memory, node failure) shows as such.
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.naming import grid_title
from launcher.slurm import query as slurm_query
from launcher.selection import RunSpec, add_selection_arguments, positive_int, select_runs
from launcher.stages import BLOCKED, INIT_RUN, WAITING, stage_of
from launcher.state import (CORRUPT, DONE, FAILED, INTERRUPTED, NOT_SUBMITTED, PENDING, RUNNING, STALE,
                            run_state_note)
from trainer import runfiles

# What SLURM says about a job whose run folder is not done/failed -> (state, note). Keys are sacct/squeue states.
_ENDED = {
    "CANCELLED": (INTERRUPTED, "job {job} was cancelled"),
    "COMPLETED": (FAILED, "job {job} completed but the run did not finish"),
    "FAILED": (FAILED, "job {job} failed"),
    "TIMEOUT": (FAILED, "job {job} hit its time limit"),
    "OUT_OF_MEMORY": (FAILED, "job {job} ran out of memory"),
    "NODE_FAIL": (FAILED, "job {job}: node failure"),
    "BOOT_FAIL": (FAILED, "job {job}: node boot failure"),
    "DEADLINE": (FAILED, "job {job} passed its deadline"),
    "PREEMPTED": (INTERRUPTED, "job {job} was preempted"),
}


@dataclass
class RunStatus:
    """What status shows for one run."""
    run: RunSpec
    state: str
    job_id: str | None
    iteration: Any
    niters: Any
    vacc: Any
    error: str | None
    log: str | None
    blocked_by: str | None = None  # the failed run a blocked run cannot start without


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_selection_arguments(parser)
    parser.add_argument("--failed", action="store_true", help="print the last lines of each failed run's log")
    parser.add_argument("--lines", type=positive_int, default=20, metavar="N",
                        help="with --failed: how many log lines (default 20)")


def _slurm_job(run_dir: Path) -> dict[str, Any]:
    job = runfiles.read_json(run_dir / runfiles.JOB) or {}
    return job if job.get("cluster") == "slurm" and job.get("job_id") else {}


def _files_state(run_dir: Path, job: dict[str, Any], status: dict[str, Any]) -> tuple[str, str | None]:
    """run_state_note, except that a run resubmitted after it failed or stopped is pending until it starts again."""
    state, note = run_state_note(run_dir)
    submitted, heartbeat = job.get("submitted"), status.get("heartbeat")
    if state in (FAILED, INTERRUPTED, STALE) and isinstance(submitted, (int, float)) \
            and isinstance(heartbeat, (int, float)) and submitted > heartbeat:
        return PENDING, None
    return state, note


def refine(state: str, slurm_state: str | None, job_id: str | None, queue_answered: bool) -> tuple[str, str | None]:
    """Combine the folder's state with SLURM's view of its job -> (state, note or None)."""
    if state in (DONE, FAILED, NOT_SUBMITTED, CORRUPT) or job_id is None:
        return state, None
    if slurm_state in slurm_query.QUEUED:
        return PENDING, "requeued" if state == INTERRUPTED else None
    if slurm_state in slurm_query.ACTIVE:
        return RUNNING, None
    if slurm_state in _ENDED:
        new, note = _ENDED[slurm_state]
        return new, note.format(job=job_id)
    if queue_answered and state in (RUNNING, PENDING):
        return STALE, f"job {job_id} is no longer in the queue"
    return state, None


def collect(runs: list[RunSpec], upstream_rows: bool = False) -> tuple[list[RunStatus], bool]:
    """Status of every run, and whether SLURM answered (False: states come from the run folders alone).

    Runs of a later stage that have not started are `waiting` on their upstream stage, or `blocked` by the
    failed run they cannot start without (their pending job, which can never start, is cancelled).
    With `upstream_rows`, the rows of the upstream runs outside `runs` (index -1) follow theirs.
    """
    everything = list(runs) + _upstream_runs(runs)
    rows, answered = _collect(everything)
    chain_states(rows)
    return (rows if upstream_rows else rows[:len(runs)]), answered


def _upstream_runs(runs: list[RunSpec]) -> list[RunSpec]:
    """The runs the given ones start from or wait on (their configs read from their folders), transitively."""
    known = {r.dir.name for r in runs}
    todo, extra = list(runs), []
    while todo:
        run = todo.pop()
        names = [run.config.get(INIT_RUN)] + list(_slurm_job(run.dir).get("after_runs") or [])
        for name in names:
            if not name or name in known:
                continue
            known.add(name)
            folder = run.dir.parent / name
            try:
                config = runfiles.read_config(folder / runfiles.CONFIG)
            except ValueError:  # not written yet, or corrupt: files alone
                config = {}
            extra.append(RunSpec(-1, name, folder, config))
            todo.append(extra[-1])
    return extra


def chain_states(rows: list[RunStatus]) -> None:
    """Turn runs that have not started into waiting/blocked from the states of the runs they depend on."""
    by_name = {row.run.name: row for row in rows}
    done: set[str] = set()

    def settle(row: RunStatus) -> None:
        if row.run.name in done:
            return
        done.add(row.run.name)
        job = _slurm_job(row.run.dir)
        names = [row.run.config.get(INIT_RUN)] + list(job.get("after_runs") or [])
        deps = [by_name[n] for n in dict.fromkeys(names) if n in by_name]
        for dep in deps:
            settle(dep)
        if not deps or _started(row.run.dir, job) or row.state not in (PENDING, INTERRUPTED, STALE, NOT_SUBMITTED):
            return
        failed = next((d for d in deps if d.state in (FAILED, BLOCKED)), None)
        if failed is not None:
            root = failed.blocked_by or failed.run.name
            if row.state == PENDING and row.job_id:  # SLURM's DependencyNeverSatisfied: never left pending
                slurm_query.cancel([row.job_id])
            row.state, row.blocked_by, row.error = BLOCKED, root, f"blocked by {root} (failed)"
        elif row.state == PENDING and any(d.state in (PENDING, RUNNING, WAITING) for d in deps):
            waiting_on = next(d for d in deps if d.state in (PENDING, RUNNING, WAITING))
            row.state, row.error = WAITING, f"waiting on {stage_of(waiting_on.run.config) or waiting_on.run.name}"

    for row in rows:
        settle(row)


def _started(run_dir: Path, job: dict[str, Any]) -> bool:
    """The run's trainer started since its latest submission (a heartbeat newer than job.json's time)."""
    heartbeat = (runfiles.read_json(run_dir / runfiles.STATUS) or {}).get("heartbeat")
    submitted = job.get("submitted")
    if not isinstance(heartbeat, (int, float)):
        return False
    return not isinstance(submitted, (int, float)) or heartbeat >= submitted


def _collect(runs: list[RunSpec]) -> tuple[list[RunStatus], bool]:
    jobs = {r.dir: _slurm_job(r.dir) for r in runs}
    ids = [j["job_id"] for j in jobs.values() if j]
    queue = slurm_query.queue_states(ids) if ids else {}
    accounting = slurm_query.accounting_states(ids) if ids else {}
    out = []
    for run in runs:
        job = jobs[run.dir]
        status = runfiles.read_json(run.dir / runfiles.STATUS) or {}
        job_id = job.get("job_id")
        slurm_state = (queue or {}).get(job_id)
        if slurm_state in (None, "COMPLETING"):  # a completing job's outcome (e.g. CANCELLED) is in sacct
            slurm_state = (accounting or {}).get(job_id) or slurm_state
        files_state, files_note = _files_state(run.dir, job, status)
        state, note = refine(files_state, slurm_state, job_id, queue is not None)
        note = note or (files_note if state == files_state else None)
        error = status.get("error") if state == FAILED else None
        out.append(RunStatus(run, state, job_id, status.get("iteration"), status.get("niters"),
                             status.get("Vacc"), note if note and not error else error, _log_path(run.dir, job)))
    answered = not ids or queue is not None or accounting is not None
    return out, answered


def _log_path(run_dir: Path, job: dict[str, Any]) -> str | None:
    log = run_dir / runfiles.LOG
    if log.exists():
        return str(log)
    return job.get("stderr")


def format_line(s: RunStatus) -> str:
    progress = f"{s.iteration}/{s.niters}" if s.iteration is not None else "-"
    vacc = f"{s.vacc:.2f}" if isinstance(s.vacc, (int, float)) else "-"
    job = s.job_id or "-"
    line = f"{s.run.index:>5}  {s.state:<13} it {progress:<13} Vacc {vacc:<6} job {job:<10} {s.run.name}"
    if s.error and s.state in (WAITING, BLOCKED):
        line += f"  ({s.error})"
    elif s.error:
        line += f"\n       {'error' if s.state == FAILED else 'note'}: {s.error}"
    if s.state == FAILED and s.log:
        line += f"\n       log: {s.log}"
    return line


def tail(path: str, n: int) -> list[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()[-n:]
    except OSError as err:
        return [f"(cannot read {path}: {err.strerror})"]


def main(args: argparse.Namespace) -> int:
    from launcher.elsewhere import require_results_dir, unmatched_note

    selection = select_runs(args)
    require_results_dir(selection)
    rows, answered = collect(selection.runs)
    meta = selection.meta
    print(f"grid {grid_title(meta.grid, meta.run)}: {len(rows)} runs in {meta.results_dir.absolute()}")
    for row in rows:
        print(format_line(row))
    counts = Counter(r.state for r in rows)
    print("summary: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    note = unmatched_note(selection)
    if note:
        print(note)
    if not answered:
        print("(squeue and sacct did not answer: states come from the run folders alone)")
    if args.failed:
        for row in rows:
            if row.state == FAILED and row.log:
                print(f"\n==> {row.run.name}: last {args.lines} lines of {row.log}")
                print("\n".join(tail(row.log, args.lines)))
    return 0
