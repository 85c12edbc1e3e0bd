"""FusedStep: a vanilla RNN, its transport rule, a linear readout, the squared error and the
optimizer as one call per stream element, with no autograd and nothing rebuilt per step.

    z_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh,   h_t = (1 − α)·h_{t−1} + α·φ(z_t)
    ŷ_t = W_o h_t + b_o,   L_t = ‖ŷ_t − y_t‖² (÷ O for reduction="mean")
    δ_t = ∂L_t/∂h_t = c·W_oᵀ(ŷ_t − y_t),   g_t = δ_t·M_t (the rule's M),   θ ← opt(θ, g_t)

The same numbers as :class:`~sparse_rtrl.OnlineLearner` + ``nn.Linear`` + the loss +
``torch.optim`` (tests/test_fused.py, to 1e-11 in float64), for one stream (B = 1), in the
time of a compiled step: every buffer, view and pointer is set up once, the cell's
derivatives come in closed form, the readout's gradient is an outer product, and the checks
for NaN/inf ride on work the step does anyway (the loss comes back from the compiled
prologue as a float; the gradient check is one pass in the compiled code).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..cells import VanillaRNN, as_cell
from ..errors import ConfigurationError, DivergenceError, InputError
from ..transport import make_transport
from ..transport.base import TransportContext
from . import _kernel
from .optim import Adam, TorchOptimizer, make_optimizer
from .products import make_product, unsupported

Tensor = torch.Tensor


class FusedStep:
    """``prediction, loss = fused.step(x, y)``: predict ŷ_t, score it, learn from it.

    Args:
        cell: a :class:`~sparse_rtrl.VanillaRNN` (any leak, tanh or relu, with or without
            bias) or a ``torch.nn.RNNCell``; a solo cell, not an ensemble.
        transport: "full", "sparse" (every option of :class:`~sparse_rtrl.transport.Sparse`),
            "snap1", "trace", "immediate", or a rule object; ``**options`` as for
            :class:`~sparse_rtrl.OnlineLearner`.
        readout: the ``nn.Linear(hidden_size, O)`` that predicts y from h.
        optimizer: "sgd" or "adam" (fused; with ``lr``, ``betas``, ``eps``), or any
            ``torch.optim`` optimizer over the cell's and the readout's parameters.
        reduction: "mean" (``nn.MSELoss``'s default) or "sum" over the O outputs.
        check_finite: raise when the loss or a gradient is NaN/inf; the step is then not
            kept (parameters, h and M as before it; only the sparse rule's M has advanced,
            since undoing its in-place update would cost a copy of M every step).
        engine: "compiled" — the cell, the readout, Ī and the optimizer in four calls of a
            small C library (``csrc/fused_step.c``; CPU, float32/float64), the products on M
            by oneDNN/BLAS or the rule's kernels; "torch" — the same steps as torch ops on
            preallocated buffers (any device); "auto" — compiled where it applies.

    ``step`` = ``score`` then ``learn``. ``score(x, y)`` predicts and scores, advancing h and
    M, and returns (ŷ_t (a new tensor), L_t as a float); ``learn()`` applies the step's
    gradient; ``advance(x)`` steps without a target. The parameters of ``cell`` and
    ``readout`` are updated in place: they stay the user's modules (save them, evaluate with
    them). Input: x ``(I,)`` or ``(1, I)``, y ``(O,)`` or ``(1, O)``, of the cell's dtype and
    device.
    """

    def __init__(self, cell, transport="full", readout: nn.Linear | None = None, *, optimizer="sgd",
                 lr: float | None = None, betas=(0.9, 0.999), eps: float = 1e-8, reduction: str = "mean",
                 check_finite: bool = True, engine: str = "auto", **options):
        self.cell = as_cell(cell)
        if not isinstance(self.cell, VanillaRNN):
            raise ConfigurationError(
                f"the fused step runs the vanilla cell; {type(self.cell).__name__} is not one: use "
                "sparse_rtrl.OnlineLearner (every cell) for LSTM, GRU and custom cells")
        if self.cell.ensemble_size is not None:
            raise ConfigurationError("the fused step runs one solo cell; for an ensemble use OnlineLearner")
        if not isinstance(readout, nn.Linear) or readout.in_features != self.cell.hidden_size:
            raise ConfigurationError(
                f"the fused step needs readout=nn.Linear({self.cell.hidden_size}, O) (the map from h to "
                f"the prediction), got {readout!r}")
        if reduction not in ("mean", "sum"):
            raise ConfigurationError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.rule = make_transport(transport, **options)
        reason = unsupported(self.rule)
        if reason:
            raise ConfigurationError(reason)
        self.readout, self.reduction, self.check_finite = readout, reduction, check_finite

        params, layout = self.cell._cached_parameters()
        p0 = params[0]
        if any(p.dtype != p0.dtype or p.device != p0.device for p in [*params, *readout.parameters()]):
            raise ConfigurationError("the cell and the readout must share one dtype and device: move or "
                                     "convert them together, e.g. readout.to(cell.weight_hh)")
        if not p0.dtype.is_floating_point:
            raise ConfigurationError(f"the fused step needs floating-point parameters, got {p0.dtype}")
        I, N, O = self.cell.input_size, self.cell.hidden_size, readout.out_features
        self.sizes = (I, N, O)
        ctx = TransportContext(layout=layout, input_size=I, members=1, batch=1, state_size=N, hidden_size=N,
                               structure=self.cell.structure, dtype=p0.dtype, device=p0.device)
        self.rule.check_context(ctx)  # k out of range, a fixed mask of the wrong shape, ...

        self._parameters = [*params, *readout.parameters()]
        self._pointers = self._signature()
        data = [p.detach() for p in self._parameters]
        self.w_ih, self.w_hh = data[0], data[1]
        self.b_ih, self.b_hh = (data[2], data[3]) if self.cell.bias else (None, None)
        self.w_o = data[len(params)]
        self.b_o = data[len(params) + 1] if readout.bias is not None else None
        self.optimizer = make_optimizer(optimizer, data, self._parameters, lr, betas, eps)

        like = p0.detach()
        # û = [x_t; h_{t−1}; 1; 1] (the ones only with biases): the inputs of Ī's blocks, in order
        self.u = torch.cat([like.new_zeros(I + N), like.new_ones(2 if self.cell.bias else 0)])
        self.x, self.h_prev = self.u[:I], self.u[I:I + N]
        self.z, self.h, self.d, self.one = like.new_zeros(N), like.new_zeros(N), like.new_zeros(N), like.new_ones(N)
        self.y_hat, self.err, self.delta = like.new_zeros(O), like.new_zeros(O), like.new_zeros(N)
        self.no_target, self.loss = like.new_zeros(O), like.new_zeros(())
        self.inputs = [self.x, self.h_prev] + ([None, None] if self.cell.bias else [])
        self.product = make_product(self.rule, layout, N, like, ctx, self.d, self.inputs, self.u)
        self.J = like.new_zeros(N, N) if self.product.needs_jacobian else like.new_zeros(N)
        self.g_w_o = like.new_zeros(O, N)
        self.grads = ([self.product.g[b.offset:b.stop].view(b.shape) for b in layout.blocks]
                      + [self.g_w_o] + ([self.err] if self.b_o is not None else []))
        self.leak = self.cell.leak
        self.scale = 2.0 / O if reduction == "mean" else 2.0
        self.steps = 0
        self._pending = False  # a scored step whose gradient is not applied yet
        self.engine = self._choose_engine(engine, data)
        if self.engine == "compiled":
            self._bind(data)

    # -- the step ----------------------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        """Predict ŷ_t from x_t, score it against y_t, learn: returns (ŷ_t ``(O,)``, L_t)."""
        out = self.score(x, y)
        self.learn()
        return out

    def score(self, x: Tensor, y: Tensor) -> tuple[Tensor, float]:
        """Test: advance h and M on x_t, predict ŷ_t, score it; the gradient waits for
        :meth:`learn` (a second ``score`` first drops it: that step is then not learned)."""
        x, y = self._checked(x, y)
        self._pending = False
        loss = self._compiled(x, y) if self.engine == "compiled" else self._torch(x, y)
        self._pending = True
        self.steps += 1
        return self.y_hat.clone(), loss

    def learn(self) -> None:
        """Train: θ ← opt(θ, g_t) with the gradient of the last :meth:`score`."""
        if not self._pending:
            raise ConfigurationError("learn() applies the gradient of the last score(x, y); call score first "
                                     "(each scored step is learned at most once)")
        self._pending = False
        if self.engine == "compiled" and not self._torch_optimizer:
            a = self._upd_args
            if self._adam is not None:
                opt = self._adam
                opt.t += 1
                a[-2], a[-1] = opt.lr / (1 - opt.betas[0] ** opt.t), (1 - opt.betas[1] ** opt.t) ** 0.5
            self._update(*a)
        else:
            self.optimizer.step(self.grads)

    def advance(self, x: Tensor) -> None:
        """A step without a target: h and M advance on x_t, nothing is scored or learned."""
        x, y = self._checked(x, self.no_target)
        self._pending = False
        if self.engine == "compiled":
            self._compiled(x, y, scored=False)
        else:
            self._torch(x, y, scored=False)
        self.steps += 1

    def reset_state(self) -> None:
        """A new sequence: h = 0 and a zero influence M (parameters and optimizer kept)."""
        self.h_prev.zero_()
        self.product.reset()
        self._pending = False

    def state_dict(self) -> dict:
        """What a stream needs to continue bit-exactly: h, the rule's M (and its masks and
        generators), the optimizer's state and the step count. The parameters are the
        modules' own: save ``cell.state_dict()`` and ``readout.state_dict()`` beside it."""
        return {"h": self.h_prev.clone(), "steps": self.steps, "rule": self.rule.name,
                "product": self.product.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        if d.get("rule") != self.rule.name:
            raise ConfigurationError(f"this state is of a {d.get('rule')!r} fused step, not {self.rule.name!r}: "
                                     "load it into a FusedStep with the same rule")
        self.h_prev.copy_(d["h"])
        self.steps = int(d["steps"])
        self.product.load_state_dict(d["product"])
        self.optimizer.load_state_dict(d["optimizer"])
        self._pending = False

    @property
    def hidden(self) -> Tensor:
        """h_t, the state after the last step ``(N,)``."""
        return self.h_prev.clone()

    @property
    def numeric_path(self) -> str:
        """The engine and how M advances, e.g. "compiled, oneDNN" or "torch, SparseProduct"."""
        mm = getattr(self.product, "mm", None)
        return f"{self.engine}, {mm.path if mm is not None else type(self.product).__name__}"

    # -- the two engines ---------------------------------------------------------------------
    def _compiled(self, x: Tensor, y: Tensor, scored: bool = True) -> float:
        pro = self._pro_args
        pro[7], pro[8] = x.data_ptr(), y.data_ptr()
        loss = self._prologue(*pro)
        if scored and self.check_finite and not math.isfinite(loss):
            self._refuse(x, y, loss)
        if self._add_local is not None:  # full RTRL: the product, then Ī by the C library, then g
            M, transposed = self.product.advance(self.J)
            self._add_local(M.data_ptr(), transposed, *self._local_args)
            if scored:
                torch.mv(M if transposed else M.t(), self.delta, out=self.product.g)
        else:
            self.product.gradient(self.d, self.J, self.inputs, self.delta, scored)
        if not scored:
            self.h_prev.copy_(self.h)
        elif self._check(*self._check_args):  # non-zero: a gradient is not finite, h not kept
            if self.check_finite:
                self._refuse(x, y, loss)
            self.h_prev.copy_(self.h)
        self.product.commit()
        return loss

    def _torch(self, x: Tensor, y: Tensor, scored: bool = True) -> float:
        O = self.sizes[2]
        self.x.copy_(x)
        z, h, d, a = self.z, self.h, self.d, self.leak
        if self.b_ih is None:
            torch.mv(self.w_ih, self.x, out=z)
        else:
            torch.addmv(self.b_ih, self.w_ih, self.x, out=z)
            z.add_(self.b_hh)
        z.addmv_(self.w_hh, self.h_prev)
        if self.cell.nonlinearity == "tanh":
            torch.tanh(z, out=h)
            torch.addcmul(self.one, h, h, value=-1.0, out=d)
        else:
            torch.clamp(z, min=0.0, out=h)
            d.copy_(z > 0)
        if a != 1.0:
            d.mul_(a)
            h.mul_(a).add_(self.h_prev, alpha=1.0 - a)
        # the readout and the loss: ŷ = W_o h + b_o, err = c·(ŷ − y) is ∂L/∂ŷ
        if self.b_o is None:
            torch.mv(self.w_o, h, out=self.y_hat)
        else:
            torch.addmv(self.b_o, self.w_o, h, out=self.y_hat)
        torch.sub(self.y_hat, y, out=self.err)
        torch.dot(self.err, self.err, out=self.loss)
        if self.reduction == "mean":
            self.loss.div_(O)
        self.err.mul_(self.scale)
        torch.mv(self.w_o.t(), self.err, out=self.delta)
        # the transport: J_t (or its diagonal) and g_t = δ_t·M_t
        if self.product.needs_jacobian:
            torch.mul(d.unsqueeze(1), self.w_hh, out=self.J)
            if a != 1.0:
                self.J.diagonal().add_(1.0 - a)
        else:
            torch.mul(d, self.w_hh.diagonal(), out=self.J)
            if a != 1.0:
                self.J.add_(1.0 - a)
        g = self.product.gradient(d, self.J, self.inputs, self.delta, scored)
        loss = math.nan
        if scored:
            torch.outer(self.err, h, out=self.g_w_o)
            # the one host sync: the loss, and a sum that is finite only if every gradient is
            loss, check = torch.stack([self.loss, g.sum() + self.g_w_o.sum()]).tolist()
            if self.check_finite and not (math.isfinite(loss) and math.isfinite(check)):
                self._refuse(x, y, loss)
        self.product.commit()
        self.h_prev.copy_(h)
        return loss

    # -- the compiled engine's bindings --------------------------------------------------------
    def _choose_engine(self, engine: str, data: list[Tensor]) -> str:
        if engine not in ("auto", "compiled", "torch"):
            raise ConfigurationError(f"engine must be 'auto', 'compiled' or 'torch', got {engine!r}")
        if engine == "torch":
            return "torch"
        why = None
        if self.u.device.type != "cpu" or self.u.dtype not in (torch.float32, torch.float64):
            why = f"it runs float32/float64 CPU tensors, not {self.u.dtype} on {self.u.device}"
        elif not all(t.is_contiguous() for t in data):
            why = "a parameter is not contiguous"
        elif _kernel.get() is None:
            why = f"the C library is unavailable ({_kernel.reason})"
        if why is None:
            return "compiled"
        if engine == "compiled":
            raise ConfigurationError(f"the compiled engine cannot run here: {why}; use engine='torch'")
        return "torch"

    def _bind(self, data: list[Tensor]) -> None:
        """Every pointer and size of the C calls, once (x and y are set per step)."""
        lib, T = _kernel.get(), ("float" if self.u.dtype == torch.float32 else "double")
        I, N, O = self.sizes
        ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
        params = [ptr(self.w_ih), ptr(self.w_hh), ptr(self.b_ih), ptr(self.b_hh), ptr(self.w_o), ptr(self.b_o)]
        self._prologue = getattr(lib, f"prologue_{T}")
        self._pro_args = [ptr(self.w_ih), ptr(self.b_ih), ptr(self.w_hh), ptr(self.b_hh), ptr(self.w_o),
                          ptr(self.b_o), ptr(self.u), None, None, ptr(self.h), ptr(self.d), ptr(self.y_hat),
                          ptr(self.err), ptr(self.delta), ptr(self.J), I, N, O,
                          1 if self.product.needs_jacobian else 2, self.leak,
                          int(self.cell.nonlinearity == "relu"), self.scale, int(self.reduction == "mean")]
        self._add_local = getattr(lib, f"add_local_{T}") if hasattr(self.product, "advance") else None
        self._local_args = (ptr(self.d), ptr(self.u), I, N, int(self.cell.bias))
        self._check = getattr(lib, f"check_{T}")
        self._check_args = (ptr(self.product.g), ptr(self.err), ptr(self.u), ptr(self.h), ptr(self.g_w_o),
                            I, N, O, int(self.cell.bias))
        self._torch_optimizer = isinstance(self.optimizer, TorchOptimizer)
        self._adam = a = self.optimizer if isinstance(self.optimizer, Adam) else None
        moments = (None, None)
        if a is not None:  # Adam's m and v, flat in the C library's parameter order
            total = sum(t.numel() for t in data)
            moments = (self.u.new_zeros(total), self.u.new_zeros(total))
            at = 0
            for k, t in enumerate(data):  # the optimizer's per-tensor moments become views of them
                a.m[k] = moments[0][at:at + t.numel()].view_as(t)
                a.v[k] = moments[1][at:at + t.numel()].view_as(t)
                at += t.numel()
        self._update = getattr(lib, f"update_{T}")
        self._upd_args = [*params, ptr(self.product.g), ptr(self.err), ptr(self.g_w_o), ptr(moments[0]),
                          ptr(moments[1]), I, N, O, int(a is not None), getattr(self.optimizer, "lr", 0.0),
                          a.betas[0] if a else 0.0, a.betas[1] if a else 0.0, a.eps if a else 0.0, 0.0, 1.0]

    # -- checks ------------------------------------------------------------------------------
    def _signature(self) -> tuple:
        return tuple(p.data_ptr() for p in self._parameters) + (len(self._parameters),)

    def _checked(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self._signature() != self._pointers:
            raise ConfigurationError(
                "the cell's or the readout's parameters were replaced or moved after the FusedStep was "
                "built (e.g. by .to() or .double()): build a new FusedStep for them")
        I, _, O = self.sizes
        return self._vector(x, I, "x"), self._vector(y, O, "y")

    def _vector(self, t: Tensor, size: int, name: str) -> Tensor:
        if not isinstance(t, Tensor):
            raise InputError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.numel() != size or t.dim() > 2 or (t.dim() == 2 and t.shape[0] != 1):
            raise InputError(
                f"{name} must have shape ({size},) or (1, {size}) (one stream element), got {tuple(t.shape)}; "
                "for a batch of streams use sparse_rtrl.OnlineLearner")
        if t.dtype != self.u.dtype or t.device != self.u.device:
            raise InputError(
                f"{name} is {t.dtype} on {t.device} but the model is {self.u.dtype} on {self.u.device}: "
                f"convert it, e.g. {name}.to(cell.weight_hh)")
        return t.reshape(size).contiguous()

    def _refuse(self, x: Tensor, y: Tensor, loss: float):
        """The step's loss or gradient is not finite: name the cause, keep nothing of it."""
        for t, name in ((x, "input x"), (y, "target y")):
            if not bool(torch.isfinite(t).all()):
                raise InputError(f"step {self.steps}: the {name} contains NaN or inf; clean the stream "
                                 "(drop or impute the element) before it reaches the learner")
        raise DivergenceError(self.steps, "loss" if not math.isfinite(loss) else "gradient")
