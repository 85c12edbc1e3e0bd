"""The fused step against the reference it replaces: OnlineLearner + nn.Linear + the squared
error + torch.optim, step by step, for every rule and option it runs, both leaks and both
nonlinearities, with and without biases, one or several outputs, both reductions, SGD, Adam
and a torch.optim optimizer, both input shapes, float64 and float32."""

from __future__ import annotations

import copy

import numpy as np

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sparse_rtrl import ConfigurationError, DivergenceError, InputError, OnlineLearner, VanillaRNN
from sparse_rtrl.fused import FusedStep

I, N, T = 2, 7, 12

RULES = {
    "full": ("full", {}),
    "immediate": ("immediate", {}),
    "snap1": ("snap1", {}),
    "trace": ("trace", {"decay": 0.7}),
    "row random": ("sparse", {"k": 3}),
    "row magnitude": ("sparse", {"k": 2, "selection": "magnitude"}),
    "row adversarial rescale": ("sparse", {"k": 3, "selection": "adversarial", "rescale": True}),
    "row diagonal resample 3": ("sparse", {"k": 2, "keep_diagonal": True, "resample_every": 3}),
    "row fixed": ("sparse", {"selection": torch.eye(N, dtype=torch.bool).roll(1, 1) | torch.eye(N, dtype=torch.bool)}),
    "row fixed unequal": ("sparse", {"selection": torch.tril(torch.ones(N, N, dtype=torch.bool))}),
    "column random": ("sparse", {"k": 3, "granularity": "column"}),
    "column magnitude kept once": ("sparse", {"k": 2, "granularity": "column", "selection": "magnitude",
                                              "resample_every": 0}),
    "column diagonal rescale": ("sparse", {"k": 3, "granularity": "column", "keep_diagonal": True, "rescale": True}),
    "column fixed": ("sparse", {"granularity": "column", "selection": torch.tensor([1, 0, 1, 0, 0, 1, 0], dtype=torch.bool)}),
    "k = 0": ("sparse", {"k": 0}),
    "k = N": ("sparse", {"k": N}),
}


def stream(dtype, O, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, I, generator=g, dtype=dtype), torch.randn(T, O, generator=g, dtype=dtype)


def models(dtype, O, leak=1.0, nonlinearity="tanh", bias=True, readout_bias=True):
    torch.manual_seed(3)
    cell = VanillaRNN(I, N, leak=leak, nonlinearity=nonlinearity, bias=bias).to(dtype)
    with torch.no_grad():
        cell.weight_hh.mul_(2.0)  # a Jacobian far from 0, so transport matters
    return cell, nn.Linear(N, O, bias=readout_bias).to(dtype)


def torch_optimizer(name, params, lr):
    return torch.optim.SGD(params, lr=lr) if name == "sgd" else torch.optim.Adam(params, lr=lr)


def reference(cell, readout, rule, options, optimizer, lr, xs, ys, reduction, shape):
    learner = OnlineLearner(cell, rule, **options)
    opt = torch_optimizer(optimizer, [*cell.parameters(), *readout.parameters()], lr)
    out = []
    for x, y in zip(xs, ys):
        h = learner.step(x.reshape(shape))
        pred = readout(h).reshape(-1)
        loss = F.mse_loss(pred, y, reduction=reduction)
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        out.append((pred.detach().clone(), loss.detach().clone(), [p.detach().clone() for p in cell.parameters()]))
    return out


def fused_run(cell, readout, rule, options, optimizer, lr, xs, ys, reduction, shape, engine):
    if optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop([*cell.parameters(), *readout.parameters()], lr=lr)
    fused = FusedStep(cell, rule, readout, optimizer=optimizer, lr=lr, reduction=reduction, engine=engine, **options)
    assert fused.engine == engine
    out = []
    for x, y in zip(xs, ys):
        pred, loss = fused.step(x.reshape(shape), y)
        assert isinstance(loss, float)
        out.append((pred, torch.tensor(loss, dtype=xs.dtype), [p.detach().clone() for p in cell.parameters()]))
    return out


ENGINES = pytest.mark.parametrize("engine", ["compiled", "torch"])


def assert_same(ref, got, tol):
    for t, ((p0, l0, w0), (p1, l1, w1)) in enumerate(zip(ref, got)):
        torch.testing.assert_close(p1, p0, rtol=tol, atol=tol, msg=lambda m: f"prediction, step {t}: {m}")
        torch.testing.assert_close(l1, l0, rtol=tol, atol=tol, msg=lambda m: f"loss, step {t}: {m}")
        for a, b in zip(w1, w0):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m: f"parameters after step {t}: {m}")


