"""g_estim=ddp_hook: PyTorch's DDP communication hooks run by the trainer's estimator on 2 real gloo ranks."""
from pathlib import Path

import pytest
import torch

from launcher.executors.distributed import check_config, spawn_local
from trainer.options import ConfigError, validate_config

WORKERS = Path(__file__).with_name("dist_workers.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("hooks")
    result = spawn_local(2, [str(out)], log_dir=out, timeout_s=60, target=f"{WORKERS}:hook_grads")
    assert result.failed_rank is None, result.message
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_every_rank_ends_with_the_same_averaged_gradient(ranks):
    for name in ranks[0]:
        for a, b in zip(ranks[0][name]["grads"], ranks[1][name]["grads"]):
            assert torch.equal(_flat(a), _flat(b)), name


@pytest.mark.parametrize("name, eps", [("allreduce", 2 ** -23), ("fp16", 2 ** -10), ("bf16", 2 ** -7)])
def test_the_average_is_the_mean_of_the_local_gradients_up_to_the_wire_precision(ranks, name, eps):
    mean = (_flat(ranks[0][name]["local"]) + _flat(ranks[1][name]["local"])) / 2
    got = _flat(ranks[0][name]["grads"][0])
    # each half rounded to the wire format (relative error eps), summed, rounded once more
    bound = 3 * eps * (_flat(ranks[0][name]["local"]).abs() + _flat(ranks[1][name]["local"]).abs()) / 2 + 1e-30
    assert ((got - mean).abs() <= bound).all(), name
    if name != "allreduce":
        assert not torch.equal(got, mean)  # really sent in 16 bits


def test_bytes_are_the_tensors_the_hooks_all_reduce(ranks):
    n = sum(v.numel() for v in ranks[0]["allreduce"]["local"])  # 10*37 + 37 + 37*5 + 5 = 597
    assert ranks[0]["allreduce"]["bytes"] == [4 * n] * 3
    assert ranks[0]["fp16"]["bytes"] == ranks[0]["bf16"]["bytes"] == [2 * n] * 3
    # PowerSGD rank 1 from step 2: the 37x10 weight as P (37) and Q (10), the 5x37 one as 5 + 37 (worth it at
    # torch's min_compression_rate 2: (5 + 37) * 2 < 185), the biases (37, 5) whole; all in fp32
    assert ranks[0]["powersgd_r1"]["bytes"] == [4 * n, 4 * n, 4 * (37 + 10 + 5 + 37 + 37 + 5)]
    psgd, mean = _flat(ranks[0]["powersgd_r1"]["grads"][2]), _flat(ranks[0]["allreduce"]["grads"][2])
    assert not torch.allclose(psgd, mean)  # a rank-1 approximation of the 37x10 layer


def test_the_hook_options_are_validated_and_the_launcher_runs_it_on_several_processes():
    check_config({"g_estim": "ddp_hook", "ddp_hook": "powersgd"}, 2)
    with pytest.raises(ConfigError, match="'ddp_hook'.*'int8' is not one of allreduce, fp16, bf16, powersgd"):
        validate_config({"ddp_hook": "int8"})


def test_the_option_offers_exactly_the_registered_hooks():
    from estim.ddp_hook import HOOKS
    from estim.names import DDP_HOOKS
    assert tuple(HOOKS) == DDP_HOOKS
