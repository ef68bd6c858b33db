"""Trainer plugins (trainer/plugins/, docs/plugins.md): registry, the objective every estimator
differentiates, the hooks in the real loop, sample indices, and exact resume through a shape change."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import plugins_for_tests  # noqa: E402,F401  (declares and registers sqnorm and widen)
from estim import get_estimator_class  # noqa: E402
from trainer import loop, runfiles  # noqa: E402
from trainer.options import declare_plugin, full_config  # noqa: E402
from trainer.plugins.base import Plugin, get_plugin_class, register_plugin  # noqa: E402
from trainer.plugins.enabled import EnabledPlugins  # noqa: E402
from test_trainer_loop import _metrics, _stop_at  # noqa: E402  (the loop tests' helpers)

C = 0.05  # sqnorm's coefficient in the gradient tests


# ---- registry ------------------------------------------------------------------------------------------

def test_registry_refuses_duplicate_and_undeclared_names_and_finds_shipped_plugins():
    with pytest.raises(ValueError, match="'sqnorm' is already registered"):
        register_plugin("sqnorm")(type("Again", (Plugin,), {}))
    with pytest.raises(ValueError, match="'nodecl' is not in a torch-free trainer/plugins/<name>_options.py"):
        register_plugin("nodecl")(type("NoDecl", (Plugin,), {}))
    with pytest.raises(ValueError, match="declared twice"):
        declare_plugin("widen", {})
    with pytest.raises(ValueError, match="must start with 'p2_'"):
        declare_plugin("p2", {"lr2": ("float", 0.1, "x")})
    with pytest.raises(ValueError, match="option p3_x has kind 'double'; one of int, float"):
        declare_plugin("p3", {"p3_x": ("double", 0.1, "x")})
    with pytest.raises(ValueError, match="default of p4_x: expected an int, got str 'a'"):
        declare_plugin("p4", {"p4_x": ("int", "a", "x")})
    from trainer.plugins import shipped_options
    for name in shipped_options():  # every shipped options module has its class, imported on demand
        assert get_plugin_class(name).name == name
    with pytest.raises(ValueError, match="unknown plugin 'nope'"):
        get_plugin_class("nope")


# ---- the objective under every estimator -----------------------------------------------------------------

class Fixed:
    """A stream cycling through given batches."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next(self):
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]


def _batches(n):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, 10, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(n)]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 37), torch.nn.ReLU(), torch.nn.Linear(37, 5))


def _grads(config, loss_fn=None, batches=None):
    opt = full_config({"plugins": "sqnorm", "sqnorm_c": C, "seed": 5, **config})
    model = _model()
    loss_fn = loss_fn(model) if loss_fn else EnabledPlugins(opt).objective(F.cross_entropy, model)
    est = get_estimator_class(opt["g_estim"])(opt, model, loss_fn, Fixed(batches or _batches(2)), None)
    return model, est.grad()


def _by_hand(model, batch):
    """d/dw [cross-entropy + c ||w||^2] = autograd of the cross-entropy + 2 c w."""
    x, y = batch
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    return [g + 2 * C * p.detach() for g, p in zip(grads, model.parameters())]


def test_sgd_differentiates_task_loss_plus_the_plugin_term():
    model, (grads, loss) = _grads({"g_estim": "sgd"})
    (batch,) = _batches(1)
    for g, want in zip(grads, _by_hand(model, batch)):
        torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-7)  # float32 rounding of the two sums
    ce = float(F.cross_entropy(model(batch[0]), batch[1]).detach())
    assert loss == pytest.approx(ce + C * sum(float(p.detach().square().sum()) for p in model.parameters()), rel=1e-6)


def test_nuq_averages_workers_gradients_of_task_loss_plus_the_plugin_term():
    model, (grads, _) = _grads({"g_estim": "nuq", "nuq_method": "none", "nuq_ngpu": 2})
    per_worker = [_by_hand(model, b) for b in _batches(2)]
    for g, a, b in zip(grads, *per_worker):
        torch.testing.assert_close(g, (a + b) / 2, rtol=1e-6, atol=1e-7)


def test_quantized_nuq_quantizes_the_gradient_of_the_whole_objective():
    # the same random streams: bit-identical to an estimator handed the summed loss directly
    config = {"g_estim": "nuq", "nuq_method": "q", "nuq_bits": 3, "nuq_bucket_size": 64, "nuq_ngpu": 2}
    _, (got, _) = _grads(config)

    def summed(model):
        return lambda out, y: F.cross_entropy(out, y) + C * sum(p.square().sum() for p in model.parameters())
    _, (want, _) = _grads(config, loss_fn=summed)
    _, (plain, _) = _grads(config, loss_fn=lambda model: F.cross_entropy)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert not all(torch.equal(g, w) for g, w in zip(got, plain))
# nuq_dist on 2 real gloo ranks: tests/test_dist.py (cases plugin_sqnorm*, with tests/dist_workers.py)


# ---- the hooks in the loop ---------------------------------------------------------------------------------

BASE = {"niters": 40, "batch_size": 32, "epoch_iters": 10, "chkpt_iter": 15, "tblog_interval": 5,
        "log_interval": 10, "lr": 0.05}