@ENGINES
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("case", list(RULES))
def test_every_rule_matches_the_reference(case, dtype, tol, engine):
    rule, options = RULES[case]
    xs, ys = stream(dtype, 3)
    ref = reference(*models(dtype, 3), rule, options, "adam", 3e-2, xs, ys, "mean", (I,))
    got = fused_run(*models(dtype, 3), rule, options, "adam", 3e-2, xs, ys, "mean", (I,), engine)
    assert_same(ref, got, tol)


@pytest.mark.parametrize("rule", ["full", "row random", "column diagonal rescale", "snap1", "immediate", "trace"])
@pytest.mark.parametrize("variant", [
    dict(leak=0.6), dict(nonlinearity="relu"), dict(bias=False), dict(readout_bias=False),
    dict(O=1, reduction="sum"), dict(optimizer="sgd"), dict(optimizer="rmsprop"), dict(shape=(1, I)),
], ids=["leak", "relu", "no bias", "no readout bias", "sum, O=1", "sgd", "torch.optim", "(1, I) input"])
@ENGINES
def test_cells_readouts_losses_and_optimizers(rule, variant, engine):
    v = {**dict(leak=1.0, nonlinearity="tanh", bias=True, readout_bias=True, O=3, reduction="mean",
                optimizer="adam", shape=(I,)), **variant}
    name, options = RULES[rule]
    xs, ys = stream(torch.float64, v["O"], seed=1)
    build = lambda: models(torch.float64, v["O"], v["leak"], v["nonlinearity"], v["bias"], v["readout_bias"])  # noqa: E731
    ref_opt = "sgd" if v["optimizer"] == "sgd" else v["optimizer"]
    if ref_opt == "rmsprop":
        cell, ro = build()
        learner = OnlineLearner(cell, name, **options)
        opt = torch.optim.RMSprop([*cell.parameters(), *ro.parameters()], lr=1e-2)
        ref = []
        for x, y in zip(xs, ys):
            pred = ro(learner.step(x)).reshape(-1)
            loss = F.mse_loss(pred, y)
            learner.backward(loss)
            opt.step()
            opt.zero_grad()
            ref.append((pred.detach().clone(), loss.detach().clone(), [p.detach().clone() for p in cell.parameters()]))
    else:
        ref = reference(*build(), name, options, ref_opt, 1e-2, xs, ys, v["reduction"], v["shape"])
    got = fused_run(*build(), name, options, v["optimizer"], 1e-2, xs, ys, v["reduction"], v["shape"], engine)
    assert_same(ref, got, 1e-11)


@ENGINES
def test_reset_state_starts_a_new_sequence_like_the_learner(engine):
    xs, ys = stream(torch.float64, 1)
    cell, ro = models(torch.float64, 1)
    learner = OnlineLearner(copy.deepcopy(cell), "full")
    ro_ref = copy.deepcopy(ro)
    fused = FusedStep(cell, "full", ro, lr=1e-2, engine=engine)
    opt = torch.optim.SGD([*learner.cell.parameters(), *ro_ref.parameters()], lr=1e-2)
    for t, (x, y) in enumerate(zip(xs, ys)):
        if t == 5:
            learner.reset_state()
            fused.reset_state()
        pred = ro_ref(learner.step(x))
        loss = F.mse_loss(pred, y)
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        p, l = fused.step(x, y)
        assert l == pytest.approx(loss.item(), rel=1e-11, abs=1e-11)
    torch.testing.assert_close(fused.hidden, learner.state.reshape(-1).detach(), rtol=1e-11, atol=1e-11)


def test_torch_rnn_cell_is_accepted_and_updated_in_place():
    cell, ro = nn.RNNCell(I, N).double(), nn.Linear(N, 1).double()
    before = cell.weight_hh.detach().clone()
    fused = FusedStep(cell, "full", ro, lr=1e-1)
    xs, ys = stream(torch.float64, 1)
    for x, y in zip(xs, ys):
        fused.step(x, y)
    assert not torch.equal(cell.weight_hh.detach(), before)


