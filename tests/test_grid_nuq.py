"""grids/nuq.py: the exact cifar10_resnet32 expansion (the paper's pjobs/resnet32.sh), our variants, digits."""
import argparse

import pytest

from launcher.grid import expand
from launcher.naming import config_hash, run_name
from launcher.registry import get_run, runs_of, load_family
from launcher.selection import select_runs
from trainer.options import validate_config

SHARED = {"dataset": "cifar10", "optim": "sgd", "arch": "resnet32", "batch_size": 128, "lr": 0.1,
          "chkpt_iter": 2000, "momentum": 0.9, "weight_decay": 1e-4, "niters": 80000,
          "lr_decay_epoch": "40000,60000", "train_accuracy": True, "gvar_log_iter": 100, "gvar_start": 0,
          "g_osnap_iter": "100,2000,10000", "g_bsnap_iter": 10000, "g_optim": True, "g_optim_start": 0}
QUANT = {"g_estim": "nuq", "nuq_bits": 3, "nuq_bucket_size": 8192, "nuq_ngpu": 4, "dist_num": 50,
         "nuq_layer": True, "nuq_ig_sm_bkts": True, "nuq_truncated_interval": 1.0, "nuq_number_of_samples": 10}
EXPECTED_RESNET32 = [
    {**SHARED, "g_estim": "sgd"},
    {**SHARED, **QUANT, "nuq_method": "amq", "nuq_amq_lr": 0.7, "nuq_amq_epochs": 40},
    {**SHARED, **QUANT, "nuq_method": "amq_nb", "nuq_amq_lr": 0.7, "nuq_amq_epochs": 40},
    {**SHARED, **QUANT, "nuq_method": "alq", "nuq_cd_epochs": 30},
    {**SHARED, **QUANT, "nuq_method": "qinf"},
    {**SHARED, **QUANT, "nuq_method": "trn"},
    {**SHARED, **QUANT, "nuq_method": "alq_nb", "nuq_cd_epochs": 30},
    {**SHARED, **QUANT, "nuq_method": "nuq", "nuq_mul": 0.5},
    {**SHARED, "g_estim": "nuq", "nuq_truncated_interval": 1.0, "nuq_number_of_samples": 10, "nuq_ngpu": 4,
     "nuq_ig_sm_bkts": True, "nuq_method": "none"},
]
# Keys the issue names as excluded from run names.
EXCLUDED = {"dataset", "epochs", "lr_decay_epoch", "g_epoch", "pretrained", "niters", "epoch_iters",
            "gvar_log_iter", "gvar_start", "g_bsnap_iter", "g_optim_start", "nuq_truncated_interval",
            "train_accuracy", "nuq_number_of_samples", "chkpt_iter", "g_osnap_iter"}


def select(run, **kw):
    args = argparse.Namespace(grid="nuq", run=run, only=kw.get("only", []), set=kw.get("set", []),
                              limit=kw.get("limit"), root=kw.get("root", "runs"))
    return select_runs(args)


def test_cifar10_resnet32_is_exactly_the_nine_paper_runs_in_order():
    selection = select("cifar10_resnet32")
    assert [r.config for r in selection.runs] == EXPECTED_RESNET32
    assert [r.index for r in selection.runs] == list(range(9))
    assert set(selection.meta.exclude) == EXCLUDED


def test_cifar10_resnet32_names():
    """Names show only the keys the grid sweeps (issue 22: not optim_sgd,arch_resnet32,lr_0.1,...); the
    hash of the whole config keeps them unique."""
    runs = select("cifar10_resnet32").runs
    names = [r.name for r in runs]
    assert len(set(names)) == 9
    swept = {"g_estim", "nuq_method"}
    for run, expected in zip(runs, EXPECTED_RESNET32):
        assert run.name == run_name(expected, EXCLUDED, swept)
        assert run.name.endswith("," + config_hash(expected))
    assert [n.rsplit(",", 1)[0] for n in names] == ["g_estim_sgd"] + [
        f"g_estim_nuq,nuq_method_{m}" for m in ("amq", "amq_nb", "alq", "qinf", "trn", "alq_nb", "nuq", "none")]


def test_our_variants():
    r110 = select("ours_cifar10_resnet110").runs
    assert len(r110) == 9 and {r.config["arch"] for r in r110} == {"resnet110"}
    assert all(r.config["dist_num"] == 150 and r.config["nuq_bucket_size"] == 16384
               for r in r110[1:8])
    r8 = select("ours_cifar10_resnet8").runs
    assert [r.config.get("nuq_method") for r in r8] == [
        None, "amq", "amq_nb", "alq", "qinf", "trn", "alq_nb", "nuq", "alqg", "alqg_nb", "none"]
    assert all(r.config["dist_num"] == 80 for r in r8[1:10])
    assert r8[8].config["nuq_cd_epochs"] == 30


def test_the_papers_own_grids_are_not_repeated_here():
    assert set(runs_of(load_family("nuq"))) == {"cifar10_resnet32", "ours_cifar10_resnet110",
                                               "ours_cifar10_resnet8", "digits"}


def test_digits_main_job():
    runs = select("digits").runs
    assert len(runs) == 20
    methods = [(r.config["g_estim"], r.config.get("nuq_method"), r.config["seed"]) for r in runs]
    expected_methods = ["none", "q", "qinf", "nuq", "trn", "alq", "alq_nb", "amq", "amq_nb"]
    assert methods == [("sgd", None, 1), ("sgd", None, 2)] + [
        ("nuq", m, s) for m in expected_methods for s in (1, 2)]
    for run in runs:
        c = run.config
        assert (c["dataset"], c["arch"], c["batch_size"], c["lr"]) == ("digits", "digits_mlp", 32, 0.05)
        if c["g_estim"] == "nuq":
            assert (c["nuq_bits"], c["nuq_ngpu"], c["nuq_bucket_size"], c["nuq_layer"]) == (3, 4, 64, True)
            assert ("nuq_cd_epochs" in c) == c["nuq_method"].startswith("alq")
            assert ("nuq_amq_epochs" in c) == c["nuq_method"].startswith("amq")
    assert runs[0].name.startswith("g_estim_sgd,seed_1,")


@pytest.mark.parametrize("run", list(runs_of(load_family("nuq"))))
def test_every_registered_grid_validates(run):
    spec = get_run("nuq", run)
    configs = expand(spec.grid)
    assert configs, run
    for i, config in enumerate(configs):
        validate_config(config, f"nuq.{run}[{i}]")  # raises on an unknown key or a wrong type
    names = [run_name(validate_config(c), spec.exclude) for c in configs]
    assert len(set(names)) == len(names)
