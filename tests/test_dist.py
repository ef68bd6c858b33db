"""Real 2-process gloo runs on CPU: encoded exchange equals the simulated average, sizes, rank failures.

Each spawned job costs a few seconds (two fresh Python + torch processes), so one job checks several
things; the rank bodies live in tests/dist_workers.py and save what is asserted here.
"""
import sys
import time
from pathlib import Path

import pytest
import torch

from launcher.executors.distributed import spawn_local
from nuq import codec, kernel
from nuq.levels import METHODS

WORKERS = Path(__file__).with_name("dist_workers.py")
sys.path.insert(0, str(WORKERS.parent))
import dist_workers  # noqa: E402

N, BITS, BUCKET = 10_001, 3, 512  # a partial last bucket and a padding byte: 10001*3 bits = 3750.375 bytes


def _target(name: str) -> str:
    return f"{WORKERS}:{name}"


@pytest.fixture(scope="module")
def exchanged(tmp_path_factory):
    out = tmp_path_factory.mktemp("exchange")
    result = spawn_local(2, [str(out), str(N), str(BITS), str(BUCKET), "reference"], log_dir=out,
                         timeout_s=60, grace_s=5, target=_target("exchange_round"))
    assert result.failed_rank is None, result.message
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _levels():
    return METHODS["q"].init_levels(BITS, 0.5)


def test_message_round_trip_equals_quantize_dequantize(exchanged):
    for rank, res in enumerate(exchanged):
        x = dist_workers.per_rank_vector(rank, N)
        expected = kernel.quantize(x, _levels(), BUCKET, "l2", 7 + rank, 1000 * rank, backend="reference")
        assert torch.equal(codec.decode(res["message"], N, _levels(), BUCKET, backend="reference"), expected)


def test_bytes_on_the_wire(exchanged):
    expected = -(-N * BITS // 8) + 4 * -(-N // BUCKET)  # n*b/8 to the padding byte + one float32 per bucket
    assert expected == 3751 + 4 * 20
    for res in exchanged:
        assert res["message"].numel() == expected
        assert res["allgather_stats"]["message_bytes"] == expected
        assert res["allgather_stats"]["bytes_sent"] == expected  # 2 ranks: one peer


@pytest.mark.parametrize("name", ["allgather", "alltoall"])
def test_average_equals_the_simulated_average(exchanged, name):
    # The simulated mode quantizes each worker's vector with that worker's stream and averages them.
    simulated = sum(kernel.quantize(dist_workers.per_rank_vector(r, N), _levels(), BUCKET, "l2", 7 + r,
                                    1000 * r, backend="reference") for r in range(2)) / 2
    for res in exchanged:
        assert torch.equal(res[name], simulated)


@pytest.mark.parametrize("case", sorted(dist_workers.ESTIMATOR_CASES))
def test_nuq_dist_gradient_equals_the_simulated_nuq_gradient(exchanged, case):
    # Same per-worker minibatches, same random streams: g_estim=nuq_dist on 2 ranks and g_estim=nuq with
    # nuq_ngpu=2 in one process must give the same averaged gradient, bit for bit, at every call.
    simulated = dist_workers.estimator_grads(dist_workers.ESTIMATOR_CASES[case], 0, simulated=True)
    for res in exchanged:
        calls = res["estimator"][case]
        assert len(calls) == len(simulated) == dist_workers.ESTIMATOR_CALLS
        for got, want in zip(calls, simulated):
            for g, w in zip(got, want):
                assert torch.equal(g, w)
    if dist_workers.ESTIMATOR_CASES[case]["nuq_method"] != "none":
        assert not torch.equal(simulated[0][0], simulated[1][0])  # each call draws fresh random numbers


def test_nuq_dist_differentiates_task_loss_plus_a_plugin_term(exchanged):
    # full precision on 2 ranks: the mean over ranks of d/dw [cross-entropy of rank k's batch + c ||w||^2]
    # (the plugin_sqnorm case: the same objective under 3-bit quantization, bit-identical to g_estim nuq)
    c = dist_workers.ESTIMATOR_CASES["plugin_sqnorm_fp"]["sqnorm_c"]
    model = dist_workers.small_model()
    params = list(model.parameters())
    per_rank = [torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), params)
                for x, y in map(dist_workers.worker_batch, range(2))]
    want = [(a + b) / 2 + 2 * c * p.detach() for a, b, p in zip(*per_rank, params)]
    for res in exchanged:
        for got in res["estimator"]["plugin_sqnorm_fp"]:  # the estimator never steps: the same weights each call
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)  # float32 sums in another order


def test_hung_rank_is_caught_by_the_collective_timeout(tmp_path):
    result = spawn_local(2, [str(tmp_path), "1"], log_dir=tmp_path, timeout_s=5, grace_s=2,
                         target=_target("stall_forever"))
    stalled = time.time() - float((tmp_path / "victim_stalls").read_text())
    # rank 0 times out in all_reduce after 5 s and exits non-zero; the parent then stops the sleeper
    # (a killed rank is tested end to end in test_dist_train.py)
    assert result.failed_rank == 0, result.message
    assert result.codes[1] < 0  # terminated by the parent
    assert stalled < 5 + 2 + 5 + 10  # timeout + grace + SIGTERM wait + slack for a loaded machine