@ENGINES
def test_misuse_is_named(engine):
    cell, ro = models(torch.float64, 1)
    with pytest.raises(ConfigurationError, match="OnlineLearner"):
        FusedStep(cell, "uoro", ro, lr=1e-2)
    with pytest.raises(ConfigurationError, match="out of range"):
        FusedStep(cell, "sparse", ro, lr=1e-2, k=N + 1)
    with pytest.raises(ConfigurationError, match="learning rate"):
        FusedStep(cell, "full", ro)
    with pytest.raises(ConfigurationError, match="nn.Linear"):
        FusedStep(cell, "full", nn.Linear(N + 1, 1).double(), lr=1e-2)
    with pytest.raises(ConfigurationError, match="dtype"):
        FusedStep(cell, "full", nn.Linear(N, 1), lr=1e-2)
    from sparse_rtrl import LSTM
    with pytest.raises(ConfigurationError, match="vanilla"):
        FusedStep(LSTM(I, N), "full", nn.Linear(N, 1), lr=1e-2)
    fused = FusedStep(cell, "full", ro, lr=1e-2, engine=engine)
    with pytest.raises(InputError, match="shape"):
        fused.step(torch.zeros(3, I, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    with pytest.raises(InputError, match="float32"):
        fused.step(torch.zeros(I), torch.zeros(1, dtype=torch.float64))
    before = [p.detach().clone() for p in cell.parameters()]
    with pytest.raises(InputError, match="target y"):
        fused.step(torch.zeros(I, dtype=torch.float64), torch.tensor([float("nan")], dtype=torch.float64))
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, cell.parameters())), "a refused step changed θ"
    cell.float()
    with pytest.raises(ConfigurationError, match="new FusedStep"):
        fused.step(torch.zeros(I), torch.zeros(1))


@ENGINES
@pytest.mark.parametrize("rule", ["full", "immediate"])
def test_divergence_keeps_the_last_good_parameters(engine, rule):
    cell, ro = models(torch.float32, 1)
    fused = FusedStep(cell, rule, ro, lr=1e-2, engine=engine)
    with torch.no_grad():
        ro.weight.fill_(1e30)
    before = [p.detach().clone() for p in cell.parameters()]
    with pytest.raises(DivergenceError, match="loss"):
        fused.step(torch.ones(I), torch.zeros(1))
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, cell.parameters()))
    torch.testing.assert_close(fused.hidden, torch.zeros(N))


@ENGINES
def test_a_gradient_that_overflows_is_refused_with_the_parameters_kept(engine):
    cell, ro = models(torch.float32, 1)
    fused = FusedStep(cell, "full", ro, lr=1e-2, engine=engine)
    fused.step(torch.ones(I), torch.zeros(1))
    fused.product.M[fused.product.cur].fill_(3e38)  # M at the edge of float32: J·M overflows
    before = [p.detach().clone() for p in cell.parameters()]
    with pytest.raises(DivergenceError, match="gradient"):
        fused.step(torch.ones(I), torch.zeros(1))
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, cell.parameters()))


@pytest.mark.parametrize("path", ["oneDNN", "torch.mm"])
def test_both_products_of_full_rtrl_agree(path, monkeypatch):
    """The oneDNN product (float32 CPU) against torch.mm, at a size with several row blocks."""
    from sparse_rtrl.fused import matmul
    if path == "oneDNN" and not matmul.usable():
        pytest.skip("torch has no working oneDNN linear op here")
    monkeypatch.setattr(matmul, "BLOCK_BYTES", 4096)  # many blocks
    g = torch.Generator().manual_seed(0)
    A, J = torch.randn(1000, 24, generator=g), torch.randn(24, 24, generator=g)
    mm = matmul.RightProduct(1000, 24, A)
    if path == "torch.mm":
        mm.onednn = False
    assert len(mm.blocks) > 1
    out = torch.empty(1000, 24)
    mm(A, J, out)
    torch.testing.assert_close(out, (A.double() @ J.double().t()).float(), rtol=1e-5, atol=1e-5)


@ENGINES
@pytest.mark.parametrize("rule", ["full", "row random", "column random", "column diagonal rescale", "snap1",
                                  "trace", "immediate"])
