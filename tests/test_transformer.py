"""Online transformer with head-sparse gradient transport (claim C8).

Every gradient is checked against a plain reference transformer written here with explicit
per-position, per-head loops (nothing from the library's forward), differentiated by
autograd with exactly the promised keys/values detached; the dense case also against
finite differences.
"""

import copy
import math

import pytest
import torch

from sparse_rtrl.errors import ConfigurationError, InputError
from sparse_rtrl.evaluate import prequential
from sparse_rtrl.transformer import (
    CausalTransformer,
    OnlineTransformer,
    adapt,
    attention_entropy,
    head_contributions,
    head_profile,
    heads_kept,
    pretrain,
)

DT = torch.float64
I, O = 2, 2


# -- the reference ----------------------------------------------------------------------------
def sinusoid(window, d):
    table = torch.zeros(window, d, dtype=DT)
    for a in range(window):
        for i in range(d):
            angle = a / 10000 ** (2 * (i // 2) / d)
            table[a, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    return table


def ref_forward(P, cfg, window, detach=frozenset(), record=None):
    """Newest prediction (O,) for one stream ``window`` (L, I); ``detach``: {(block, head)}
    whose keys/values at positions < L are constants. ``record`` collects the newest query's
    attention (blocks, H, L)."""
    L, d, H = window.shape[0], cfg.d_model, cfg.heads
    dh = d // H

    def lin(x, name):
        return x @ P[name + ".weight"].T + P[name + ".bias"]

    def ln(x, name):
        mu = x.mean()
        var = ((x - mu) ** 2).mean()
        return (x - mu) / torch.sqrt(var + 1e-5) * P[name + ".weight"] + P[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    pos = P["position"] if cfg.positions == "learned" else sinusoid(cfg.window, d)
    z = [lin(window[i], "embed") + pos[L - 1 - i] for i in range(L)]
    for l in range(cfg.blocks):
        b = f"blocks.{l}."
        a = [ln(zi, b + "norm1") for zi in z]
        keys = [lin(ai, b + "key") for ai in a]
        values = [lin(ai, b + "value") for ai in a]
        new, att = [], []
        for i in range(L):
            heads = []
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                q = lin(a[i], b + "query")[sl]
                ks, vs = [], []
                for j in range(i + 1):
                    k, v = keys[j][sl], values[j][sl]
                    if (l, h) in detach and j < L - 1:
                        k, v = k.detach(), v.detach()
                    ks.append(k)
                    vs.append(v)
                s = torch.stack([q @ k for k in ks]) / math.sqrt(dh)
                e = torch.exp(s - s.max())
                p = e / e.sum()
                if i == L - 1:
                    att.append(torch.cat([p, p.new_zeros(L - 1 - i)]))
                heads.append(sum(p[j] * vs[j] for j in range(i + 1)))
            zi = z[i] + lin(torch.cat(heads), b + "out")
            zi = zi + lin(gelu(lin(ln(zi, b + "norm2"), b + "mlp.0")), b + "mlp.2")
            new.append(zi)
        z = new
        if record is not None:
            record.append(torch.stack(att).detach())
    return lin(ln(z[-1], "norm"), "readout")


def ref_params(model):
    return {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}


def ref_grads(model, window, target, detach=frozenset()):
    """{name: ∂loss/∂θ} of the reference, ``window`` (B, L, I), loss summed over streams."""
    P = ref_params(model)
    loss = sum(loss_of(ref_forward(P, model.config, window[b], detach), target[b]) for b in range(window.shape[0]))
    grads = torch.autograd.grad(loss, list(P.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(P.items(), grads)}


def loss_of(pred, target):
    return (pred - target).pow(2).sum()


def flat(grads):
    return torch.cat([g.reshape(-1) for g in grads.values()])


def model_grads(model):
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def stream(T, B=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (T, I) if B is None else (T, B, I)
    return torch.randn(shape, generator=g, dtype=DT), torch.randn(shape[:-1] + (O,), generator=g, dtype=DT)


def make(fraction=1.0, selection="random", *, heads=6, blocks=2, window=4, d_model=12, seed=0, **kw):
    return OnlineTransformer(
        I, O, d_model=d_model, heads=heads, blocks=blocks, window=window, head_fraction=fraction,
        selection=selection, seed=seed, **kw,
    ).to(DT)


def lockstep(learner, steps=6, B=None, seed=1, lr=0.05):
    """Run the learner (SGD between steps, so parameters move); per step yield the learner's
    gradient, the window it saw (B, L, I) and the targets (B, O). No update after the last."""
    xs, ys = stream(steps, B, seed)
    opt = torch.optim.SGD(learner.parameters(), lr=lr)
    for t in range(steps):
        opt.zero_grad()
        pred = learner.step(xs[t])
        learner.backward(loss_of(pred, ys[t]))
        yield model_grads(learner.model), learner.window.clone(), ys[t].reshape(-1, O)
        if t < steps - 1:
            opt.step()


# -- exactness --------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_dense_equals_backprop_through_the_window(positions):
    learner = make(1.0, positions=positions)
    for g, window, y in lockstep(learner, steps=6):
        ref = ref_grads(learner.model, window, y)
        assert rel(flat(g), flat(ref)) < 1e-10
    assert window.shape[1] == 4  # the window filled and slid


def test_dense_matches_finite_differences():
    learner = make(1.0)
    xs, ys = stream(6)
    for t in range(6):
        pred = learner.step(xs[t])
    learner.backward(loss_of(pred, ys[5]))
    model, window = learner.model, learner.window
    named = dict(model.named_parameters())
    for name, idx in [("blocks.0.key.weight", (1, 3)), ("blocks.0.value.bias", (4,)),
                      ("position", (3, 2)), ("embed.weight", (5, 1)), ("blocks.1.key.weight", (0, 7))]:
        p = named[name]
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + 1e-6
            up = loss_of(model(window)[0], ys[5]).item()
            p[idx] = old - 1e-6
            down = loss_of(model(window)[0], ys[5]).item()
            p[idx] = old
        fd = (up - down) / 2e-6
        assert abs(p.grad[idx].item() - fd) < 1e-6 * max(1.0, abs(fd)), name


def test_fraction_zero_is_the_newest_position_alone():
    learner = make(0.0)
    everything = frozenset((l, h) for l in range(2) for h in range(6))
    for g, window, y in lockstep(learner, steps=6):
        ref = ref_grads(learner.model, window, y, detach=everything)
        assert rel(flat(g), flat(ref)) < 1e-10
        if window.shape[1] > 1:  # with a past, detaching it must matter
            assert rel(flat(g), flat(ref_grads(learner.model, window, y))) > 1e-3
    assert not learner.last_kept.any()


@pytest.mark.parametrize("selection", ["random", "fixed", "importance", "adversarial"])
@pytest.mark.parametrize("B", [None, 2])
def test_partial_fraction_detaches_exactly_the_heads_not_kept(selection, B):
    learner = make(1 / 3, selection)
    for g, window, y in lockstep(learner, steps=5, B=B):
        kept = learner.last_kept
        assert kept.shape == (2, 6) and kept.sum(-1).tolist() == [2, 2]
        detach = frozenset((l, h) for l in range(2) for h in range(6) if not kept[l, h])
        assert rel(flat(g), flat(ref_grads(learner.model, window, y, detach))) < 1e-10


# -- head masks -------------------------------------------------------------------------------
def masks(learner, steps=6, seed=3):
    xs, ys = stream(steps, seed=seed)
    out = []
    for t in range(steps):
        pred = learner.step(xs[t])
        learner.backward(loss_of(pred, ys[t]))
        out.append(learner.last_kept.clone())
    return torch.stack(out)


@pytest.mark.parametrize("fraction,m", [(1.0, 12), (1 / 2, 6), (1 / 3, 4), (1 / 4, 3), (0.0, 0)])
def test_fraction_maps_to_round_half_up_heads_per_block(fraction, m):
    assert heads_kept(fraction, 12) == m
    learner = make(fraction, heads=12, blocks=2, d_model=12)
    assert learner.heads_kept == m
    assert (masks(learner).sum(-1) == m).all()


def test_inexact_fractions_round_half_up():
    assert [heads_kept(f, 6) for f in (1 / 4, 0.2, 1 / 12, 0.99)] == [2, 1, 1, 6]


def test_random_resamples_fixed_does_not_and_seeds_reproduce():
    rand = masks(make(0.5, "random", heads=12, d_model=12, seed=4))
    assert not all(torch.equal(rand[0], r) for r in rand[1:])  # resampled per step
    assert not torch.equal(rand[0, 0], rand[0, 1])  # and per block
    assert torch.equal(rand, masks(make(0.5, "random", heads=12, d_model=12, seed=4)))
    assert not torch.equal(rand, masks(make(0.5, "random", heads=12, d_model=12, seed=5)))

    learner = make(0.5, "fixed", heads=12, d_model=12, seed=4)
    fixed = masks(learner)
    learner.reset_state()
    fixed = torch.cat([fixed, masks(learner)])
    assert all(torch.equal(fixed[0], f) for f in fixed)
    assert fixed[0].sum(-1).tolist() == [6, 6]
    others = [masks(make(0.5, "fixed", heads=12, d_model=12, seed=s))[0] for s in (5, 6, 7)]
    assert any(not torch.equal(fixed[0], o) for o in others)


def ref_contributions(model, window, y):
    """‖g − g_{−(l,h)}‖/‖g‖ by two reference gradients per head."""
    dense = flat(ref_grads(model, window, y))
    c = torch.zeros(model.config.blocks, model.config.heads, dtype=DT)
    for l in range(c.shape[0]):
        for h in range(c.shape[1]):
            c[l, h] = (dense - flat(ref_grads(model, window, y, frozenset({(l, h)})))).norm() / dense.norm()
    return c


@pytest.mark.parametrize("selection", ["importance", "adversarial"])
def test_gradient_importance_keeps_the_heads_of_largest_or_smallest_contribution(selection):
    learner = make(1 / 3, selection, importance_score="gradient")
    for _, window, y in lockstep(learner, steps=5):
        pass
    c = ref_contributions(learner.model, window, y)
    assert torch.allclose(learner.last_contributions, c, rtol=1e-9, atol=1e-12)
    order = c.argsort(dim=-1, descending=selection == "importance")
    for l in range(2):
        assert set(learner.last_kept[l].nonzero().flatten().tolist()) == set(order[l, :2].tolist())


@pytest.mark.parametrize("selection", ["importance", "adversarial"])
def test_attention_importance_keeps_the_heads_that_look_most_or_least_at_the_past(selection):
    learner = make(1 / 2, selection, importance_score="attention")
    for _, window, y in lockstep(learner, steps=5):
        pass
    record = []
    ref_forward(ref_params(learner.model), learner.config, window[0], record=record)
    mass = 1 - torch.stack(record)[:, :, -1]
    order = mass.argsort(dim=-1, descending=selection == "importance")
    for l in range(2):
        assert set(learner.last_kept[l].nonzero().flatten().tolist()) == set(order[l, :3].tolist())


# -- diagnostics ------------------------------------------------------------------------------
def test_attention_entropy_and_contributions_match_the_reference():
    model = CausalTransformer(I, O, d_model=12, heads=6, blocks=2, window=4, seed=2).to(DT)
    xs, ys = stream(4, seed=5)
    window, y = xs.unsqueeze(0), ys[-1:]
    record = []
    pred = ref_forward(ref_params(model), model.config, window[0], record=record)
    a = torch.stack(record)
    assert torch.allclose(attention_entropy(model, window), -(a * a.log()).sum(-1), atol=1e-12)
    delta = 2 * (pred.detach() - y[0]).unsqueeze(0)  # ∂loss/∂pred
    c = ref_contributions(model, window, y)
    assert torch.allclose(head_contributions(model, window, delta), c, rtol=1e-9, atol=1e-12)
    every = frozenset((l, h) for l in range(2) for h in range(6))
    dense = flat(ref_grads(model, window, y))
    reach = (dense - flat(ref_grads(model, window, y, every))).norm()
    past = head_contributions(model, window, delta, relative_to="past")
    assert torch.allclose(past, c * dense.norm() / reach, rtol=1e-9, atol=1e-12)


def test_head_profile_averages_the_per_step_diagnostics():
    model = CausalTransformer(I, O, d_model=12, heads=6, blocks=1, window=3, seed=2).to(DT)
    xs, ys = stream(6, seed=6)
    profile = head_profile(model, xs, ys, loss_fn=loss_of)
    ent, con = [], []
    for t in range(2, 6):
        window = xs[t - 2 : t + 1].unsqueeze(0)
        record = []
        ref_forward(ref_params(model), model.config, window[0], record=record)
        a = torch.stack(record)
        ent.append(-(a * a.log()).sum(-1))
        con.append(ref_contributions(model, window, ys[t : t + 1]))
    assert profile.steps == 4
    assert torch.allclose(profile.entropy, torch.stack(ent).mean(0), atol=1e-12)
    assert torch.allclose(profile.contribution, torch.stack(con).mean(0), rtol=1e-9, atol=1e-12)
    assert profile.contribution_cv.shape == (1,)


# -- state ------------------------------------------------------------------------------------
@pytest.mark.parametrize("selection", ["random", "fixed"])
def test_state_dict_round_trip_continues_bit_exactly(selection):
    xs, ys = stream(12, seed=7)

    def run(learner, opt, ts):
        out = []
        for t in ts:
            pred = learner.step(xs[t])
            learner.backward(loss_of(pred, ys[t]))
            opt.step()
            opt.zero_grad()
            out.append((pred.detach().clone(), learner.last_kept.clone()))
        return out

    a = make(0.5, selection, seed=1)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    run(a, opt_a, range(6))
    saved, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt_a.state_dict())
    expected = run(a, opt_a, range(6, 12))

    b = make(0.5, selection, seed=99)
    b.load_state_dict(saved)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(saved_opt)
    got = run(b, opt_b, range(6, 12))
    for (pa, ka), (pb, kb) in zip(expected, got):
        assert torch.equal(pa, pb) and torch.equal(ka, kb)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert b.steps == a.steps == 12


# -- errors -----------------------------------------------------------------------------------
def test_bad_options_say_how_to_fix_them():
    for fraction in (1.5, -0.1, float("nan"), True, "half"):
        with pytest.raises(ConfigurationError, match=r"head_fraction must be a number in \[0, 1\]"):
            make(fraction)
    with pytest.raises(ConfigurationError, match="unknown head selection 'best'.*'random'"):
        make(0.5, "best")
    with pytest.raises(ConfigurationError, match="unknown importance_score"):
        make(0.5, "importance", importance_score="entropy")
    with pytest.raises(ConfigurationError, match="not a multiple of heads=12.*d_model=12"):
        make(0.5, heads=12, d_model=18)
    with pytest.raises(ConfigurationError, match="unknown positions"):
        make(0.5, positions="rotary")


def test_bad_input_says_how_to_fix_it():
    learner = make(0.5)
    with pytest.raises(InputError, match=r"shape \(3,\).*expected \(2,\) or \(B, 2\)"):
        learner.step(torch.zeros(3, dtype=DT))
    with pytest.raises(InputError, match="not a sequence"):
        learner.step(torch.zeros(4, 1, 2, dtype=DT))
    with pytest.raises(InputError, match="NaN or inf.*nan_to_num"):
        learner.step(torch.tensor([0.0, float("nan")], dtype=DT))
    with pytest.raises(InputError, match="dtype.*x.to"):
        learner.step(torch.zeros(2))
    with pytest.raises(InputError, match="needs a step"):
        learner.backward(torch.zeros((), dtype=DT, requires_grad=True))
    assert learner.steps == 0 and learner.window is None  # nothing was changed
    first = learner.step(torch.zeros(2, dtype=DT))
    with pytest.raises(InputError, match="reset_state"):
        learner.step(torch.zeros(3, 2, dtype=DT))
    learner.step(torch.ones(2, dtype=DT))
    with pytest.raises(InputError, match="earlier step"):
        learner.backward(first.sum())
    pred = learner.step(torch.ones(2, dtype=DT))
    with torch.no_grad():
        learner.model.readout.bias.add_(1.0)
    with pytest.raises(InputError, match="changed between step\\(\\) and backward\\(\\)"):
        learner.backward(pred.sum())
    learner.reset_state()
    learner.step(torch.zeros(3, 2, dtype=DT))  # a new batch size after reset


def test_loading_a_state_of_another_selection_is_refused():
    a = make(0.5, "random")
    with pytest.raises(ConfigurationError, match="same selection"):
        make(0.5, "fixed").load_state_dict(a.state_dict())


# -- learning ---------------------------------------------------------------------------------
def sine(T, freq=0.3, phase=0.0):
    t = torch.arange(T + 1, dtype=DT)
    s = torch.sin(freq * t + phase).unsqueeze(-1)
    return s[:-1], s[1:]


def online_losses(learner, opt, xs, ys) -> list[float]:
    """The library's prequential loop (predict, squared error, learn) over (xs, ys)."""
    return prequential(learner, lambda y: y, zip(xs, ys), opt, on_divergence="raise").losses.tolist()


def test_online_run_lowers_the_loss_on_a_sine_stream():
    learner = OnlineTransformer(1, 1, d_model=12, heads=6, window=6, head_fraction=0.5, seed=0).to(DT)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    losses = online_losses(learner, opt, *sine(200))
    assert sum(losses[-30:]) < 0.25 * sum(losses[:30])


def test_pretrain_then_adapt_from_a_snapshot():
    model = CausalTransformer(1, 1, d_model=12, heads=6, window=6, seed=0).to(DT)
    xa, ya = sine(200, freq=0.3)
    history = pretrain(model, xa, ya, steps=60, batch_size=16, lr=1e-2)
    assert history[-10:].mean() < 0.1 * history[:10].mean()
    before = copy.deepcopy(model.state_dict())

    xb, yb = sine(40, freq=0.5)
    frozen = adapt(model, xb, yb, head_fraction=1.0, optimizer=None, context=6)
    with torch.no_grad():  # frozen: the snapshot's own errors on the windows ending at t ≥ 6
        errors = [(model(xb[max(0, t - 5) : t + 1].unsqueeze(0))[0] - yb[t]).pow(2).mean() for t in range(6, 40)]
    assert torch.allclose(frozen.losses, torch.stack(errors))
    assert frozen.diverged_at is None

    # fraction 1 with SGD equals plain backprop training through the window
    sgd = lambda ps: torch.optim.SGD(ps, lr=0.05)
    dense = adapt(model, xb, yb, head_fraction=1.0, optimizer=sgd, context=6)
    plain = copy.deepcopy(model)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05)
    expected = []
    for t in range(6, 40):
        loss = (plain(xb[max(0, t - 5) : t + 1].unsqueeze(0))[0] - yb[t]).pow(2).mean()
        expected.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(dense.losses, torch.tensor(expected, dtype=DT), rtol=1e-9)
    assert dense.mean_loss < frozen.mean_loss

    half = adapt(model, xb, yb, head_fraction=0.5, selection="fixed", seed=3, optimizer=sgd, context=6)
    assert (half.kept.sum(-1) == 3).all() and all(torch.equal(half.kept[0], k) for k in half.kept)
    readout = adapt(model, xb, yb, head_fraction=1.0, optimizer=sgd, trainable="readout", context=6)
    assert not torch.equal(readout.losses, dense.losses)
    for k, v in model.state_dict().items():  # the snapshot is untouched
        assert torch.equal(v, before[k])


def test_adapt_reports_divergence():
    model = CausalTransformer(1, 1, d_model=12, heads=6, window=4, seed=0).to(DT)
    xs, ys = sine(30)
    result = adapt(model, xs, ys, head_fraction=1.0, optimizer=lambda ps: torch.optim.SGD(ps, lr=1e200))
    assert result.diverged_at is not None
    assert torch.isfinite(result.losses[: result.diverged_at]).all()
    assert torch.isnan(result.losses[result.diverged_at + 1 :]).all()


@pytest.mark.parametrize("legacy,rule", [
    ({"head_fraction": 0.5, "selection": "random"}, dict(fraction=0.5, selection="random")),
    ({"head_fraction": 0.5, "selection": "fixed"}, dict(fraction=0.5, selection="random", resample_every=0)),
    ({"head_fraction": 0.5, "selection": "importance", "importance_score": "attention"},
     dict(fraction=0.5, selection="magnitude", score="attention")),
    ({"head_fraction": 1 / 3, "selection": "adversarial"}, dict(fraction=1 / 3, selection="adversarial")),
])
def test_the_head_rule_object_is_the_string_options(legacy, rule):
    """rule=HeadSparse(...) in sparse's vocabulary learns exactly as the string options do."""
    from sparse_rtrl.transformer import HeadSparse

    xs, ys = sine(40)
    runs = []
    for kw in (dict(**legacy, seed=3), dict(rule=HeadSparse(**rule, seed=3))):
        model = CausalTransformer(1, 1, d_model=12, heads=6, window=4, seed=0).to(DT)
        learner = OnlineTransformer.from_model(model, **kw)
        opt = torch.optim.SGD(learner.parameters(), lr=0.05)
        runs.append((online_losses(learner, opt, xs, ys), [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_bad_head_rules_are_named():
    from sparse_rtrl.transformer import HeadSparse

    with pytest.raises(ConfigurationError, match="unknown head selection 'importance'.*as for sparse"):
        HeadSparse(0.5, "importance")
    with pytest.raises(ConfigurationError, match="resample_every=0 fixes a random choice"):
        HeadSparse(0.5, "magnitude", resample_every=0)
    model = CausalTransformer(1, 1, d_model=12, heads=6, window=4, seed=0).to(DT)
    with pytest.raises(ConfigurationError, match="either as rule=HeadSparse.*not both"):
        OnlineTransformer.from_model(model, rule=HeadSparse(0.5), head_fraction=0.5)
