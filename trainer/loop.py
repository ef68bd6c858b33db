"""The training loop: one validated config in, one trained run folder out (see docs/CONTRACTS.md).

Iteration-based like the paper's code. Each step asks the gradient estimator for the gradient (the loop
never knows which method runs), evaluates and checkpoints every `chkpt_iter` iterations, and resumes
exactly from the newest checkpoint in the run folder. The enabled plugins' hooks (trainer/plugins/,
docs/plugins.md) are each one named call at their point of the loop. `request_stop()` (SIGUSR2/SIGTERM in
`python -m trainer`) makes it checkpoint at the next step boundary and raise `Interrupted`.
"""
from __future__ import annotations

import importlib.util
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from trainer import checkpoint, rng, runfiles, runlock
from trainer.init_from import CARRY, evaluate_only, start_from
from trainer.data import BatchStream, TensorSplit, load_dataset
from trainer.dist import is_main, rank, stop_signalled
from trainer.evaluate import evaluate
from trainer.logger import RunLogger
from trainer.models import create_model
from trainer.optim import make_optimizer
from trainer.options import full_config
from trainer.plugins.enabled import EnabledPlugins, parameter_layout
from trainer.runinfo import StatusWriter, write_repro
from trainer.runlog import RunLog
from trainer.schedule import lr_at

AUX_SEED_OFFSET = 1_000_000  # the aux stream (measurements) never shares the training data order


class Interrupted(Exception):
    """The run stopped on request after saving a checkpoint; running it again resumes it."""


_stop_requested = False


def request_stop() -> None:
    """Ask the running loop to checkpoint at the next step boundary and raise Interrupted (signal-safe)."""
    global _stop_requested
    _stop_requested = True


def _carry_optimizer_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
    """Keep the state (momentum, moments) of the parameters that a plugin left as they were."""
    for group in new.param_groups:
        for p in group["params"]:
            state = old.state.get(p)
            if state and all(not torch.is_tensor(v) or v.dim() == 0 or v.shape == p.shape for v in state.values()):
                new.state[p] = state


def _device(opt: dict[str, Any]) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not opt["no_cuda"] else "cpu")


def _peak_mem_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _gvar_available() -> bool:
    try:
        return importlib.util.find_spec("estim.gvar") is not None
    except ImportError:
        return False


@dataclass
class Progress:
    """Everything besides model/optimizer/streams/estimator that a checkpoint must restore."""
    iteration: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"Vacc": None, "iter": None})
    loss_sum: float = 0.0
    loss_n: int = 0
    train_s: float = 0.0
    wall_s: float = 0.0
    last: dict[str, float] = field(default_factory=dict)


