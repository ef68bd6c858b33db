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
    """Brute-force least squares of one kernel (or sub-vector) on one reference (float64)."""
    c, r = c.detach(), r.detach()
    design = torch.stack([r.double(), torch.ones(len(r), dtype=torch.float64)], 1) if beta else r.double()[:, None]
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


# ---- ilkp_ste: the straight-through variant ------------------------------------------------------------

def test_ste_steps_move_the_latent_weights_and_show_their_stored_form():
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version="v2qq", ilkp_qb=2, ilkp_ste=True, ilkp_every=2)
    start = [layer.weight.detach().clone() for layer in plugin.layers]
    plugin.after_load()  # the post-hoc fit: latent = the upstream's float weights, shown = their stored form
    assert all(torch.equal(w, s) for w, s in zip(plugin.latent, start)) and plugin.n_fits == 1
    idx = plugin.fits[0].idx.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(5)
    for step in (1, 2):
        latent, shown = [w.clone() for w in plugin.latent], [w.clone() for w in plugin.shown]
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
        update = [layer.weight.detach() - s for layer, s in zip(plugin.layers, shown)]
        plugin.after_step(step)
        # the update the optimizer made to the shown weights moved the latent weights, exactly
        assert all(torch.allclose(w, w0 + u) for w, w0, u in zip(plugin.latent, latent, update))
        # the forward sees the latent weights' stored form: a 2-bit reference, shared kernels on it with the
        # indices of the last search and alpha, beta refit on them
        ref = model.c1.weight.detach().reshape(-1, 9)
        assert torch.equal(ref, ilkp_fit.quantize(plugin.latent[0], 2).reshape(-1, 9))
        f = plugin.fits[0]
        assert torch.equal(f.idx, idx) and plugin.n_fits == 1
        assert torch.allclose(model.c2.weight.reshape(-1, 9), f.alpha[:, None] * ref[f.idx] + f.beta[:, None])
        assert all(torch.equal(layer.weight, s) for layer, s in zip(plugin.layers, plugin.shown))
    plugin.on_epoch_end(1)  # not a refit epoch: the shown weights stay
    assert all(torch.equal(layer.weight, s) for layer, s in zip(plugin.layers, plugin.shown))
    plugin.on_epoch_end(2)  # a refit epoch: a new search on the latent weights, as the study's loop would do
    twin = Tiny()
    with torch.no_grad():
        twin.c1.weight.copy_(plugin.latent[0])
        twin.c2.weight.copy_(plugin.latent[1])
    plain = _plugin(twin, ilkp_version="v2qq", ilkp_qb=2, ilkp_every=2)
    plain.on_epoch_end(2)
    assert plugin.n_fits == 2
    assert torch.equal(model.c2.weight, twin.c2.weight) and torch.equal(model.c1.weight, twin.c1.weight)


def test_without_ste_the_steps_train_the_weights_themselves():
    torch.manual_seed(0)
    model = Tiny()
    plugin = _plugin(model, ilkp_version="v2qq", ilkp_qb=2)
    plugin.after_load()
    with torch.no_grad():
        model.c2.weight.add_(1.0)
    snapshot = model.c2.weight.detach().clone()
    plugin.after_step(1)
    assert torch.equal(model.c2.weight, snapshot) and plugin.latent is None and "latent" not in plugin.state_dict()


# ---- MobileNets: depthwise kernels and pointwise sub-vectors ---------------------------------------------

def _small_mobilenet(pw_blocks=((16, 1), (16, 2)), stem=8):
    from trainer.models.mobilenet import MobileNet
    torch.manual_seed(0)
    return MobileNet(pw_blocks, 10, 1, stem=stem)


def _brute_windows(rows, length, stride):
    """The study's reference slices, built the slow way: windows at 0, stride, ... and the tail window."""
    starts = list(range(0, rows.shape[1] - length + 1, stride))
    if (rows.shape[1] - length) % stride:
        starts.append(rows.shape[1] - length)
    return torch.stack([row[s:s + length] for row in rows for s in starts])


@pytest.mark.parametrize("length,stride", [(8, 1), (4, 3), (4, 1), (5, 2), (10, 4)])
def test_pointwise_references_are_every_window_of_the_reference_rows(length, stride):
    rows = torch.randn(3, 10, generator=torch.Generator().manual_seed(length))
    assert torch.equal(ilkp_fit.windows(rows, length, stride), _brute_windows(rows, length, stride))


