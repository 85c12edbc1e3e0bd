"""Offline pretraining and one online adaptation run, the two pieces of the C8 protocol.

- :func:`pretrain`: teacher-forced training on a regime-A stream with full backprop: random
  minibatches of full windows x_{t−W+1..t}, each scored at its newest position against
  y_t, exactly the prediction the online learner makes.
- :func:`adapt`: from a snapshot, test-then-train online over a stream: at each step predict
  y_t from the window ending at t, record the loss, backward with head-sparse transport,
  optimizer step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from ..errors import ConfigurationError, InputError
from ..evaluate import prequential
from ..offline import fit
from .diagnostics import LossFn, mse
from .learner import OnlineTransformer
from .model import CausalTransformer

Tensor = torch.Tensor

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
TRAINABLE = ("all", "readout")


def _check_stream(model: CausalTransformer, inputs: Tensor, targets: Tensor) -> None:
    c = model.config
    p = model.readout.weight
    for name, t, size in (("inputs", inputs, c.input_size), ("targets", targets, c.output_size)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[1] != size:
            raise InputError(
                f"{name} must be a (T, {size}) tensor, got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            )
        if t.dtype != p.dtype:
            raise InputError(f"{name} are {t.dtype} but the model is {p.dtype}: convert with .to({p.dtype})")
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"{name} contain NaN or inf: clean the stream (drop or impute samples) first")
    if inputs.shape[0] != targets.shape[0]:
        raise InputError(
            f"inputs has {inputs.shape[0]} steps but targets has {targets.shape[0]}: targets[t] is "
            "the target of the prediction made after inputs[t]"
        )


def windows(inputs: Tensor, window: int) -> Tensor:
    """All full windows of a stream: ``(T − W + 1, W, I)``; row r ends at t = r + W − 1."""
    return inputs.unfold(0, window, 1).transpose(1, 2)


def pretrain(
    model: CausalTransformer,
    inputs: Tensor,
    targets: Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    loss_fn: LossFn = mse,
) -> Tensor:
    """Train ``model`` in place with Adam on full windows of (inputs (T, I), targets (T, O)).

    Each update draws ``batch_size`` windows uniformly (seeded) and minimises the mean loss
    of their newest predictions (the loop is :func:`sparse_rtrl.offline.fit`). Returns the
    per-update training losses ``(steps,)``.
    """
    _check_stream(model, inputs, targets)
    W = model.config.window
    if inputs.shape[0] < W:
        raise InputError(f"the stream has {inputs.shape[0]} steps, fewer than one window (W={W})")
    xs, ys = windows(inputs, W), targets[W - 1 :]
    gen = torch.Generator().manual_seed(seed)

    def batch_loss() -> Tensor:
        idx = torch.randint(xs.shape[0], (batch_size,), generator=gen)
        return loss_fn(model(xs[idx]), ys[idx])

    return fit(model.parameters(), batch_loss, steps, lr)


@dataclass(frozen=True)
class AdaptResult:
    """One online run: per-step losses (NaN from a divergence on) and the heads used."""

    #: (T − context,) float64: loss of the prediction at each scored step, before its update
    losses: Tensor
    #: (T − context, blocks, H) bool: heads that carried gradient to the past at each step
    #: (all False for a frozen run and after a divergence)
    kept: Tensor
    #: index into ``losses`` of the step that diverged (non-finite), or None
    diverged_at: int | None

    @property
    def mean_loss(self) -> float:
        return float(self.losses.mean())


def adapt(
    snapshot: CausalTransformer,
    inputs: Tensor,
    targets: Tensor,
    *,
    head_fraction: float,
    selection: str = "random",
    seed: int = 0,
    optimizer: OptimizerFactory | None = None,
    importance_score: str = "gradient",
    trainable: str = "all",
    context: int = 0,
    loss_fn: LossFn = mse,
) -> AdaptResult:
    """Test-then-train online from a copy of ``snapshot`` (left unchanged).

    At step t: ŷ_t from the window ending at t, loss_fn(ŷ_t, targets[t]) recorded, backward
    with head-sparse transport, one optimizer step — the library's prequential loop
    (:func:`sparse_rtrl.evaluate.prequential`). The first ``context`` steps only fill
    the window (no loss, no update). ``optimizer`` is a factory, e.g.
    ``lambda ps: torch.optim.Adam(ps, lr=1e-3)``; None runs the frozen model.
    ``trainable="readout"`` learns the readout only (the other parameters stay fixed).
    """
    if not isinstance(snapshot, CausalTransformer):
        raise InputError(f"adapt takes a CausalTransformer snapshot, got {type(snapshot).__name__}")
    _check_stream(snapshot, inputs, targets)
    if trainable not in TRAINABLE:
        raise ConfigurationError(f"unknown trainable {trainable!r}: use one of {', '.join(map(repr, TRAINABLE))}")
    if not 0 <= context < inputs.shape[0]:
        raise ConfigurationError(f"context must be in [0, T={inputs.shape[0]}), got {context}")
    model = copy.deepcopy(snapshot)
    if trainable == "readout":
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("readout."))
    learner = OnlineTransformer.from_model(
        model, head_fraction=head_fraction, selection=selection, importance_score=importance_score, seed=seed
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = None if optimizer is None else optimizer(params)
    c = model.config
    T = inputs.shape[0] - context
    kept = torch.zeros(T, c.blocks, c.heads, dtype=torch.bool)
    with torch.no_grad():
        for t in range(context):
            learner.step(inputs[t])

    class Heads:  # after each update: the heads that carried gradient to the past
        def on_learned(self, record):
            if opt is not None:
                kept[record.t] = learner.last_kept

    stream = ((inputs[t], targets[t]) for t in range(context, inputs.shape[0]))
    run = prequential(learner, lambda prediction: prediction, stream, opt, loss=loss_fn, callbacks=[Heads()])
    losses = torch.full((T,), math.nan, dtype=torch.float64)
    losses[: len(run.losses)] = torch.from_numpy(run.losses)
    if run.diverged_at is not None:
        losses[run.diverged_at :] = math.nan  # no score from the step that diverged on
    return AdaptResult(losses, kept, run.diverged_at)
