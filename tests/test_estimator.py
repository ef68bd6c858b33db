"""The `nuq` gradient estimator and the variance measurement, on a small real model.

Streams here are small seeded in-memory BatchStreams (the trainer's own stream lives in the trainer
package); `FixedStream` always returns one batch, so the gradient is fixed and all estimator variance is
quantization variance, which the theory gives exactly.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import estim
from estim.gvar import measure_variance
from nuq.levels import get_method

D_IN, D_OUT, N_DATA, BATCH = 12, 4, 256, 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: torch's intra-op threads only spin on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_DATA, D_IN, generator=g), torch.randint(0, D_OUT, (N_DATA,), generator=g)


class FixedStream:
    """The same minibatch every time: a fixed gradient."""

    def __init__(self) -> None:
        x, y = _data()
        self.batch = (x[:BATCH], y[:BATCH])

    def next(self):
        return self.batch

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class RandomStream:
    """Seeded random minibatches with exact resume."""

    def __init__(self, seed: int) -> None:
        self.x, self.y = _data()
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        idx = torch.randint(0, N_DATA, (BATCH,), generator=self.gen)
        return self.x[idx], self.y[idx]

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self.gen.set_state(state["gen"])


def _model():
    torch.manual_seed(1)
    return nn.Linear(D_IN, D_OUT)  # 48 + 4 = 52 parameters


def _estimator(method="q", workers=1, bits=3, bucket=16, stream=None, aux=None, **extra):
    opt = {"seed": 7, "g_estim": "nuq", "nuq_method": method, "nuq_bits": bits, "nuq_bucket_size": bucket,
           "nuq_ngpu": workers, "nuq_layer": True, "nuq_mul": 0.5, **extra}
    return estim.get_estimator_class("nuq")(opt, _model(), F.cross_entropy, stream or FixedStream(),
                                            aux or FixedStream())


def _theory_variance(g: torch.Tensor, method: str, bits: int, bucket: int) -> tuple[float, float]:
    """Total quantization variance sum_i norm_b^2 (u_i - l_j)(l_{j+1} - u_i) of flat g, and the bound
    sum_i gap_i^2 var_i on n * Var(sample variance) (a draw lies within gap_i of its mean)."""
    m = get_method(method)
    lv = m.init_levels(bits, 0.5).double()
    total, bound = 0.0, 0.0
    for b in g.double().split(bucket):
        norm = float(b.norm()) if m.norm == "l2" else float(b.abs().max())
        u = (b / norm).clamp(float(lv[0]), float(lv[-1]))
        j = torch.searchsorted(lv[1:-1].contiguous(), u, right=True)
        var = norm ** 2 * (u - lv[j]) * (lv[j + 1] - u)
        gap = (lv[j + 1] - lv[j]) * norm
        total += float(var.sum())
        bound += float((gap ** 2 * var).sum())
    return total, bound


def test_registered_and_sgd_baseline_exists():
    assert estim.get_estimator_class("nuq").__name__ == "NUQEstimator"
    assert estim.get_estimator_class("sgd") is not None


@pytest.mark.parametrize("bucket", [16, 26])
def test_est_var_matches_theory_and_orders_at_3_bits(bucket):
    """Fixed gradient: sgd_var is 0 and est_var is pure quantization variance. Each est_var is within 5
    standard deviations of the theory (SD <= sqrt(bound / n), see `_theory_variance`; coordinates use
    independent random numbers), and the methods order as the theory orders them. Which order that is
    depends on the bucket: qinf < q always, nuq < q here; TernGrad's L-inf variance grows like
    max|x| * sum|x| and NUQSGD's like d * norm^2 / 64, so trn passes nuq as buckets get small."""
    n = 300
    est0 = _estimator("none")
    g = torch.cat([t.reshape(-1) for t in est0.minibatch_grad(est0.train_stream)[0]])
    measured, theory, sd = {}, {}, {}
    for method in ["none", "qinf", "trn", "nuq", "q"]:
        res = measure_variance(_estimator(method, bucket=bucket), n)
        assert res["sgd_var"] < 1e-9 * float(g.square().sum())  # zero up to float64 cancellation
        theory[method], bound = (0.0, 0.0) if method == "none" else _theory_variance(g, method, 3, bucket)
        sd[method] = (bound / n) ** 0.5
        assert abs(res["est_var"] - theory[method]) <= 5 * sd[method] + 1e-12, (method, res["est_var"], theory)
        measured[method] = res["est_var"]
    by_theory = sorted(theory, key=theory.get)
    for a, b in zip(by_theory, by_theory[1:]):
        assert theory[b] - theory[a] > 5 * (sd[a] + sd[b]), "theory values too close to order reliably"
        assert measured[a] < measured[b], (measured, theory)
    assert by_theory[0] == "none" and theory["qinf"] < theory["q"] and theory["nuq"] < theory["q"]


def test_workers_average_reduces_variance_by_k():
    """K independently quantized copies of a fixed gradient: est_var = theory / K, within 5 SDs."""
    n, k = 300, 4
    est = _estimator("q", workers=k)
    g = torch.cat([t.reshape(-1) for t in est.minibatch_grad(est.train_stream)[0]])
    theory, bound = _theory_variance(g, "q", 3, 16)
    res = measure_variance(est, n)
    # the mean of K draws has variance var/K and its sample-variance bound shrinks by K^2
    assert abs(res["est_var"] - theory / k) <= 5 * (bound / k ** 2 / n) ** 0.5


