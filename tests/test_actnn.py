"""The `actnn` plugin (trainer/plugins/actnn*.py): quantizer statistics, packing, bit allocation, the
compressed layers' gradients, resume, and the study's variance ordering on a small model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainer import loop, runfiles
from trainer.options import full_config
from trainer.plugins.actnn_layers import convert
from nuq import groupquant
from rounding_checks import assert_two_point_rounding
from trainer.plugins.actnn_quant import compress, decompress, draw_seed, greedy_bits
from trainer.plugins.actnn_var import measure
from trainer.plugins.base import get_plugin_class


def _x(n=4, f=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g) * torch.linspace(0.5, 3, n).view(-1, 1)


@pytest.mark.parametrize("pergroup", [True, False])
def test_stochastic_rounding_is_unbiased_with_the_variance_of_two_point_rounding(pergroup):
    """Through the plugin's compress: each call draws its own Philox seed from torch's generator."""
    torch.manual_seed(1)
    x, draws = _x(), 2000
    bits = torch.tensor([1, 2, 3, 8])
    codes, mn, scale = groupquant.reference_codes(x, bits, 32, pergroup, seed=0)  # min, scale: seed-free
    out = torch.stack([decompress(compress(x, bits, 32, pergroup, torch.float32)) for _ in range(draws)])
    step = (1 / scale).expand(-1, -1, 32).reshape(4, -1)[:, :96]
    base = mn.expand(-1, -1, 32).reshape(4, -1)[:, :96]
    assert_two_point_rounding(out, x, base + torch.floor((x - base) / step) * step, step)
    assert bool((codes[0] <= 1).all()) and bool((codes[1] <= 3).all())


def test_compress_is_the_group_codec_under_a_seed_from_torchs_generator():
    x, bits = _x(n=5, f=200), torch.tensor([1, 8, 3, 3, 5])
    torch.manual_seed(4)
    seed = draw_seed()
    torch.manual_seed(4)
    c = compress(x, bits, 64, True, torch.float32)
    codes, mn, scale = groupquant.reference_compress(x, bits, 64, True, torch.float32, seed)
    assert torch.equal(c.codes, codes) and torch.equal(c.mn, mn) and torch.equal(c.scale, scale)
    assert c.nbytes() == 5 + 2 * 4 * 5 * 4 + sum(4 * 64 * b // 8 for b in bits.tolist())
    assert torch.equal(decompress(c), groupquant.reference_decompress(codes, bits, mn, scale, 64, 200))


def test_greedy_allocation_meets_the_budget_never_below_one_bit_and_favours_costly_samples():
    cost = torch.tensor([1e-3, 1.0, 10.0, 1e3, 1e6, 0.0])
    for budget in (6, 7, 12, 20, 47):
        bits = greedy_bits(cost, 8, budget)
        assert int(bits.sum()) == budget and int(bits.min()) >= 1 and int(bits.max()) <= 8
        nonzero = bits[:5]
        assert bool((nonzero[1:] >= nonzero[:-1]).all()), bits  # more variance -> more bits
    assert greedy_bits(cost, 2, 100).tolist() == [2] * 6  # budget above the start: unchanged
    weights = torch.tensor([1.0, 10.0, 100.0, 1.0, 10.0, 100.0])
    wb = greedy_bits(cost, 8, 2.0 * float(weights.sum()), weights)
    assert float((wb * weights).sum()) <= 2.0 * float(weights.sum()) and int(wb.min()) >= 1
    with pytest.raises(ValueError, match="bit budget 5 is below 1 bit per item"):
        greedy_bits(cost, 8, 5)


def _net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _plugin(model, **opt):
    config = full_config({"plugins": "actnn", "actnn_store": "float32", "actnn_perlayer": False, **opt})
    plugin = get_plugin_class("actnn")(config)
    return plugin.configure_model(model), plugin


def test_qlinear_weight_gradients_are_unbiased_and_input_gradients_exact():
    ref = _net()
    model, _ = _plugin(copy.deepcopy(ref), actnn_mode="qlinear", actnn_cabits=2, actnn_ibits=2, actnn_group_size=16)
    x = torch.randn(8, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    def grads(net):
        xi = x.clone().requires_grad_()
        loss = nn.functional.cross_entropy(net(xi), y)
        return [xi, *net.parameters()], torch.autograd.grad(loss, [xi, *net.parameters()])

    _, exact = grads(ref)
    torch.manual_seed(5)
    draws = [grads(model)[1] for _ in range(100)]
    for k in range(len(exact)):
        stack = torch.stack([d[k] for d in draws])
        if k == 0:  # input gradient: from the weights alone, the same in every draw
            assert torch.allclose(stack, exact[0].expand_as(stack), atol=1e-6)
            continue
        err = (stack.mean(0) - exact[k]).abs()
        bound = 5 * stack.std(0) / len(draws) ** 0.5 + 1e-6
        assert bool((err <= bound).all()), (k, float((err / bound).max()))
        assert float(stack.std(0).max()) > 0 or k in (2, 4)  # weights vary; biases are exact


DIGITS = {"niters": 8, "batch_size": 32, "epoch_iters": 4, "chkpt_iter": 4, "tblog_interval": 2,
          "log_interval": 4, "lr": 0.05, "arch": "digits_cnn", "plugins": "actnn", "actnn_cabits": 2,
          "actnn_relu_mask": True, "actnn_var_at": "6", "actnn_var_batches": 2}


def _stop_at(step):
    def hook(it, *_):
        if it == step:
            loop.request_stop()
    return hook


def test_interrupt_and_resume_of_an_actnn_run_is_exact(tmp_path):
    full = loop.run(DIGITS, tmp_path / "full")
    with pytest.raises(loop.Interrupted):
        loop.run(DIGITS, tmp_path / "cut", on_iteration=_stop_at(5))
    resumed = loop.run(DIGITS, tmp_path / "cut")
    assert resumed["final"] == full["final"] and full["final"]["actnn/var"] > 0
    assert 1 <= full["final"]["actnn/bits"] <= 8
    a = torch.load(tmp_path / "full" / runfiles.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "cut" / runfiles.CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_per_sample_scales_follow_dataset_indices_and_weight_the_bits():
    """s_n is the EMA(0.5) of sample n's squared output-gradient norm, kept by dataset index; unseen samples
    get the batch mean; at equal ranges the sample with the larger scale gets more bits."""
    model, plugin = _plugin(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), actnn_mode="qlinear", actnn_cabits=2,
                            actnn_ibits=8)
    c = plugin.compressors[0]
    x = torch.linspace(-1, 1, 16).repeat(4, 1)  # four samples with the same ranges
    index = torch.tensor([5, 9, 2, 7])
    plugin.begin_batch(index)
    out = model(x)
    grad_out = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.1, 0.0], [0.0, 0.0]])
    out.backward(grad_out)
    assert torch.equal(c.scales[index], 0.5 * grad_out.square().sum(1))  # 0.5 * 0 + 0.5 * ||g_n||^2
    plugin.begin_batch(torch.tensor([5, 9, 2, 11]))  # 11 never seen: the batch mean
    s = c.sample_scales(4)
    assert torch.allclose(s, torch.tensor([4.5, 0.5, 0.005, (4.5 + 0.5 + 0.005) / 4], dtype=torch.float64))
    bits = c.bits_for(x)
    assert bits[0] > bits[1] > bits[2] and int(bits.sum()) == 8, bits
    with pytest.raises(ValueError, match="a batch of 3 samples was given 4 dataset indices"):
        c.bits_for(x[:3])


def test_a_run_gives_the_plugin_each_batch_s_indices_before_its_forward(tmp_path):
    """8 steps of 32 samples without repetition: exactly 256 samples have a scale in every layer; with
    actnn_use_gradient false the batches carry no indices and no sample has one."""
    for use_gradient, seen in ((True, 256), (False, 0)):
        loop.run({**DIGITS, "actnn_use_gradient": use_gradient}, tmp_path / str(use_gradient))
        state = torch.load(tmp_path / str(use_gradient) / runfiles.CHECKPOINT, weights_only=True)
        counts = [int((layer["scales"] > 0).sum()) for layer in state["plugins"]["actnn"]["layers"]]
        assert len(counts) == 4 and set(counts) == {seen}, counts  # digits_cnn: 2 conv + 2 linear


def _small_bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))


def _variance(mode, cabits, ibits, pergroup, perlayer):
    model, plugin = _plugin(_small_bn_net(), actnn_mode=mode, actnn_cabits=cabits, actnn_ibits=ibits,
                            actnn_pergroup=pergroup, actnn_perlayer=perlayer, actnn_store="bfloat16")
    g = torch.Generator().manual_seed(7)
    # each sample scaled by a log-normal factor: ranges (and gradient norms) differ across samples by
    # orders of magnitude, as real data's do, which is what per-sample bits exploit
    batches = [(torch.rand(16, 1, 8, 8, generator=g) * torch.randn(16, 1, 1, 1, generator=g).mul(1.5).exp(),
                torch.randint(0, 10, (16,), generator=g), torch.arange(16 * i, 16 * (i + 1))) for i in range(3)]
    torch.manual_seed(7)  # the same rounding noise stream for every configuration
    return measure(model, batches, [m.weight for m in plugin.weight_layers], plugin, 3)["var"]


def test_the_variance_ordering_of_the_study_holds_on_a_small_model():
    """The study's table: 2-bit per-tensor >> 2-bit per-group > 2/8 per-group (per-sample bits from
    ranges x per-sample gradient scales) > 2/8 per-group + per-layer; 4-bit per-tensor << 2-bit per-tensor;
    quantize > qlinear row by row. Margins: the >> steps are 4-bit levels (15 vs 3 levels: up to 25x less
    variance) and per-group vs one range for samples whose scales differ ~100x, so 3x is far inside them;
    the > steps need 1.2x: each var is a sum over ~970 weights of a 3-draw population variance (relative
    sampling error ~ sqrt(2/2 / 970) ~ 3% per batch), well below 20%. Seeds 7..10 give the same order."""
    configs = ((4, 4, False, False), (2, 2, False, False), (2, 2, True, False), (2, 8, True, False), (2, 8, True, True))
    table = {(mode, cfg): _variance(mode, *cfg) for mode in ("qlinear", "quantize") for cfg in configs}
    for mode in ("qlinear", "quantize"):
        four, per_tensor, per_group, per_sample, per_layer = (table[(mode, c)] for c in configs)
        assert per_tensor > 3 * per_group and per_tensor > 3 * four, table
        assert per_group > 1.2 * per_sample > 1.2 ** 2 * per_layer, table
    for cfg in configs:
        assert table[("quantize", cfg)] > table[("qlinear", cfg)], table


def test_the_protocol_fills_scales_for_itself_and_leaves_the_plugin_as_it_found_it():
    """Pass 1 records the measured samples' scales (the compressed passes see them, not the batch-mean
    fallback), then everything is restored: a later forward allocates as if nothing was measured."""
    model, plugin = _plugin(_small_bn_net(), actnn_mode="qlinear", actnn_cabits=2, actnn_ibits=8)
    g = torch.Generator().manual_seed(1)
    x, y, index = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g), torch.arange(8)
    seen = []
    c = plugin.compressors[-1]
    original = c.bits_for
    c.bits_for = lambda inp: (seen.append(c.sample_scales(len(inp))), original(inp))[1]
    measure(model, [(x, y, index)], [m.weight for m in plugin.weight_layers], plugin, 2)
    assert len(seen) == 2 and all(torch.equal(s, seen[0]) for s in seen)  # frozen: the same in both draws
    assert float(seen[0].min()) > 1e-6 and len(set(seen[0].tolist())) == 8  # recorded per sample, not unseen
    assert len(c.scales) == 0 and c.index is None and c.update_scale and c.enabled


def test_bad_settings_are_refused_with_one_line_naming_them():
    with pytest.raises(ValueError, match=r"actnn_cabits \(4.0\) <= actnn_ibits \(2\)"):
        _plugin(_net(), actnn_cabits=4, actnn_ibits=2)
    for key, value, accepted in (("actnn_cabits", 0.5, "1..8"), ("actnn_ibits", 9, "1..8"), ("actnn_group_size", 0, "1..65536"),
                                 ("actnn_group_size", 65537, "1..65536")):
        with pytest.raises(ValueError, match=f"'{key}': {value} is outside the accepted range {accepted}"):
            full_config({"plugins": "actnn", key: value})  # at expansion: validate_config does the same


def test_an_unknown_mode_is_refused_by_the_option_schema():
    with pytest.raises(ValueError, match="'fp8' is not one of off, qlinear, quantize"):
        full_config({"plugins": "actnn", "actnn_mode": "fp8"})


def test_the_compressed_step_saves_packed_bytes_not_float_activations():
    """What autograd holds in quantize mode (2 bits, 1-bit ReLU masks) is under a tenth of fp32's."""
    def held(model):
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(8, 1, 8, 8)).sum().backward()
        return sum(seen.values())

    net = nn.Sequential(*list(_small_bn_net())[:6], nn.Flatten(), nn.Linear(8 * 8 * 8, 10))  # no pooling:
    fp32 = held(copy.deepcopy(net))  # (adaptive pooling keeps its float input, which the plugin leaves alone)
    two, _ = _plugin(net, actnn_mode="quantize", actnn_cabits=2, actnn_ibits=2, actnn_relu_mask=True,
                     actnn_store="bfloat16")
    assert held(two) * 8 < fp32, (held(two), fp32)


