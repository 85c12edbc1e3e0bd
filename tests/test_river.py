"""The river estimators: river's own conformance suite, and the same numbers as the learner."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

river = pytest.importorskip("river")
pytest.importorskip("sklearn")  # river.checks builds some of its datasets with scikit-learn

from river import checks, datasets, preprocessing  # noqa: E402

from sparse_rtrl import ConfigurationError, InputError, OnlineLearner  # noqa: E402
from sparse_rtrl.cells import VanillaRNN  # noqa: E402
from sparse_rtrl.evaluate import Recorder, prequential  # noqa: E402
from sparse_rtrl.river import RTRLClassifier, RTRLRegressor  # noqa: E402

SLOW_CHECKS = {"check_bounded_memory_growth"}  # 2 000-sample streams per dataset


def _checks(model):
    names = []
    for check in checks.yield_checks(model):
        names.append(check.__name__)
    return sorted(set(names))


@pytest.mark.parametrize("make", [lambda: RTRLRegressor(hidden=4), lambda: RTRLClassifier(hidden=4)],
                         ids=["regressor", "classifier"])
def test_check_estimator_fast_part(make):
    """Every check of river.checks.check_estimator except the long memory-growth streams."""
    model = make()
    ran = set()
    for check in checks.yield_checks(model):
        if check.__name__ in SLOW_CHECKS:
            continue
        check(model.clone())
        ran.add(check.__name__)
    assert {"check_pickling", "check_seeding_is_idempotent", "check_shuffle_features_no_impact",
            "check_no_state_aliasing_with_input", "check_clone_is_independent"} <= ran


@pytest.mark.slow
@pytest.mark.parametrize("model", [RTRLRegressor(), RTRLClassifier(),
                                   RTRLRegressor(cell="lstm", hidden=8, rule="full"),
                                   RTRLRegressor(cell="gru", hidden=8, rule="tbptt", rule_options={"window": 4})],
                         ids=repr)
def test_check_estimator(model):
    checks.check_estimator(model)


def _series(T=120, seed=0):
    g = np.random.default_rng(seed)
    u = g.standard_normal(T)
    v = g.standard_normal(T)
    y = np.convolve(u, [0.0, 0.6, 0.3, 0.1])[:T] - 0.2 * v  # depends on past inputs
    # keys out of order on purpose: the estimator sorts them, so "a" is input 0
    return [({"b": float(v[t]), "a": float(u[t])}, float(y[t])) for t in range(T)]


@pytest.mark.parametrize("rule,options", [("sparse", {"k": 3}), ("full", {}), ("tbptt", {"window": 5})])
def test_regressor_matches_the_learner_run_directly(rule, options):
    """progressive validation of RTRLRegressor (predict_one, then learn_one) gives the
    predictions of prequential() over an OnlineLearner built by the documented recipe."""
    data = _series()
    k = options.pop("k", None)
    model = RTRLRegressor(hidden=6, rule=rule, k=k, rule_options=options or None, lr=0.02, seed=5)
    river_preds = []
    for x, y in data:
        river_preds.append(model.predict_one(x))
        model.learn_one(x, y)

    g = torch.Generator().manual_seed(5)  # the recipe in RecurrentEstimator's docstring
    cell = VanillaRNN(2, 6, dtype=torch.float64)
    cell.reset_parameters(generator=g)
    readout = torch.nn.Linear(6, 1, dtype=torch.float64)
    with torch.no_grad():
        readout.weight.uniform_(-6**-0.5, 6**-0.5, generator=g)
        readout.bias.uniform_(-6**-0.5, 6**-0.5, generator=g)
    rule_kw = dict(options, **({"k": k, "seed": 5} if rule == "sparse" else {}))
    learner = OnlineLearner(cell, rule, **rule_kw)
    opt = torch.optim.Adam([{"params": list(learner.parameters())}, {"params": list(readout.parameters())}], lr=0.02)
    stream = [(torch.tensor([x["a"], x["b"]], dtype=torch.float64), torch.tensor([y], dtype=torch.float64))
              for x, y in data]
    rec = Recorder()
    prequential(learner, readout, stream, opt, callbacks=[rec])
    direct = rec.arrays()[1].reshape(-1)
    assert river_preds[0] == 0.0  # nothing learned yet: the documented cold-start prediction
    np.testing.assert_allclose(river_preds[1:], direct[1:], rtol=1e-12, atol=1e-13)
    # and it learned: the error falls
    err = np.abs(np.asarray(river_preds) - np.asarray([y for _, y in data]))
    assert err[-40:].mean() < err[1:41].mean()


def test_predict_one_does_not_advance_the_state():
    data = _series(30)
    model = RTRLRegressor(hidden=5)
    for x, y in data[:10]:
        model.learn_one(x, y)
    steps, state = model._learner.steps, model._learner.state.clone()
    a = [model.predict_one(x) for x, _ in data[10:15]]
    b = [model.predict_one(x) for x, _ in data[10:15]]
    assert a == b and model._learner.steps == steps and torch.equal(model._learner.state, state)


def test_pipeline_pickles_and_continues_bit_exactly():
    data = _series(80)
    model = preprocessing.StandardScaler() | RTRLRegressor(hidden=6, rule="uoro", seed=2)
    for x, y in data[:40]:
        model.predict_one(x)
        model.learn_one(x, y)
    copy = pickle.loads(pickle.dumps(model))
    for x, y in data[40:]:
        assert model.predict_one(x) == copy.predict_one(x)
        model.learn_one(x, y)
        copy.learn_one(x, y)


def test_classifier_uses_its_memory():
    """y_t = x_t XOR x_{t−1}: no function of x_t alone beats chance; the recurrent state can."""
    g = np.random.default_rng(0)
    bits = g.integers(0, 2, 3001)
    model = RTRLClassifier(hidden=8, rule="full", lr=0.03, seed=0)
    hits = []
    for t in range(1, len(bits)):
        x, y = {"bit": float(bits[t]) * 2 - 1}, bool(bits[t] ^ bits[t - 1])
        hits.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    assert set(model.predict_proba_one({"bit": 1.0})) == {False, True}
    assert np.mean(hits[-500:]) > 0.9


def test_bad_options_and_features_are_named():
    with pytest.raises(ConfigurationError, match="k applies to rule='sparse' only"):
        RTRLRegressor(rule="full", k=3)
    with pytest.raises(ConfigurationError, match="unknown cell 'rnn'"):
        RTRLRegressor(cell="rnn")
    with pytest.raises(ConfigurationError, match="k=9 is out of range .* 0 ≤ k ≤ 4"):
        RTRLRegressor(hidden=4, k=9)  # at construction, not at the first sample
    model = RTRLRegressor(hidden=4)
    model.learn_one({"a": 1.0, "c": 2.0}, 0.5)
    with pytest.raises(InputError, match="feature 'c' has a non-numeric value 'red'.*OneHotEncoder"):
        model.learn_one({"a": 1.0, "c": "red"}, 0.5)
    # missing features are 0 and unseen ones are ignored: the same prediction either way
    assert model.predict_one({"a": 1.0}) == model.predict_one({"a": 1.0, "c": 0.0, "new": 7.0})


def test_import_without_river_names_the_extra():
    code = ("import sys; sys.modules['river'] = None\n"
            "try:\n    import sparse_rtrl.river\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'sparse_rtrl[river]'" in out


def test_rule_state_pickles_to_the_same_bytes():
    """river compares pickles byte for byte; a torch.Generator's pickle names a temporary
    storage by address, so the learner's generators pickle their state as bytes instead."""
    from sparse_rtrl.transport.base import Generators

    g = Generators([1, 2], "cpu")
    torch.rand(3, generator=g[0])
    dumps = set()
    for _ in range(20):
        _ = [torch.empty(1000) for _ in range(5)]  # move the allocator on
        dumps.add(pickle.dumps(g))
    assert len(dumps) == 1
    h = pickle.loads(dumps.pop())
    assert torch.equal(torch.rand(4, generator=g[0]), torch.rand(4, generator=h[0]))
    assert torch.equal(torch.rand(4, generator=g[1]), torch.rand(4, generator=h[1]))


def test_numpy_bools_are_numbers_and_a_small_network_gets_a_k_it_can_keep():
    import numpy as np

    from sparse_rtrl.river import RTRLRegressor

    model = RTRLRegressor(hidden=2, seed=1)  # k defaults to min(4, hidden)
    model.learn_one({"a": np.True_, "b": 1.0}, 1.0)
    assert np.isfinite(model.predict_one({"a": np.False_, "b": 0.5}))
    fresh = RTRLRegressor(hidden=4, seed=1)
    with pytest.raises(Exception, match="non-numeric value 'x'"):
        fresh.learn_one({"a": "x"}, 1.0)
    assert fresh._learner is None  # nothing was built from the bad sample