def test_pointwise_alpha_beta_are_the_closed_form_least_squares_fit():
    g = torch.Generator().manual_seed(4)
    cur, ref = torch.randn(5, 8, generator=g), torch.randn(6, 8, generator=g)
    alpha, beta = ilkp_fit.pair_fits(cur, ref)
    for i in range(5):
        for j in range(6):
            a, b = _lstsq(cur[i], ref[j])
            assert alpha[i, j] == pytest.approx(a, abs=TOL) and beta[i, j] == pytest.approx(b, abs=TOL)


@pytest.mark.parametrize("match", ["l1", "abs_pcc"])
def test_a_pointwise_refit_picks_the_best_window_by_brute_force(match):
    model = _small_mobilenet()
    plugin = _plugin(model, arch="mobilenet_cifar", ilkp_version="v2", ilkp_pw_len=4, ilkp_pw_stride=3,
                     ilkp_match=match)
    dw, pw = model.separable_convs()
    assert [s.layers for s in plugin.sets] == [dw, pw]
    before = pw[1].weight.detach().reshape(-1, 4).clone()  # 16 rows of 16 inputs: 64 sub-vectors
    windows = _brute_windows(pw[0].weight.detach().reshape(16, 8), 4, 3)  # 16 rows x windows at 0, 3, 4
    plugin.refit()
    f = plugin.fits[-1]
    assert f.idx.shape == (64,) and windows.shape == (48, 4)
    for i in range(64):
        fits = [_lstsq(before[i], w) for w in windows]
        if match == "l1":
            scores = [float((a * w.double() + b - before[i].double()).abs().sum()) for (a, b), w in zip(fits, windows)]
            assert scores[int(f.idx[i])] <= min(scores) + TOL
        else:
            scores = [abs(float(torch.corrcoef(torch.stack([before[i], w]))[0, 1])) for w in windows]
            assert scores[int(f.idx[i])] >= max(scores) - TOL
        a, b = fits[int(f.idx[i])]
        assert float(f.alpha[i]) == pytest.approx(a, abs=TOL) and float(f.beta[i]) == pytest.approx(b, abs=TOL)
    rebuilt = f.alpha[:, None] * windows[f.idx] + f.beta[:, None]
    assert torch.allclose(pw[1].weight.detach().reshape(-1, 4), rebuilt)
    assert set(plugin.scalars()) >= {"err_L1", "err_pw_L1", "compression_depthwise", "compression_pw"}


@pytest.mark.parametrize("options,pw_refs_bits", [({}, 7), ({"ilkp_pw_stride": 3}, 6), ({"ilkp_no_pw": True}, None)])
def test_compression_ratio_by_hand_for_a_small_mobilenet(options, pw_refs_bits):
    # stem 1->8; block 1: depthwise 8 (reference, 8 kernels), pointwise 8->16 (reference, 16 rows of 8);
    # block 2: depthwise 16 (16 kernels, 3-bit index), pointwise 16->16 (64 sub-vectors of 4)
    model = _small_mobilenet()
    plugin = _plugin(model, arch="mobilenet_cifar", ilkp_version="v2qq", ilkp_qb=4, ilkp_qba=5, ilkp_qbb=6,
                     ilkp_pw_len=4, **options)
    dw_original, dw_stored = (72 + 144) * 32, 72 * 4 + 32 + 16 * (3 + 5 + 6) + 2 * 32
    assert plugin.set_bits(plugin.sets[0]) == (dw_original, dw_stored)
    original, stored = dw_original, dw_stored
    if pw_refs_bits is not None:
        # windows of 4 per reference row of 8: stride 1 -> 5 (80 references, 7 bits); stride 3 -> 0, 3 and the
        # tail 4 (48 references, 6 bits)
        pw_original, pw_stored = (128 + 256) * 32, 128 * 4 + 32 + 64 * (pw_refs_bits + 5 + 6) + 2 * 32
        assert plugin.set_bits(plugin.sets[1]) == (pw_original, pw_stored)
        original, stored = original + pw_original, stored + pw_stored
    assert plugin.storage_bits() == (original, stored)
    total = sum(p.numel() for p in model.parameters()) * 32
    s = plugin.scalars()
    assert s["compression"] == pytest.approx(original / stored)
    assert s["compression_model"] == pytest.approx(total / (total - original + stored))


