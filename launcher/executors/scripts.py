"""The job scripts a dry-run writes: jobs/<prefix>_<i>.sh per array task and jobs/<prefix>_slurm.sbatch.

Each task script is self-contained so a user can submit it by hand: it writes the run's config.yaml
(refusing a folder that holds a different one, as the launcher does) and runs
`python -m trainer --config <run_dir>/config.yaml`, or for runs on several ranks (--nodes/--gpus-per-node)
`srun python -m trainer.distributed --slurm --config ...` (one rank per SLURM task). With one run per
task (the default) the task index is the run index. With --runs-per-task K, task t holds K consecutive
runs (as `--cluster slurm` packs them): it prepares every folder first, then starts the K trainers at once,
one line ending in `&` each, and waits for them, like the job files of the paper's grid_run.py (its
pjobs/*.sh); unlike their bare `wait`, the task fails when a run fails. Every value that reaches the shell
goes through shlex.quote, so spaces, quotes, `$()` or `../` in a config or a path stay one inert word.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Iterable

from launcher.rundirs import dump_config
from launcher.selection import RunSpec
from trainer import runfiles

# sbatch reads #SBATCH lines itself (no shell quoting), so a path only goes there when it is plain.
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
PYTHON_ENV = "NUQLAB_PYTHON"  # set it to run the scripts with another interpreter (e.g. on cluster nodes)
DEFAULT_DIRECTIVES = ("--gres=gpu:1", "--cpus-per-task=4", "--signal=USR2@120", "--open-mode=append")


def script_path(jobs_dir: Path, prefix: str, index: int) -> Path:
    return jobs_dir / f"{prefix}_{index}.sh"


def sbatch_path(jobs_dir: Path, prefix: str) -> Path:
    return jobs_dir / f"{prefix}_slurm.sbatch"


def array_spec(indices: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (SLURM --array syntax)."""
    ranges: list[list[int]] = []
    for i in sorted(set(indices)):
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _prepare_lines(run: RunSpec) -> list[str]:
    """Lines that set run_dir and write its config.yaml, refusing a folder that holds a different one."""
    q = shlex.quote
    return [
        f"run_dir={q(str(run.dir.absolute()))}",
        f"config={q(dump_config(run.config))}",
        'mkdir -p "$run_dir"',
        f'if [ -e "$run_dir/{runfiles.CONFIG}" ]; then',
        f'  if [ "$(cat "$run_dir/{runfiles.CONFIG}")" != "$(printf \'%s\' "$config")" ]; then',
        '    echo "refusing $run_dir: its config.yaml differs from this run\'s config" >&2',
        "    exit 2",
        "  fi",
        "else",
        f'  printf \'%s\' "$config" > "$run_dir/.{runfiles.CONFIG}.$$"',
        f'  mv -f "$run_dir/.{runfiles.CONFIG}.$$" "$run_dir/{runfiles.CONFIG}"',
        "fi",
    ]


def _python_lines(python: str | None) -> list[str]:
    return [f"python={shlex.quote(python or sys.executable)}",
            f'if [ -n "${{{PYTHON_ENV}:-}}" ]; then python=${PYTHON_ENV}; fi']


def _header(comment: str) -> list[str]:
    return ["#!/usr/bin/env bash", comment, "set -euo pipefail",
            f"export PYTHONPATH={shlex.quote(str(runfiles.REPO_ROOT))}\"${{PYTHONPATH:+:$PYTHONPATH}}\""]


def task_script(run: RunSpec, python: str | None = None, distributed: bool = False) -> str:
    """The bash script that prepares and runs one run (every inserted value is one quoted word)."""
    train = ('exec srun "$python" -u -m trainer.distributed --slurm' if distributed
             else 'exec "$python" -m trainer')
    return "\n".join([
        *_header(f"# nuqlab run {run.index}: {run.name}"),
        *_prepare_lines(run),
        *_python_lines(python),
        f'{train} --config "$run_dir/{runfiles.CONFIG}"',
        "",
    ])


# Around the `&` lines: pass SLURM's stop signals on to the trainers (they checkpoint on either), wait for
# each (again after a signal interrupted the wait), and exit with the last failing run's code.
_FORWARD = [
    'trap \'kill -USR2 "${pids[@]}" 2>/dev/null || true\' USR2',
    'trap \'kill -TERM "${pids[@]}" 2>/dev/null || true\' TERM',
]
_WAIT_ALL = [
    "status=0",
    'for pid in "${pids[@]}"; do',
    '  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done',
    '  code=0; wait "$pid" || code=$?',
    '  if [ "$code" -ne 0 ]; then status=$code; fi',
    "done",
    'exit "$status"',
]


