"""`--cluster slurm`: the selected runs as one throttled job array through submitit, K runs per task.

Submission returns at once: it prints the job id, the number of runs and the log folder, and writes job.json
into every run folder; from then on `launch status` / `launch cancel` and a relaunch work from those files.
Which runs are submitted depends on --mode (missing: not done and not queued/running; failed; force).
Resources come from flags, else the grid's defaults (a `slurm` dict in its GridRun, when it has one),
else DEFAULTS. Preemption and timeouts requeue through submitit's checkpointing (launcher/slurm/task.py).
With --nodes N / --gpus-per-node G every run trains on N*G torch.distributed ranks (one task per GPU, one
per node without GPUs): each array task is then a multi-node job that trains one run (trainer.distributed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from launcher.errors import UsageError
from launcher.executors.base import Executor, register_executor
from launcher.naming import safe_token
from launcher.rundirs import prepare_runs
from launcher.selection import RunSpec, Selection, positive_float, positive_int
from launcher.stages import BLOCKED, INIT_RUN, WAITING, stage_groups, stage_of, upstream_dir
from launcher.state import DONE, FAILED, PENDING, RUNNING
from trainer import runfiles

LOG_DIR = ".slurm"  # under the grid's results folder: <results>/.slurm/<array job id>/...
MODES = ("missing", "failed", "force")
SIGNAL_DELAY_S = 120  # a checkpoint of the paper's models takes seconds; 2 minutes leaves room for slow disks


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Resource:
    """A resource flag: --<name with dashes>, its parser, and the sbatch option it becomes."""
    parse: Callable[[str], Any]
    sbatch: str
    help: str
    to_sbatch: Callable[[Any], Any] = lambda value: value


RESOURCES: dict[str, Resource] = {
    "partition": Resource(str, "partition", "SLURM partition"),
    "gpus_per_task": Resource(nonnegative_int, "gres", "GPUs per array task (gres gpu:N), shared by its --runs-per-task runs",
                              lambda n: f"gpu:{n}"),
    "cpus_per_task": Resource(positive_int, "cpus-per-task", "CPUs per array task (default: --runs-per-task)"),
    "mem_gb": Resource(positive_float, "mem", "memory per array task in GB (default: the cluster's DefMemPerCPU)",
                       lambda gb: f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"),
    "time_min": Resource(positive_int, "time", "time limit per array task in minutes (default 1440)", int),
    "account": Resource(str, "account", "account to charge"),
    "qos": Resource(str, "qos", "quality of service"),
    "constraint": Resource(str, "constraint", "node features required (e.g. 'volta32gb')"),
    "exclude": Resource(str, "exclude", "nodes not to use (e.g. 'node[1-3]')"),
}
DEFAULTS: dict[str, Any] = {"time_min": 1440, "runs_per_task": 1, "array_parallelism": 256}
DISTRIBUTED = ("nodes", "gpus_per_node")  # flags that make every run a multi-task torch.distributed job

# sbatch options --sbatch KEY=VALUE may set (sbatch 22.05 long options that make sense for an array task).
SBATCH_KEYS = frozenset("""
acctg-freq begin clusters comment contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu deadline
delay-boot dependency distribution exclusive export gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket
gres gres-flags hint licenses mail-type mail-user mcs-label mem-bind mem-per-cpu mem-per-gpu mincpus
network nice nodefile nodelist overcommit oversubscribe power prefer priority profile propagate reboot requeue
reservation signal sockets-per-node spread-job switches thread-spec threads-per-core tmp uid use-min-nodes
wait-all-nodes wckey
""".split())
# keys submitit or this module set themselves, and the flag to use instead where there is one
RESERVED = {r.sbatch: f"--{k.replace('_', '-')}" for k, r in RESOURCES.items()} | {
    "array": "--array-parallelism", "job-name": None, "output": None, "error": None, "open-mode": None,
    "signal": None, "wckey": None, "nodes": "--nodes", "gpus-per-node": "--gpus-per-node", "ntasks": None,
    "ntasks-per-node": "--gpus-per-node"}
VALID_SBATCH_KEYS = sorted(SBATCH_KEYS - set(RESERVED))


@dataclass
class SlurmOptions:
    """Everything that shapes the sbatch script of one submission."""
    resources: dict[str, Any]
    sbatch: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    runs_per_task: int = 1
    array_parallelism: int = 256
    nodes: int | None = None          # set (with gpus_per_node) for runs on several ranks
    gpus_per_node: int | None = None

    @property
    def distributed(self) -> bool:
        return self.nodes is not None or self.gpus_per_node is not None

    @property
    def ranks(self) -> int:
        """torch.distributed ranks per run: one per GPU, or one per node without GPUs."""
        return (self.nodes or 1) * max(1, self.gpus_per_node or 0)

    def task_parameters(self) -> dict[str, int]:
        """submitit parameters of the multi-task job of one distributed run ({} otherwise)."""
        if not self.distributed:
            return {}
        from launcher.executors.distributed import slurm_parameters
        return slurm_parameters(self.nodes or 1, self.gpus_per_node or 0)


def parse_sbatch_item(item: str) -> tuple[str, str]:
    """'KEY=VALUE' -> (key, value); unknown or reserved keys raise UsageError naming the valid keys."""
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-").replace("_", "-")
    if not sep or not key:
        raise UsageError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. --sbatch mail-type=END")
    if key in RESERVED:
        instead = RESERVED[key]
        raise UsageError(f"--sbatch {key}: set by the launcher" + (f"; use {instead} instead" if instead else ""))
    if key not in SBATCH_KEYS:
        raise UsageError(f"--sbatch {key}: unknown sbatch option; valid keys: {', '.join(VALID_SBATCH_KEYS)}")
    return key, value


def parse_sbatch(items: list[str]) -> dict[str, str]:
    """--sbatch KEY=VALUE items -> {key: value} (later items win)."""
    return dict(parse_sbatch_item(item) for item in items)


def _sbatch_flag(item: str) -> str:
    """argparse type of --sbatch: refuse a bad item before anything is written."""
    try:
        parse_sbatch_item(item)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return item


def grid_defaults(selection: Selection | None) -> dict[str, Any]:
    """Resource defaults the grid declares (GridRun/GridMeta attribute `slurm`), checked like flags."""
    given = dict(getattr(selection.meta, "slurm", None) or {}) if selection is not None else {}
    known = set(RESOURCES) | set(DEFAULTS) | set(DISTRIBUTED) | {"sbatch", "setup"}
    bad = sorted(set(given) - known)
    if bad:
        raise UsageError(f"grid slurm defaults: unknown key {bad[0]!r}; valid: {', '.join(sorted(known))}")
    parsers = {name: r.parse for name, r in RESOURCES.items()} | {
        "runs_per_task": positive_int, "array_parallelism": positive_int, "nodes": positive_int,
        "gpus_per_node": nonnegative_int}
    for name, parse in parsers.items():
        if given.get(name) is not None:
            try:
                given[name] = parse(str(given[name]))
            except (ValueError, argparse.ArgumentTypeError) as err:
                raise UsageError(f"grid slurm defaults: {name}={given[name]!r}: {err}") from None
    return given


def options_from_args(args: argparse.Namespace, selection: Selection | None = None) -> SlurmOptions:
    """Flags over grid defaults over DEFAULTS."""
    grid = grid_defaults(selection)

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else grid.get(name, DEFAULTS.get(name))

    resources = {name: pick(name) for name in RESOURCES}
    runs_per_task = pick("runs_per_task")
    if resources["cpus_per_task"] is None:
        resources["cpus_per_task"] = runs_per_task
    sbatch = parse_sbatch([f"{k}={v}" for k, v in (grid.get("sbatch") or {}).items()]
                          + list(getattr(args, "sbatch", None) or []))
    setup = list(grid.get("setup") or []) + list(getattr(args, "setup", None) or [])
    opts = SlurmOptions({k: v for k, v in resources.items() if v is not None}, sbatch, setup,
                        runs_per_task, pick("array_parallelism"), pick("nodes"), pick("gpus_per_node"))
    if opts.distributed:
        if runs_per_task != 1:
            raise UsageError(f"--runs-per-task {runs_per_task} with --nodes/--gpus-per-node: a run on several "
                             "ranks is one multi-task job of its own; leave --runs-per-task at 1")
        if opts.resources.get("gpus_per_task") is not None:
            raise UsageError("--gpus-per-task with --nodes/--gpus-per-node: GPUs then come from --gpus-per-node "
                             "(one rank per GPU); drop --gpus-per-task")
    return opts


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which SIGUSR2 asks the trainers to checkpoint: 120, less for short jobs."""
    return int(min(SIGNAL_DELAY_S, max(10, time_min * 60 // 4)))


def executor_parameters(opts: SlurmOptions, job_name: str) -> dict[str, Any]:
    """Keyword arguments of submitit.SlurmExecutor.update_parameters for these options."""
    params: dict[str, Any] = {"job_name": job_name, "array_parallelism": opts.array_parallelism,
                              "setup": list(opts.setup), "additional_parameters": dict(opts.sbatch),
                              "signal_delay_s": signal_delay_s(opts.resources["time_min"])}
    for name, value in opts.resources.items():
        resource = RESOURCES[name]
        params[resource.sbatch.replace("-", "_")] = resource.to_sbatch(value)
    return params | opts.task_parameters()


def sbatch_text(opts: SlurmOptions, job_name: str, folder: str, n_tasks: int, command: str) -> str:
    """The sbatch script submitit would submit for an array of n_tasks (golden-file tests compare it)."""
    from submitit.slurm.slurm import _make_sbatch_string
    params = executor_parameters(opts, job_name)
    return _make_sbatch_string(command=command, folder=folder, map_count=n_tasks, **params)


def sbatch_directives(args: argparse.Namespace) -> tuple[str, ...]:
    """The #SBATCH options of the resources for `launch --dry-run` job scripts (launcher/executors/scripts.py)."""
    opts = options_from_args(args)
    flags = [f"--{RESOURCES[n].sbatch}={RESOURCES[n].to_sbatch(v)}" for n, v in opts.resources.items()]
    flags += [f"--{k.replace('_', '-')}={v}" for k, v in opts.task_parameters().items()]
    flags += [f"--{k}={v}" for k, v in opts.sbatch.items()]
    return tuple(flags) + (f"--signal=USR2@{signal_delay_s(opts.resources['time_min'])}", "--open-mode=append")


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of --cluster slurm (all default to None so grid defaults can fill them)."""
    for name, resource in RESOURCES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=resource.parse, default=None,
                            metavar=name.split("_")[0].upper(), help=f"with --cluster slurm: {resource.help}")
    parser.add_argument("--sbatch", action="append", default=None, metavar="KEY=VALUE", type=_sbatch_flag,
                        help="with --cluster slurm: any other sbatch option (repeatable); unknown keys are refused")
    parser.add_argument("--setup", action="append", default=None, metavar="LINE",
                        help="with --cluster slurm: a shell line run before the job (module load, venv activation)")
    parser.add_argument("--runs-per-task", type=positive_int, default=None, metavar="K",
                        help="with --cluster slurm: K runs per array task, run concurrently (sharing its GPU)")
    parser.add_argument("--array-parallelism", type=positive_int, default=None, metavar="N",
                        help="with --cluster slurm: at most N array tasks at once (SLURM's %%N)")
    parser.add_argument("--nodes", type=positive_int, default=None, metavar="N",
                        help="with --cluster slurm: train every run on N nodes as torch.distributed ranks "
                             "(g_estim=nuq_dist; one multi-task job per run)")
    parser.add_argument("--gpus-per-node", type=nonnegative_int, default=None, metavar="G",
                        help="with --cluster slurm: one rank per GPU, G per node (default with --nodes: 0, "
                             "one CPU rank per node)")
    parser.add_argument("--mode", choices=MODES, default="missing",
                        help="which runs to submit: missing (default: not done and not queued/running), "
                             "failed (only failed), force (all; done runs are moved aside, needs --yes)")
    parser.add_argument("--yes", action="store_true", help="confirm --mode force when some runs are done")


def select_for_mode(mode: str, states: dict[int, str], runs: list[RunSpec], yes: bool) -> list[RunSpec]:
    """The runs --mode submits; force over done runs without --yes is refused, active runs never resubmitted."""
    if mode == "failed":  # with the runs of later stages that the failures blocked
        return [r for r in runs if states[r.index] in (FAILED, BLOCKED)]
    active = [r for r in runs if states[r.index] in (PENDING, RUNNING, WAITING)]
    if mode == "missing":
        return [r for r in runs if states[r.index] not in (DONE, PENDING, RUNNING, WAITING)]
    if active:
        raise UsageError(f"--mode force: {len(active)} runs are queued or running (e.g. {active[0].dir}); "
                         "cancel them first with `launch cancel` and the same selection")
    done = [r for r in runs if states[r.index] == DONE]
    if done and not yes:
        raise UsageError(f"--mode force would retrain {len(done)} done runs (their folders are moved aside, "
                         "never overwritten); add --yes to confirm")
    return list(runs)


def check_distributed(runs: list[RunSpec], ranks: int) -> None:
    """Refuse, before anything is written, runs whose estimator would train `ranks` independent replicas."""
    from launcher.executors.distributed import check_config
    for run in runs:
        try:
            check_config(run.config, ranks)
        except ValueError as err:
            raise UsageError(f"run {run.name}: {err}") from None


def move_aside(run: RunSpec) -> Path:
    """Rename a run folder that holds trainer files to <name>.old-<time> so a forced run starts from scratch."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run.dir.with_name(f"{run.dir.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run.dir.with_name(f"{run.dir.name}.old-{stamp}-{n}")
    run.dir.rename(target)
    return target


def pack(runs: list[RunSpec], k: int) -> list[list[RunSpec]]:
    """Consecutive groups of k runs: one group per array task."""
    return [runs[i:i + k] for i in range(0, len(runs), k)]


def dependency_parameters(after: Sequence[str], given: str | None = None) -> dict[str, str]:
    """sbatch options that hold an array until every job in `after` has succeeded (and any --sbatch
    dependency `given` holds); SLURM cancels it, rather than leaving it pending forever, when one fails."""
    if not after:
        return {}
    chained = "afterok:" + ":".join(after)
    return {"dependency": f"{given},{chained}" if given else chained, "kill-on-invalid-dep": "yes"}


def upstream_jobs(todo: list[RunSpec], states: dict[Path, tuple[str, str | None]]) -> dict[str, str | None]:
    """Run name -> the job id its upstream must finish first (None: upstream done or submitted now).

    `states` maps every run folder collect() saw to (state, job id). A run whose upstream is neither done,
    queued, running, nor submitted with it cannot start: UsageError before anything is submitted.
    """
    names = {r.name for r in todo}
    after: dict[str, str | None] = {}
    for run in todo:
        up = upstream_dir(run.dir, run.config)
        if up is None or up.name in names:
            after[run.name] = None
            continue
        state, job_id = states.get(up, ("not submitted", None))
        if state == DONE:
            after[run.name] = None
        elif state in (PENDING, RUNNING, WAITING) and job_id:
            after[run.name] = job_id
        else:
            raise UsageError(f"run {run.index} ({run.name}) starts from {up.name}, which is {state} and not "
                             "submitted now; select its stage too (or --mode failed to rerun it with this run)")
    return after


def submit(runs: list[RunSpec], selection: Selection, opts: SlurmOptions, after: Sequence[str] = (),
           after_runs: Sequence[str] = ()) -> str:
    """Submit the runs as one array (config.yaml already written) that starts once the jobs `after` (of the
    runs `after_runs`) succeeded; write job.json; return the array job id."""
    import submitit
    from launcher.slurm.task import DistributedRank, PackedRuns

    log_root = selection.meta.results_dir.absolute() / LOG_DIR
    executor = submitit.SlurmExecutor(folder=log_root / "%j")
    job_name = safe_token(f"nuqlab-{Path(selection.meta.grid).stem}-{selection.meta.run}")
    params = executor_parameters(opts, job_name)
    extra = params["additional_parameters"]
    extra.update(dependency_parameters(after, extra.get("dependency")))
    executor.update_parameters(**params)
    groups = pack(runs, opts.runs_per_task)
    _put_checkout_on_pythonpath()
    task = DistributedRank() if opts.distributed else PackedRuns()
    jobs = executor.map_array(task, [[str(r.dir.absolute()) for r in g] for g in groups])
    now = time.time()
    for task, (job, group) in enumerate(zip(jobs, groups)):
        for run in group:
            runfiles.write_job(run.dir, "slurm", str(job.job_id), str(job.paths.stdout), str(job.paths.stderr),
                               array_index=task, submitted=now, after=list(after), after_runs=list(after_runs))
    return str(jobs[0].job_id).split("_")[0]


def _put_checkout_on_pythonpath() -> None:
    """sbatch exports this environment to the job, whose interpreter must import this checkout."""
    os.environ["PYTHONPATH"] = runfiles.pythonpath_with_repo(os.environ.get("PYTHONPATH"))


@register_executor("slurm")
class SlurmExecutor(Executor):
    """One throttled job array per launch through submitit; returns as soon as it is queued."""
    help = "submit a SLURM job array through submitit (returns at once; see `launch status`)"
    selects_runs = True  # --mode decides from the whole selection, done runs included

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_slurm_arguments(parser)

    def sbatch_directives(self, args: argparse.Namespace) -> tuple[str, ...]:
        return sbatch_directives(args)

    def launch(self, runs: list[RunSpec], selection: Selection, args: argparse.Namespace) -> int:
        from launcher.status import collect
        if shutil.which("sbatch") is None:
            raise UsageError("--cluster slurm: sbatch is not on PATH (run this on a SLURM login node)")
        opts = options_from_args(args, selection)
        if opts.distributed:
            check_distributed(selection.runs, opts.ranks)
        # The launch command hands over the runs that are neither done nor running by their files; the mode
        # decides from the whole selection, refined by squeue/sacct (a queued run is not submitted twice).
        rows, _ = collect(selection.runs, upstream_rows=True)
        states = {row.run.index: row.state for row in rows if row.run.index >= 0}
        todo = select_for_mode(args.mode, states, selection.runs, args.yes)
        chosen = {r.index for r in todo}
        skipped = Counter(states[r.index] for r in selection.runs if r.index not in chosen)
        if skipped:
            print("not submitted: " + ", ".join(f"{n} {s}" for s, n in sorted(skipped.items())))
        if not todo:
            print(f"nothing to submit (--mode {args.mode})")
            return 0
        for run in todo:
            if args.mode == "force" and run.dir.exists() and any(
                    (run.dir / f).exists() for f in (runfiles.STATUS, runfiles.RESULTS, runfiles.CHECKPOINT)):
                print(f"moved {run.dir} aside to {move_aside(run)}")
        after = upstream_jobs(todo, {row.run.dir: (row.state, row.job_id) for row in rows})
        todo, _ = prepare_runs(todo, repair=args.repair_config)
        if not todo:
            print(f"nothing to submit (--mode {args.mode})")
            return 0
        job_of: dict[str, str] = {}  # run name -> job id, of the runs submitted now
        for group in stage_groups(todo):  # one array per stage, upstream stages first
            self._submit_stage(group, selection, opts, after, job_of)
        print(f"follow with: launch status --grid {selection.meta.grid} --run {selection.meta.run} "
              f"--root {selection.meta.results_dir.parent}")
        sys.stdout.flush()
        return 0

    @staticmethod
    def _submit_stage(group: list[RunSpec], selection: Selection, opts: SlurmOptions,
                      after: dict[str, str | None], job_of: dict[str, str]) -> None:
        """Submit one stage's runs as an array held until the jobs of their unfinished upstream runs succeed."""
        deps: dict[str, str] = {}  # upstream job id -> upstream run name
        for run in group:
            up = run.config.get(INIT_RUN)
            job_id = after[run.name] or job_of.get(up or "")
            if job_id:
                deps.setdefault(job_id, up)
        array_id = submit(group, selection, opts, list(deps), list(dict.fromkeys(deps.values())))
        job_of.update({run.name: (runfiles.read_json(run.dir / runfiles.JOB) or {})["job_id"] for run in group})
        tasks = len(pack(group, opts.runs_per_task))
        log_root = selection.meta.results_dir.absolute() / LOG_DIR
        per_task = (f"each on {opts.ranks} ranks: {opts.nodes or 1} nodes x {opts.ranks // (opts.nodes or 1)} "
                    "tasks" if opts.distributed else f"{opts.runs_per_task} per task")
        stage = f" (stage {stage_of(group[0].config)})" if stage_of(group[0].config) else ""
        print(f"submitted job {array_id}{stage}: {len(group)} runs in {tasks} array tasks "
              f"({per_task}, at most {min(tasks, opts.array_parallelism)} at once)")
        if deps:
            print(f"  starts after jobs {', '.join(deps)} succeed (afterok)")
        folder = f"{array_id}_<task>" if tasks > 1 else array_id  # submitit submits one task as a plain job
        print(f"logs: {log_root}/{folder}/ ; run logs: <run folder>/{runfiles.LOG}")

