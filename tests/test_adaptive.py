"""The re-fit schedule and LevelAdapter: sampling, logging, checkpoint round-trip and resume."""
import io

import pytest
import torch

from nuq.stats import bucket_stats
from nuq.adaptive import AdapterConfig, LevelAdapter, RefitSchedule, fit_levels
from nuq.levels import exponential_levels


def test_schedule_listed_then_every_last_value():
    s = RefitSchedule("100,2000,10000")
    due = [step for step in range(0, 45001) if s.due(step)]
    assert due == [0, 100, 2000, 10000, 20000, 30000, 40000]


def test_schedule_counts_from_gvar_start_and_waits_for_optim_start():
    s = RefitSchedule("100,2000,10000", gvar_start=500)
    assert [t for t in range(0, 21000) if s.due(t)] == [500, 600, 2500, 10500, 20500]
    s = RefitSchedule("100,2000,10000", gvar_start=500, optim_start=1000)
    assert [t for t in range(0, 21000) if s.due(t)] == [2500, 10500, 20500]
    assert [t for t in range(0, 7) if RefitSchedule(3).due(t)] == [0, 3, 6]


@pytest.mark.parametrize("spec", ["", "0", "10,-5", "a,b"])
def test_bad_schedule_is_named(spec):
    with pytest.raises(ValueError, match="g_osnap_iter"):
        RefitSchedule(spec)


def make_opt(method="alq_nb", **kw):
    """The adapter's typed config, read from options as an estimator reads them."""
    opt = {"nuq_method": method, "nuq_bits": 3, "nuq_bucket_size": 64, "g_osnap_iter": "3,10",
           "nuq_number_of_samples": 4, "dist_num": 20, "nuq_layer": True}
    opt.update(kw)
    return AdapterConfig.from_opt(opt)


def test_config_defaults_are_the_option_schema_defaults():
    from trainer.options import full_config
    assert AdapterConfig.from_opt(full_config({"nuq_method": "alq"})) == AdapterConfig("alq")
    with pytest.raises(TypeError, match="AdapterConfig"):
        LevelAdapter({"nuq_method": "alq"}, exponential_levels(3, 0.5))


class GradSource:
    """Seeded fake minibatch gradients of a two-layer model (what sample_grad would return)."""

    def __init__(self, seed=0):
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return [torch.randn(30, 10, generator=self.gen) * 0.1 + 0.02,
                torch.randn(10, generator=self.gen)]


def test_adapter_refits_on_schedule_with_the_configured_samples():
    a = LevelAdapter(make_opt(), exponential_levels(3, 0.5))
    src = GradSource()
    fitted = [step for step in range(25) if a.maybe_refit(step, src)]
    assert fitted == [0, 3, 10, 20]
    assert src.calls == 4 * len(fitted)
    assert not torch.equal(a.levels, exponential_levels(3, 0.5))
    # the same step twice (e.g. a resumed step) re-fits once
    assert not a.maybe_refit(20, src) and src.calls == 16


def test_adapter_levels_are_the_library_fit_of_the_sampled_statistics():
    opt = make_opt(nuq_layer=False, nuq_ig_sm_bkts=True)
    a = LevelAdapter(opt, exponential_levels(3, 0.5))
    samples = [GradSource(1)() for _ in range(4)]
    res = a.refit(samples)
    st = bucket_stats(samples, 64, network_wide=False, skip_tail=True, dist_num=20)
    want = fit_levels("alq_nb", 3, st, levels=exponential_levels(3, 0.5))
    torch.testing.assert_close(res.levels, want.levels, atol=0, rtol=0)
    torch.testing.assert_close(a.levels, want.levels, atol=0, rtol=0)


@pytest.mark.parametrize("method", ["alq", "amq_nb"])
def test_scalars_name_levels_multiplier_and_error(method):
    a = LevelAdapter(make_opt(method), exponential_levels(3, 0.5))
    before = a.scalars()
    assert "nb_error" not in before and len([k for k in before if k.startswith("levels/")]) == 8
    a.maybe_refit(0, GradSource())
    sc = a.scalars()
    assert [sc[f"levels/{i}"] for i in range(8)] == a.levels.tolist()
    assert sc["nb_error"] > 0
    assert ("multiplier" in sc) == method.startswith("amq")


@pytest.mark.parametrize("method", ["alq_nb", "amq"])
def test_checkpoint_round_trip_resumes_with_the_same_levels(method):
    opt = make_opt(method)
    a = LevelAdapter(opt, exponential_levels(3, 0.5))
    src = GradSource(2)
    for step in range(5):
        a.maybe_refit(step, src)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = LevelAdapter(opt, exponential_levels(3, 0.5))
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(a.levels, b.levels) and a.scalars() == b.scalars()
    # both continue identically: same next re-fit from the same gradients
    src_a, src_b = GradSource(3), GradSource(3)
    assert not b.maybe_refit(3, src_b)  # already fitted at 3 before the checkpoint
    for step in range(5, 11):
        assert a.maybe_refit(step, src_a) == b.maybe_refit(step, src_b)
    assert torch.equal(a.levels, b.levels) and a.multiplier == b.multiplier


def test_bad_options_and_checkpoints_are_named():
    with pytest.raises(ValueError, match="unknown adaptive method 'nuq'"):
        LevelAdapter(make_opt("nuq"), exponential_levels(3, 0.5))
    with pytest.raises(ValueError, match="nuq_number_of_samples"):
        LevelAdapter(make_opt(nuq_number_of_samples=0), exponential_levels(3, 0.5))
    a = LevelAdapter(make_opt(), exponential_levels(3, 0.5))
    with pytest.raises(ValueError, match="checkpoint levels"):
        a.load_state_dict({"levels": torch.zeros(4)})


def test_paper_style_flags_are_honoured():
    # the paper's grids write flags as '': nuq_sym='' must give symmetric levels, nuq_layer='' network-wide
    a = LevelAdapter(make_opt("alq_nb", nuq_sym="", nuq_layer=""), exponential_levels(3, 0.5))
    assert a.cfg.network_wide and a.opts["nuq_sym"] is True
    a.maybe_refit(0, GradSource(4))
    torch.testing.assert_close(a.levels, -a.levels.flip(0), atol=0, rtol=0)