WIDEN = {**BASE, "plugins": "widen,l1clip", "widen_units": 3, "l1clip_l1": 1e-4, "l1clip_clip": 0.2,
         "lr_decay_epoch": 25}


@pytest.fixture(scope="module")
def widened(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("widen")
    return run_dir, loop.run(WIDEN, run_dir)


def test_a_stage_started_from_a_widened_run_gets_its_carried_width_before_the_weights(widened, tmp_path):
    """init_checkpoint (a stage's start): the plugin's carry_state() resizes the fresh model first, so the
    upstream's 140-unit weights fit; without the carry they would be refused as the wrong shape."""
    run_dir, upstream = widened
    start = {**WIDEN, "niters": 5, "epoch_iters": 100, "chkpt_iter": 5, "init_checkpoint": str(run_dir / runfiles.CHECKPOINT)}
    down = tmp_path / "down"
    results = loop.run(start, down)
    state = torch.load(down / runfiles.CHECKPOINT, weights_only=True)
    assert state["model"]["1.weight"].shape == (140, 64) and state["iteration"] == 5
    assert results["final"]["widen/width"] == 140.0
    assert int(state["plugins"]["widen"]["seen"].sum()) == 5 * WIDEN["batch_size"]  # its own count, not carried
    plain = {k: v for k, v in start.items() if not k.startswith(("widen", "l1clip"))} | {"plugins": ""}
    with pytest.raises(ValueError, match="parameter '1.weight'.*shape"):
        loop.run(plain, tmp_path / "plain")


def test_shape_change_rebuilds_the_optimizer_and_is_logged(widened):
    run_dir, results = widened
    state = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)
    assert state["model"]["1.weight"].shape == (128 + 3 * 4, 64)  # 4 epoch boundaries, 3 units each
    assert state["model"]["3.weight"].shape == (10, 140)
    assert state["plugins"]["widen"]["width"] == 140 and state["carry"] == {"widen": {"width": 140}}
    # saved right after the rebuild at the last boundary: only the classifier's bias, unchanged by the
    # widening, kept its momentum; the three widened parameters start afresh
    assert list(state["optimizer"]["state"]) == [3] and state["optimizer"]["state"][3]["momentum_buffer"].shape == (10,)
    log = (run_dir / runfiles.LOG).read_text()
    assert "epoch 3: plugin widen changed the parameters" in log and "optimizer rebuilt at lr 0.005" in log
    assert results["final"]["widen/width"] == 140.0 and results["final"]["Vacc"] > 80
    widths = [(step, v) for tag, step, v in _metrics(run_dir) if tag == "widen/width"]
    assert widths[:3] == [(5, 128.0), (10, 131.0), (15, 131.0)]  # logged after the boundary's rebuild
    # clamped after every step, rows added at step 30 included (those of the last boundary have seen no step)
    assert state["model"]["1.weight"][:137].abs().max() <= 0.2 and state["model"]["3.weight"].abs().max() <= 0.2
    assert 0 < results["final"]["l1clip/clipped_frac"] < 1


@pytest.mark.parametrize("stop", [15, 20])  # mid-epoch (between checkpoints) and at a boundary
def test_interrupt_and_resume_through_shape_changes_is_exact(widened, tmp_path, stop):
    run_dir, results = widened
    with pytest.raises(loop.Interrupted):
        loop.run(WIDEN, tmp_path, on_iteration=_stop_at(stop))
    resumed = loop.run(WIDEN, tmp_path)
    assert resumed["final"] == results["final"] and resumed["best"] == results["best"]
    assert _metrics(tmp_path) == _metrics(run_dir)
    a = torch.load(run_dir / runfiles.CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / runfiles.CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["plugins"]["widen"]["seen"], b["plugins"]["widen"]["seen"])


def test_sample_indices_reach_the_plugin(widened):
    # 40 steps of 32 from 1437 training samples (44 batches per epoch): no sample drawn twice yet
    seen = torch.load(widened[0] / runfiles.CHECKPOINT, weights_only=True)["plugins"]["widen"]["seen"]
    assert int(seen.sum()) == 40 * 32 and int(seen.max()) == 1


def test_a_stream_with_indices_yields_the_same_batches_plus_each_samples_dataset_index():
    from trainer.data import BatchStream, load_dataset
    data, cpu = load_dataset("digits", ""), torch.device("cpu")
    plain = BatchStream(data, data.train, 100, seed=4, device=cpu)
    indexed = BatchStream(data, data.train, 100, seed=4, device=cpu, with_index=True)
    for _ in range(20):  # crosses an epoch boundary (14 batches per epoch)
        (x, y), (xi, yi, index) = plain.next(), indexed.next()
        assert torch.equal(x, xi) and torch.equal(y, yi) and index.dtype == torch.int64
        raw_x, raw_y = data.train.get(index)
        assert torch.equal(yi, raw_y) and torch.equal(xi, data.prepare(raw_x))  # digits: no augmentation


def test_a_plugin_that_changes_parameters_without_saying_so_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(plugins_for_tests.Widen, "on_epoch_end",
                        lambda self, epoch: bool(self._resize(self.width + 1, torch.zeros(1, 64))))
    with pytest.raises(RuntimeError, match="plugin 'widen' changed the model's parameters at epoch 1 but "
                                           "on_epoch_end returned False"):
        loop.run({**BASE, "plugins": "widen"}, tmp_path)
