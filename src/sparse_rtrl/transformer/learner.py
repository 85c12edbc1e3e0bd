"""OnlineTransformer: a causal transformer learned online with head-sparse gradient transport.

At step t the learner runs the model on the last W inputs with the current parameters and
returns the newest prediction ŷ_t; the caller scores it (any PyTorch loss) and calls
``backward(loss)``, which adds to every trainable parameter's ``.grad`` the gradient of the
loss in which the past keys/values of the heads not selected this step are detached (see
:mod:`~sparse_rtrl.transformer.model`); any ``torch.optim`` optimizer then steps.

Implementation: ``step`` runs the forward without a graph and returns ŷ as a fresh leaf, as
:class:`~sparse_rtrl.OnlineLearner` returns h; ``backward`` reads δ = ∂L/∂ŷ from the leaf,
chooses the heads (the "gradient" importance score needs δ), runs the forward again with
those heads' past detached and adds the vector–Jacobian product δ·∂ŷ/∂θ to ``.grad``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..contract import AbstractOnlineLearner, accumulate, all_finite
from ..errors import ConfigurationError, DivergenceError, InputError
from .diagnostics import head_contributions, past_attention
from .head_rule import HeadSparse
from .heads import HeadSelection
from .model import CausalTransformer

Tensor = torch.Tensor


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal up to kernel round-off (on the CPU the two forwards agree bit for bit)."""
    eps = torch.finfo(a.dtype).eps
    return torch.allclose(a, b, rtol=64 * eps, atol=64 * eps * float(b.abs().max().clamp_min(1.0)))


def _rule(rule: HeadSparse | None, head_fraction, selection, importance_score, seed) -> HeadSparse:
    """The learner's head rule: ``rule`` itself, or the one the string options name."""
    if rule is None:
        return HeadSparse.from_options(head_fraction, selection, importance_score, seed)
    if not isinstance(rule, HeadSparse):
        raise ConfigurationError(f"rule must be a HeadSparse, got {type(rule).__name__}")
    if (head_fraction, selection, importance_score) != (1.0, "random", "gradient"):
        raise ConfigurationError("give the head rule either as rule=HeadSparse(...) or by head_fraction/"
                                 "selection/importance_score, not both")
    return rule


