"""What every cell offers the learner: one step s_t = f(θ, s_{t-1}, x_t), and its derivatives
J_t = ∂s_t/∂s_{t-1} and Ī_t = ∂s_t/∂θ at fixed s_{t-1}.

Internal shapes carry an ensemble dimension E and a batch of streams B everywhere:
state ``(E, B, N)``, input ``(E, B, I)``, parameters ``(E, *shape)``. A solo cell is E = 1.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import NamedTuple

import torch
from torch import nn

from ..influence import DenseImmediate, UnitLocalImmediate
from ..layout import ParamLayout

Tensor = torch.Tensor


class StepDerivatives(NamedTuple):
    """s_t, J_t (or None when the rule does not need it) and Ī_t of one step."""

    state: Tensor
    jacobian: Tensor | None
    immediate: UnitLocalImmediate | DenseImmediate


class UnitLocalStructure(NamedTuple):
    """Shape of a unit-local cell: S state halves, G gates, n units (N = S·n)."""

    halves: int
    gates: int
    units: int


class AbstractCell(nn.Module):
    """A recurrent cell the learner can transport gradients through.

    Subclasses set ``input_size``, ``hidden_size`` (n, the size of the output h),
    ``state_size`` (N), ``ensemble_size`` (None for a solo cell) and implement
    :meth:`step` and :meth:`step_with_derivatives`. The hidden output h is always the
    first ``hidden_size`` components of the state.
    """

    input_size: int
    hidden_size: int
    state_size: int
    ensemble_size: int | None = None
    #: set by unit-local cells; None for general cells (dense Ī, autodiff Jacobians)
    structure: UnitLocalStructure | None = None

    @property
    def members(self) -> int:
        """E, the number of ensemble members (1 for a solo cell)."""
        return 1 if self.ensemble_size is None else self.ensemble_size

    def _parameter_signature(self) -> tuple[int, ...]:
        """Identities of the parameter objects; the cached list and layout are rebuilt when
        one is replaced (``cell.weight_hh = nn.Parameter(...)``). Cheap: no module walk."""
        return tuple(map(id, self._parameters.values()))

    def _cached_parameters(self) -> tuple[list[nn.Parameter], ParamLayout]:
        # the learner asks for these several times a step; walking named_parameters() each
        # time cost more than the arithmetic of a small step
        signature = self._parameter_signature()
        cache = self.__dict__.get("_parameter_cache")
        if cache is None or cache[0] != signature:
            params = self._collect_parameters()
            lead = 0 if self.ensemble_size is None else 1
            layout = ParamLayout.from_shapes([(name, tuple(p.shape[lead:])) for name, p in params])
            cache = (signature, [p for _, p in params], layout)
            self.__dict__["_parameter_cache"] = cache  # not a Module attribute: never saved
        return cache[1], cache[2]

    def _collect_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) in M's order."""
        return list(self.named_parameters())

    def layout(self) -> ParamLayout:
        """Names and shapes (per member) of the recurrent parameters, in M's order."""
        return self._cached_parameters()[1]

    def transported_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradient the learner transports, in layout order."""
        return list(self._cached_parameters()[0])

    def stacked_parameters(self) -> list[Tensor]:
        """Detached parameter views with the ensemble dimension, ``(E, *shape)``."""
        params = [p.detach() for p in self.transported_parameters()]
        if self.ensemble_size is None:
            params = [p.unsqueeze(0) for p in params]
        return params

    def initial_state(self, batch: int, dtype=None, device=None) -> Tensor:
        """The zero state ``(E, B, N)``."""
        p = self._cached_parameters()[0][0]
        return torch.zeros(
            self.members, batch, self.state_size, dtype=dtype or p.dtype, device=device or p.device
        )

    def hidden(self, state: Tensor) -> Tensor:
        """The output h: the first ``hidden_size`` components of the state."""
        return state[..., : self.hidden_size]

    @abstractmethod
    def step(self, params: list[Tensor], state: Tensor, x: Tensor) -> Tensor:
        """s_t = f(θ, s_{t-1}, x_t) on internal shapes; differentiable by autograd."""

    @abstractmethod
    def step_with_derivatives(
        self, params: list[Tensor], state: Tensor, x: Tensor, jacobian: bool = True
    ) -> StepDerivatives:
        """s_t, J_t and Ī_t on internal shapes (no autograd graph is built)."""


class UnitLocalCell(AbstractCell):
    """Base of the torch-compatible cells: parameters ``weight_ih (G·n, I)``,
    ``weight_hh (G·n, n)``, ``bias_ih (G·n)``, ``bias_hh (G·n)`` with torch's initialisation
    U(-1/√n, 1/√n). With ``ensemble_size=E`` every parameter gets a leading dimension E."""

    gates: int = 1
    halves: int = 1
    #: the registry name ("vanilla", "lstm", "gru") and the torch cell with the same parameters
    name: str = ""
    torch_type: type[nn.Module] | None = None
    #: torch's fused multi-step module with the same equations (nn.RNN, nn.LSTM, nn.GRU)
    fused_type: type[nn.Module] | None = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        ensemble_size: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"input_size and hidden_size must be positive, got {input_size} and {hidden_size}"
            )
        if ensemble_size is not None and ensemble_size < 1:
            raise ValueError(f"ensemble_size must be None or ≥ 1, got {ensemble_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = self.halves * hidden_size
        self.ensemble_size = ensemble_size
        self.bias = bias
        self.structure = UnitLocalStructure(self.halves, self.gates, hidden_size)
        lead = () if ensemble_size is None else (ensemble_size,)
        gn = self.gates * hidden_size
        kw = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(*lead, gn, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(*lead, gn, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(*lead, gn, **kw))
            self.bias_hh = nn.Parameter(torch.empty(*lead, gn, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """U(-1/√n, 1/√n) for every parameter, as torch's RNN cells do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound, generator=generator)

    def options(self) -> dict:
        """The constructor's arguments, without ``ensemble_size``, device and dtype: a cell of
        the same kind and shape is ``type(cell)(**cell.options())``."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "bias": self.bias}

    def _fused_options(self) -> dict | None:
        return {"bias": self.bias}

    def fused_twin(self) -> nn.Module | None:
        """torch's fused module (``fused_type``, batch first) holding a copy of this solo
        cell's parameters: the same equations, for fast offline BPTT over whole windows;
        None when there is none (an option the fused module lacks, an ensemble cell)."""
        options = self._fused_options()
        if self.fused_type is None or options is None or self.ensemble_size is not None:
            return None
        p = self._cached_parameters()[0][0]
        twin = self.fused_type(self.input_size, self.hidden_size, batch_first=True, **options)
        twin = twin.to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for name, param in self.named_parameters():
                getattr(twin, f"{name}_l0").copy_(param)
        return twin

    @classmethod
    def options_of_torch(cls, cell: nn.Module) -> dict:
        """The constructor's arguments equivalent to a ``torch_type`` cell."""
        return {"input_size": cell.input_size, "hidden_size": cell.hidden_size, "bias": cell.bias}

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.ensemble_size is not None:
            s += f", ensemble_size={self.ensemble_size}"
        return s

    # -- helpers shared by the three cells ----------------------------------------------
    def _unpack(self, params: list[Tensor]):
        if self.bias:
            w_ih, w_hh, b_ih, b_hh = params
        else:
            (w_ih, w_hh), b_ih, b_hh = params, None, None
        return w_ih, w_hh, b_ih, b_hh

    @staticmethod
    def _affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """x·Wᵀ + b for x (E, B, L), W (E, R, L), b (E, R) → (E, B, R)."""
        if b is None:
            return torch.bmm(x, w.transpose(1, 2))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    def _immediate(self, d_ih: Tensor, d_hh: Tensor, x: Tensor, h: Tensor) -> UnitLocalImmediate:
        d = [d_ih, d_hh] + ([d_ih, d_hh] if self.bias else [])
        u = [x, h] + ([None, None] if self.bias else [])
        return UnitLocalImmediate(self.layout(), self.halves, self.gates, d, u)

    # -- torch-like single-step API ------------------------------------------------------
    def _to_internal(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        lead = x.shape[:-1]
        if self.ensemble_size is None:
            return x.reshape(1, -1, x.shape[-1]), lead
        if x.dim() < 2 or x.shape[0] != self.ensemble_size:
            raise ValueError(
                f"an ensemble cell expects input of shape (E={self.ensemble_size}, [B,] "
                f"{self.input_size}), got {tuple(x.shape)}"
            )
        return x.reshape(self.ensemble_size, -1, x.shape[-1]), lead

    def forward_state(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        """One differentiable step on user shapes: x ``([E,] [B,] I)``, state ``(..., N)``."""
        xi, lead = self._to_internal(x)
        if state is None:
            s = torch.zeros(xi.shape[0], xi.shape[1], self.state_size, dtype=x.dtype, device=x.device)
        else:
            s = state.reshape(xi.shape[0], xi.shape[1], self.state_size)
        params = self.transported_parameters()
        if self.ensemble_size is None:
            params = [p.unsqueeze(0) for p in params]
        return self.step(params, s, xi).reshape(*lead, self.state_size)
