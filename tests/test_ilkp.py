"""The `ilkp` plugin (inter-layer kernel sharing): the fit against brute force, quantizer, storage, v2f,
post-hoc use from another run's weights, and exact resume across a refit epoch."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from trainer import loop, runfiles  # noqa: E402
from trainer.options import full_config  # noqa: E402
from trainer.plugins import ilkp_fit  # noqa: E402
from trainer.plugins.base import get_plugin_class  # noqa: E402
from test_trainer_loop import _metrics, _stop_at  # noqa: E402

TOL = 1e-4  # float32 sums of 9 products of O(1) numbers: relative errors ~1e-6; generous margin


def _layer(n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 9, generator=g), torch.randn(m, 9, generator=g)


def _lstsq(c, r, beta=True):
    """Brute-force least squares of one kernel on one reference (float64)."""
    c, r = c.detach(), r.detach()
    design = torch.stack([r.double(), torch.ones(9, dtype=torch.float64)], 1) if beta else r.double()[:, None]
    sol = torch.linalg.lstsq(design, c.double()[:, None]).solution[:, 0]
    return float(sol[0]), float(sol[1]) if beta else 0.0


@pytest.mark.parametrize("beta", [True, False])
def test_alpha_beta_are_the_closed_form_least_squares_fit(beta):
    cur, ref = _layer(6, 5)
    alpha, b = ilkp_fit.pair_fits(cur, ref, beta=beta)
    for i in range(6):
        for j in range(5):
            a_ls, b_ls = _lstsq(cur[i], ref[j], beta)
            assert alpha[i, j] == pytest.approx(a_ls, abs=TOL) and b[i, j] == pytest.approx(b_ls, abs=TOL)


@pytest.mark.parametrize("match", ["l1", "abs_pcc"])
def test_the_chosen_reference_optimises_the_criterion_by_brute_force(match):
    cur, ref = _layer(40, 7, seed=1)
    f = ilkp_fit.fit(cur, ref, match=match)
    for i in range(40):
        if match == "l1":
            scores = []
            for j in range(7):
                a, b = _lstsq(cur[i], ref[j])
                scores.append(float((a * ref[j].double() + b - cur[i].double()).abs().sum()))
            assert scores[int(f.idx[i])] <= min(scores) + TOL
        else:
            scores = [abs(float(torch.corrcoef(torch.stack([cur[i], ref[j]]))[0, 1])) for j in range(7)]
            assert scores[int(f.idx[i])] >= max(scores) - TOL
        a, b = _lstsq(cur[i], ref[int(f.idx[i])])
        assert float(f.alpha[i]) == pytest.approx(a, abs=TOL) and float(f.beta[i]) == pytest.approx(b, abs=TOL)


@pytest.mark.parametrize("match,norm", [("l1", 1), ("abs_pcc", 2)])
def test_reconstruction_error_is_never_above_that_of_the_best_single_reference(match, norm):
    cur, ref = _layer(60, 6, seed=2)
    err = float((ilkp_fit.reconstruct(ref, ilkp_fit.fit(cur, ref, match=match)) - cur).norm(p=norm))
    singles = [float((ilkp_fit.reconstruct(ref, ilkp_fit.fit(cur, ref, idx=torch.full((60,), j))) - cur).norm(p=norm))
               for j in range(6)]
    assert err <= min(singles) * (1 + 1e-6)
    assert err < min(singles)  # with 6 random references, mixing them is strictly better


@pytest.mark.parametrize("mode", ["add", "replace", "clamp", "alpha1"])
def test_a_constant_reference_kernel_never_gives_nan(mode):
    cur, ref = _layer(20, 4, seed=3)
    ref[0] = 0.5  # zero variance: the study's plain versions turn every kernel into NaN here
    f = ilkp_fit.fit(cur, ref, eps_mode=mode)
    assert torch.isfinite(f.alpha).all() and torch.isfinite(f.beta).all()
    assert torch.isfinite(ilkp_fit.reconstruct(ref, f)).all()
    assert torch.isfinite(ilkp_fit.fit(cur, ref, match="abs_pcc", eps_mode=mode).alpha).all()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_quantized_values_take_at_most_2_to_the_bits_levels(bits):
    x = torch.randn(5000, generator=torch.Generator().manual_seed(bits))
    q = ilkp_fit.quantize(x, bits)
    assert len(torch.unique(q)) <= 2 ** bits
    step = float(x.max() - x.min()) / (2 ** bits - 1)
    inside = (x >= -(2 ** (bits - 1)) * step) & (x <= (2 ** (bits - 1) - 1) * step)
    assert (q - x)[inside].abs().max() <= step / 2 + 1e-6  # round to nearest inside the grid


class Tiny(nn.Module):
    """Reference 1->2 (2 kernels), shared 2->4 (8 kernels); the 1x1 conv and the linear layer are not shared."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 2, 3, bias=False), nn.Conv2d(2, 4, 3, bias=False)
        self.pw, self.fc = nn.Conv2d(4, 4, 1, bias=False), nn.Linear(4, 3)


