"""The trainer's typed option schema: the one source the launcher validates grids against.

Names and defaults follow the paper's code (ALQ/AMQ, NeurIPS 2020) so its grids expand unchanged.
This module must stay import-light (no torch): the launcher imports it to validate 10,000-run grids.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Mapping

from estim.names import DDP_HOOKS, ESTIMATORS
from nuq.limits import MAX_BUCKET_SIZE
from nuq.names import METHODS as NUQ_METHODS
from nuq.schedule import parse_int_list  # noqa: F401  (part of this module's interface; torch-free)
from trainer.names import DATASETS, OPTIMIZERS

# Value kinds. "milestones" is an int (decay every N) or a comma list of ints ("40000,60000");
# "intlist" is a comma list of ints ("100,2000,10000") or a single int; "names" is a comma list of names
# from the option's choices ("l1clip,widen"), '' for none.
KINDS = ("int", "float", "str", "bool", "milestones", "intlist", "names")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    bounds: tuple[int, int] | None = None  # an int option's accepted range, both ends included


class ConfigError(ValueError):
    """A config key or value the trainer cannot accept; the message names run, key and fix."""


# choices of registries come from their torch-free name tables (estim/names.py, nuq/names.py, trainer/names.py)

_OPTIONS = [
    # data and model
    Option("dataset", "str", "digits", "Dataset name.", DATASETS),
    Option("data", "str", "./data", "Folder holding the dataset files (unused for digits and synthetic data)."),
    Option("arch", "str", "digits_mlp", "Model name from the model registry."),
    Option("pretrained", "bool", False, "Start from pretrained weights (kept for the paper's grids; unsupported offline)."),
    Option("batch_size", "int", 128, "Minibatch size per (simulated) worker."),
    Option("test_batch_size", "int", 1000, "Batch size for evaluation."),
    # optimisation
    Option("optim", "str", "sgd", "Optimizer.", OPTIMIZERS),
    Option("lr", "float", 0.1, "Learning rate."),
    Option("momentum", "float", 0.9, "SGD momentum."),
    Option("nesterov", "bool", False, "Nesterov momentum."),
    Option("weight_decay", "float", 5e-4, "L2 weight decay."),
    Option("niters", "int", 0, "Training iterations (0: epochs x epoch_iters)."),
    Option("epochs", "int", 10, "Epochs, used when niters is 0."),
    Option("epoch_iters", "int", 0, "Iterations per epoch (0: dataset size / batch size)."),
    Option("lr_decay_epoch", "milestones", "", "Decay lr x lr_decay_rate every N iterations, or at a comma list of iterations."),
    Option("lr_decay_rate", "float", 0.1, "Learning-rate decay factor."),
    Option("seed", "int", 1, "Random seed; a CPU run is bit-for-bit repeatable for a seed."),
    Option("no_cuda", "bool", False, "Force CPU even when CUDA is available."),
    # logging and checkpoints
    Option("log_interval", "int", 50, "Iterations between plain log lines."),
    Option("tblog_interval", "int", 100, "Iterations between TensorBoard/metrics.jsonl scalars."),
    Option("chkpt_iter", "int", 2000, "Iterations between evaluation + checkpoint."),
    Option("train_accuracy", "bool", False, "Also evaluate on the training set (Tloss, Tacc)."),
    # gradient estimator
    Option("g_estim", "str", "sgd", "Gradient estimator.", ESTIMATORS),
    Option("g_epoch", "bool", False, "Paper flag: estimator epochs (kept for grid compatibility)."),
    Option("gvar_log_iter", "int", 100, "Iterations between gradient-variance measurements."),
    Option("gvar_start", "int", 0, "Iteration from which variance is measured and levels are adapted."),
    Option("gvar_estim_iter", "int", 10, "Samples used per gradient-variance measurement."),
    Option("g_osnap_iter", "intlist", "100,2000,10000", "Level re-fit iterations: listed ones, then every last value."),
    Option("g_bsnap_iter", "int", 10000, "Paper flag: snapshot interval (kept for grid compatibility)."),
    Option("g_optim", "bool", False, "Adapt the quantization levels during training."),
    Option("g_optim_start", "int", 0, "Iteration from which the levels are adapted."),
    Option("ddp_hook", "str", "allreduce", "g_estim=ddp_hook: PyTorch DDP communication hook.", DDP_HOOKS),
    Option("ddp_powersgd_rank", "int", 1, "g_estim=ddp_hook, ddp_hook=powersgd: PowerSGD matrix approximation rank."),
    # quantization
    Option("nuq_method", "str", "q", "Quantization method.", NUQ_METHODS),
    Option("nuq_bits", "int", 4, "Bits per coordinate (2^bits levels)."),
    Option("nuq_bucket_size", "int", 1024, "Values per bucket; each bucket has its own norm.",
           bounds=(1, MAX_BUCKET_SIZE)),
    Option("nuq_ngpu", "int", 1, "Simulated workers: minibatches quantized independently and averaged."),
    Option("nuq_mul", "float", 0.5, "Multiplier of the exponential (NUQSGD) levels."),
    Option("nuq_amq_lr", "float", 0.7, "AMQ: learning rate of the multiplier."),
    Option("nuq_amq_epochs", "int", 50, "AMQ: gradient steps on the multiplier."),
    Option("nuq_cd_epochs", "int", 30, "ALQ: coordinate-descent sweeps."),
    Option("dist_num", "int", 100, "Buckets with the largest norms kept for the norm-based fits."),
    Option("nuq_layer", "bool", False, "Network-wide quantization: flatten all layers into one vector before bucketing."),
    Option("nuq_ig_sm_bkts", "bool", False, "Pass a final partial bucket through unquantized."),
    Option("nuq_truncated_interval", "float", 1.0, "Truncation interval [-t, t] of the fitted normals."),
    Option("nuq_number_of_samples", "int", 10, "Minibatch gradients sampled per level update."),
    Option("nuq_sym", "bool", False, "Keep adapted levels symmetric about 0."),
    Option("nuq_inv", "bool", False, "ALQ: closed-form inverse update instead of the numerical step."),
    Option("nuq_clip", "bool", False, "TernGrad clipping of normalised values at 2.5 standard deviations."),
    # stages: runs that start from other runs (docs/grids.md, "Stages")
    Option("stage", "str", "", "Stage of a multi-stage grid this run belongs to (e.g. 'pretrain'); '' for none."),
    Option("init_from", "str", "", "Stage whose matching run's final weights this run starts from (set by the grid)."),
    Option("init_run", "str", "", "Upstream run folder (a sibling) whose checkpoint.pt is loaded; set by the launcher "
           "from init_from, part of the run's identity."),
    Option("init_checkpoint", "str", "", "A checkpoint file to start from (model weights and carried plugin state; "
           "not the optimizer or the iteration)."),
    Option("eval_only", "bool", False, "Load the weights (init_from/init_checkpoint), evaluate, write results.json; "
           "no training."),
    # plugins (trainer/plugins/, docs/plugins.md); their own options follow, each named <plugin>_...
    Option("plugins", "names", "", "Trainer plugins to enable, a comma list, hooks called in this order."),
]

OPTIONS: dict[str, Option] = {o.name: o for o in _OPTIONS}
PLUGINS: list[str] = []  # declared plugin names: the table the plugin registry accepts
PLUGIN_OF: dict[str, str] = {}  # option key -> the plugin that declared it


def declare_plugin(name: str, options: Mapping[str, tuple]) -> None:
    """Add plugin `name` to the `plugins` choices and its options to the schema.

    `options`: key -> (kind, default, help[, choices]); every key is `<name>_...`. Shipped plugins are
    declared from their torch-free `trainer/plugins/<name>_options.py`; tests declare their own here.
    """
    if not name.isidentifier() or name in PLUGINS:
        raise ValueError(f"plugin name {name!r} is not an identifier or is declared twice")
    bad = [key for key in options if not key.startswith(name + "_") or key in OPTIONS]
    if bad:
        raise ValueError(f"plugin {name!r}: option keys {', '.join(bad)} must start with '{name}_' and be new")
    declared = {key: Option(key, spec[0], spec[1], f"Plugin {name}: {spec[2]}", *spec[3:])
                for key, spec in options.items()}
    for option in declared.values():
        if option.kind not in KINDS:
            raise ValueError(f"plugin {name!r}: option {option.name} has kind {option.kind!r}; "
                             f"one of {', '.join(KINDS)}")
        try:
            _coerce(option, option.default)
        except (TypeError, ValueError) as err:
            raise ValueError(f"plugin {name!r}: default of {option.name}: {err}") from None
    OPTIONS.update(declared)
    PLUGIN_OF.update(dict.fromkeys(declared, name))
    PLUGINS.append(name)
    OPTIONS["plugins"] = replace(OPTIONS["plugins"], choices=tuple(PLUGINS))


def _declare_shipped_plugins() -> None:
    from trainer.plugins import shipped_options  # torch-free: only the <name>_options modules
    for name, options in shipped_options().items():
        declare_plugin(name, options)


def defaults() -> dict[str, Any]:
    """Every option at its default value."""
    return {name: opt.default for name, opt in OPTIONS.items()}


def _coerce(opt: Option, value: Any) -> Any:
    """Return value converted to opt's kind, or raise TypeError/ValueError with a short reason."""
    kind = opt.kind
    if kind == "bool":
        if value == "" or value is True:  # the paper writes flags as ''
            return True
        if value is False or value is None:
            return False
        raise TypeError(f"expected a flag (True, False or ''), got {value!r}")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an int, got {type(value).__name__} {value!r}")
        if opt.bounds and not opt.bounds[0] <= value <= opt.bounds[1]:
            raise ValueError(f"{value} is outside the accepted range {opt.bounds[0]}..{opt.bounds[1]}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
        if opt.choices and value not in opt.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(opt.choices)}")
        return value
    if kind in ("milestones", "intlist"):
        if isinstance(value, bool):
            raise TypeError(f"expected an int or a comma list of ints, got {value!r}")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            try:
                parse_int_list(value)
            except ValueError:
                raise ValueError(f"expected an int or a comma list of ints, got {value!r}") from None
            return value
        raise TypeError(f"expected an int or a comma list of ints, got {type(value).__name__} {value!r}")
    if kind == "names":
        return _names(opt, value)
    raise AssertionError(f"unknown option kind {kind}")


