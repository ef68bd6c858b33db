"""Learning-rate schedules (trainer/schedule.py): step decay, cosine, linear warmup, and refusals."""
import math

import pytest

from trainer.options import full_config
from trainer.schedule import decayed, lr_at


def test_constant_when_empty():
    assert [decayed(i, 0.1, "", 0.1) for i in (0, 10**6)] == [0.1, 0.1]


def test_every_n_iterations():
    values = [decayed(i, 1.0, "100", 0.5) for i in (0, 99, 100, 199, 200, 350)]
    assert values == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    assert decayed(250, 1.0, 100, 0.5) == 0.25  # an int works like its string


def test_milestones():
    values = [decayed(i, 0.1, "40000,60000", 0.1) for i in (0, 39999, 40000, 59999, 60000, 79999)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


def test_bad_interval():
    with pytest.raises(ValueError, match="lr_decay_epoch"):
        decayed(5, 0.1, "0", 0.1)


def test_the_step_schedule_is_the_default_and_is_step_decay():
    opt = full_config({"lr": 1.0, "lr_decay_epoch": "100", "lr_decay_rate": 0.5})
    assert [lr_at(i, opt, 10, 400) for i in (0, 99, 100, 350)] == [1.0, 1.0, 0.5, 0.125]


def test_cosine_is_per_epoch_after_a_linear_warmup():
    """ActNN's recipe: epoch e < W at lr (e + 1) / W; then lr/2 (1 + cos(pi (e - W) / (E - W))), constant
    within an epoch, reaching lr/2 half way through the epochs after the warmup."""
    opt = full_config({"lr": 0.1, "lr_schedule": "cosine", "lr_warmup_epochs": 4})
    lrs = [lr_at(it, opt, 10, 200) for it in range(200)]  # 20 epochs of 10 iterations
    assert lrs[:40:10] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and lrs[39] == pytest.approx(0.1)
    assert lrs[40] == pytest.approx(0.1) and lrs[120] == pytest.approx(0.05)  # epoch 12: half of the 16
    assert lrs[199] == pytest.approx(0.05 * (1 + math.cos(math.pi * 15 / 16)))
    assert all(lrs[10 * e] == lrs[10 * e + 9] for e in range(20))
    assert all(a >= b for a, b in zip(lrs[40:], lrs[41:]))
    no_warmup = full_config({"lr": 0.1, "lr_schedule": "cosine"})
    assert lr_at(0, no_warmup, 10, 200) == pytest.approx(0.1)


def test_warmup_applies_to_the_step_schedule_too():
    opt = full_config({"lr": 0.2, "lr_warmup_epochs": 2, "lr_decay_epoch": "50"})
    assert [lr_at(it, opt, 10, 100) for it in (0, 10, 20, 49, 50)] == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.02])


def test_bad_schedules_are_refused_with_one_line():
    with pytest.raises(ValueError, match="'linear' is not one of step, cosine"):
        full_config({"lr_schedule": "linear"})
    with pytest.raises(ValueError, match="lr_decay_epoch '100' is a step-decay setting but lr_schedule is 'cosine'"):
        full_config({"lr_schedule": "cosine", "lr_decay_epoch": "100"})
    with pytest.raises(ValueError, match="lr_warmup_epochs 5 is the whole run"):
        lr_at(0, full_config({"lr_warmup_epochs": 5}), 10, 50)


def test_a_run_steps_with_the_cosine_schedule_and_logs_its_lr(tmp_path):
    """The loop's lr is lr_at's: 4 epochs of 2 iterations, 1 warmup epoch; logged after each iteration."""
    import json

    from trainer import loop, runfiles
    config = {"niters": 8, "epoch_iters": 2, "batch_size": 16, "chkpt_iter": 0, "tblog_interval": 1, "lr": 0.1,
              "lr_schedule": "cosine", "lr_warmup_epochs": 1, "wd_norm": False, "arch": "digits_cnn"}
    loop.run(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / runfiles.METRICS).read_text().splitlines()]
    logged = [r["value"] for r in sorted((r for r in rows if r["tag"] == "lr"), key=lambda r: r["step"])]
    expected = [0.1, 0.1, 0.1, 0.1, 0.075, 0.075, 0.025, 0.025]  # warmup epoch, then cos over 3 epochs
    assert logged == pytest.approx(expected), logged