def test_prequential_runs_a_fused_step_like_the_learner(engine, rule):
    """The one prequential loop with a FusedStep: the same losses as with OnlineLearner +
    readout + optimizer, through unscored steps (y = None) and a new sequence."""
    from sparse_rtrl.evaluate import prequential

    name, options = RULES[rule]
    xs, ys = stream(torch.float64, 3, seed=4)
    items = [(x, None if t in (3, 4) else y, t == 7) for t, (x, y) in enumerate(zip(xs, ys))]
    cell, ro = models(torch.float64, 3)
    learner = OnlineLearner(cell, name, **options)
    opt = torch.optim.Adam([*cell.parameters(), *ro.parameters()], lr=1e-2)
    ref = prequential(learner, ro, items, opt)
    cell, ro = models(torch.float64, 3)
    fused = FusedStep(cell, name, ro, optimizer="adam", lr=1e-2, engine=engine, **options)
    got = prequential(fused, None, items)
    assert got.steps == ref.steps == T
    assert np.isnan(got.losses[3]) and np.isnan(got.losses[4])
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-11, atol=1e-12)
    with pytest.raises(InputError, match="its own readout"):
        prequential(fused, ro, items)


@ENGINES
def test_learn_needs_a_score_and_a_second_score_drops_the_first(engine):
    cell, ro = models(torch.float64, 1)
    fused = FusedStep(cell, "full", ro, lr=1e-2, engine=engine)
    with pytest.raises(ConfigurationError, match="score"):
        fused.learn()
    x, y = stream(torch.float64, 1)
    fused.score(x[0], y[0])
    fused.learn()
    with pytest.raises(ConfigurationError, match="score"):
        fused.learn()


@ENGINES
@pytest.mark.parametrize("rule", ["full", "row random", "column random", "snap1", "immediate"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_saved_stream_continues_bit_exactly(engine, rule, optimizer):
    name, options = RULES[rule]
    xs, ys = stream(torch.float64, 3, seed=5)
    cell, ro = models(torch.float64, 3)
    whole = FusedStep(cell, name, ro, optimizer=optimizer, lr=1e-2, engine=engine, **options)
    for x, y in zip(xs, ys):
        whole.step(x, y)
    cell, ro = models(torch.float64, 3)
    first = FusedStep(cell, name, ro, optimizer=optimizer, lr=1e-2, engine=engine, **options)
    for x, y in zip(xs[:6], ys[:6]):
        first.step(x, y)
    saved = copy.deepcopy((first.state_dict(), cell.state_dict(), ro.state_dict()))
    cell2, ro2 = models(torch.float64, 3)
    cell2.load_state_dict(saved[1])
    ro2.load_state_dict(saved[2])
    second = FusedStep(cell2, name, ro2, optimizer=optimizer, lr=1e-2, engine=engine, **options)
    second.load_state_dict(saved[0])
    for x, y in zip(xs[6:], ys[6:]):
        second.step(x, y)
    for a, b in zip([*cell2.parameters(), *ro2.parameters()], [*whole.cell.parameters(), *whole.readout.parameters()]):
        assert torch.equal(a, b)
    other_cell, other_ro = models(torch.float64, 3)
    other = FusedStep(other_cell, "immediate" if name != "immediate" else "full", other_ro, lr=1e-2)
    with pytest.raises(ConfigurationError, match="same rule"):
        other.load_state_dict(saved[0])


@ENGINES
def test_shapes_and_inputs_the_fused_step_refuses_are_named(engine):
    """One stream only: a batch (B, I), an ensemble cell or ensemble-shaped input points to
    OnlineLearner; integer input and NaN input are named, and a refused step changes nothing."""
    from sparse_rtrl import new_ensemble

    with pytest.raises(ConfigurationError, match="ensemble"):
        FusedStep(new_ensemble(VanillaRNN, 2, I, N, dtype=torch.float64), "full", nn.Linear(N, 1).double(), lr=1e-2)
    cell, ro = models(torch.float64, 1)
    fused = FusedStep(cell, "sparse", ro, lr=1e-2, engine=engine, k=2)
    y = torch.zeros(1, dtype=torch.float64)
    for bad in (torch.zeros(2, I, dtype=torch.float64), torch.zeros(2, 1, I, dtype=torch.float64)):
        with pytest.raises(InputError, match="OnlineLearner"):
            fused.step(bad, y)
    with pytest.raises(InputError, match="convert"):
        fused.step(torch.zeros(I, dtype=torch.long), y)
    before = [p.detach().clone() for p in cell.parameters()]
    with pytest.raises(InputError, match="input x"):
        fused.step(torch.tensor([float("nan")] * I, dtype=torch.float64), y)
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, cell.parameters()))
    assert fused.steps == 0