def packed_script(runs: list[RunSpec], python: str | None = None) -> str:
    """The bash script of one array task that trains `runs` concurrently: folders first, then one `&` each."""
    q = shlex.quote
    lines = _header(f"# nuqlab task of {len(runs)} runs: {', '.join(str(r.index) for r in runs)}")
    for run in runs:
        lines += [f"# run {run.index}: {run.name}", *_prepare_lines(run)]
    # the task's CPUs split between its runs, as `--cluster slurm` does (launcher/slurm_task.py)
    lines += [f'threads=$(( ${{SLURM_CPUS_PER_TASK:-{len(runs)}}} / {len(runs)} ))',
              'export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"',
              *_python_lines(python), "pids=()", *_FORWARD]
    for run in runs:
        lines += [f'"$python" -m trainer --config {q(str(run.dir.absolute() / runfiles.CONFIG))} &', "pids+=($!)"]
    return "\n".join(lines + _WAIT_ALL + [""])


def sbatch_script(prefix: str, jobs_dir: Path, indices: list[int], directives: Iterable[str] = DEFAULT_DIRECTIVES) -> str:
    """The array job that runs jobs/<prefix>_<SLURM_ARRAY_TASK_ID>.sh."""
    jobs_dir = jobs_dir.absolute()
    lines = ["#!/usr/bin/env bash", f"#SBATCH --job-name={prefix}", f"#SBATCH --array={array_spec(indices)}"]
    if _PLAIN_PATH.match(str(jobs_dir)):
        lines += [f"#SBATCH --output={jobs_dir}/{prefix}_%a.out", f"#SBATCH --error={jobs_dir}/{prefix}_%a.err"]
    else:
        lines.append("# (jobs folder has special characters: SLURM's default output file is used)")
    lines += [f"#SBATCH {d}" for d in directives]
    lines += ["set -euo pipefail",
              f"exec bash {shlex.quote(str(jobs_dir / prefix))}_\"${{SLURM_ARRAY_TASK_ID}}\".sh", ""]
    return "\n".join(lines)


def write_generated(path: Path, text: str, executable: bool = False) -> None:
    """Write a generated script so no reader ever sees it half-written, as cheaply as possible.

    Unchanged content is left alone; a new file is created exclusively (nothing can be reading a file
    that did not exist, and the sbatch that names the task scripts is written last); a changed file is
    replaced by temp file + rename, so a job already executing the old one keeps reading the old inode.
    No fsync: every dry-run regenerates these. (Renaming every file made a 10,000-run dry-run 5x slower.)
    """
    data = text.encode("utf-8")
    mode = 0o755 if executable else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        runfiles.atomic_write_bytes(path, data)
        os.chmod(path, mode)
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_job_scripts(runs: list[RunSpec], prefix: str, jobs_dir: Path,
                      directives: Iterable[str] = DEFAULT_DIRECTIVES,
                      distributed: bool = False, runs_per_task: int = 1) -> tuple[Path, list[Path]]:
    """Write the task scripts and the sbatch array script; return their paths.

    One run per task: script i is run i. K > 1: script t trains runs t*K ... t*K+K-1 of `runs` at once.
    """
    jobs_dir.mkdir(parents=True, exist_ok=True)
    if runs_per_task > 1:
        groups = [runs[i:i + runs_per_task] for i in range(0, len(runs), runs_per_task)]
        scripts = {t: packed_script(group) for t, group in enumerate(groups)}
    else:
        scripts = {run.index: task_script(run, distributed=distributed) for run in runs}
    tasks = []
    for index, text in scripts.items():
        path = script_path(jobs_dir, prefix, index)
        write_generated(path, text, executable=True)
        tasks.append(path)
    sbatch = sbatch_path(jobs_dir, prefix)
    write_generated(sbatch, sbatch_script(prefix, jobs_dir, list(scripts), directives))
    remove_stale_scripts(jobs_dir, prefix, set(scripts))
    return sbatch, tasks


def remove_stale_scripts(jobs_dir: Path, prefix: str, keep: set[int]) -> list[Path]:
    """Delete this prefix's task scripts of runs no longer selected (an earlier, larger dry-run's), so
    jobs/ holds exactly what the sbatch names; other prefixes' scripts and the .out/.err logs stay."""
    pattern = re.compile(re.escape(prefix) + r"_(\d+)\.sh")
    stale = [p for p in jobs_dir.glob(f"{prefix}_*.sh")
             if (m := pattern.fullmatch(p.name)) and int(m.group(1)) not in keep]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
