"""The online-learning contract every learner of the library keeps (SPEC §2.3).

    y_t = learner.step(x_t)        advance by one input; y_t is what the loss is built from
    learner.backward(L_t(y_t))     add the learner's gradient of L_t to the model's ``.grad``
                                   and the true gradient to everything downstream of y_t
    optimizer.step()               any ``torch.optim`` optimizer

Two families implement it: forward transport (:class:`~sparse_rtrl.OnlineLearner` with a
rule carrying M_t = ∂s_t/∂θ forward) and window recompute (TBPTT through the learner's
window rules, and :class:`~sparse_rtrl.transformer.OnlineTransformer`), which rebuild the
last W steps by autograd. This base holds what they share: the checks on inputs and losses
(with errors that name the fix), the bookkeeping of the output leaf y_t, the check that the
loss is of the latest output (forward transport: M_t serves only L_t's gradient), the
detection of a plain ``loss.backward()``, the finite-check policy, ``.grad`` accumulation and
the step counter in ``state_dict``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Iterable

import torch
from torch import nn

from .errors import InputError

Tensor = torch.Tensor


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every element of every tensor is finite, with one fused reduction and one sync
    in the usual case: a NaN or inf makes the 2-norm NaN or inf. The 2-norm can also overflow
    for huge finite values, so a non-finite norm is confirmed element-wise."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return True
    if all(math.isfinite(v) for v in torch.stack(torch._foreach_norm(tensors, 2.0)).tolist()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def accumulate(params: Iterable[nn.Parameter], grads: Iterable[Tensor | None]) -> None:
    """``p.grad += g`` as ``loss.backward()`` would: a fresh ``.grad`` is a copy, never ``g``
    itself (two parameters may be handed one buffer)."""
    for p, g in zip(params, grads):
        if g is None or not p.requires_grad:
            continue
        g = g.reshape(p.shape)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.add_(g)


class AbstractOnlineLearner(nn.Module):
    """Base of every online learner: ``step(x)`` → output, ``backward(loss)``.

    Subclasses set :attr:`output_name` (how messages call the output: "h", "prediction"),
    implement :meth:`_reference_parameter` (inputs must match its dtype and device) and
    :meth:`_backward` (the family's gradient, after the shared checks), and call
    :meth:`_check_input_values` on every input and :meth:`_publish` on every output.
    """

    #: how error messages name the output of ``step`` and the model it learns
    output_name: str = "output"
    model_name: str = "model"
    #: whether the output carries the learner's graph (window family) instead of being a
    #: fresh leaf: a plain ``loss.backward()`` is then exact, not a mistake, and a loss of an
    #: earlier output inside the window is a loss the window's autograd differentiates exactly,
    #: so neither is refused
    output_carries_graph: bool = False

    def _init_contract(self, check_finite: bool) -> None:
        self.check_finite = check_finite
        self.steps = 0  # steps since the learner was created (the index of the next step)
        self._out: Tensor | None = None
        self._out_prev: Tensor | None = None

    @abstractmethod
    def _reference_parameter(self) -> Tensor:
        """A parameter whose dtype and device every input must share."""

    @abstractmethod
    def _backward(self, loss: Tensor) -> None:
        """Accumulate the family's gradient of a checked, finite, scalar ``loss``."""

    # -- inputs -------------------------------------------------------------------------
    def _check_input_values(self, x: Tensor, fits: bool, expected: str) -> None:
        """Type, dtype, device, shape (``fits``; ``expected`` says what fits) and finiteness."""
        if not isinstance(x, Tensor):
            raise InputError(f"step() takes a torch.Tensor, got {type(x).__name__}")
        p = self._reference_parameter()
        if not (x.is_floating_point() or x.is_complex()):
            raise InputError(
                f"input dtype {x.dtype} is not a floating-point type: convert the input with "
                f"x.to({p.dtype}) (the dtype of the {self.model_name}'s parameters)"
            )
        if x.dtype != p.dtype:
            raise InputError(
                f"input dtype {x.dtype} does not match the {self.model_name}'s parameters ({p.dtype}): "
                f"convert the input with x.to({p.dtype}) or the {self.model_name} with .to({x.dtype})"
            )
        if x.device != p.device:
            raise InputError(
                f"input is on {x.device} but the {self.model_name}'s parameters are on {p.device}: "
                f"move the input with x.to('{p.device}')"
            )
        if not fits:
            raise InputError(f"input of shape {tuple(x.shape)} does not fit this learner: expected {expected}")
        if self.check_finite and not all_finite([x.detach()]):
            raise InputError(
                f"the input at step {self.steps} contains NaN or inf: clean the stream (e.g. drop "
                "or impute the sample, torch.nan_to_num) before step(); nothing was changed"
            )

    # -- outputs ------------------------------------------------------------------------
    def _publish(self, out: Tensor) -> Tensor:
        """Record the output of the step just taken (and count the step)."""
        self.steps += 1
        self._out_prev, self._out = (None if self.output_carries_graph else self._out), out
        return out

    def _forget_outputs(self) -> None:
        self._out = self._out_prev = None

    def _check_no_plain_backward(self) -> None:
        """A plain ``loss.backward()`` fills the output leaf's ``.grad`` but gives the model
        nothing: say so at the next call instead of letting only the readout learn. Said once:
        the marker is cleared, so a caller who catches the error can go on."""
        out = self._out
        if out is None or self.output_carries_graph or out.grad is None:
            return
        out.grad = None
        raise InputError(
            f"the loss of step {self.steps - 1} was back-propagated with loss.backward(), which "
            f"gives the {self.model_name}'s parameters no gradient (only what lies downstream of "
            f"the {self.output_name} learned): call learner.backward(loss) instead; nothing was "
            "changed by this call"
        )

    # -- backward -----------------------------------------------------------------------
    def backward(self, loss: Tensor) -> None:
        """Accumulate the learner's gradient of ``loss``, a scalar built from the latest output."""
        out = self.output_name
        if self._out is None:
            raise InputError(f"backward() needs a step() first: compute the loss from the {out} it returns")
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise InputError(
                "backward() takes a scalar loss tensor; reduce it first, e.g. loss.sum() or loss.mean()"
            )
        if not loss.requires_grad:
            raise InputError(
                f"the loss does not require grad: compute it from the {out} returned by step(), "
                "outside torch.no_grad()"
            )
        self._check_no_plain_backward()
        if self.check_finite and not all_finite([loss.detach()]):
            self._raise_non_finite_loss()
        self._backward(loss)

    def _raise_non_finite_loss(self) -> None:
        raise InputError(
            f"the loss at step {self.steps - 1} is NaN or inf; nothing was accumulated. Check "
            "the targets and the readout (a diverged model raises DivergenceError instead)"
        )

    def _output_gradient(self, loss: Tensor) -> Tensor:
        """δ = ∂L/∂y_t by autograd through everything downstream of the output leaf (which
        gets its true gradient on the way); raises if the loss reaches an earlier output or
        does not reach this one."""
        loss.backward()
        delta, self._out.grad = self._out.grad, None
        prev = self._out_prev
        if prev is not None and prev.grad is not None:
            prev.grad = None
            raise InputError(
                f"the loss depends on the {self.output_name} of an earlier step: call backward() "
                f"at each step with a loss of that step's {self.output_name}"
            )
        if delta is None:
            raise InputError(self._no_path_message())
        return delta

    def _no_path_message(self) -> str:
        out = self.output_name
        return (
            f"the loss of step {self.steps - 1} has no path to the {out} returned by step() (built "
            f"on {out}.detach(), or not from the {out} at all), so the {self.model_name} gets no "
            f"gradient from it: compute the loss from the {out} itself. Parameters the loss does "
            "reach (the readout) received their gradients"
        )

    # -- state_dict ---------------------------------------------------------------------
    def _contract_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def _load_contract_state(self, extra: dict[str, Any]) -> None:
        self.steps = int(extra["steps"])
        self._forget_outputs()