def test_pointwise_rows_not_a_multiple_of_the_sub_vector_length_are_refused():
    model = _small_mobilenet(pw_blocks=((12, 1), (16, 1)))  # the second pointwise conv has 12 inputs
    with pytest.raises(ValueError, match=r"pw layer 1 has rows of 12 weights, not a multiple of .* 8"):
        _plugin(model, arch="mobilenet_cifar")
    assert len(_plugin(model, arch="mobilenet_cifar", ilkp_pw_len=4).sets) == 2
    assert len(_plugin(model, arch="mobilenet_cifar", ilkp_no_pw=True).sets) == 1


def test_the_pointwise_archs_of_the_options_are_the_models_with_separable_convs():
    from trainer.models import create_model
    from trainer.names import MODELS
    from trainer.plugins.ilkp_options import PW_ARCHS
    shapes = {"linear": (50,)}
    with_pw = {a for a in MODELS if hasattr(create_model(a, 10, shapes.get(a, (1, 8, 8))), "separable_convs")}
    assert with_pw == set(PW_ARCHS)


def test_pointwise_options_on_a_model_without_pointwise_convs_are_flagged_at_expansion():
    from trainer.options import ineffective_keys
    assert set(ineffective_keys({"plugins": "ilkp", "arch": "resnet20", "ilkp_pw_len": 4, "ilkp_no_pw": True})) == \
        {"ilkp_pw_len", "ilkp_no_pw"}
    assert ineffective_keys({"plugins": "ilkp", "arch": "mobilenetv2_cifar", "ilkp_pw_len": 4}) == {}
    q_bits_without_quantization = {"plugins": "ilkp", "arch": "resnet20", "ilkp_version": "v2", "ilkp_qb": 4}
    assert set(ineffective_keys(q_bits_without_quantization)) == {"ilkp_qb"}


def test_vgg16_shares_every_conv_on_the_first():
    from trainer.models import create_model
    model = create_model("vgg16_bn", 10, (3, 32, 32))
    plugin = _plugin(model, arch="vgg16_bn", ilkp_version="v2")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and plugin.layers == convs and plugin.sets[0].references().shape == (192, 9)


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


def test_interrupt_and_resume_with_ste_is_exact(tmp_path):
    run = {**RUN, "ilkp_ste": True, "ilkp_qb": 2}
    full = loop.run(run, tmp_path / "full")
    with pytest.raises(loop.Interrupted):
        loop.run(run, tmp_path / "cut", on_iteration=_stop_at(13))
    resumed = loop.run(run, tmp_path / "cut")
    assert resumed["final"] == full["final"] and _metrics(tmp_path / "cut") == _metrics(tmp_path / "full")
    a = torch.load(tmp_path / "full" / runfiles.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "cut" / runfiles.CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for x, y in zip(a["plugins"]["ilkp"]["latent"], b["plugins"]["ilkp"]["latent"]))
    assert len(torch.unique(a["model"]["conv1.weight"])) <= 4  # the reference as the forward saw it: 2 bits
    assert "latent" not in a["carry"]["ilkp"]


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


@pytest.mark.parametrize("run,posthoc,retrain", [("digits_chain", 7, 10), ("digits_mobilenetv2_chain", 5, 7)])
def test_the_digits_chains_retrain_v2qq_with_and_without_ste_from_the_same_post_hoc_run(tmp_path, run, posthoc,
                                                                                        retrain):
    import argparse
    from launcher.selection import select_runs
    sel = select_runs(argparse.Namespace(grid="ilkp", run=run, only=[], set=[], limit=None, root=str(tmp_path)))
    stages = [r.config.get("stage") for r in sel.runs]
    assert (stages.count("base"), stages.count("posthoc"), stages.count("retrain")) == (1, posthoc, retrain)
    v2qq = [r.config for r in sel.runs if r.config.get("stage") == "retrain" and r.config["ilkp_version"] == "v2qq"]
    by_bits = {}
    for c in v2qq:
        by_bits.setdefault(c["ilkp_qb"], {})[c.get("ilkp_ste", False)] = c["init_run"]
    assert all(len(pair) == 2 and pair[True] == pair[False] for pair in by_bits.values())
