"""The trainer's typed option schema: the one source the launcher validates grids against.

Names and defaults follow the paper's code (ALQ/AMQ, NeurIPS 2020) so its grids expand unchanged.
This module must stay import-light (no torch): the launcher imports it to validate 10,000-run grids.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from estim.names import DDP_HOOKS, ESTIMATORS
from nuq.limits import MAX_BUCKET_SIZE
from nuq.names import METHODS as NUQ_METHODS
from nuq.schedule import parse_int_list  # noqa: F401  (part of this module's interface; torch-free)
from trainer.names import DATASETS, LR_SCHEDULES, OPTIMIZERS

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
    min: float | None = None   # inclusive lower bound (numbers)
    max: float | None = None   # inclusive upper bound (numbers)
    open_min: bool = False     # the lower bound itself is excluded (e.g. nuq_mul in (0, 1))
    open_max: bool = False

    def range_text(self) -> str:
        """'1..8', '>= 1', '> 0', '(0, 1)' or '' when unbounded."""
        lo, hi = (None if b is None else str(int(b)) if float(b).is_integer() else f"{b:g}"
                  for b in (self.min, self.max))
        if lo is not None and hi is not None:
            if self.open_min or self.open_max:
                return f"{'(' if self.open_min else '['}{lo}, {hi}{')' if self.open_max else ']'}"
            return f"{lo}..{hi}"
        if lo is not None:
            return f"{'>' if self.open_min else '>='} {lo}"
        if hi is not None:
            return f"{'<' if self.open_max else '<='} {hi}"
        return ""


class ConfigError(ValueError):
    """A config key or value the trainer cannot accept; the message names run, key and fix."""


# choices of registries come from their torch-free name tables (estim/names.py, nuq/names.py, trainer/names.py)

# How a researcher names the choices (plots and tables): the paper's names; "-N" is the norm-based variant.
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "g_estim": {"sgd": "SGD", "nuq": "quantized SGD", "nuq_dist": "quantized SGD (distributed)"},
    "nuq_method": {"none": "SuperSGD", "q": "QSGD", "qinf": "QSGD-inf", "nuq": "NUQSGD", "trn": "TernGrad",
                   "alq": "ALQ", "alq_nb": "ALQ-N", "alqg": "ALQG", "alqg_nb": "ALQG-N", "amq": "AMQ",
                   "amq_nb": "AMQ-N"},
}


def method_label(config: Mapping[str, Any]) -> str:
    """'SGD', 'QSGD', 'AMQ-N', 'SuperSGD'...: the method a run trains with, as the paper names it."""
    estim = config.get("g_estim", OPTIONS["g_estim"].default)
    if estim not in QUANTIZED_ESTIMATORS:
        return CHOICE_LABELS["g_estim"].get(estim, str(estim))
    method = config.get("nuq_method", OPTIONS["nuq_method"].default)
    label = CHOICE_LABELS["nuq_method"].get(method, str(method))
    return label + (" (distributed)" if estim == "nuq_dist" else "")


_OPTIONS = [
    # data and model
    Option("dataset", "str", "digits", "Dataset name.", DATASETS),
    Option("data", "str", "./data", "Folder holding the dataset files (unused for digits and synthetic data)."),
    Option("arch", "str", "digits_mlp", "Model name from the model registry (trainer/names.py MODELS, wrn<depth>-<k>); "
           "an unregistered one stops a launch, a dry-run warns."),
    Option("pretrained", "bool", False, "Start from pretrained weights (kept for the paper's grids; unsupported offline)."),
    Option("batch_size", "int", 128, "Minibatch size per (simulated) worker.", min=1),
    Option("test_batch_size", "int", 1000, "Batch size for evaluation.", min=1),
    # optimisation
    Option("optim", "str", "sgd", "Optimizer.", OPTIMIZERS),
    Option("lr", "float", 0.1, "Learning rate.", min=0),
    Option("momentum", "float", 0.9, "SGD momentum.", min=0),
    Option("nesterov", "bool", False, "Nesterov momentum."),
    Option("weight_decay", "float", 5e-4, "L2 weight decay.", min=0),
    Option("wd_norm", "bool", True, "Weight decay on normalization layers' parameters too (false: none on them, "
           "as ActNN's recipe's no-bn-weight-decay)."),
    Option("niters", "int", 0, "Training iterations (0: epochs x epoch_iters).", min=0),
    Option("epochs", "int", 10, "Epochs, used when niters is 0.", min=0),
    Option("epoch_iters", "int", 0, "Iterations per epoch (0: dataset size / batch size).", min=0),
    Option("lr_decay_epoch", "milestones", "", "Decay lr x lr_decay_rate every N iterations, or at a comma list of iterations."),
    Option("lr_decay_rate", "float", 0.1, "Learning-rate decay factor.", min=0, open_min=True),
    Option("lr_schedule", "str", "step", "step: lr_decay_epoch/lr_decay_rate; cosine: per-epoch cosine from lr to 0 "
           "over the epochs after the warmup (lr_decay_epoch must be empty).", LR_SCHEDULES),
    Option("lr_warmup_epochs", "int", 0, "Epochs of linear warmup, lr (e + 1) / W in epoch e < W, before either "
           "schedule.", min=0),
    Option("seed", "int", 1, "Random seed; a CPU run is bit-for-bit repeatable for a seed.", min=0),
    Option("no_cuda", "bool", False, "Force CPU even when CUDA is available."),
    # logging and checkpoints
    Option("log_interval", "int", 50, "Iterations between plain log lines (0: off).", min=0),
    Option("tblog_interval", "int", 100, "Iterations between TensorBoard/metrics.jsonl scalars (0: off).", min=0),
    Option("chkpt_iter", "int", 2000, "Iterations between evaluation + checkpoint (0: off).", min=0),
    Option("train_accuracy", "bool", False, "Also evaluate on the training set (Tloss, Tacc)."),
    # gradient estimator
    Option("g_estim", "str", "sgd", "Gradient estimator.", ESTIMATORS),
    Option("g_epoch", "bool", False, "Paper flag: estimator epochs (kept for grid compatibility)."),
    Option("gvar_log_iter", "int", 100, "Iterations between gradient-variance measurements (0: off).", min=0),
    Option("gvar_start", "int", 0, "Iteration from which variance is measured and levels are adapted.", min=0),
    Option("gvar_estim_iter", "int", 10, "Samples used per gradient-variance measurement.", min=2),
    Option("g_osnap_iter", "intlist", "100,2000,10000", "Level re-fit iterations: listed ones, then every last value."),
    Option("g_bsnap_iter", "int", 10000, "Paper flag: snapshot interval (kept for grid compatibility).", min=0),
    Option("g_optim", "bool", False, "Adapt the quantization levels during training."),
    Option("g_optim_start", "int", 0, "Iteration from which the levels are adapted.", min=0),
    Option("ddp_hook", "str", "allreduce", "g_estim=ddp_hook: PyTorch DDP communication hook.", DDP_HOOKS),
    Option("ddp_powersgd_rank", "int", 1, "g_estim=ddp_hook, ddp_hook=powersgd: PowerSGD matrix approximation rank.",
           min=1),
    # quantization
    Option("nuq_method", "str", "q", "Quantization method.", NUQ_METHODS),
    Option("nuq_bits", "int", 4, "Bits per coordinate (2^bits levels).", min=1, max=8),
    Option("nuq_bucket_size", "int", 1024, "Values per bucket; each bucket has its own norm.",
           min=1, max=MAX_BUCKET_SIZE),
    Option("nuq_ngpu", "int", 1, "Simulated workers: minibatches quantized independently and averaged.", min=1),
    Option("nuq_mul", "float", 0.5, "Multiplier of the exponential (NUQSGD) levels.",
           min=0, max=1, open_min=True, open_max=True),
    Option("nuq_amq_lr", "float", 0.7, "AMQ: learning rate of the multiplier.", min=0),
    Option("nuq_amq_epochs", "int", 50, "AMQ: gradient steps on the multiplier.", min=0),
    Option("nuq_cd_epochs", "int", 30, "ALQ: coordinate-descent sweeps.", min=0),
    Option("dist_num", "int", 100, "Buckets with the largest norms kept for the norm-based fits.", min=1),
    Option("nuq_layer", "bool", False, "Network-wide quantization: flatten all layers into one vector before bucketing."),
    Option("nuq_ig_sm_bkts", "bool", False, "Pass a final partial bucket through unquantized."),
    Option("nuq_truncated_interval", "float", 1.0, "Truncation interval [-t, t] of the fitted normals.", min=0, open_min=True),
    Option("nuq_number_of_samples", "int", 10, "Minibatch gradients sampled per level update.", min=1),
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

    `options`: key -> (kind, default, help[, choices[, min, max]]); every key is `<name>_...`. Shipped plugins are
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
    from trainer.plugins import shipped_effects, shipped_options  # torch-free: only the <name>_options modules
    for name, options in shipped_options().items():
        declare_plugin(name, options)
    EFFECT_RULES.extend(EffectRule(key, applies, needs) for key, (applies, needs) in shipped_effects().items())


def defaults() -> dict[str, Any]:
    """Every option at its default value."""
    return {name: opt.default for name, opt in OPTIONS.items()}


def _in_range(opt: Option, value: float) -> Any:
    """value itself, or ValueError naming the accepted range."""
    lo_bad = opt.min is not None and (value <= opt.min if opt.open_min else value < opt.min)
    hi_bad = opt.max is not None and (value >= opt.max if opt.open_max else value > opt.max)
    if lo_bad or hi_bad or value != value:  # value != value: NaN
        raise ValueError(f"{value!r} is outside the accepted range {opt.range_text()}")
    return value


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
        return _in_range(opt, value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
        return _in_range(opt, float(value))
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
    if out.get("lr_schedule") == "cosine" and out.get("lr_decay_epoch") not in (None, ""):
        raise ConfigError(f"run {run}: lr_decay_epoch {out['lr_decay_epoch']!r} is a step-decay setting but "
                          "lr_schedule is 'cosine'; drop lr_decay_epoch or use lr_schedule 'step'")
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


ADAPTIVE_METHODS = ("alq", "alq_nb", "alqg", "alqg_nb", "amq", "amq_nb")
QUANTIZED_ESTIMATORS = ("nuq", "nuq_dist")


@dataclass(frozen=True)
class EffectRule:
    """`key` changes a run only when `applies(full config)` holds; `needs` says what must be set for that."""
    key: str
    applies: Callable[[Mapping[str, Any]], bool]
    needs: str


def _adapts(methods: tuple[str, ...]) -> Callable[[Mapping[str, Any]], bool]:
    return lambda c: c["g_estim"] in QUANTIZED_ESTIMATORS and c["nuq_method"] in methods and bool(c["g_optim"])


_AMQ, _ALQ = ("amq", "amq_nb"), ("alq", "alq_nb", "alqg", "alqg_nb")
EFFECT_RULES = [  # shipped plugins add theirs (their options module's EFFECTS) when they are declared
    EffectRule("nuq_amq_lr", _adapts(_AMQ), "g_optim (and nuq_method amq or amq_nb)"),
    EffectRule("nuq_amq_epochs", _adapts(_AMQ), "g_optim (and nuq_method amq or amq_nb)"),
    EffectRule("nuq_cd_epochs", _adapts(_ALQ), "g_optim (and nuq_method alq, alq_nb, alqg or alqg_nb)"),
]


class _WithDefaults(dict):
    """A config read with the schema's defaults for the keys it does not set (no copy per config)."""

    def __missing__(self, key: str) -> Any:
        return OPTIONS[key].default


def ineffective_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """{key: what to set} for the keys a config sets that cannot change its run given the other keys."""
    rules = [r for r in EFFECT_RULES if r.key in config]
    if not rules:  # the common case: a 10,000-config grid pays one set lookup per rule
        return {}
    full = _WithDefaults(config)
    return {r.key: r.needs for r in rules if not r.applies(full)}


def frozen_adaptive_method(config: Mapping[str, Any]) -> str | None:
    """The adaptive nuq_method of a quantized run without g_optim (its levels then never adapt: they stay
    the method's initial ones, as the paper's own grids sometimes have it), else None."""
    full = _WithDefaults(config)
    if full["g_estim"] in QUANTIZED_ESTIMATORS and full["nuq_method"] in ADAPTIVE_METHODS and not full["g_optim"]:
        return full["nuq_method"]
    return None


def parse_milestones(value: str | int) -> tuple[int | None, list[int]]:
    """'40000,60000' -> (None, [40000, 60000]); '30' or 30 -> (30, []); '' -> (None, [])."""
    if isinstance(value, int):
        return value, []
    items = parse_int_list(value)
    if len(items) == 1 and "," not in value:
        return items[0], []
    return None, items


_declare_shipped_plugins()  # last: declaring checks each default with _coerce