def _plugin(model, **options):
    opt = full_config({"plugins": "ilkp", "arch": "tiny", **options})
    plugin = get_plugin_class("ilkp")(opt)
    plugin.configure_model(model)
    return plugin


@pytest.mark.parametrize("version,expected", [
    # reference 18 weights; 8 shared kernels with a 1-bit index (2 references)
    ("v2", 18 * 32 + 8 * (1 + 32 + 32)),
    ("v2q", 18 * 32 + 8 * (1 + 32 + 32)),  # the reference at ilkp_qb=4 bits: set below
    ("v2qq", 18 * 4 + 32 + 8 * (1 + 5 + 6) + 2 * 32),
    ("v2nb", 18 * 32 + 8 * (1 + 32)),
    ("q", 90 * 4 + 2 * 32),  # the linear-quantization baseline: both layers at 4 bits plus a scale each
])
def test_compression_ratio_by_hand_for_a_small_model(version, expected):
    if version == "v2q":
        expected = 18 * 4 + 32 + 8 * (1 + 32 + 32)
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version=version, ilkp_qb=4, ilkp_qba=5, ilkp_qbb=6)
    assert plugin.layers == [model.c1, model.c2]
    original, stored = plugin.storage_bits()
    assert (original, stored) == ((18 + 72) * 32, expected)
    total = (18 + 72 + 16 + 15) * 32
    s = plugin.scalars()
    assert s["compression"] == pytest.approx(90 * 32 / expected)
    assert s["compression_model"] == pytest.approx(total / (total - 90 * 32 + expected))


def test_a_refit_writes_alpha_r_k_plus_beta_with_quantized_alpha_beta():
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version="v2qq", ilkp_qba=2, ilkp_qbb=2)
    plugin.refit()
    f = plugin.fits[0]
    assert len(torch.unique(f.alpha)) <= 4 and len(torch.unique(f.beta)) <= 4
    assert torch.allclose(model.c2.weight.reshape(-1, 9), f.alpha[:, None] * model.c1.weight.reshape(-1, 9)[f.idx]
                          + f.beta[:, None])
    assert plugin.scalars()["err_L1"] == plugin.scalars()["err"] > 0