def test_relu_with_a_one_bit_mask_gives_the_exact_gradient():
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    relu = nn.ReLU()
    convert(relu, (nn.ReLU,))
    g = torch.randn(4, 3, 5, 5)
    got = torch.autograd.grad(relu(x), x, g)[0]
    assert type(relu).__name__ == "ActReLU" and torch.equal(got, g * (x > 0))


def test_batch_norm_backward_is_the_formula_on_the_dequantized_x_hat(monkeypatch):
    """The fused backward (torch's batch-norm backward with mean 0, invstd 1, weight w * invstd) gives
    gx = w invstd (g - mean(g) - x_hat mean(g x_hat)), gw = sum(g x_hat), gb = sum(g) of the very x_hat
    the layer dequantized (recorded by wrapping decompress); running statistics as nn.BatchNorm2d's."""
    from trainer.plugins import actnn_layers
    seen = []

    def recording(c, dtype=torch.float32):
        seen.append(decompress(c, dtype))
        return seen[-1]
    monkeypatch.setattr(actnn_layers, "decompress", recording)
    torch.manual_seed(0)
    stock = nn.BatchNorm2d(3)
    with torch.no_grad():
        stock.weight.uniform_(0.5, 2)
        stock.bias.uniform_(-1, 1)
    bn = copy.deepcopy(stock)
    _plugin(bn, actnn_mode="quantize", actnn_cabits=2, actnn_ibits=2)
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    g = torch.randn(6, 3, 5, 5)
    xi = x.clone().requires_grad_()
    out = bn(xi)
    assert torch.allclose(out, stock(x), atol=1e-5)
    assert torch.allclose(bn.running_mean, stock.running_mean) and torch.allclose(bn.running_var, stock.running_var)
    out.backward(g)
    x_hat, = seen
    invstd = torch.rsqrt(x.var((0, 2, 3), unbiased=False) + bn.eps).view(1, -1, 1, 1)
    w = bn.weight.detach().view(1, -1, 1, 1)
    mean = lambda t: t.mean((0, 2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(xi.grad, w * invstd * (g - mean(g) - x_hat * mean(g * x_hat)), atol=1e-5)
    assert torch.allclose(bn.weight.grad, (g * x_hat).sum((0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.bias.grad, g.sum((0, 2, 3)), atol=1e-4)


def _expand(run, root):
    import argparse
    from launcher.selection import select_runs
    sel = select_runs(argparse.Namespace(grid="actnn", run=run, only=[], set=[], limit=None, root=str(root)))
    return [r.config for r in sel.runs]


def test_the_cifar_grids_use_the_studys_recipe_and_measure_every_row_on_one_checkpoint(tmp_path):
    """cifar10: cosine, lr 0.1, momentum 0.9, wd 1e-4 not on BN, 200 epochs, batch 128; cifar10_var: one
    fp run of 10 epochs, and 10 rows from its weights at lr 0 (the weights the protocol measures stay the
    fp run's)."""
    train = _expand("cifar10", tmp_path)
    assert len(train) == 11 and all(
        (c["lr_schedule"], c["lr"], c["momentum"], c["weight_decay"], c["wd_norm"], c["epochs"], c["batch_size"])
        == ("cosine", 0.1, 0.9, 1e-4, False, 200, 128) and "lr_decay_epoch" not in c for c in train)
    var = _expand("cifar10_var", tmp_path)
    fp, rows = var[0], var[1:]
    assert fp["stage"] == "fp" and "plugins" not in fp and fp["niters"] == 10 * (50000 // 128)
    assert len(rows) == 10 and {(c["init_from"], c["lr"], c["niters"], c["actnn_var_at"]) for c in rows} == \
        {("fp", 0.0, 10, "10")}  # intlist values are normalised to their text
    assert len({(c["actnn_mode"], c["actnn_cabits"], c["actnn_ibits"], c["actnn_pergroup"], c["actnn_perlayer"])
                for c in rows}) == 10
