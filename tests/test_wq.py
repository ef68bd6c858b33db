"""The `wq` plugin (trainer/plugins/wq.py, wq_ops.py; docs/wq.md): the quantizers' values and straight-through
gradients from the math, the layers it replaces, its bits/size/MAC scalars against hand counts for the
study's resnet20, option checks, the grid, and exact resume of a plugin run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from launcher.grid import expand
from trainer import loop, runfiles
from trainer.models import create_model
from trainer.options import ConfigError, full_config, ineffective_keys, validate_config
from trainer.plugins.base import get_plugin_class
from trainer.plugins.wq_ops import (QuantConv2d, dorefa_input, dorefa_weight, make_quantizer, quantize_k, quantized,
                                    ste_round, ste_sign, ternarize, twn_weight, xnor_input, xnor_weight)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread avoids OpenMP spinning on a loaded machine (the 2-core CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weight(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _filters(q):
    return [q[o].flatten() for o in range(q.shape[0])]


# ---- the study's resnet20 -----------------------------------------------------------------------------------

def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet20_mcts_has_the_studys_1_11m_parameters_and_he_resnet20_stays():
    assert _params(create_model("resnet20_mcts", 10, (3, 32, 32))) == 1_110_522  # the spec's count
    assert _params(create_model("resnet20", 10, (3, 32, 32))) == 269_722  # He et al.'s 0.27 M


def test_resnet20_mcts_puts_the_second_bn_after_the_residual_add():
    block = create_model("resnet20_mcts", 10, (3, 32, 32)).layers[0]
    x = torch.randn(2, 16, 8, 8)
    want = F.relu(block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))) + block.shortcut(x)))
    assert torch.allclose(block(x), want)
    assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.kernel_size == (1, 1)


# ---- quantizers: values -------------------------------------------------------------------------------------

def test_xnor_weights_are_exactly_plus_minus_alpha_per_filter():
    w = _weight(8, 4, 3, 3)
    q = xnor_weight(w)
    alpha = w.abs().mean(dim=(1, 2, 3))
    for o, f in enumerate(_filters(q)):
        assert set(f.tolist()) == {alpha[o].item(), -alpha[o].item()}
    # the sign is that of the weight centred over input channels (clamped, so |centred| > 1 keeps its sign)
    assert torch.equal(torch.sign(q), torch.sign(w - w.mean(dim=1, keepdim=True)))


def test_xnor_inputs_are_signs_of_channel_centred_values_with_sign_0_is_0():
    x = torch.randn(2, 5, 4, 4)
    x[0, :, 0, 0] = 0.7  # equal over channels: centred to exactly 0
    q = xnor_input(x)
    assert set(q.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(q, torch.sign(x - x.mean(dim=1, keepdim=True)))
    assert torch.equal(q[0, :, 0, 0], torch.zeros(5))


def test_ternary_weights_have_three_values_per_filter_and_zeros_exactly_where_small():
    w = _weight(8, 16, 3, 3)
    for rule in ("repo", "paper"):
        q = twn_weight(w, rule)
        delta = 0.7 * w.abs().mean(dim=(1, 2, 3), keepdim=True)
        assert torch.equal(q == 0, w.abs() <= delta)
        for o, f in enumerate(_filters(q)):
            values = sorted(set(f.tolist()))
            assert len(values) == 3 and values[1] == 0 and values[0] == -values[2]
            assert torch.equal(torch.sign(f), torch.sign(w[o].flatten()) * (f != 0))


def test_ternary_alpha_repo_divides_by_the_zeroed_count_paper_by_the_kept_count():
    w = torch.tensor([0.1, 0.2, -0.3, 1.0, -2.0]).view(1, 5, 1, 1)  # mean|w| 0.72, delta 0.504: keeps 1.0, -2.0
    assert torch.allclose(twn_weight(w, "repo").flatten(), torch.tensor([0, 0, 0, 1.0, -1.0]))  # 3.0 / 3 zeroed
    assert torch.allclose(twn_weight(w, "paper").flatten(), torch.tensor([0, 0, 0, 1.5, -1.5]))  # 3.0 / 2 kept


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_dorefa_k_bit_weights_take_at_most_2_to_the_k_values_in_minus_1_1(bits):
    w = _weight(16, 8, 3, 3)
    q = dorefa_weight(w, bits)
    values = q.unique()
    n = 2 ** bits - 1
    assert len(values) <= 2 ** bits and values.min() >= -1 and values.max() == 1  # the layer's max maps to 1
    assert torch.allclose((values + 1) / 2 * n, ((values + 1) / 2 * n).round(), atol=1e-4)  # on the k-bit grid
    assert torch.equal(torch.sign(q), torch.sign(w)) or bits == 1  # odd grids have no 0: signs kept


def test_dorefa_repo_activations_of_post_relu_inputs_use_only_the_upper_half_of_the_grid():
    x = F.relu(torch.randn(4, 8, 5, 5))
    for bits in (2, 4):
        q = dorefa_input(x, bits)
        n = 2 ** bits - 1
        assert len(q.unique()) <= 2 ** (bits - 1) + 1 and q.min() >= 0.5 - 1 / (2 * n)
    assert torch.equal(dorefa_input(x, 1), (x > 0).float())  # a1: round-half-to-even sends the zeros to 0
    paper = dorefa_input(x, 2, "paper")
    assert torch.equal(paper, torch.round(x.clamp(0, 1) * 3) / 3)


def test_dorefa_paper_binary_weights_are_sign_times_the_layer_mean():
    w = _weight(4, 3, 3, 3)
    assert torch.allclose(dorefa_weight(w, 1, "paper"), torch.sign(w) * w.abs().mean())


def test_all_zero_tensors_quantize_to_finite_values_not_nan():
    zeros = torch.zeros(2, 3, 3, 3)
    for variant in ("repo", "paper"):
        for quantized_zeros in (dorefa_weight(zeros, 1, variant), dorefa_weight(zeros, 2, variant),
                                dorefa_input(zeros, 2, variant)):
            assert torch.isfinite(quantized_zeros).all()
    assert torch.equal(twn_weight(zeros), zeros) and torch.equal(xnor_weight(zeros), zeros)


def test_32_bits_bypass_is_the_identity():
    w, x = _weight(4, 3, 3, 3), torch.randn(2, 3, 6, 6)
    assert dorefa_weight(w, 32) is w and dorefa_input(x, 32) is x
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert torch.equal(quantized(conv, make_quantizer("dorefa"))(x), conv(x))


# ---- quantizers: straight-through gradients ----------------------------------------------------------------

def _grad(fn, x, upstream):
    x = x.clone().requires_grad_(True)
    fn(x).backward(upstream)
    return x.grad


@pytest.mark.parametrize("fn", [ste_sign, ste_round, lambda v: ternarize(v, torch.tensor(0.5))],
                         ids=["sign", "round", "ternarize"])
def test_ste_gradients_equal_the_upstream_gradient(fn):
    x, g = torch.randn(50) * 3, torch.randn(50)
    assert torch.equal(_grad(fn, x, g), g)


def test_quantize_k_gradient_is_the_upstream_gradient_up_to_rounding_of_x_n_over_n():
    x, g = torch.rand(100), torch.randn(100)
    assert torch.allclose(_grad(lambda v: quantize_k(v, 3), x, g), g, rtol=4 * torch.finfo(torch.float32).eps, atol=0)


def test_xnor_input_gradient_is_the_upstream_masked_by_the_clamp_then_through_the_centring():
    x, g = torch.randn(3, 6, 4, 4) * 2, torch.randn(3, 6, 4, 4)
    centred = x - x.mean(dim=1, keepdim=True)
    masked = g * (centred.abs() <= 1)
    assert (centred.abs() > 1).any() and (centred.abs() <= 1).any()
    want = masked - masked.mean(dim=1, keepdim=True)  # the centring's Jacobian is I - 1/C
    assert torch.allclose(_grad(xnor_input, x, g), want, atol=1e-6)


# ---- the plugin -----------------------------------------------------------------------------------------------

def _plugin(model, **cfg):
    plugin = get_plugin_class("wq")(full_config({"plugins": "wq", **cfg}))
    return plugin, plugin.configure_model(model)


def test_every_block_conv_incl_1x1_shortcuts_is_replaced_stem_and_classifier_stay_full_precision():
    model = create_model("resnet20_mcts", 10, (3, 32, 32))
    params = list(model.parameters())
    plugin, model = _plugin(model, wq_method="xnor")
    replaced = {n for n, m in model.named_modules() if isinstance(m, QuantConv2d)}
    assert len(replaced) == 21 and {"layers.0.shortcut", "layers.3.shortcut", "layers.6.shortcut"} <= replaced
    assert type(model.conv) is nn.Conv2d and type(model.fc) is nn.Linear
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]  # the same latent parameters
    _, model = _plugin(create_model("resnet20_mcts", 10, (3, 32, 32)), wq_method="xnor", wq_first_last=True)
    assert isinstance(model.conv, QuantConv2d) and type(model.fc).__name__ == "QuantLinear"


def test_the_forward_uses_the_quantized_weights_and_the_latent_weights_train():
    torch.manual_seed(0)
    plugin, model = _plugin(create_model("resnet20_mcts_small", 10, (3, 8, 8)), wq_method="ternary")
    conv = model.layers[4].conv1
    x = torch.randn(2, conv.in_channels, 4, 4)
    assert torch.equal(conv(x), F.conv2d(x, twn_weight(conv.weight), None, conv.stride, conv.padding))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


# Hand count for resnet20_mcts on 32x32: (in, out, kernel, output side) of every conv, then the classifier.
def _hand_convs():
    convs = [(3, 16, 3, 32)]  # the stem
    cin = 16
    for cout, side in ((64, 32), (128, 16), (256, 8)):
        for block in range(3):
            convs += [(cin, cout // 4, 3, side), (cout // 4, cout, 3, side)]
            if block == 0:
                convs.append((cin, cout, 1, side))  # the 1x1 shortcut
            cin = cout
    return convs


def test_macs_count_every_conv_including_replaced_ones_against_a_hand_count():
    convs = _hand_convs()
    assert len(convs) == 22
    conv_macs = [cin * cout * k * k * side * side for cin, cout, k, side in convs]
    fc = 256 * 10
    for method in ("none", "xnor"):
        plugin, model = _plugin(create_model("resnet20_mcts", 10, (3, 32, 32)), wq_method=method)
        assert "macs" not in plugin.scalars()  # known after the first forward
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        s = plugin.scalars()
        assert s["macs"] == sum(conv_macs) + fc == 159_042_048  # the study's tool: 159.95 M fp incl. BN, 1.35 M q
        assert s["macs_quantized"] == (sum(conv_macs[1:]) if method != "none" else 0)


def test_bits_and_size_scalars_count_codes_and_scales_not_the_latent_weights():
    model = create_model("resnet20_mcts", 10, (3, 32, 32))
    total = _params(model)
    plugin, model = _plugin(model, wq_method="ternary")
    s = plugin.scalars()
    q_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, QuantConv2d))
    q_filters = sum(m.out_channels for m in model.modules() if isinstance(m, QuantConv2d))
    assert s["size_bits"] == 32 * (total - q_weights) + 2 * q_weights + 32 * q_filters
    assert s["compression"] == pytest.approx(32 * total / s["size_bits"])
    assert (s["bits_w/layers.0.conv1"], s["bits_a/layers.0.conv1"]) == (2, 32)
    assert (s["bits_w/conv"], s["bits_w/fc"], s["bits_w/layers.6.shortcut"]) == (32, 32, 2)
    plugin, _ = _plugin(create_model("resnet20_mcts", 10, (3, 32, 32)), wq_method="dorefa", wq_w_bits=4, wq_a_bits=8)
    s = plugin.scalars()
    assert s["size_bits"] == 32 * (total - q_weights) + 4 * q_weights
    assert (s["bits_w/layers.2.conv2"], s["bits_a/layers.2.conv2"]) == (4, 8)


def test_options_are_checked_with_one_line_errors():
    with pytest.raises(ConfigError, match="'wq_method': 'binary' is not one of none, xnor, ternary, dorefa"):
        validate_config({"plugins": "wq", "wq_method": "binary"})
    with pytest.raises(ConfigError, match="'wq_w_bits' is an option of plugin 'wq', which is not enabled"):
        validate_config({"wq_w_bits": 4})
    with pytest.raises(ConfigError, match=r"'wq_a_bits'.*0 is outside the accepted range 1..32"):
        validate_config({"plugins": "wq", "wq_method": "dorefa", "wq_a_bits": 0})
    with pytest.raises(ConfigError, match=r"'wq_w_bits'.*33 is outside the accepted range 1..32"):
        validate_config({"plugins": "wq", "wq_method": "dorefa", "wq_w_bits": 33})
    assert ineffective_keys({"plugins": "wq", "wq_method": "xnor", "wq_w_bits": 2}) == {"wq_w_bits": "wq_method=dorefa"}
    assert ineffective_keys({"plugins": "wq", "wq_method": "dorefa", "wq_w_bits": 2}) == {}
    with pytest.raises(ValueError, match="no conv besides the stem"):
        _plugin(create_model("digits_mlp", 10, (1, 8, 8)), wq_method="xnor")


# ---- the grid ---------------------------------------------------------------------------------------------------

def test_cifar10_grid_is_the_studys_8_configs_and_recipe():
    from grids.wq import cifar10_resnet20
    configs = [validate_config(c) for c in expand(cifar10_resnet20().grid)]
    rows = [(c["wq_method"], c.get("wq_a_bits", 32), c.get("wq_w_bits", 32), c["lr"]) for c in configs]
    assert rows == [("none", 32, 32, 0.1), ("xnor", 32, 32, 0.1), ("ternary", 32, 32, 0.1),
                    ("dorefa", 1, 1, 0.1), ("dorefa", 2, 2, 0.01), ("dorefa", 4, 4, 0.1), ("dorefa", 8, 8, 0.1),
                    ("dorefa", 16, 16, 0.1)]
    for c in configs:
        assert ineffective_keys(c) == {}
        assert (c["arch"], c["batch_size"], c["momentum"], c["weight_decay"], c["epochs"]) == \
            ("resnet20_mcts", 100, 0.9, 1e-4, 100)
        assert c["lr_decay_epoch"] == "25000,37500" and c["chkpt_iter"] == 500  # epochs 50, 75; eval every epoch
        assert c["test_batch_size"] == 100  # DoReFa's activations depend on the batch: evaluate as trained
    from grids.wq import digits
    digits_configs = [validate_config(c) for c in expand(digits().grid)]
    assert [c["wq_method"] for c in digits_configs] == [c["wq_method"] for c in configs]
    for c in digits_configs:
        assert ineffective_keys(c) == {}


# ---- exact resume --------------------------------------------------------------------------------------------------

RUN = {"arch": "digits_cnn", "plugins": "wq", "wq_method": "dorefa", "wq_w_bits": 2, "wq_a_bits": 2,
       "niters": 16, "batch_size": 32, "chkpt_iter": 8, "tblog_interval": 4, "log_interval": 8, "lr": 0.05,
       "gvar_log_iter": 0, "test_batch_size": 400}


def _metrics(run_dir):
    lines = (run_dir / runfiles.METRICS).read_text().splitlines()
    return [(r["tag"], r["step"], r["value"]) for r in map(json.loads, lines)]


def test_a_wq_run_resumes_exactly_after_an_interruption(tmp_path):
    whole = loop.run(RUN, tmp_path / "whole")
    assert whole["final"]["wq/bits_w/conv2"] == 2 and whole["final"]["wq/macs"] > 0
    assert math.isfinite(whole["final"]["Vacc"])

    def stop_at_6(it):
        if it == 6:
            loop.request_stop()
    with pytest.raises(loop.Interrupted):
        loop.run(RUN, tmp_path / "cut", on_iteration=stop_at_6)
    resumed = loop.run(RUN, tmp_path / "cut")
    assert resumed["final"] == whole["final"] and resumed["best"] == whole["best"]
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / runfiles.CHECKPOINT, weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / runfiles.CHECKPOINT, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