def _shuffle_weights(model, seed):
    with torch.no_grad():
        model.c2.weight.copy_(torch.randn(model.c2.weight.shape, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("version", ["v2f", "v2qq"])
def test_v2f_keeps_the_indices_across_refits_and_v2qq_does_not(version):
    torch.manual_seed(0)
    model = Tiny()
    model.c2 = nn.Conv2d(2, 64, 3, bias=False)  # 128 kernels: new random weights choose other references
    plugin = _plugin(model, ilkp_version=version)
    plugin.refit()
    first = plugin.fits[0].idx.clone()
    _shuffle_weights(model, 1)
    plugin.refit()
    assert torch.equal(plugin.fits[0].idx, first) == (version == "v2f")
    if version == "v2f":  # alpha, beta are refit on the kept references (then quantized to 8 bits)
        cur, ref = torch.randn(64, 2, 3, 3, generator=torch.Generator().manual_seed(1)).reshape(-1, 9), \
            model.c1.weight.detach().reshape(-1, 9)
        a, b = _lstsq(cur[0], ref[int(first[0])])
        alphas = ilkp_fit.pair_fits_rows(cur, ref[first], True, "add", 1e-8)[0]
        step = float(alphas.max() - alphas.min()) / 255
        assert float(plugin.fits[0].alpha[0]) == pytest.approx(a, abs=step / 2 + TOL)


def test_q_versions_quantize_the_chosen_layers_each_epoch_and_refit_every_n():
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version="v2q", ilkp_qb=3, ilkp_every=2)
    pw = model.pw.weight.detach().clone()
    plugin.on_epoch_end(1)
    assert plugin.n_fits == 0 and len(torch.unique(model.c1.weight)) <= 8 and len(torch.unique(model.c2.weight)) <= 8
    assert torch.equal(model.pw.weight, pw)  # 1x1 convs are not touched
    plugin.on_epoch_end(2)
    assert plugin.n_fits == 1


def test_the_q_baseline_quantizes_without_sharing():
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version="q", ilkp_qb=2, ilkp_every=1)
    plugin.on_epoch_end(1)
    plugin.after_load()
    assert plugin.n_fits == 0 and "err" not in plugin.scalars()
    assert len(torch.unique(model.c2.weight)) <= 4 and len(torch.unique(model.c2.weight.reshape(-1, 9), dim=0)) > 2


# ---- through the training loop on the digits ----------------------------------------------------------

RUN = {"dataset": "digits", "arch": "digits_cnn", "niters": 20, "batch_size": 32, "epoch_iters": 5,
       "chkpt_iter": 10, "tblog_interval": 5, "log_interval": 10, "lr": 0.05, "plugins": "ilkp",
       "ilkp_version": "v2qq", "ilkp_every": 2, "ilkp_qb": 6}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ilkp")
    return run_dir, loop.run(RUN, run_dir)


def test_training_with_the_hook_logs_compression_and_refits(trained):
    run_dir, results = trained
    final = results["final"]
    # digits_cnn: reference 1->16 (16 kernels, 4-bit index), shared 16->32 (512 kernels)
    expected = (144 + 4608) * 32 / (144 * 6 + 32 + 512 * (4 + 8 + 8) + 64)
    assert final["ilkp/compression"] == pytest.approx(expected) and final["ilkp/fits"] == 2.0
    assert 0 < final["ilkp/err"] < 1 and final["Vacc"] > 15  # chance is 10%; 20 steps at lr 0.05
    state = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)
    f = state["plugins"]["ilkp"]
    w = state["model"]["conv2.weight"].reshape(-1, 9)  # the last epoch (4) refit: weights are alpha R_k + beta
    ref = state["model"]["conv1.weight"].reshape(-1, 9)
    assert torch.allclose(w, f["alpha"][0][:, None] * ref[f["idx"][0]] + f["beta"][0][:, None])


def test_interrupt_and_resume_across_a_refit_epoch_is_exact(trained, tmp_path):
    run_dir, results = trained
    with pytest.raises(loop.Interrupted):  # mid-epoch 3, after the refit at epoch 2 and before the one at 4
        loop.run(RUN, tmp_path, on_iteration=_stop_at(13))
    resumed = loop.run(RUN, tmp_path)
    assert resumed["final"] == results["final"] and _metrics(tmp_path) == _metrics(run_dir)
    a = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / runfiles.CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["plugins"]["ilkp"]["idx"], b["plugins"]["ilkp"]["idx"]))