class OnlineTransformer(AbstractOnlineLearner):
    """Learns a :class:`CausalTransformer` online, one input at a time.

    Args:
        input_size, output_size, d_model, heads, blocks, window, d_ff, positions: the model
            (see :class:`~sparse_rtrl.transformer.model.TransformerConfig`).
        head_fraction: share f ∈ [0, 1] of each block's heads whose past keys/values carry
            gradient; m = ⌊f·H + ½⌋ heads per block. 1 is ordinary backprop through the
            window (the dense reference); 0 is the newest position's gradient alone.
        selection: "random" (fresh per step), "fixed" (drawn once), "importance" (largest
            score) or "adversarial" (smallest score); see :mod:`~sparse_rtrl.transformer.heads`.
        importance_score: "gradient" (the head's share of the dense gradient, exact at this
            step; costs one extra backward pass per head) or "attention" (the newest query's
            attention mass on the past).
        seed: seeds the initial weights (in a forked RNG) and the head-selection generator.
        check_finite: raise a clear error on NaN/inf inputs, losses, predictions, gradients.
        rule: the head rule as an object, :class:`~sparse_rtrl.transformer.HeadSparse`
            (``fraction``, ``selection`` "random" / "magnitude" / "adversarial" as for
            ``sparse``, ``resample_every``, ``score``, ``seed``); the four options above are
            the string form of it (``selection`` "fixed" = random drawn once, "importance" =
            magnitude).

    Use :meth:`from_model` to learn an existing (e.g. pretrained) model.

    Shapes: x ``(I,)`` returns ŷ ``(O,)``; x ``(B, I)`` (B independent streams sharing the
    parameters; the loss sums or averages over them) returns ŷ ``(B, O)``.

    Example::

        >>> import torch
        >>> from sparse_rtrl.transformer import OnlineTransformer
        >>> learner = OnlineTransformer(1, 1, d_model=24, heads=12, window=8,
        ...                             head_fraction=0.5, selection="random", seed=0)
        >>> opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
        >>> x = torch.sin(torch.arange(51) * 0.3).unsqueeze(-1)
        >>> for t in range(50):
        ...     y = learner.step(x[t])
        ...     loss = (y - x[t + 1]).pow(2).mean()
        ...     learner.backward(loss)
        ...     opt.step(); opt.zero_grad()
        >>> int(learner.last_kept.sum(-1)[0])
        6
    """

    output_name = "prediction"
    model_name = "model"

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        d_model: int = 48,
        heads: int = 12,
        blocks: int = 1,
        window: int = 32,
        d_ff: int | None = None,
        positions: str = "learned",
        head_fraction: float = 1.0,
        selection: str = "random",
        importance_score: str = "gradient",
        seed: int = 0,
        check_finite: bool = True,
        rule: HeadSparse | None = None,
    ):
        super().__init__()
        model = CausalTransformer(
            input_size, output_size, d_model=d_model, heads=heads, blocks=blocks, window=window,
            d_ff=d_ff, positions=positions, seed=seed,
        )
        self._attach(model, _rule(rule, head_fraction, selection, importance_score, seed), check_finite)

    @classmethod
    def from_model(
        cls,
        model: CausalTransformer,
        *,
        head_fraction: float = 1.0,
        selection: str = "random",
        importance_score: str = "gradient",
        seed: int = 0,
        check_finite: bool = True,
        rule: HeadSparse | None = None,
    ) -> "OnlineTransformer":
        """A learner of ``model`` itself (parameters shared, not copied: deep-copy a snapshot first)."""
        if not isinstance(model, CausalTransformer):
            raise InputError(
                f"from_model takes a sparse_rtrl.transformer.CausalTransformer, got {type(model).__name__}"
            )
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._attach(model, _rule(rule, head_fraction, selection, importance_score, seed), check_finite)
        return self

    def _attach(self, model, rule: HeadSparse, check_finite) -> None:
        c = model.config
        self.model = model
        self.rule = rule
        self.selector = HeadSelection(rule.fraction, rule.legacy_selection, c.blocks, c.heads, rule.seed, rule.score)
        self._init_contract(check_finite)
        self._window: Tensor | None = None  # (B, n, I), n ≤ W, oldest first
        self._batched = False
        self._pred_value: Tensor | None = None  # (B, O), for the consistency check
        #: (blocks, H) bool: the heads that carried gradient to the past at the latest backward
        self.last_kept: Tensor | None = None
        #: (blocks, H) gradient contributions c_{l,h} of the latest backward ("gradient" score only)
        self.last_contributions: Tensor | None = None

    # -- options --------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def head_fraction(self) -> float:
        return self.selector.fraction

    @property
    def heads_kept(self) -> int:
        """m: heads per block whose past keys/values carry gradient."""
        return self.selector.kept

    @property
    def window(self) -> Tensor | None:
        """The inputs the latest prediction saw, ``(B, n, I)`` oldest first (None before step 1)."""
        return self._window

    def _param(self) -> Tensor:
        return self.model.embed.weight

    def _reference_parameter(self) -> Tensor:
        return self._param()

    # -- the stream -----------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> Tensor:
        I = self.config.input_size
        fits = isinstance(x, Tensor) and x.dim() in (1, 2) and x.shape[-1] == I
        self._check_input_values(
            x, fits, f"({I},) or (B, {I}) — one input per step (input_size={I}), not a sequence"
        )
        return x.reshape(-1, I)

    def reset_state(self) -> None:
        """Start new sequences: empty the window. Generator and fixed mask carry on."""
        self._window = None
        self._pred_value = None
        self._forget_outputs()

    def step(self, x: Tensor) -> Tensor:
        """Append x to the window and return the newest prediction ŷ (a leaf requiring grad)."""
        self._check_no_plain_backward()
        xi = self._check_input(x)
        batched = x.dim() == 2
        if self._window is not None and (xi.shape[0] != self._window.shape[0] or batched != self._batched):
            raise InputError(
                f"got input of shape {tuple(x.shape)} but this learner is running "
                f"{self._window.shape[0] if self._batched else 'one unbatched'} stream(s): call "
                "reset_state() to start new streams with a different batch size"
            )
        W = self.config.window
        window = xi.unsqueeze(1) if self._window is None else torch.cat([self._window, xi.unsqueeze(1)], 1)
        window = window[:, -W:].clone()
        with torch.no_grad():
            pred = self.model(window)
        if self.check_finite and not bool(torch.isfinite(pred).all()):
            raise DivergenceError(self.steps, "prediction")
        self._window, self._batched, self._pred_value = window, batched, pred
        return self._publish((pred if batched else pred[0]).clone().requires_grad_(True))

    def _choose(self, delta: Tensor, params: list[Tensor]) -> Tensor:
        need = self.selector.needs
        self.last_contributions = None
        if need == "gradient":
            self.last_contributions = head_contributions(self.model, self._window, delta, params)
            return self.selector.choose(self.last_contributions)
        if need == "attention":
            return self.selector.choose(past_attention(self.model, self._window))
        return self.selector.choose()

    def backward(self, loss: Tensor) -> None:
        """Accumulate the head-sparse gradient of ``loss`` (a function of the latest ŷ).

        Model parameters get δ·∂ŷ/∂θ added to ``.grad``, with the past keys/values of the
        heads not selected this step detached; anything else the loss depends on gets its
        true gradient by autograd.
        """
        super().backward(loss)

    def _backward(self, loss: Tensor) -> None:
        d = self._output_gradient(loss)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            return
        delta = d.reshape(self._pred_value.shape)
        keep = self._choose(delta, params)
        with torch.enable_grad():
            pred = self.model(self._window, keep=keep)
            if not _same(pred.detach(), self._pred_value):
                raise InputError(
                    "the model changed between step() and backward() (an optimizer step or a "
                    "parameter edit in between): call backward() right after computing the loss "
                    "of the latest step, then step the optimizer"
                )
            grads = torch.autograd.grad(pred, params, delta, allow_unused=True)
        if self.check_finite and not all_finite([g for g in grads if g is not None]):
            raise DivergenceError(self.steps - 1, "gradient", "Nothing was accumulated into the model.")
        self.last_kept = keep
        accumulate(params, grads)

    # -- state_dict -----------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            **self._contract_state(),
            "window": None if self._window is None else self._window.clone(),
            "batched": self._batched,
            "selector": self.selector.state_dict(),
        }

    def set_extra_state(self, extra: dict[str, Any]) -> None:
        self.selector.load_state_dict(extra["selector"])
        self._load_contract_state(extra)
        window = extra["window"]
        self._window = None if window is None else window.to(self._param().device).clone()
        self._batched = bool(extra["batched"])
        self._pred_value = None

    def extra_repr(self) -> str:
        return f"selector={self.selector!r}"
