"""Plain reference computations the library is checked against. Nothing here imports the
library's transport code: gradients come from autograd BPTT, products from dense tensors."""

from __future__ import annotations

import torch
from torch.func import jacrev

Tensor = torch.Tensor


def bptt_per_step_grads(step, params: list[Tensor], xs: Tensor, losses, s0: Tensor):
    """Per step t, the autograd gradient of L_t(h_t) w.r.t. ``params`` through the whole past.

    step(params, s, x) -> s' (differentiable); losses(t, s_t) -> scalar.
    """
    s = s0
    states = []
    for t in range(xs.shape[0]):
        s = step(params, s, xs[t])
        states.append(s)
    grads = []
    for t, st in enumerate(states):
        g = torch.autograd.grad(losses(t, st), params, retain_graph=True, allow_unused=True)
        grads.append([torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)])
    return grads


def dense_derivatives(step, params: list[Tensor], s: Tensor, x: Tensor):
    """J = ∂s'/∂s (N, N) and Ī = ∂s'/∂θ (N, P) by autodiff, for one unbatched stream."""
    J = jacrev(lambda ss: step(params, ss, x))(s)
    Ibar = jacrev(lambda *ps: step(list(ps), s, x), argnums=tuple(range(len(params))))(*params)
    N = s.shape[0]
    return J, torch.cat([b.reshape(N, -1) for b in Ibar], dim=1)


def masked_transport(J: Tensor, mask: Tensor, M: Tensor, Ibar: Tensor) -> Tensor:
    """The sparse rule by its definition: (K ⊙ J)·M + Ī, everything dense (K may hold weights)."""
    return (J * mask.to(J.dtype)) @ M + Ibar


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))