def test_post_hoc_fit_of_another_runs_weights_in_an_eval_only_run(trained, tmp_path):
    run_dir, results = trained
    plain = {k: v for k, v in RUN.items() if not k.startswith("ilkp") and k != "plugins"}
    base = loop.run({**plain, "niters": 10}, tmp_path / "base")
    post = loop.run({**plain, "plugins": "ilkp", "ilkp_version": "v2", "eval_only": True,
                     "init_checkpoint": str(tmp_path / "base" / runfiles.CHECKPOINT)}, tmp_path / "post")
    assert post["final"]["ilkp/fits"] == 1.0 and post["final"]["ilkp/err"] > 0
    assert post["final"]["ilkp/compression"] == pytest.approx((144 + 4608) * 32 / (144 * 32 + 512 * (4 + 64)))
    assert post["final"]["Vacc"] != base["final"]["Vacc"]  # the shared kernels changed the function
    state = torch.load(tmp_path / "post" / runfiles.CHECKPOINT, weights_only=True)
    assert state["carry"]["ilkp"]["idx"][0].shape == (512,)  # the fit carries into a retraining stage


def test_after_load_may_change_values_only():
    """The hook's guard (trainer/plugins/enabled.py): a plugin replacing a parameter there is an error."""
    from trainer.options import declare_plugin
    from trainer.plugins.base import Plugin, register_plugin
    from trainer.plugins.enabled import EnabledPlugins
    declare_plugin("swapload", {})

    @register_plugin("swapload")
    class SwapLoad(Plugin):
        def configure_model(self, model):
            self.model = model
            return model

        def after_load(self):
            self.model.c1.weight = nn.Parameter(self.model.c1.weight.detach().clone())

    model = Tiny()
    plugins = EnabledPlugins(full_config({"plugins": "swapload"}))
    plugins.configure_model(model)
    with pytest.raises(RuntimeError, match="swapload.*after_load"):
        plugins.after_load(model)


def test_the_resnet110_chain_expands_with_the_studys_recipe_and_each_run_finds_its_upstream(tmp_path):
    import argparse
    from launcher.selection import select_runs
    sel = select_runs(argparse.Namespace(grid="ilkp", run="cifar10_resnet110", only=[], set=[], limit=None,
                                         root=str(tmp_path)))
    by_stage = {}
    for r in sel.runs:
        by_stage.setdefault(r.config.get("stage"), []).append(r.config)
    assert {k: len(v) for k, v in by_stage.items()} == {"base": 1, "posthoc": 11, "retrain": 11}
    base = by_stage["base"][0]
    assert (base["nesterov"], base["momentum"], base["weight_decay"], base["lr"], base["epochs"]) == \
        (True, 0.9, 5e-4, 0.1, 200)
    # lr 0.1 x 0.98^epoch: one decay by 0.98 per epoch of epoch_iters iterations
    from trainer.options import full_config
    from trainer.schedule import lr_at
    e = base["epoch_iters"]
    assert e == 50000 // 128
    for it, epoch in [(0, 0), (e - 1, 0), (e, 1), (7 * e + 5, 7), (200 * e - 1, 199)]:
        assert lr_at(it, full_config(base), e, 200 * e) == pytest.approx(0.1 * 0.98 ** epoch)
    assert all(c["eval_only"] and c["init_from"] == "base" for c in by_stage["posthoc"])
    assert sorted(c.get("ilkp_qb", 0) for c in by_stage["posthoc"] if c["ilkp_version"] == "v2qq") == [2, 3, 4, 6, 8]
    retrain = by_stage["retrain"]
    assert all(c["lr"] == 0.01 and c["init_from"] == "posthoc" for c in retrain)
    upstreams = {c["init_run"] for c in retrain}
    assert len(upstreams) == 11  # each retraining run starts from its own post-hoc run
