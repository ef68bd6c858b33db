"""The `bsq` plugin (docs/bsq.md): bit representation, pruning, compression, the group Lasso, and the
plugin in the real loop (optimizer rebuild at a pruning epoch, exact resume, the stage chain's forms)."""
import argparse
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer_loop import _metrics, _stop_at  # noqa: E402  (the loop tests' helpers)
from trainer import loop, runfiles  # noqa: E402
from trainer.options import ConfigError, full_config, validate_config  # noqa: E402
from trainer.plugins.bsq import BSQ, bit_group_lasso, compression  # noqa: E402
from trainer.plugins.bsq_layers import VALUE, BitLayer  # noqa: E402


def _linear(out_features=6, in_features=5, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


# ---- the representation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("nbits", [2, 4, 8])
def test_planes_hold_the_n_bit_rounding_of_the_float_weights(nbits):
    fp = _linear()
    w = fp.weight.detach().clone()
    layer = BitLayer(fp, nbits)
    s = w.abs().max()
    levels = torch.round(w * (2 ** nbits - 1) / s)
    assert layer.pos.shape == (nbits, 6, 5) and set(layer.pos.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(layer.levels(), levels) and float(layer.scale.detach()) == float(s)
    assert torch.allclose(layer.weight(), s * levels / (2 ** nbits - 1), rtol=1e-6, atol=0)
    x = torch.randn(3, 5)
    assert torch.allclose(layer(x), nn.functional.linear(x, s * levels / (2 ** nbits - 1), fp.bias), atol=1e-6)


@pytest.mark.parametrize("levels_of, kept", [(lambda k: k.clamp(-127, 127), 7),   # top plane empty
                                             (lambda k: 2 * k.clamp(-127, 127), 7),  # bottom plane empty
                                             (lambda k: 4 * k.clamp(-31, 31), 5)])  # 1 top + 2 bottom planes
def test_pruning_empty_top_or_bottom_planes_keeps_the_weights_bit_identical(levels_of, kept):
    layer = BitLayer(_linear(20, 10), 8)
    layer.set_levels(levels_of(torch.randint(-255, 256, (20, 10)).float()), 8)
    before = layer.weight().detach().clone()
    layer.requantize_and_prune(0.0)
    assert layer.nbits == kept and layer.pos.shape[0] == kept
    assert torch.equal(layer.weight().detach(), before)


def test_a_sparse_top_plane_below_the_threshold_saturates_and_is_pruned():
    layer = BitLayer(_linear(10, 10), 4)
    levels = torch.full((10, 10), 5.0)
    levels[0, 0] = 15.0  # 1 % of the weights use the top plane: it saturates to 7, the largest on 3 bits
    layer.set_levels(levels, 4)
    layer.requantize_and_prune(2.0)
    assert layer.nbits == 3 and layer.levels()[0, 0] == 7 and (layer.levels().flatten()[1:] == 5).all()


def test_requantize_rounds_continuous_bits_to_exact_planes_and_keeps_the_forward():
    layer = BitLayer(_linear(), 8)
    with torch.no_grad():
        layer.pos.add_(torch.rand_like(layer.pos) * 0.4).clamp_(0, 2)
    before = layer.weight().detach().clone()
    layer.requantize_and_prune(0.0)
    assert set(layer.pos.unique().tolist()) <= {0.0, 1.0} and torch.equal(layer.weight().detach(), before)


def test_compression_is_32_x_weights_over_weight_bits_without_downsample_convs():
    layers = {"a": BitLayer(_linear(4, 5), 8), "b": BitLayer(_linear(10, 10), 3),
              "x.downsample.0": BitLayer(_linear(50, 50), 2)}
    assert compression(layers) == pytest.approx(32 * (20 + 100) / (20 * 8 + 100 * 3))
    assert compression({"a": layers["a"]}) == 4.0


def test_group_lasso_value_and_gradient_match_a_direct_computation():
    layers = {"a": BitLayer(_linear(4, 5), 8), "b": BitLayer(_linear(3, 4, seed=1), 3)}
    with torch.no_grad():
        for layer in layers.values():
            layer.pos.add_(torch.rand_like(layer.pos))
    reg = bit_group_lasso(layers)
    grads = torch.autograd.grad(reg, [layers["a"].pos, layers["b"].neg])
    params = [(20, 8, layers["a"]), (12, 3, layers["b"])]
    direct = sum(n * bits * sum(torch.sqrt(1e-8 + (lay.pos[b] ** 2).sum() + (lay.neg[b] ** 2).sum())
                                for b in range(bits)) for n, bits, lay in params) / 32
    expected = torch.autograd.grad(direct, [layers["a"].pos, layers["b"].neg])
    assert torch.allclose(reg, direct, rtol=1e-6)
    assert all(torch.allclose(g, e, rtol=1e-5, atol=1e-9) for g, e in zip(grads, expected))


def test_the_straight_through_gradient_of_a_bit_is_scale_times_its_place():
    layer = BitLayer(_linear(), 4)
    upstream = torch.randn(6, 5)
    (layer.weight() * upstream).sum().backward()
    place = torch.tensor([8.0, 4, 2, 1]).view(4, 1, 1)
    assert torch.allclose(layer.pos.grad, layer.scale.detach() * place / 15 * upstream, rtol=1e-6)
    assert torch.allclose(layer.neg.grad, -layer.pos.grad)


def _sgd_steps(params, weight_of, target, steps=3):
    """Momentum SGD with weight decay on ((w - target)^2).sum(), as the study's optimizer."""
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        ((weight_of() - target) ** 2).sum().backward()
        opt.step()


def _study_weight(signed, scale, nbits):
    """The study's renormalised layer: s' * BitSTE(sum_b signed_b 2^(N-1-b) / (2^N - 1)), identity gradient."""
    top = 2 ** nbits - 1
    v = (signed * (2.0 ** torch.arange(nbits - 1, -1, -1.0)).view(nbits, 1, 1)).sum(0) / top
    return scale * (v + (torch.round(v.clamp(-1, 1) * top) / top - v).detach())


def test_a_pruned_layer_steps_as_the_studys_renormalised_layer():
    """After pruning 8 -> 2 top bits (c = denom / (2^N - 1) = 85) SGD moves our scale c times the study's
    s' = scale / c, and our planes as the study's; fine-tuned values v move as the study's v' = c v."""
    layer = BitLayer(_linear(20, 10), 8)
    layer.set_levels(torch.randint(-3, 4, (20, 10)).float(), 8)
    layer.requantize_and_prune(0.0)
    c = float(layer.denom) / 3
    assert layer.nbits == 2 and c == 85
    target = torch.randn(20, 10) * float(layer.scale.detach()) / 100
    pos, neg = layer.pos.detach().clone().requires_grad_(), layer.neg.detach().clone().requires_grad_()
    s = (layer.scale.detach() / c).requires_grad_()
    _sgd_steps([layer.pos, layer.neg, layer.scale], layer.weight, target)
    _sgd_steps([pos, neg, s], lambda: _study_weight(pos - neg, s, 2), target)
    assert torch.allclose(layer.scale.detach(), c * s.detach(), rtol=1e-5)
    assert torch.allclose(layer.pos.detach(), pos.detach(), atol=1e-6)
    assert torch.allclose(layer.neg.detach(), neg.detach(), atol=1e-6)

    ft = BitLayer(_linear(20, 10), 8, VALUE)
    levels = torch.randint(-3, 4, (20, 10)).float()
    ft.set_levels(levels, 2)  # denom stays 255: the fine-tuned form of the pruned layer above
    v, s = (levels / 3).requires_grad_(), (ft.scale.detach() / c).requires_grad_()
    _sgd_steps([ft.value, ft.scale], ft.weight, target)
    _sgd_steps([v, s], lambda: s * (v + (torch.round(v.clamp(-1, 1) * 3) / 3 - v).detach()), target)
    assert torch.allclose(c * ft.value.detach(), v.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(ft.scale.detach(), c * s.detach(), rtol=1e-5)


# ---- options and the chain's conversions -------------------------------------------------------------------

def test_options_are_validated_at_expansion():
    with pytest.raises(ConfigError, match="'bsq_alpha' is an option of plugin 'bsq'"):
        validate_config({"bsq_alpha": 0.1})
    with pytest.raises(ConfigError, match="bsq_mode.*'prune'"):
        validate_config({"plugins": "bsq", "bsq_mode": "prune"})
    with pytest.raises(ConfigError, match="bsq_nbits.*outside the accepted range 1..16"):
        validate_config({"plugins": "bsq", "bsq_nbits": 20})
    with pytest.raises(ValueError, match="bsq_mode=convert only converts"):
        BSQ(full_config({"plugins": "bsq", "bsq_mode": "convert"}))


def _plugin(mode="train", arch="bsq_resnet8", **extra):
    from trainer.models import create_model
    opt = full_config({"plugins": "bsq", "arch": arch, "bsq_mode": mode, "eval_only": mode == "convert", **extra})
    plugin = BSQ(opt)
    torch.manual_seed(0)
    return plugin, plugin.configure_model(create_model(arch, 10, (3, 8, 8)))


def test_the_study_resnet_gets_bit_layers_and_quantized_relu6s():
    plugin, model = _plugin()
    assert len(plugin.layers) == 10 and "layers.1.downsample.0" in plugin.layers  # stem, 6 convs, 2 1x1, fc
    assert model.act.bits == 8 and model.layers[0].act1.bits == 4
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    plugin, _ = _plugin(bsq_fp_downsample=True, bsq_act_bits=0)
    assert len(plugin.layers) == 8


def test_start_weights_convert_full_precision_and_turn_planes_into_fine_tuned_values():
    from trainer.models import create_model
    torch.manual_seed(0)
    fp = create_model("bsq_resnet8", 10, (3, 8, 8)).state_dict()
    conv, model = _plugin("convert")
    planes = conv.start_weights(fp)
    model.load_state_dict(planes)  # strict: every key is there with its shape
    w = fp["layers.0.conv1.weight"]
    s = w.abs().max()
    assert torch.equal(conv.layers["layers.0.conv1"].levels(), torch.round(w * 255 / s))
    fc = conv.layers["fc"]
    fc.set_levels(4 * (fc.levels() / 4).round().clamp(-31, 31), 8)
    fc.requantize_and_prune(0.0)  # a pruned layer: its 5 bits carry into the next stage
    ft, ft_model = _plugin("finetune")
    ft.load_state_dict(conv.carry_state())
    ft_model.load_state_dict(ft.start_weights(model.state_dict()))
    assert ft.layers["fc"].form == VALUE and ft.scheme() == conv.scheme() and ft.scheme()["fc"] == 5
    for name in ft.layers:
        assert torch.equal(ft.layers[name].weight(), conv.layers[name].weight()), name


# ---- in the loop ---------------------------------------------------------------------------------------------

FP = {"arch": "digits_cnn", "niters": 60, "batch_size": 32, "chkpt_iter": 60, "log_interval": 0, "lr": 0.05}
RUN = {"arch": "digits_cnn", "niters": 30, "batch_size": 32, "epoch_iters": 10, "chkpt_iter": 15,
       "tblog_interval": 5, "log_interval": 10, "lr": 0.01, "plugins": "bsq", "bsq_alpha": 3.0,
       "bsq_interval": 1, "bsq_nbits": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """BSQ from a briefly trained full-precision run (converted to 8-bit planes at the start), as the study."""
    fp_dir, run_dir = tmp_path_factory.mktemp("fp"), tmp_path_factory.mktemp("bsq")
    loop.run(FP, fp_dir)
    RUN["init_checkpoint"] = str(fp_dir / runfiles.CHECKPOINT)
    return run_dir, loop.run(RUN, run_dir)


def test_pruning_epochs_rebuild_the_optimizer_and_training_continues(trained):
    run_dir, results = trained
    log = (run_dir / runfiles.LOG).read_text()
    assert "epoch 1: plugin bsq changed the parameters" in log and "epoch 3: plugin bsq" in log
    final = results["final"]
    assert final["bsq/compression"] > 4.0 and final["Vacc"] > 50
    bits = [final[f"bsq/bits/{name}"] for name in ("conv1", "conv2", "fc1", "fc2")]
    assert max(bits) <= 8 and min(bits) < 8
    state = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)
    assert state["carry"]["bsq"]["bits"] == dict(zip(("conv1", "conv2", "fc1", "fc2"), map(int, bits)))
    assert state["model"]["fc1.pos"].shape[0] == int(bits[2])
    losses = [v for tag, step, v in _metrics(run_dir) if tag == "loss"]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_a_conversion_takes_its_bits_from_another_runs_scheme(trained, tmp_path):
    run_dir, results = trained
    plugin, _ = _plugin("convert", arch="digits_cnn", bsq_bits_from=str(run_dir))
    assert plugin.scheme() == {name: int(results["final"][f"bsq/bits/{name}"]) for name in plugin.layers}
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="holds no bsq bit scheme"):
        _plugin("convert", arch="digits_cnn", bsq_bits_from=str(tmp_path / "plain.pt"))


@pytest.mark.parametrize("stop", [15, 20])  # mid-epoch after a pruning, and right at a pruning boundary
def test_interrupt_and_resume_across_a_pruning_epoch_is_exact(trained, tmp_path, stop):
    run_dir, results = trained
    with pytest.raises(loop.Interrupted):
        loop.run(RUN, tmp_path, on_iteration=_stop_at(stop))
    resumed = loop.run(RUN, tmp_path)
    assert resumed["final"] == results["final"] and _metrics(tmp_path) == _metrics(run_dir)
    a = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / runfiles.CHECKPOINT, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_activation_quantization_is_k_bit_max_abs_with_a_straight_through_gradient():
    from trainer.plugins.bsq_layers import ActQuant
    x = torch.randn(4, 8, requires_grad=True)
    out = ActQuant(nn.ReLU6(), 4)(x)
    a = x.detach().clamp(0, 6)
    steps = out.detach() * 15 / a.max()
    assert torch.allclose(steps, steps.round(), atol=1e-5) and (out.detach() - a).abs().max() <= a.max() / 30 + 1e-7
    out.sum().backward()
    assert torch.equal(x.grad, ((x.detach() > 0) & (x.detach() < 6)).float())


# ---- the grid -------------------------------------------------------------------------------------------------

def test_the_cifar10_chain_dry_run_names_what_it_would_submit_with_the_studys_recipe(launch, tmp_path):
    """CIFAR-10 cannot train here (no data, CPU only): its dry run expands, validates and writes the scripts."""
    from launcher.selection import select_runs
    code, out, err = launch("--grid", "bsq", "--run", "cifar10_resnet20", "--dry-run", "--root", tmp_path / "runs",
                            "--jobs-dir", tmp_path / "jobs")
    assert code == 0, err
    assert "10 of 10 runs" in out and "stages pretrain -> convert -> bsq -> finetune" in out
    assert len(list((tmp_path / "jobs").glob("bsq_cifar10_resnet20_*.sh"))) == 10
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("status.json"))  # runs nothing
    sel = select_runs(argparse.Namespace(grid="bsq", run="cifar10_resnet20", only=[], set=[], limit=None,
                                         root=str(tmp_path / "runs"), stage=None))
    by_stage: dict[str, list] = {}
    for run in sel.runs:
        by_stage.setdefault(run.config["stage"], []).append(run)
    assert {k: len(v) for k, v in by_stage.items()} == {"pretrain": 1, "convert": 1, "bsq": 4, "finetune": 4}
    bsq = {r.config["bsq_alpha"]: r for r in by_stage["bsq"]}
    assert sorted(bsq) == [0.0, 0.003, 0.01, 0.03] and all(
        (r.config["epochs"], r.config["lr"], r.config["bsq_interval"]) == (350, 0.1, 50) for r in bsq.values())
    for ft in by_stage["finetune"]:  # each fine-tuning run starts from the bsq run of its alpha
        assert ft.config["init_run"] == bsq[ft.config["bsq_alpha"]].name
        assert (ft.config["epochs"], ft.config["lr"], ft.config["bsq_mode"]) == (250, 1e-4, "finetune")
