"""Learning-rate schedule values."""
import pytest

from trainer.schedule import lr_at


def test_constant_when_empty():
    assert [lr_at(i, 0.1, "", 0.1) for i in (0, 10**6)] == [0.1, 0.1]


def test_every_n_iterations():
    values = [lr_at(i, 1.0, "100", 0.5) for i in (0, 99, 100, 199, 200, 350)]
    assert values == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    assert lr_at(250, 1.0, 100, 0.5) == 0.25  # an int works like its string


def test_milestones():
    values = [lr_at(i, 0.1, "40000,60000", 0.1) for i in (0, 39999, 40000, 59999, 60000, 79999)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


def test_bad_interval():
    with pytest.raises(ValueError, match="lr_decay_epoch"):
        lr_at(5, 0.1, "0", 0.1)