def parse_names(value: str) -> list[str]:
    """'l1clip, widen' -> ['l1clip', 'widen']; '' -> []."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _names(opt: Option, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a comma list of names, got {type(value).__name__} {value!r}")
    names, known = parse_names(value), opt.choices or ()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {', '.join(map(repr, unknown))}; one of: {', '.join(known) or '(none declared)'}")
    if len(set(names)) < len(names):
        raise ValueError(f"{value!r} names a plugin twice")
    return ",".join(names)


def closest_keys(key: str, n: int = 3) -> list[str]:
    return difflib.get_close_matches(key, list(OPTIONS), n=n, cutoff=0.5)


def validate_config(config: Mapping[str, Any], run: str = "<config>") -> dict[str, Any]:
    """Check every key and type, and that each plugin option's plugin is enabled; return the config with
    values normalised (flags to bool, ints to floats...).

    Keys not given keep their defaults only in `full_config`; this returns just the given keys so run
    identity is what the grid wrote.
    """
    out = {key: validate_value(key, value, run) for key, value in config.items()}
    enabled = parse_names(out.get("plugins", ""))
    for key in out:
        owner = PLUGIN_OF.get(key)
        if owner is not None and owner not in enabled:
            raise ConfigError(f"run {run}: {key!r} is an option of plugin {owner!r}, which is not enabled; "
                              f"add {owner} to plugins (plugins={','.join([*enabled, owner])!r})")
    return out


def validate_value(key: str, value: Any, run: str = "<config>") -> Any:
    """One key's value checked and normalised (what --set validates before the whole config exists)."""
    opt = OPTIONS.get(key)
    if opt is None:
        near = closest_keys(key)
        hint = f"; did you mean {', '.join(near)}?" if near else "; see `launch options` for the valid keys"
        raise ConfigError(f"run {run}: unknown config key {key!r}{hint}")
    try:
        return _coerce(opt, value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"run {run}: bad value for {key!r}: {err}") from None


def full_config(config: Mapping[str, Any], run: str = "<config>") -> dict[str, Any]:
    """Defaults overlaid with the validated config: what the trainer actually runs with."""
    merged = defaults()
    merged.update(validate_config(config, run))
    return merged


def parse_milestones(value: str | int) -> tuple[int | None, list[int]]:
    """'40000,60000' -> (None, [40000, 60000]); '30' or 30 -> (30, []); '' -> (None, [])."""
    if isinstance(value, int):
        return value, []
    items = parse_int_list(value)
    if len(items) == 1 and "," not in value:
        return items[0], []
    return None, items


_declare_shipped_plugins()  # last: declaring checks each default with _coerce
