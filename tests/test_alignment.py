"""Gradient alignment against a hand computation: per-step gradients of full RTRL by
autograd BPTT, of the immediate rule by one-step autograd, cosines of window sums in numpy."""

import numpy as np
import pytest
import torch

from reference import bptt_per_step_grads
from sparse_rtrl import VanillaRNN, new_ensemble
from sparse_rtrl.alignment import gradient_alignment
from sparse_rtrl.errors import ConfigurationError, InputError

from conftest import make_cell
from test_cells import torch_step, torch_twin

T, W = 12, 4


def setting():
    cell = make_cell("vanilla", I=3, n=5)
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)
    r = torch.randn(T, 2, 5, generator=g, dtype=torch.float64)
    return cell, xs, r, lambda t, h: (r[t] * h).sum() + 0.5 * (h**2).sum()


def hand_gradients(cell, xs, loss, window):
    """Per-step ∂L_t/∂θ through the last ``window`` steps (None: the whole past), by autograd."""
    step = torch_step(torch_twin(cell, "vanilla"), "vanilla")
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    if window is None:
        grads = bptt_per_step_grads(step, params, xs, loss, torch.zeros(2, 5, dtype=torch.float64))
        return np.stack([torch.cat([g.reshape(-1) for g in gs]).numpy() for gs in grads])
    out, s = [], torch.zeros(2, 5, dtype=torch.float64)
    for t in range(T):
        s_new = step(params, s.detach(), xs[t])  # window 1: the past held fixed
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(t, s_new), params)]).numpy())
        s = s_new
    return np.stack(out)


def cosines(G, G_ref, width):
    n = len(G) // width
    a = G[: n * width].reshape(n, width, -1).sum(1)
    b = G_ref[: n * width].reshape(n, width, -1).sum(1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), \
        np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cosines_and_ratios_equal_the_hand_computation():
    cell, xs, r, loss = setting()
    before = [p.detach().clone() for p in cell.parameters()]
    res = gradient_alignment(cell, {"tbptt": ("tbptt", {"window": T}), "k=N": ("sparse", {"k": 5})},
                             xs, loss, widths=(1, W))
    exact, imm = hand_gradients(cell, xs, loss, None), hand_gradients(cell, xs, loss, 1)
    for width in (1, W):
        c, ratio = cosines(imm, exact, width)
        assert np.allclose(res.cosine["immediate"][width].numpy(), c, rtol=0, atol=1e-12)
        assert np.allclose(res.norm_ratio["immediate"][width].numpy(), ratio, rtol=1e-12)
        for exact_rule in ("tbptt", "k=N"):  # exact rules align perfectly, at the same scale
            assert np.allclose(res.cosine[exact_rule][width].numpy(), 1.0, atol=1e-12)
            assert np.allclose(res.norm_ratio[exact_rule][width].numpy(), 1.0, atol=1e-12)
    assert len(res.cosine["immediate"][W]) == T // W
    assert res.mean_cosine("immediate", 1) == pytest.approx(float(cosines(imm, exact, 1)[0].mean()))
    assert res.mean_cosine("immediate", 1) < 0.999  # the floor is not exact: the test can fail
    assert set(res.summary()["immediate"]) == {"cos@1", "ratio@1", f"cos@{W}", f"ratio@{W}"}
    assert all(torch.equal(a, b) for a, b in zip(before, cell.parameters()))  # the cell is untouched
    assert set(res.seconds_per_step) == {"immediate", "tbptt", "k=N"} and res.reference_seconds_per_step > 0


def test_bad_arguments_are_named():
    cell, xs, r, loss = setting()
    with pytest.raises(InputError, match=r"inputs must be a \(T, I\) or \(T, B, I\) tensor"):
        gradient_alignment(cell, {}, xs[0, 0], loss)
    with pytest.raises(ConfigurationError, match="window widths must be ints ≥ 1"):
        gradient_alignment(cell, {}, xs, loss, widths=(0,))
    with pytest.raises(ConfigurationError, match="takes a solo cell"):
        gradient_alignment(new_ensemble(VanillaRNN, 2, 3, 5), {}, xs.float(), loss)
