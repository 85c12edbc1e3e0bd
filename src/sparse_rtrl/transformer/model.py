"""A small pre-norm causal transformer over a sliding window, with head-sparse gradient transport.

For a window x_1..x_L (oldest first, L ≤ W) the model computes

    z⁰_i = E x_i + P[L − i]                          (P: position by age, newest = age 0)
    zˡ_i = zˡ⁻¹_i + Attnˡ(LN(zˡ⁻¹))_i,   then   zˡ_i += MLPˡ(LN(zˡ_i))
    ŷ    = R · LN(z^B_L)                             (the prediction at the newest position)

with causal multi-head attention (head h of block l: softmax(q_i·k_j/√d_h) over j ≤ i).

Head-sparse transport (``keep``): the only way the newest prediction reads the past is
through the keys and values k_j, v_j (j < L) of every head. For a head that is not kept,
those past keys and values are detached (stop-gradient), so no gradient travels through
that head to earlier positions; the newest position's own k_L, v_L and everything else
keep their exact gradient. With every head kept this is ordinary backprop through the
window; with none kept it is the gradient of the newest position with the past held fixed.
Forward values never depend on ``keep``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigurationError

Tensor = torch.Tensor

POSITIONS = ("learned", "sinusoidal")


@dataclass(frozen=True)
class TransformerConfig:
    """The sizes and options of a :class:`CausalTransformer`."""

    input_size: int
    output_size: int
    #: width of the residual stream; heads · head dimension
    d_model: int = 48
    #: attention heads per block (12 makes fractions 1/2, 1/3 and 1/4 exact head counts)
    heads: int = 12
    #: transformer blocks
    blocks: int = 1
    #: W: the most recent inputs the model sees (positions are ages 0..W−1)
    window: int = 32
    #: hidden width of each block's MLP (default 4·d_model)
    d_ff: int | None = None
    #: "learned" (a trained table by age) or "sinusoidal" (fixed, by age)
    positions: str = "learned"

    def __post_init__(self):
        for name in ("input_size", "output_size", "d_model", "heads", "blocks", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.heads:
            raise ConfigurationError(
                f"d_model={self.d_model} is not a multiple of heads={self.heads}: pick d_model = "
                f"heads · head_dim, e.g. d_model={self.heads * max(1, self.d_model // self.heads)}"
            )
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ConfigurationError(f"d_ff must be a positive int or None (4·d_model), got {self.d_ff!r}")
        if self.positions not in POSITIONS:
            raise ConfigurationError(
                f"unknown positions {self.positions!r}: use one of {', '.join(map(repr, POSITIONS))}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def hidden_ff(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff


@dataclass
class Taps:
    """What a forward pass exposes for diagnostics, one entry per block.

    ``keys``/``values``: (B, H, L, d_h) before any detaching (graph nodes when grad is on);
    ``attention``: (B, H, L) the newest query's attention over the window.
    """

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    attention: list[Tensor] = field(default_factory=list)


def sinusoidal_positions(window: int, d_model: int) -> Tensor:
    """The fixed table P[a] (a = age) of Vaswani et al.: sin/cos at geometric frequencies."""
    age = torch.arange(window, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(window, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(age * freq)
    table[:, 1::2] = torch.cos(age * freq)[:, : d_model // 2]
    return table


class Block(nn.Module):
    """Pre-norm block: z += Attn(LN(z)); z += MLP(LN(z)). Shapes: z (B, L, d)."""

    def __init__(self, d_model: int, heads: int, d_ff: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, z: Tensor, keep: Tensor | None = None, taps: Taps | None = None) -> Tensor:
        """``keep`` (H,) bool: heads whose past keys/values carry gradient (None: all)."""
        B, L, d = z.shape
        H = self.heads
        a = self.norm1(z)
        q, k, v = (f(a).view(B, L, H, d // H).transpose(1, 2) for f in (self.query, self.key, self.value))
        if taps is not None:
            taps.keys.append(k)
            taps.values.append(v)
        if keep is not None and not bool(keep.all()):
            newest = torch.arange(L, device=z.device) == L - 1
            carry = (keep.view(H, 1) | newest.view(1, L)).view(1, H, L, 1)
            k = torch.where(carry, k, k.detach())
            v = torch.where(carry, v, v.detach())
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)
        future = torch.ones(L, L, dtype=torch.bool, device=z.device).triu(1)
        p = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        if taps is not None:
            taps.attention.append(p[:, :, -1, :])
        z = z + self.out((p @ v).transpose(1, 2).reshape(B, L, d))
        return z + self.mlp(self.norm2(z))


class CausalTransformer(nn.Module):
    """Predicts y_t from the last W inputs x_{t−W+1..t}; see the module docstring.

    Args: the fields of :class:`TransformerConfig`, and ``seed``: if given, the initial
    weights are drawn from ``torch.manual_seed(seed)`` inside a forked RNG (the global
    random stream is left untouched), so a seed names one initialisation.

    ``forward(window, keep=None, taps=None)``: ``window`` (B, L, I) oldest first with
    1 ≤ L ≤ W; ``keep`` (blocks, H) bool, the heads whose past keys/values carry gradient
    (None: all, ordinary backprop); returns the newest prediction (B, O).
    """

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
        seed: int | None = None,
    ):
        super().__init__()
        self.config = TransformerConfig(input_size, output_size, d_model, heads, blocks, window, d_ff, positions)
        if seed is None:
            self._build()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build()

    @classmethod
    def from_config(cls, config: TransformerConfig, seed: int | None = None) -> "CausalTransformer":
        """A model of the given shape (e.g. to load a snapshot's ``state_dict`` into)."""
        return cls(**dataclasses.asdict(config), seed=seed)

    def _build(self) -> None:
        c = self.config
        self.embed = nn.Linear(c.input_size, c.d_model)
        if c.positions == "learned":
            self.position = nn.Parameter(0.1 * torch.randn(c.window, c.d_model))
        else:
            self.position = None  # computed in float64 at each forward, then cast
        self.blocks = nn.ModuleList(Block(c.d_model, c.heads, c.hidden_ff) for _ in range(c.blocks))
        self.norm = nn.LayerNorm(c.d_model)
        self.readout = nn.Linear(c.d_model, c.output_size)

    def forward(self, window: Tensor, keep: Tensor | None = None, taps: Taps | None = None) -> Tensor:
        c = self.config
        B, L, _ = window.shape
        if not 1 <= L <= c.window:
            raise ConfigurationError(f"a window holds 1..{c.window} positions, got {L}")
        ages = torch.arange(L - 1, -1, -1, device=window.device)
        if keep is not None:
            keep = keep.to(window.device)
        table = sinusoidal_positions(c.window, c.d_model) if self.position is None else self.position
        z = self.embed(window) + table.to(window.device, window.dtype)[ages]
        for l, block in enumerate(self.blocks):
            z = block(z, None if keep is None else keep[l], taps)
        return self.readout(self.norm(z[:, -1]))

    def extra_repr(self) -> str:
        c = self.config
        return f"heads={c.heads}, head_dim={c.head_dim}, window={c.window}, positions={c.positions!r}"