def test_unbiased_estimator_bias_at_floor():
    """grad_bias = ||e - g||^2 has expectation (est_var + sgd_var)/n when unbiased; a sum of 52
    independent squared normal-ish terms stays below 3x its mean with overwhelming probability."""
    n = 200
    res = measure_variance(_estimator("nuq"), n)
    assert res["grad_bias"] < 3 * (res["est_var"] + res["sgd_var"]) / n


def test_random_batches_sgd_variance_and_normalised_values():
    est = _estimator("q", stream=RandomStream(1), aux=RandomStream(2))
    res = measure_variance(est, 50)
    assert res["sgd_var"] > 0 and res["est_var"] > res["sgd_var"]  # quantization adds variance
    # both normalised by the same ||g||^2: the ratios agree up to the rounding of the four divisions
    # (each within 2^-53 relative, so at most ~4 * 2^-53 apart; twice that for slack), not bit for bit
    assert res["est_nvar"] / res["sgd_nvar"] == pytest.approx(res["est_var"] / res["sgd_var"], rel=8 * 2.0 ** -53)
    assert res["est_snr"] > 0 and set(res) == {"est_var", "sgd_var", "est_nvar", "sgd_nvar", "est_snr", "grad_bias"}


def test_none_averages_full_precision_gradients():
    est = _estimator("none", workers=3)
    grads, loss = est.grad()
    want, want_loss = est.minibatch_grad(est.train_stream)
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-8) for a, b in zip(grads, want))
    assert abs(loss - want_loss) < 1e-6


def test_repeatable_and_exact_resume():
    def run(est, steps):
        return [torch.cat([t.reshape(-1) for t in est.grad()[0]]) for _ in range(steps)]
    a = _estimator("nuq", workers=2, stream=RandomStream(3))
    first = run(a, 5)
    b = _estimator("nuq", workers=2, stream=RandomStream(3))
    assert all(torch.equal(x, y) for x, y in zip(first, run(b, 5)))
    c = _estimator("nuq", workers=2, stream=RandomStream(3))
    run(c, 3)
    state, stream_state = c.state_dict(), c.train_stream.state_dict()
    d = _estimator("nuq", workers=2, stream=RandomStream(99))
    d.load_state_dict(state)
    d.train_stream.load_state_dict(stream_state)
    assert all(torch.equal(x, y) for x, y in zip(first[3:], run(d, 2)))
    assert state["calls"] == 6  # 3 steps x 2 workers


def test_workers_use_distinct_random_numbers():
    est = _estimator("q", workers=1)
    a = est.grad()[0]
    b = est.grad()[0]  # same fixed batch, fresh stream positions
    assert not all(torch.equal(x, y) for x, y in zip(a, b))


def test_scalars_log_bits_and_levels():
    s = _estimator("nuq", bits=3, bucket=16).scalars()
    assert s["bits"] == (52 * 3 + 4 * 32) / 52  # one network-wide vector of 52 values: 4 buckets
    assert [s[f"levels/{i}"] for i in range(8)] == get_method("nuq").init_levels(3, 0.5).tolist()
    assert _estimator("none").scalars() == {"bits": 32.0}


def test_adaptive_without_g_optim_keeps_exponential_levels():
    est = _estimator("alq", bits=3)
    assert est.adapter is None
    assert torch.equal(est.levels, get_method("alq").init_levels(3, 0.5))


def test_bad_workers_is_named():
    import pytest
    with pytest.raises(ValueError, match="nuq_ngpu"):
        _estimator("q", workers=0)
    with pytest.raises(ValueError, match="gvar_estim_iter"):
        measure_variance(_estimator("q"), 1)


def test_adaptive_levels_refit_and_are_used_and_checkpointed():
    """With g_optim, the LevelAdapter re-fits on schedule from aux-stream gradients, quantization uses its
    levels, and its state (levels included) travels in the estimator's state_dict."""
    extra = {"g_optim": True, "g_osnap_iter": "2", "nuq_number_of_samples": 2, "gvar_start": 0,
             "g_optim_start": 0}
    est = _estimator("alq", bits=3, bucket=16, stream=RandomStream(1), aux=RandomStream(2), **extra)
    init = est.levels.clone()
    est.on_step(0)  # due: step 0 is a multiple of 2 from gvar_start
    assert est.adapter.nfits == 1 and not torch.equal(est.levels, init)
    est.on_step(1)  # not due
    assert est.adapter.nfits == 1
    grads = [torch.randn(4, 12), torch.randn(4)]
    q = torch.cat([t.reshape(-1) for t in est.quantize(grads)])
    flat = torch.cat([t.reshape(-1) for t in grads])
    for b in range(0, 52, 16):  # every value is (bucket norm) x (one of the adapter's levels)
        part, norm = q[b:b + 16], flat[b:b + 16].norm()
        dist = (part[:, None] / norm - est.levels[None, :]).abs().min(dim=1).values
        assert float(dist.max()) < 1e-5
    s = est.scalars()
    assert [s[f"levels/{i}"] for i in range(8)] == est.levels.tolist()
    other = _estimator("alq", bits=3, bucket=16, **extra)
    other.load_state_dict(est.state_dict())
    assert torch.equal(other.levels, est.levels) and other.calls == est.calls
