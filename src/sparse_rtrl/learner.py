"""The online learner: a cell, a transport rule, and the online-learning contract of SPEC §2.3."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .cells import as_cell
from .cells.base import AbstractCell, StepDerivatives
from .contract import AbstractOnlineLearner, accumulate, all_finite
from .errors import ConfigurationError, DivergenceError, InputError
from .transport import AbstractRule, AbstractWindowRule, TransportContext, load_state, make_transport, state_to_dict

Tensor = torch.Tensor


class OnlineLearner(AbstractOnlineLearner):
    """Learns a recurrent cell online by forward gradient transport.

    At each step: ``h = learner.step(x)`` advances the state s and the sensitivity
    M = ∂s/∂θ by the transport rule; the user computes any loss L_t from h (readout and loss
    are plain PyTorch); ``learner.backward(loss)`` adds (∂L_t/∂h_t)·M_t to the cell
    parameters' ``.grad`` and the true gradient to everything downstream of h, exactly as
    ``loss.backward()`` would; any ``torch.optim`` optimizer then steps.

    Two rule families: forward transport (``AbstractTransport``: full, sparse, immediate,
    trace, snap1, uoro, kf, shadow) keeps M_t and contracts it with δ_t = ∂L_t/∂h_t; the
    window family (``AbstractWindowRule``: tbptt) keeps the last inputs and recomputes h_t
    by autograd, so the h it returns carries that graph.

    Args:
        cell: a ``sparse_rtrl.cells`` cell (solo or ``ensemble_size=E``), a
            ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell`` (converted, parameters shared), or a
            :class:`~sparse_rtrl.cells.FunctionalCell`.
        transport: a rule name — "full", "sparse", "immediate", "trace", ... — or a rule
            object; ``**options`` go to the named rule (e.g. ``k=4``, ``decay=0.9``).
        check_finite: check inputs, state, J_t, Ī_t, losses and gradients for NaN/inf and
            raise a clear error (cheap: M itself is never scanned; finite inputs to an
            exact update can only give a non-finite M by overflow, which the gradient check
            catches).

    Shapes: a solo learner takes x ``(I,)`` or ``(B, I)`` (B independent streams sharing
    the parameters; gradients summed over B) and returns h ``(n,)`` or ``(B, n)``. An
    ensemble learner (cell with ``ensemble_size=E``) takes x ``(I,)`` or ``(B, I)`` (one
    stream shared by every member) or ``(E, B, I)`` and returns h ``(E, n)`` or
    ``(E, B, n)``.

    Example::

        >>> import torch
        >>> from sparse_rtrl import OnlineLearner
        >>> from sparse_rtrl.cells import VanillaRNN
        >>> cell, readout = VanillaRNN(1, 16), torch.nn.Linear(16, 1)
        >>> learner = OnlineLearner(cell, "sparse", k=4, seed=0)
        >>> opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=1e-2)
        >>> x = torch.sin(torch.arange(101) * 0.3).unsqueeze(-1)
        >>> for t in range(100):
        ...     h = learner.step(x[t])
        ...     loss = (readout(h) - x[t + 1]).pow(2).sum()
        ...     learner.backward(loss)
        ...     opt.step(); opt.zero_grad()
    """

    output_name = "h"
    model_name = "cell"

    def __init__(
        self,
        cell: AbstractCell | nn.Module,
        transport: str | AbstractRule = "full",
        *,
        check_finite: bool = True,
        **options: Any,
    ):
        super().__init__()
        misplaced = sorted({"device", "dtype"} & set(options))
        if misplaced:
            raise ConfigurationError(
                f"OnlineLearner takes no {' or '.join(misplaced)} option: the learner follows its "
                "cell's parameters. Move or convert the cell first, e.g. cell.to('cuda') or "
                "cell.double(), then build the learner"
            )
        self.cell = as_cell(cell)
        self.transport = make_transport(transport, **options)
        self.transport.check_context(self._context(1))  # k out of range, unsupported cell, ... fail here
        self._init_contract(check_finite)
        # the family decides once how a step advances and how a loss becomes a gradient
        self.output_carries_graph = isinstance(self.transport, AbstractWindowRule)
        self._state: Tensor | None = None  # (E, B, N)
        self._rule_state: Any = None
        self._pending_state: Tensor | None = None
        self._batch_may_change = False

    # -- shapes ---------------------------------------------------------------------------
    def _reference_parameter(self) -> Tensor:
        return self.cell._cached_parameters()[0][0]

    @property
    def _param(self) -> Tensor:
        return self._reference_parameter()

    def _context(self, batch: int) -> TransportContext:
        p = self._param
        return TransportContext(
            layout=self.cell.layout(),
            input_size=self.cell.input_size,
            members=self.cell.members,
            batch=batch,
            state_size=self.cell.state_size,
            hidden_size=self.cell.hidden_size,
            structure=self.cell.structure,
            dtype=p.dtype,
            device=p.device,
        )

    def _expected_shapes(self) -> str:
        I = self.cell.input_size
        if self.cell.ensemble_size is None:
            return f"({I},) or (B, {I})"
        return f"({I},), (B, {I}) shared by all members, or (E={self.cell.ensemble_size}, B, {I})"

    def _internal_input(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """x as ``(E, B, I)`` and the shape h is returned in."""
        I, n, E = self.cell.input_size, self.cell.hidden_size, self.cell.members
        ensemble = self.cell.ensemble_size is not None
        ok_dims = (1, 2, 3) if ensemble else (1, 2)
        fits = isinstance(x, Tensor) and x.dim() in ok_dims and x.shape[-1] == I and not (
            x.dim() == 3 and x.shape[0] != E)
        self._check_input_values(x, fits, f"{self._expected_shapes()} (input_size={I})")
        if x.dim() == 3:
            return x, (E, x.shape[1], n)
        batch = 1 if x.dim() == 1 else x.shape[0]
        xi = x.reshape(1, batch, I).expand(E, batch, I)
        if ensemble:
            return xi, ((E, n) if x.dim() == 1 else (E, batch, n))
        return xi, ((n,) if x.dim() == 1 else (batch, n))

    def _user_shape(self, t: Tensor) -> Tensor:
        """An internal ``(E, B, ...)`` tensor in the shape the user sees for this run."""
        if self.cell.ensemble_size is None:
            t = t[0]
        return t

    # -- the stream -----------------------------------------------------------------------
    def _start(self, batch: int) -> None:
        ctx = self._context(batch)
        old = self._rule_state
        self._rule_state = self.transport.init(ctx)
        if old is not None and hasattr(old, "generators"):  # keep the random stream going
            self._rule_state.generators = old.generators
        if self._pending_state is not None:
            self._state = self._pending_state
            self._pending_state = None
        else:
            self._state = self.cell.initial_state(batch)

    def reset_state(self, state: Tensor | None = None) -> None:
        """Start new sequences: s ← ``state`` (default zeros), M ← 0.

        Generators and mask schedules carry on, so a run stays reproducible. ``state`` has the
        shape of :attr:`state`: ``([B,] N)`` solo, ``(E, [B,] N)`` for an ensemble. The next
        step may use a different batch size.
        """
        self._forget_outputs()
        pending = None if state is None else self._check_state(state)
        p = self._param
        if self._state is not None and (self._state.device != p.device or self._state.dtype != p.dtype):
            self._state = self._rule_state = None  # the cell was moved: reallocate at the next step
        if self._state is None:
            self._pending_state = pending
            return
        if pending is not None and pending.shape[1] != self._state.shape[1]:
            self._pending_state = pending
            self._state = None  # a new batch size: allocated at the next step
            return
        self._state = torch.zeros_like(self._state) if pending is None else pending
        self.transport.reset(self._rule_state)
        self._batch_may_change = True

    def _check_state(self, state: Tensor) -> Tensor:
        p, N, E = self._param, self.cell.state_size, self.cell.members
        if not isinstance(state, Tensor) or state.shape[-1] != N or state.dtype != p.dtype:
            raise InputError(
                f"a state must be a {p.dtype} tensor whose last dimension is N={N}, got "
                f"{getattr(state, 'dtype', type(state).__name__)} {tuple(getattr(state, 'shape', ()))}"
            )
        s = state.detach().to(p.device)
        if self.cell.ensemble_size is None:
            return s.reshape(1, -1, N).clone()
        if s.shape[0] != E or s.dim() not in (2, 3):
            raise InputError(f"an ensemble state must be (E={E}, [B,] N={N}), got {tuple(s.shape)}")
        return s.reshape(E, -1, N).clone()

    def step(self, x: Tensor) -> Tensor:
        """Advance state and sensitivity by one input; returns h_t (a leaf requiring grad, or
        for a window rule the end of the window's graph)."""
        self._check_no_plain_backward()
        xi, out_shape = self._internal_input(x)
        batch = xi.shape[1]
        if self._state is None or (self._batch_may_change and batch != self._state.shape[1]):
            self._start(batch)
        elif batch != self._state.shape[1]:
            raise InputError(
                f"got a batch of {batch} streams but this learner is running {self._state.shape[1]}: "
                "call reset_state() to start new streams with a different batch size"
            )
        p = self._param
        if self._state.device != p.device or self._state.dtype != p.dtype:
            raise InputError(
                "the cell was moved to another device or dtype mid-stream: call reset_state() "
                "after moving it (or move it before the first step)"
            )
        h = self._window_step(xi) if self.output_carries_graph else self._transport_step(xi)
        self._batch_may_change = False
        return self._publish(h.reshape(out_shape) if self.output_carries_graph else
                             h.reshape(out_shape).clone().requires_grad_(True))

    def _transport_step(self, xi: Tensor) -> Tensor:
        """s_t, J_t, Ī_t in closed form and M_t by the rule; returns h_t (no graph)."""
        with torch.no_grad():
            derivs = self.cell.step_with_derivatives(
                self.cell.stacked_parameters(), self._state, xi, self.transport.needs_jacobian
            )
            if self.check_finite:
                self._check_step(derivs)
            self.transport.update(self._rule_state, derivs)
        self._state = derivs.state
        return self.cell.hidden(derivs.state)

    def _window_step(self, xi: Tensor) -> Tensor:
        """h_t through autograd's graph back across the rule's window."""
        params = self.cell.transported_parameters()
        if self.cell.ensemble_size is None:
            params = [p.unsqueeze(0) for p in params]
        s_new = self.transport.forward(self._rule_state, self.cell, params, self._state, xi)
        if self.check_finite and not bool(torch.isfinite(s_new.detach()).all()):
            raise DivergenceError(self.steps, "state")
        self.transport.commit(self._rule_state, self._state, xi)
        self._state = s_new.detach()
        return self.cell.hidden(s_new)

    def _check_step(self, derivs: StepDerivatives) -> None:
        fused = [derivs.state, *derivs.immediate.tensors()]
        if derivs.jacobian is not None:
            fused.append(derivs.jacobian)
        if all_finite(fused):
            return  # the usual case; otherwise the checks below name what is not finite
        for what, ok in (
            ("state", lambda: bool(torch.isfinite(derivs.state).all())),
            ("Jacobian J_t", lambda: derivs.jacobian is None or bool(torch.isfinite(derivs.jacobian).all())),
            ("immediate influence Ī_t", derivs.immediate.is_finite),
        ):
            if not ok():
                raise DivergenceError(self.steps, what)

    # -- backward -------------------------------------------------------------------------
    def backward(self, loss: Tensor) -> None:
        """Accumulate the transported gradient of ``loss`` (a function of the latest h).

        Cell parameters get (∂L/∂h_t)·M_t added to ``.grad``; everything else the loss
        depends on gets its true gradient by autograd. (Window rules: autograd through the
        window gives the cell's gradient too.)
        """
        super().backward(loss)

    def _backward(self, loss: Tensor) -> None:
        if self.output_carries_graph:
            self._window_backward(loss)
            return
        delta = self._output_gradient(loss)
        E, H = self.cell.members, self.cell.hidden_size
        with torch.no_grad():
            grads = self.transport.gradient(self._rule_state, delta.reshape(E, -1, H))
            if self.check_finite and not all_finite(grads):
                raise DivergenceError(
                    self.steps - 1, "gradient", "The readout gradients were accumulated; the cell's were not."
                )
            accumulate(self.cell.transported_parameters(), grads)

    def _raise_non_finite_loss(self) -> None:
        """A non-finite loss is divergence when the model made it (a state grown past what a
        loss of it can hold, or non-finite cell parameters), otherwise bad targets."""
        h = self._out.detach()
        largest = float(h.abs().max()) if h.numel() else 0.0
        overflowing = math.sqrt(torch.finfo(h.dtype).max) * 1e-3  # a square of it overflows
        params = [p.detach() for p in self.cell.transported_parameters()]
        if not math.isfinite(largest) or largest > overflowing or not all_finite(params):
            raise DivergenceError(
                self.steps - 1, "loss",
                f"The state had grown to max |h| = {largest:.3g} (or the cell's parameters are "
                "non-finite); nothing was accumulated.",
            )
        raise InputError(
            f"the loss at step {self.steps - 1} is NaN or inf; nothing was accumulated. The state "
            f"is moderate (max |h| = {largest:.3g}): check the targets and the readout"
        )

    def _window_backward(self, loss: Tensor) -> None:
        """Autograd through the window; the cell's gradients are rolled back if non-finite.

        Every parameter gets its own zeroed ``.grad`` first. Without it, autograd may hand one
        buffer to two parameters (b_ih and b_hh both receive ∂L/∂z itself when a single stream
        leaves no sum to reduce) and, finding ``.grad`` unset, store that buffer as both
        ``.grad``s: the next accumulation into one then lands in the other too.
        """
        params = [p for p in self.cell.transported_parameters() if p.requires_grad]
        saved = [None if p.grad is None else p.grad.clone() for p in params] if self.check_finite else None
        unset = [p.grad is None for p in params]
        for p, fresh in zip(params, unset):
            if fresh:
                p.grad = torch.zeros_like(p)
        reached = []
        hooks = [p.register_post_accumulate_grad_hook(lambda _p: reached.append(True)) for p in params]
        try:
            loss.backward()
        except BaseException:
            for p, fresh in zip(params, unset):
                if fresh:
                    p.grad = None  # as it was: a caller who catches this steps no phantom zeros
            raise
        finally:
            for hook in hooks:
                hook.remove()
        if params and not reached:
            for p, fresh in zip(params, unset):
                if fresh:
                    p.grad = None
            raise InputError(self._no_path_message())
        if self.check_finite and not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params):
            for p, g in zip(params, saved):
                p.grad = g
            raise DivergenceError(
                self.steps - 1, "gradient", "The readout gradients were accumulated; the cell's were not."
            )

    # -- inspection -----------------------------------------------------------------------
    @property
    def state(self) -> Tensor | None:
        """s_t in user shape (``([B,] N)`` solo, ``(E, B, N)`` ensemble); None before step 1."""
        if self._state is None:
            return None
        return self._user_shape(self._state)

    @property
    def transport_state(self) -> Any:
        """The rule's state object (M, masks, generators, ...)."""
        return self._rule_state

    def influence(self) -> Tensor | None:
        """M_t = ∂s_t/∂θ as a dense tensor ``([E,] B, N, P)``, if the rule keeps one."""
        if self._rule_state is None:
            return None
        M = self.transport.influence(self._rule_state)
        return None if M is None else self._user_shape(M)

    def check_influence(self) -> None:
        """Scan M for NaN/inf (one pass over M; not done automatically)."""
        M = self.influence()
        if M is not None and not bool(torch.isfinite(M).all()):
            raise DivergenceError(self.steps - 1, "sensitivity M")

    # -- state_dict -----------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "rule": self.transport.name,
            **self._contract_state(),
            "state": None if self._state is None else self._state.clone(),
            "transport": None if self._rule_state is None else state_to_dict(self._rule_state),
        }

    def set_extra_state(self, extra: dict[str, Any]) -> None:
        if extra.get("rule") != self.transport.name:
            raise InputError(
                f"this state was saved by a {extra.get('rule')!r} learner; load it into a learner "
                f"with the same transport (this one is {self.transport.name!r})"
            )
        self._load_contract_state(extra)
        self._pending_state = None
        if extra["state"] is None:
            self._state = self._rule_state = None
            return
        state = extra["state"]
        self._rule_state = None
        self._start(state.shape[1])
        self._state = state.to(self._state.device).clone()
        load_state(self._rule_state, extra["transport"])

    def extra_repr(self) -> str:
        return f"transport={self.transport!r}"
