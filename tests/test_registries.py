"""Registries: the torch-free name tables the option schema offers agree with what is registered, a name is
registered once, and an unknown optimizer is an error (it used to become Adam silently)."""
import subprocess
import sys

import pytest
import torch

import estim
import estim.base
import nuq.fit_base
import nuq.levels
import trainer.data
import trainer.models
import trainer.optim
import trainer.schedule
from estim.names import ESTIMATORS
from nuq.adaptive import METHODS as ADAPTIVE_FITS
from nuq.names import ADAPTIVE, METHODS
from trainer.names import DATASETS, LR_SCHEDULES, MODEL_PATTERNS, MODELS, OPTIMIZERS
from trainer.options import OPTIONS


def test_option_choices_are_the_registries():
    estim.load_all()
    assert set(estim.base._REGISTRY) == set(ESTIMATORS) == set(OPTIONS["g_estim"].choices)
    assert set(nuq.levels.METHODS) == set(METHODS) == set(OPTIONS["nuq_method"].choices)
    assert set(ADAPTIVE_FITS) == set(ADAPTIVE) == {m for m, v in nuq.levels.METHODS.items() if v.adaptive}
    assert set(trainer.data.list_datasets()) == set(DATASETS) == set(OPTIONS["dataset"].choices)
    assert set(trainer.optim.registered()) == set(OPTIMIZERS) == set(OPTIONS["optim"].choices)
    assert set(trainer.schedule.registered()) == set(LR_SCHEDULES) == set(OPTIONS["lr_schedule"].choices)
    assert set(trainer.models.list_models()) == set(MODELS) | {shown for shown, _ in MODEL_PATTERNS}


def test_the_option_schema_stays_torch_free():
    code = "import sys, trainer.options; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("register,name", [
    (lambda n: estim.base.register_estimator(n)(type("E", (estim.base.GradientEstimator,), {})), "nuq"),
    (lambda n: trainer.data.register_dataset(n)(lambda folder: None), "digits"),
    (lambda n: trainer.optim.register_optimizer(n)(lambda params, opt: None), "sgd"),
    (lambda n: trainer.models.register_model(n)(lambda classes, shape: None), "digits_mlp"),
    (lambda n: nuq.fit_base.register_fitter(n, True)(lambda d, b, o: None), "alq"),
])
def test_a_name_is_registered_once(register, name):
    with pytest.raises(ValueError, match=f"{name!r} is already registered"):
        register(name)


@pytest.mark.parametrize("register,table", [
    (lambda n: estim.base.register_estimator(n)(type("E", (estim.base.GradientEstimator,), {})), "ESTIMATORS"),
    (lambda n: trainer.data.register_dataset(n)(lambda folder: None), "DATASETS"),
    (lambda n: trainer.optim.register_optimizer(n)(lambda params, opt: None), "OPTIMIZERS"),
    (lambda n: nuq.fit_base.register_fitter(n, True)(lambda d, b, o: None), "ADAPTIVE"),
    (lambda n: trainer.models.register_model(n)(lambda classes, shape: None), "MODELS"),
    (lambda n: trainer.models.register_pattern(n + r"(\d+)", n + "<d>"), "MODEL_PATTERNS"),
])
def test_a_name_outside_the_schema_table_is_refused(register, table):
    with pytest.raises(ValueError, match=f"not in .*{table}; add it there"):
        register("not_offered")


def test_unknown_optimizer_is_an_error_not_adam():
    model = torch.nn.Linear(3, 2)
    opt = {"optim": "rmsprop", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "wd_norm": True}
    with pytest.raises(ValueError, match="unknown optim 'rmsprop'; registered: adam, sgd"):
        trainer.optim.make_optimizer(opt, model)
    assert isinstance(trainer.optim.make_optimizer(dict(opt, optim="adam"), model), torch.optim.Adam)
    assert isinstance(trainer.optim.make_optimizer(dict(opt, optim="sgd"), model), torch.optim.SGD)
