"""Head specialisation diagnostics: how differently the heads read and carry the past.

For a window of L positions and the newest prediction ŷ with upstream gradient δ = ∂L/∂ŷ:

- attention entropy of head (l, h): H_{l,h} = −Σ_j a_j log a_j (nats) of the newest query's
  attention a over the window (0 = all mass on one position, log L = uniform);
- past attention mass: 1 − a_L, the mass the newest query puts on earlier positions;
- gradient contribution: with g the dense gradient of δ·ŷ over all trainable parameters
  (concatenated) and g_{−(l,h)} the same gradient with head (l, h)'s past keys and values
  detached,

      c_{l,h} = ‖g − g_{−(l,h)}‖ / ‖g‖,

  the share of the dense gradient that travels through that head's past keys and values.
  A path from ŷ to θ crosses at most one element of a head's {k_j, v_j : j < L} (keys and
  values of one block do not feed each other), so
  g − g_{−(l,h)} = Σ_{j<L} (∂L/∂k_j)(∂k_j/∂θ) + (∂L/∂v_j)(∂v_j/∂θ) over that head, with
  ∂L/∂k_j the dense adjoint: one backward pass gives all adjoints, then one batched pass per
  block gives every head's term. The c_{l,h} need not sum to 1 (with several blocks a path
  may cross the past of heads in different blocks and counts for each; the newest
  position's own gradient counts for none). ``relative_to="past"`` divides by ‖g − g_0‖
  instead, g_0 being the gradient with every head's past detached.

Statistics over a stream (:func:`head_profile`) average per-step values over the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from .model import CausalTransformer, Taps

Tensor = torch.Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """The per-step loss used throughout: mean squared error over outputs (and batch)."""
    return (prediction - target).pow(2).mean()


def _trainable(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def newest_attention(model: CausalTransformer, window: Tensor) -> Tensor:
    """The newest query's attention (blocks, B, H, L) for ``window`` (B, L, I)."""
    taps = Taps()
    with torch.no_grad():
        model(window, taps=taps)
    return torch.stack(taps.attention)


def attention_entropy(model: CausalTransformer, window: Tensor) -> Tensor:
    """H_{l,h} (blocks, H) in nats, averaged over the batch of ``window`` (B, L, I)."""
    a = newest_attention(model, window)
    return -torch.special.xlogy(a, a).sum(-1).mean(1)


def past_attention(model: CausalTransformer, window: Tensor) -> Tensor:
    """1 − a_L (blocks, H): the newest query's attention mass on earlier positions."""
    return 1.0 - newest_attention(model, window)[..., -1].mean(1)


def head_contributions(
    model: CausalTransformer,
    window: Tensor,
    grad_output: Tensor,
    params: list[Tensor] | None = None,
    *,
    relative_to: str = "dense",
) -> Tensor:
    """c_{l,h} (blocks, H) of the module docstring, for δ = ``grad_output`` (B, O).

    ``relative_to="dense"`` divides ‖g − g_{−(l,h)}‖ by ‖g‖ (the definition);
    ``relative_to="past"`` divides it by ‖g − g_0‖ instead, g_0 being the gradient with every
    head's past detached (the share of the gradient that travels to the past at all).
    ``params`` defaults to the model's trainable parameters. Zero where the window has no
    past (L = 1) or the denominator is zero.
    """
    if relative_to not in ("dense", "past"):
        raise InputError(f"unknown relative_to {relative_to!r}: use 'dense' or 'past'")
    through, dense, past = _contribution_parts(model, window, grad_output, params, relative_to == "past")
    return _ratio(through, dense if relative_to == "dense" else past)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return num / den if den > 0 else torch.zeros_like(num)