class Training:
    """One run's objects, built from the full config; `fit()` trains to niters."""

    def __init__(self, opt: dict[str, Any], run_dir: Path, log: RunLog, status: StatusWriter,
                 on_iteration: Callable[[int], None] | None) -> None:
        self.opt, self.run_dir, self.log, self.status = opt, run_dir, log, status
        self.on_iteration = on_iteration
        if opt["pretrained"]:
            raise ValueError("pretrained=True is not supported: the trainer downloads nothing; set pretrained to False")
        self.device = _device(opt)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        data = load_dataset(opt["dataset"], opt["data"])
        self.data = data.to(self.device) if isinstance(data.train, TensorSplit) else data
        seed = opt["seed"]
        rng.seed_all(seed)
        self.plugins = EnabledPlugins(opt)
        self.model = self.plugins.configure_model(
            create_model(opt["arch"], data.num_classes, data.in_shape).to(self.device))
        bs, index = opt["batch_size"], self.plugins.needs_sample_index
        self.train_stream = BatchStream(self.data, self.data.train, bs, seed + rank(), self.device, with_index=index)
        self.aux_stream = BatchStream(self.data, self.data.train, bs, seed + rank() + AUX_SEED_OFFSET, self.device,
                                      with_index=index)
        self.epoch_iters = opt["epoch_iters"] or self.train_stream.batches_per_epoch
        self.niters = opt["niters"] or opt["epochs"] * self.epoch_iters
        if self.niters <= 0:
            raise ValueError(f"nothing to train: niters {opt['niters']}, epochs {opt['epochs']}; set niters > 0")
        lr_at(0, opt, self.epoch_iters, self.niters)  # a schedule that cannot run is refused before anything runs
        self.objective = self.plugins.objective(F.cross_entropy, self.model)
        self.build_optimizer_and_estimator()
        self.progress = Progress()
        self.carry: dict[str, Any] = {}  # state carried over from the upstream run (trainer/init_from.py)
        self.gvar = _gvar_available()

    def build_optimizer_and_estimator(self) -> None:
        """Both over the model's current parameters (again after a plugin changed them)."""
        self.optimizer = make_optimizer(self.opt, self.model)
        import estim
        self.estimator = estim.get_estimator_class(self.opt["g_estim"])(
            self.opt, self.model, self.objective, self.train_stream, self.aux_stream)
        self.params = self.estimator.params()

    # ---- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "version": checkpoint.VERSION, "iteration": p.iteration, "epoch": p.iteration / self.epoch_iters,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng.get_state(),
            "streams": {"train": self.train_stream.state_dict(), "aux": self.aux_stream.state_dict()},
            "estimator": self.estimator.state_dict(), "best": dict(p.best), "loss_acc": [p.loss_sum, p.loss_n],
            "train_s": p.train_s, "wall_s": p.wall_s, "last": dict(p.last), "config": dict(self.opt),
            "plugins": self.plugins.state_dict(), CARRY: {**self.carry, **self.plugins.carry_state()},
        }

    def load_plugins(self, states: dict[str, Any]) -> None:
        """Plugin state first: a plugin may give parameters the checkpoint's shapes, and then the optimizer
        and the estimator are rebuilt over them before their own state is loaded."""
        before = parameter_layout(self.model)
        self.plugins.load_state_dict(states)
        if parameter_layout(self.model) != before:
            self.build_optimizer_and_estimator()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_plugins(state.get("plugins", {}))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_stream.load_state_dict(state["streams"]["train"])
        self.aux_stream.load_state_dict(state["streams"]["aux"])
        self.estimator.load_state_dict(state["estimator"])
        rng.set_state(state["rng"])
        self.carry = dict(state.get(CARRY) or {})
        loss_sum, loss_n = state["loss_acc"]
        self.progress = Progress(int(state["iteration"]), dict(state["best"]), float(loss_sum), int(loss_n),
                                 float(state["train_s"]), float(state["wall_s"]), dict(state["last"]))
        changed = sorted(k for k, v in state.get("config", {}).items() if self.opt.get(k) != v)
        if changed:
            self.log.warning(f"resuming with changed config keys: {', '.join(changed)}")

    def save_checkpoint(self) -> None:
        if is_main():
            checkpoint.save(self.run_dir, self.state_dict())

    # ---- one step and the periodic work ---------------------------------------------------------------

    def step(self, it: int) -> float:
        lr = lr_at(it, self.opt, self.epoch_iters, self.niters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.estimator.agree_on_stop(stop_signalled()):  # a rank got SIGTERM/SIGUSR2
            request_stop()
        self.estimator.on_step(it)
        grads, loss = self.estimator.grad()
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        self.plugins.after_step(it)
        return loss

    def end_epoch(self, epoch: int) -> None:
        """The plugins' epoch hook; a new optimizer and estimator when one of them changed the parameters."""
        changed = self.plugins.on_epoch_end(epoch, self.model)
        if changed:
            lr = self.rebuild_for_new_parameters()
            self.log.info(f"epoch {epoch}: plugin {', '.join(changed)} changed the parameters "
                          f"({sum(p.numel() for p in self.params)} values now); optimizer rebuilt at lr {lr:g}")

    def rebuild_for_new_parameters(self) -> float:
        """New optimizer and estimator over the current parameters, keeping the lr, the optimizer state of
        the parameters left as they were, and the estimator's state; returns the lr."""
        old_optimizer, estimator_state = self.optimizer, self.estimator.state_dict()
        lr = old_optimizer.param_groups[0]["lr"]
        self.build_optimizer_and_estimator()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _carry_optimizer_state(old_optimizer, self.optimizer)
        self.estimator.load_state_dict(estimator_state)
        return lr

    def log_scalars(self, logger: RunLogger, it: int) -> None:
        p = self.progress
        values = {"loss": p.loss_sum / max(p.loss_n, 1), "epoch": it / self.epoch_iters, "niters": float(it),
                  "lr": lr_at(it - 1, self.opt, self.epoch_iters, self.niters)}
        values.update(self.estimator.scalars())
        values.update(self.plugins.scalars())
        logger.scalars(values, it)
        p.loss_sum, p.loss_n = 0.0, 0

    def measure_variance(self, logger: RunLogger, it: int) -> None:
        from estim.gvar import measure_variance
        logger.scalars(measure_variance(self.estimator, self.opt["gvar_estim_iter"]), it)
        self.model.train()

    def evaluate(self, logger: RunLogger, it: int) -> None:
        opt, p = self.opt, self.progress
        vloss, vacc = evaluate(self.model, self.data, self.data.test, opt["test_batch_size"], self.device)
        logger.scalars({"Vloss": vloss, "Vacc": vacc, "Verror": 100.0 - vacc}, it)
        line = f"eval it {it}: Vloss {vloss:.4f} Vacc {vacc:.2f}%"
        if opt["train_accuracy"]:
            tloss, tacc = evaluate(self.model, self.data, self.data.train, opt["test_batch_size"], self.device)
            logger.scalars({"Tloss": tloss, "Tacc": tacc}, it)
            line += f" Tloss {tloss:.4f} Tacc {tacc:.2f}%"
        if p.best["Vacc"] is None or vacc > p.best["Vacc"]:
            p.best = {"Vacc": vacc, "iter": it}
        self.status.vacc = vacc
        self.model.train()
        self.log.info(line)

    # ---- the loop ----------------------------------------------------------------------------------------

    def checkpoint(self, logger: RunLogger) -> None:
        self.progress.wall_s = self._wall_before + time.monotonic() - self._session_start
        logger.flush()
        self.save_checkpoint()
        self.status.beat(self.progress.iteration, force=True)

    def report(self, logger: RunLogger, it: int, loss: float) -> None:
        """The periodic plain log line (with a forced heartbeat), else a heartbeat when one is due."""
        every = self.opt["log_interval"]
        if every > 0 and it % every == 0:
            self.log.progress(f"it {it}/{self.niters} epoch {it / self.epoch_iters:.2f} loss {loss:.4f} "
                              f"{self.progress.train_s / max(it, 1):.4f} s/it")
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            logger.flush()
            self.status.beat(it, force=True)
        else:
            self.status.beat(it)

    def stop(self, logger: RunLogger, saved: bool) -> None:
        """Honour request_stop(): checkpoint (unless just done), mark interrupted, raise Interrupted."""
        global _stop_requested
        _stop_requested = False
        it = self.progress.iteration
        if not saved:
            self.checkpoint(logger)
        self.status.write(runfiles.INTERRUPTED)
        self.log.info(f"stop requested: checkpoint saved at iteration {it}; relaunch to resume")
        raise Interrupted(f"stopped at iteration {it} of {self.niters}; checkpoint saved in {self.run_dir}")

    def fit(self, resumed: bool) -> dict[str, Any]:
        """Train from the current iteration to niters; the results dict. Time per iteration excludes
        evaluation, checkpoints and variance measurements."""
        opt, p = self.opt, self.progress
        logger = RunLogger(self.run_dir, resume_step=p.iteration if resumed else None)
        logger.last.update(p.last)
        p.last = logger.last
        from tqdm import tqdm
        self.bar = bar = tqdm(total=self.niters, initial=p.iteration, disable=not self.log.tty or not is_main(),
                              dynamic_ncols=True)
        self._session_start, self._wall_before = time.monotonic(), p.wall_s
        self.status.niters = self.niters
        self.status.beat(p.iteration, force=True)
        self.log.info(f"{'resuming at' if resumed else 'starting'} iteration {p.iteration}/{self.niters} on "
                      f"{self.device} ({opt['arch']} on {opt['dataset']}, g_estim {opt['g_estim']}"
                      f"{', plugins ' + opt['plugins'] if self.plugins else ''})")
        chkpt, tblog, gvar_every = opt["chkpt_iter"], opt["tblog_interval"], opt["gvar_log_iter"]
        try:
            self.model.train()
            it = p.iteration
            while it < self.niters:
                t0 = time.perf_counter()
                loss = self.step(it)
                it = p.iteration = it + 1
                p.loss_sum += loss
                p.loss_n += 1
                if self.plugins and it % self.epoch_iters == 0:
                    self.end_epoch(it // self.epoch_iters)
                if tblog > 0 and it % tblog == 0:
                    self.log_scalars(logger, it)
                bar.update(1)
                self.report(logger, it, loss)
                p.train_s += time.perf_counter() - t0
                if self.gvar and gvar_every > 0 and it >= opt["gvar_start"] and it % gvar_every == 0:
                    self.measure_variance(logger, it)
                saved = (chkpt > 0 and it % chkpt == 0) or it == self.niters
                if saved:
                    self.evaluate(logger, it)
                    self.checkpoint(logger)
                if self.on_iteration is not None:
                    self.on_iteration(it)
                if _stop_requested and it < self.niters:
                    self.stop(logger, saved)
        finally:
            bar.close()
            logger.close()
        p.wall_s = self._wall_before + time.monotonic() - self._session_start
        return {"status": runfiles.DONE, "niters": self.niters, "final": dict(p.last), "best": dict(p.best),
                "wall_s": p.wall_s, "step_s": p.train_s / self.niters, "peak_mem_mb": _peak_mem_mb(self.device)}


def run(config: dict[str, Any], run_dir: str | os.PathLike,
        on_iteration: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the run of `config` in `run_dir` (resuming its checkpoint) and return its results dict.

    A run whose results.json says done is returned unchanged. On an exception status.json says failed
    with the error's last line, the traceback goes to train.log, and the exception propagates.
    `on_iteration(it)` is called after each completed iteration (tests use it to stop at a given step).
    One trainer per folder: rank 0 holds the run lock throughout; when another live trainer holds it,
    `runlock.RunLocked` is raised before anything is written.
    """
    run_dir = Path(run_dir)
    if runfiles.is_done(run_dir):
        return runfiles.read_json(run_dir / runfiles.RESULTS) or {}
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = runlock.RunLock(run_dir).acquire() if is_main() else None  # RunLocked: nothing written
    try:
        return _run_locked(config, run_dir, on_iteration, lock)
    finally:
        if lock is not None:
            lock.release()


def _set_aside_corrupt_results(run_dir: Path, log: RunLog) -> dict[str, Any] | None:
    """A done results.json (another trainer finished just before we got the lock), else None; an unreadable
    one is renamed to results.json.corrupt-<time> (kept, not deleted) so the run finishes again."""
    path = run_dir / runfiles.RESULTS
    if not path.exists():
        return None
    results = runfiles.read_json(path)
    if results is not None:
        return results if results.get("status") == runfiles.DONE else None
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    log.warning(f"{path} was unreadable; moved to {aside.name}, finishing from the checkpoint")
    return None


def _run_locked(config: dict[str, Any], run_dir: Path, on_iteration: Callable[[int], None] | None,
                lock: runlock.RunLock | None) -> dict[str, Any]:
    """`run` once this process holds the run folder (rank 0) or is a rank of its holder."""
    if lock is not None:
        runfiles.remove_stale_temps(run_dir)
    log = RunLog(run_dir, tty=sys.stderr.isatty())
    status = StatusWriter(run_dir, niters=0, lease=lock)  # the real niters is known once the data is loaded
    try:
        done = _set_aside_corrupt_results(run_dir, log) if lock is not None else None
        if done is not None:
            return done
        status.write(runfiles.RUNNING)
        opt = full_config(config, run=run_dir.name)
        status.niters = opt["niters"]
        training = Training(opt, run_dir, log, status, on_iteration)
        write_repro(run_dir, str(training.device))
        state = checkpoint.load(run_dir, warn=log.warning)
        if state is not None:
            training.load_state_dict(state)
        else:
            start_from(training, run_dir)  # a stage's upstream weights, or init_checkpoint; else from scratch
        status.iteration = training.progress.iteration
        results = evaluate_only(training) if opt["eval_only"] else training.fit(resumed=state is not None)
        if is_main():
            runfiles.atomic_write_json(run_dir / runfiles.RESULTS, results)
        status.write(runfiles.DONE)
        log.info(f"done: final Vacc {results['final'].get('Vacc', float('nan')):.2f}%, best Vacc "
                 f"{results['best']['Vacc']:.2f}% at iteration {results['best']['iter']}, {results['step_s']:.4f} s/it")
        return results
    except Interrupted:
        raise
    except BaseException as err:
        text = str(err).strip()
        last = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
        log.file_only("run failed:\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__)))
        status.write(runfiles.FAILED, error=last)
        raise
    finally:
        log.close()
