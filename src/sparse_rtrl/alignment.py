"""Gradient alignment: how closely each rule's online gradient points along full RTRL's.

On one fixed trajectory (the same cell, inputs and loss for every rule, no optimizer step)
each rule gives per-step gradients g_t^m of the cell's parameters and full RTRL the exact
g_t^* = (∂L_t/∂s_t)·M_t^*. The alignment is the cosine

    c_t^m(w) = ⟨G_t^m, G_t^*⟩ / (‖G_t^m‖·‖G_t^*‖),   G_t^m = Σ_{τ in window t} g_τ^m,

per step (w = 1) and over consecutive, non-overlapping windows of w steps (w = 10, 100: what
an optimizer that averages gradients sees). Every rule's gradient contains the immediate
part δ_t·Ī_t, so the immediate rule's alignment is the floor that needs no transport; a rule
is only as useful as its margin over that floor. The norm ratio ‖G^m‖/‖G^*‖ is reported
beside it (a biased rule can point the right way at the wrong scale).

Example::

    res = gradient_alignment(cell, {"immediate": "immediate", "k=4": ("sparse", {"k": 4})},
                             xs, lambda t, h: (readout(h) - ys[t]).pow(2).sum())
    res.mean_cosine("k=4", 10), res.summary()

Along a method's own learning run the same per-step cosine is logged by the gradient
shadow (``transport="shadow"``, see docs/baselines.md).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from .cells import as_cell
from .errors import ConfigurationError, InputError
from .learner import OnlineLearner
from .transport import AbstractTransport

Tensor = torch.Tensor
RuleSpec = str | AbstractTransport | tuple[str, dict]

#: the reference every cosine is measured against
REFERENCE = "full"


@dataclass
class WindowAccumulator:
    """Running sums G^m, G^* of the current window and the cosines of finished windows."""

    width: int
    own: Tensor | None = None
    ref: Tensor | None = None
    filled: int = 0
    cosines: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def add(self, g: Tensor, g_ref: Tensor) -> None:
        self.own = g.clone() if self.own is None else self.own + g
        self.ref = g_ref.clone() if self.ref is None else self.ref + g_ref
        self.filled += 1
        if self.filled == self.width:
            c, r = cosine_and_ratio(self.own, self.ref)
            self.cosines.append(c)
            self.ratios.append(r)
            self.own = self.ref = None
            self.filled = 0


def cosine_and_ratio(g: Tensor, g_ref: Tensor) -> tuple[float, float]:
    """(⟨g, g*⟩/(‖g‖‖g*‖), ‖g‖/‖g*‖) in float64; NaN where a norm is zero."""
    g, g_ref = g.double(), g_ref.double()
    a, b = float(g.norm()), float(g_ref.norm())
    if a == 0.0 or b == 0.0:
        return math.nan, (math.nan if b == 0.0 else a / b)
    return float(g @ g_ref) / (a * b), a / b


@dataclass(frozen=True)
class Alignment:
    """Cosines and norm ratios to full RTRL's gradient, per rule and window width:
    ``cosine[rule][w]`` is a float64 tensor with one entry per finished window of w steps."""

    cosine: dict[str, dict[int, Tensor]]
    norm_ratio: dict[str, dict[int, Tensor]]
    steps: int
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    """Wall time of each rule's ``step`` + ``backward`` per step on this trajectory, the rules
    run one after the other in one thread."""
    reference_seconds_per_step: float = math.nan
    """The same for full RTRL, the reference."""

    def mean_cosine(self, rule: str, width: int = 1) -> float:
        """Mean over windows of the cosine (windows with a zero gradient left out)."""
        c = self.cosine[rule][width]
        c = c[~torch.isnan(c)]
        return float(c.mean()) if c.numel() else math.nan

    def summary(self) -> dict[str, dict[str, float]]:
        """{rule: {"cos@w": mean cosine, "ratio@w": median norm ratio}} for every width."""
        out = {}
        for rule, by_width in self.cosine.items():
            row = {}
            for w in by_width:
                row[f"cos@{w}"] = self.mean_cosine(rule, w)
                r = self.norm_ratio[rule][w]
                r = r[~torch.isnan(r)]
                row[f"ratio@{w}"] = float(r.median()) if r.numel() else math.nan
            out[rule] = row
        return out


def _learner(cell, spec: RuleSpec) -> OnlineLearner:
    if isinstance(spec, tuple):
        name, options = spec
        return OnlineLearner(cell, name, **options)
    return OnlineLearner(cell, spec)


def gradient_alignment(
    cell,
    rules: Mapping[str, RuleSpec],
    inputs: Tensor,
    loss_fn: Callable[[int, Tensor], Tensor],
    widths: Sequence[int] = (1, 10, 100),
) -> Alignment:
    """Run every rule of ``rules`` (label → name, ``(name, options)`` or rule object) and full
    RTRL in lockstep on ``inputs`` ``(T, I)`` or ``(T, B, I)`` with the same fixed parameters,
    and measure each rule's gradient against full RTRL's (module docstring).

    ``loss_fn(t, h)`` is the scalar loss of step t from h_t (e.g. a fixed readout against
    the target). The cell is copied per rule, never changed; gradients are summed over the B
    streams, as the learner does. The immediate rule is always included (the floor). A
    readout inside ``loss_fn`` accumulates ``.grad`` from every rule's calls: zero it after.
    """
    cell = as_cell(cell)
    if cell.ensemble_size is not None:
        raise ConfigurationError("gradient_alignment takes a solo cell; measure members one by one")
    if not isinstance(inputs, Tensor) or inputs.dim() not in (2, 3):
        raise InputError(f"inputs must be a (T, I) or (T, B, I) tensor, got {getattr(inputs, 'shape', inputs)!r}")
    bad = [w for w in widths if not isinstance(w, int) or w < 1]
    if bad:
        raise ConfigurationError(f"window widths must be ints ≥ 1, got {bad}")
    specs = {"immediate": "immediate", **dict(rules)}
    learners = {label: _learner(copy.deepcopy(cell), spec) for label, spec in specs.items()}
    reference = _learner(copy.deepcopy(cell), REFERENCE)
    windows = {label: {w: WindowAccumulator(w) for w in widths} for label in learners}
    seconds, reference_seconds = dict.fromkeys(learners, 0.0), 0.0
    for t in range(inputs.shape[0]):
        start = time.perf_counter()
        g_ref = _step_gradient(reference, inputs[t], t, loss_fn)
        reference_seconds += time.perf_counter() - start
        for label, learner in learners.items():
            start = time.perf_counter()
            g = _step_gradient(learner, inputs[t], t, loss_fn)
            seconds[label] += time.perf_counter() - start
            for acc in windows[label].values():
                acc.add(g, g_ref)
    return Alignment(
        cosine={lab: {w: _float64(a.cosines) for w, a in accs.items()} for lab, accs in windows.items()},
        norm_ratio={lab: {w: _float64(a.ratios) for w, a in accs.items()} for lab, accs in windows.items()},
        steps=inputs.shape[0],
        seconds_per_step={label: sec / max(1, inputs.shape[0]) for label, sec in seconds.items()},
        reference_seconds_per_step=reference_seconds / max(1, inputs.shape[0]),
    )


def _float64(values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _step_gradient(learner: OnlineLearner, x: Tensor, t: int, loss_fn) -> Tensor:
    """g_t of one step: the learner's increment of the cell's ``.grad``, flattened."""
    params = learner.cell.transported_parameters()
    for p in params:
        p.grad = None
    h = learner.step(x)
    learner.backward(loss_fn(t, h))
    return torch.cat([
        (torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params
    ]).detach()
