"""The loop's hooks into the estimator: variance measurements (estim.gvar) and estimator scalars."""
import importlib.machinery
import json
import types

import estim.base
from trainer import loop, runfiles

CONFIG = {"niters": 40, "batch_size": 32, "chkpt_iter": 0, "tblog_interval": 10, "log_interval": 0,
          "gvar_log_iter": 10, "gvar_start": 20, "gvar_estim_iter": 3}


def _tags(run_dir):
    return [(r["tag"], r["step"], r["value"]) for r in map(json.loads, (run_dir / runfiles.METRICS).read_text().splitlines())]


def test_gvar_measured_every_gvar_log_iter_from_gvar_start(tmp_path, monkeypatch):
    # estim/gvar.py is another helper's module (not on this branch): a stand-in records the calls.
    calls = []

    def measure_variance(estimator, n_samples):
        calls.append((type(estimator).__name__, n_samples, estimator.model.training))
        return {"est_var": 1.5, "sgd_var": 2.5}

    fake = types.ModuleType("estim.gvar")
    fake.__spec__ = importlib.machinery.ModuleSpec("estim.gvar", None)
    fake.measure_variance = measure_variance
    monkeypatch.setitem(__import__("sys").modules, "estim.gvar", fake)
    loop.run(CONFIG, tmp_path)
    assert calls == [("SGDEstimator", 3, True)] * 3
    assert [(t, s) for t, s, _ in _tags(tmp_path) if t in ("est_var", "sgd_var")] == \
        [("est_var", 20), ("sgd_var", 20), ("est_var", 30), ("sgd_var", 30), ("est_var", 40), ("sgd_var", 40)]


def test_estimator_scalars_and_steps_are_logged(tmp_path, monkeypatch):
    steps = []

    class Recording(estim.base.SGDEstimator):
        def on_step(self, step):
            steps.append(step)

        def scalars(self):
            return {"bits": 4.0, "levels/0": -1.0}

    monkeypatch.setitem(estim.base._REGISTRY, "sgd", Recording)
    loop.run({**CONFIG, "gvar_log_iter": 0}, tmp_path)
    assert steps == list(range(40))
    tags = _tags(tmp_path)
    assert [s for t, s, _ in tags if t == "bits"] == [10, 20, 30, 40]
    assert ("levels/0", 40, -1.0) in tags
    assert not any(t == "est_var" for t, _, _ in tags)
