"""The estimator registry and the plain SGD estimator."""
import pytest
import torch

from estim import get_estimator_class
from estim.base import SGDEstimator


class FixedStream:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def next(self):
        return self.x, self.y

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_unknown_estimator_lists_registered_names():
    with pytest.raises(ValueError, match=r"unknown g_estim 'sgdd'; registered: .*sgd"):
        get_estimator_class("sgdd")


def test_sgd_estimator_returns_the_minibatch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    est = get_estimator_class("sgd")({}, model, torch.nn.functional.cross_entropy, FixedStream(x, y), None)
    assert isinstance(est, SGDEstimator)
    grads, loss = est.grad()
    model.zero_grad()
    ref = torch.nn.functional.cross_entropy(model(x), y)
    ref.backward()
    assert loss == pytest.approx(ref.item())
    for g, p in zip(grads, model.parameters()):
        assert torch.equal(g, p.grad)


def test_sgd_estimator_logs_32_bits_per_coordinate():
    model = torch.nn.Linear(3, 2)
    est = get_estimator_class("sgd")({}, model, torch.nn.functional.cross_entropy, None, None)
    assert est.scalars() == {"bits": 32.0}