def _contribution_parts(model, window, grad_output, params, with_past: bool):
    """(‖g − g_{−(l,h)}‖ (blocks, H), ‖g‖, ‖g − g_0‖ or 0), all float64 on the CPU."""
    params = _trainable(model) if params is None else list(params)
    c = model.config
    H, L = c.heads, window.shape[1]
    through = torch.zeros(c.blocks, H, dtype=torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    if L == 1 or not params:
        return through, zero, zero
    taps = Taps()
    with torch.enable_grad():
        pred = model(window, taps=taps)
        nodes = taps.keys + taps.values
        grads = torch.autograd.grad(pred, params + nodes, grad_output, retain_graph=True, allow_unused=True)
        P = len(params)
        dense = _flat(grads[:P], params)
        past = zero
        if with_past:
            alone = torch.autograd.grad(
                model(window, keep=torch.zeros(c.blocks, H, dtype=torch.bool)), params, grad_output,
                allow_unused=True,
            )
            past = (dense - _flat(alone, params)).norm().double().cpu()
        adj_k, adj_v = grads[P : P + c.blocks], grads[P + c.blocks :]
        eye = torch.eye(H, dtype=torch.bool, device=window.device).view(H, 1, H, 1, 1)
        before = (torch.arange(L, device=window.device) < L - 1).view(1, 1, 1, L, 1)
        select = eye & before  # (H, 1, H, L, 1): batch member h keeps head h's past positions
        for l in range(c.blocks):
            ak = torch.where(select, adj_k[l].unsqueeze(0), 0.0)
            av = torch.where(select, adj_v[l].unsqueeze(0), 0.0)
            per_head = torch.autograd.grad(
                [taps.keys[l], taps.values[l]], params, [ak, av],
                retain_graph=True, allow_unused=True, is_grads_batched=True,
            )
            through[l] = _flat(per_head, params, batch=H).norm(dim=-1).double().cpu()
    return through, dense.norm().double().cpu(), past


def _flat(grads, params, batch: int | None = None) -> Tensor:
    """Concatenated gradients ``(P,)``, or ``(batch, P)`` for batched ones (None = zeros)."""
    lead = () if batch is None else (batch,)
    return torch.cat([
        (p.new_zeros(*lead, *p.shape) if g is None else g).reshape(*lead, -1) for g, p in zip(grads, params)
    ], dim=-1)


@dataclass(frozen=True)
class HeadProfile:
    """Per-head statistics averaged over the steps of a stream; tensors are (blocks, H)."""

    #: mean attention entropy of the newest query (nats)
    entropy: Tensor
    #: mean gradient contribution c_{l,h} (relative to the dense gradient ‖g‖)
    contribution: Tensor
    #: mean of the same numerators relative to ‖g − g_0‖, the gradient that reaches the past
    past_share: Tensor
    #: mean attention mass of the newest query on earlier positions
    past_attention: Tensor
    #: number of steps averaged
    steps: int
    #: the window length of the model (log W is the largest possible entropy)
    window: int

    @property
    def normalised_entropy(self) -> Tensor:
        """entropy / log W, in [0, 1] for full windows (1 = uniform attention)."""
        return self.entropy / math.log(self.window) if self.window > 1 else torch.zeros_like(self.entropy)

    @property
    def contribution_cv(self) -> Tensor:
        """Per block, std/mean of the contributions across heads (0 = isotropic heads)."""
        mean = self.contribution.mean(-1)
        return self.contribution.std(-1, unbiased=False) / mean.clamp_min(1e-300)


def head_profile(
    model: CausalTransformer,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = mse,
    start: int | None = None,
    every: int = 1,
) -> HeadProfile:
    """Average the diagnostics over the windows ending at t = start, start + every, ... < T.

    ``inputs`` (T, I), ``targets`` (T, O): the prediction from the window ending at t is scored
    against ``targets[t]``. ``start`` defaults to W − 1 (full windows only). The model is not
    changed.
    """
    W = model.config.window
    start = W - 1 if start is None else start
    ent, con, share, past, n = 0.0, 0.0, 0.0, 0.0, 0
    for t in range(start, inputs.shape[0], every):
        window = inputs[max(0, t - W + 1) : t + 1].unsqueeze(0)
        with torch.no_grad():
            pred = model(window)
        leaf = pred.clone().requires_grad_(True)
        with torch.enable_grad():
            (delta,) = torch.autograd.grad(loss_fn(leaf, targets[t].unsqueeze(0)), leaf)
        ent = ent + attention_entropy(model, window).double()
        past = past + past_attention(model, window).double()
        through, dense, reach = _contribution_parts(model, window, delta, None, True)
        con = con + _ratio(through, dense)
        share = share + _ratio(through, reach)
        n += 1
    if n == 0:
        raise InputError(f"no window ends in [start={start}, T={inputs.shape[0]}): give a longer stream")
    return HeadProfile(ent / n, con / n, share / n, past / n, n, W)
