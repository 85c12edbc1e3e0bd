"""Immediate influence Ī_t = ∂s_t/∂θ|_{s_{t-1}} and the sensitivity M = ∂s/∂θ, in the two
forms the library uses.

Dense form: a tensor ``(E, B, N, P)`` (ensemble, batch of streams, state units, parameters).

Unit-local form: the three torch cells feed every parameter into the state through per-unit
pre-activations z_{g,i} (gate g ∈ [0, G), unit i ∈ [0, n)), and state component (a, i)
(half a ∈ [0, S): h, or h and c for the LSTM) depends on the pre-activations of unit i only.
So for a parameter block p of shape (G·n, L_p) (biases: L_p = 1)

    Ī[(a, i), (g, j, l)] = δ_ij · d_p[a, g, i] · u_p[l]

with d_p = ∂s/∂z (E, B, S, G, n) and u_p the block's input (x, h_{t-1} or 1). Any M whose
nonzeros stay on this pattern (the immediate rule, eligibility traces, SnAp-1) is stored
compressed as C_p (E, B, S, G, n, L_p): n times fewer numbers than the dense form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import ParamLayout

Tensor = torch.Tensor


def _dense_block(M: Tensor, layout: ParamLayout, index: int, halves: int, gates: int) -> Tensor:
    """View of block ``index`` of dense ``M (E, B, N, P)`` on its unit-local diagonal.

    Returns ``(E, B, S, G, L_p, n)``: entry [.., a, g, l, i] is M[(a, i), (g, i, l)].
    """
    E, B, N, _ = M.shape
    block = layout.blocks[index]
    n = N // halves
    width = block.numel // (gates * n)
    view = M[..., block.offset : block.stop].view(E, B, halves, n, gates, n, width)
    return view.diagonal(dim1=3, dim2=5)


@dataclass
class UnitLocalImmediate:
    """Ī_t of a unit-local cell, kept factored: per block p a pair (d_p, u_p).

    d[p]: (E, B, S, G, n) = ∂s_t/∂z_p; u[p]: (E, B, L_p) the block's input, or None for a
    bias (u = 1). Never expanded unless a dense form is asked for.
    """

    layout: ParamLayout
    halves: int
    gates: int
    d: list[Tensor]
    u: list[Tensor | None]

    @property
    def units(self) -> int:
        return self.d[0].shape[-1]

    def tensors(self) -> list[Tensor]:
        """Every distinct factor (blocks share their d_p or u_p, so each is listed once)."""
        return list({id(t): t for t in (*self.d, *self.u) if t is not None}.values())

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.tensors())

    def block_values(self, index: int) -> Tensor:
        """C_p = d_p ⊗ u_p as ``(E, B, S, G, n, L_p)``."""
        d, u = self.d[index], self.u[index]
        if u is None:
            return d.unsqueeze(-1)
        return d.unsqueeze(-1) * u[:, :, None, None, None, :]

    def add_to_dense(self, M: Tensor, scale: float = 1.0) -> None:
        """M += scale · Ī in place, touching only the N·P/n unit-local entries."""
        for index, (d, u) in enumerate(zip(self.d, self.u)):
            diag = _dense_block(M, self.layout, index, self.halves, self.gates)
            dd = d if scale == 1.0 else d * scale
            if u is None:
                diag.add_(dd.unsqueeze(-2))
            else:
                diag.add_(dd.unsqueeze(-2) * u[:, :, None, None, :, None])

    def gradient(self, delta: Tensor) -> list[Tensor]:
        """g_p = Σ_b δ_b·Ī_b per block, ``(E, *block.shape)``.

        δ = ∂L/∂h is ``(E, B, n)``: the loss sees the h half (a = 0) of the state only.
        """
        out = []
        for block, d, u in zip(self.layout.blocks, self.d, self.u):
            w = delta.unsqueeze(2) * d[:, :, 0]
            if u is None:
                g = w.sum(dim=1)
            else:
                g = torch.einsum("ebgi,ebl->egil", w, u)
            out.append(g.reshape(g.shape[0], *block.shape))
        return out

    def compressed(self) -> "UnitLocalInfluence":
        return UnitLocalInfluence(
            self.layout, self.halves, self.gates, [self.block_values(i) for i in range(len(self.d))]
        )

    def left_product(self, v: Tensor) -> Tensor:
        """vᵀĪ as a flat ``(E, B, P)`` for v ``(E, B, N)``, in O(P) (UORO's νᵀĪ).

        Per block (vᵀĪ)[(g, j, l)] = (Σ_a v[a, j]·d_p[a, g, j])·u_p[l]: an outer product, so
        Ī is never expanded.
        """
        E, B, _ = v.shape
        S, n = self.halves, self.units
        vv = v.view(E, B, S, n)
        out = []
        for d, u in zip(self.d, self.u):
            w = torch.einsum("ebagi,ebai->ebgi", d, vv).reshape(E, B, -1)  # rows r = g·n + j
            out.append(w if u is None else (w.unsqueeze(-1) * u.unsqueeze(-2)).reshape(E, B, -1))
        return torch.cat(out, dim=-1)

    def dense(self) -> Tensor:
        E, B, S, _, n = self.d[0].shape
        M = self.d[0].new_zeros(E, B, S * n, self.layout.size)
        self.add_to_dense(M)
        return M


@dataclass
class UnitLocalInfluence:
    """An M restricted to the unit-local pattern: per block C_p ``(E, B, S, G, n, L_p)``."""

    layout: ParamLayout
    halves: int
    gates: int
    blocks: list[Tensor]

    @classmethod
    def zeros(cls, layout: ParamLayout, E: int, B: int, halves: int, gates: int, n: int,
              dtype: torch.dtype, device: torch.device) -> "UnitLocalInfluence":
        blocks = [
            torch.zeros(E, B, halves, gates, n, b.numel // (gates * n), dtype=dtype, device=device)
            for b in layout.blocks
        ]
        return cls(layout, halves, gates, blocks)

    def tensors(self) -> list[Tensor]:
        return self.blocks

    def zero_(self) -> None:
        for c in self.blocks:
            c.zero_()

    def scale_add_(self, decay: float, immediate: UnitLocalImmediate) -> None:
        """C ← decay·C + Ī."""
        for index, c in enumerate(self.blocks):
            if decay == 0.0:
                c.copy_(immediate.block_values(index))
            else:
                c.mul_(decay).add_(immediate.block_values(index))

    def propagate_(self, local: Tensor, immediate: UnitLocalImmediate) -> None:
        """C ← L·C + Ī with the per-unit blocks L (E, B, S, S, n) of J (SnAp-1's step)."""
        for index, c in enumerate(self.blocks):
            mixed = torch.einsum("ebaci,ebcgil->ebagil", local, c)
            c.copy_(mixed).add_(immediate.block_values(index))

    def gradient(self, delta: Tensor) -> list[Tensor]:
        """g_p = Σ_b δ_b[i]·C_p[b, 0, g, i, :] with δ = ∂L/∂h ``(E, B, n)``."""
        out = []
        for block, c in zip(self.layout.blocks, self.blocks):
            g = torch.einsum("ebi,ebgil->egil", delta, c[:, :, 0])
            out.append(g.reshape(g.shape[0], *block.shape))
        return out

    def dense(self) -> Tensor:
        E, B, S, _, n, _ = self.blocks[0].shape
        M = self.blocks[0].new_zeros(E, B, S * n, self.layout.size)
        for index, c in enumerate(self.blocks):
            _dense_block(M, self.layout, index, S, self.gates).copy_(c.transpose(-1, -2))
        return M


@dataclass
class DenseImmediate:
    """Ī_t of a general (autodiff) cell as a dense ``(E, B, N, P)`` tensor."""

    layout: ParamLayout
    values: Tensor

    def tensors(self) -> list[Tensor]:
        return [self.values]

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.values).all())

    def add_to_dense(self, M: Tensor, scale: float = 1.0) -> None:
        M.add_(self.values, alpha=scale)

    def gradient(self, delta: Tensor) -> list[Tensor]:
        return dense_gradient(self.layout, self.values, delta)

    def compressed(self) -> "DenseInfluence":
        return DenseInfluence(self.layout, self.values.clone())

    def left_product(self, v: Tensor) -> Tensor:
        """vᵀĪ as ``(E, B, P)`` for v ``(E, B, N)``: O(NP), the size of Ī itself."""
        return torch.einsum("ebn,ebnp->ebp", v, self.values)

    def dense(self) -> Tensor:
        return self.values


@dataclass
class DenseInfluence:
    """A dense M ``(E, B, N, P)`` with the same methods as :class:`UnitLocalInfluence`."""

    layout: ParamLayout
    values: Tensor

    @classmethod
    def zeros(cls, layout: ParamLayout, E: int, B: int, N: int, dtype, device) -> "DenseInfluence":
        return cls(layout, torch.zeros(E, B, N, layout.size, dtype=dtype, device=device))

    def tensors(self) -> list[Tensor]:
        return [self.values]

    def zero_(self) -> None:
        self.values.zero_()

    def scale_add_(self, decay: float, immediate) -> None:
        if decay == 0.0:
            self.values.zero_()
        else:
            self.values.mul_(decay)
        immediate.add_to_dense(self.values)

    def gradient(self, delta: Tensor) -> list[Tensor]:
        return dense_gradient(self.layout, self.values, delta)

    def dense(self) -> Tensor:
        return self.values


def dense_gradient(layout: ParamLayout, M: Tensor, delta: Tensor) -> list[Tensor]:
    """g = Σ_b δ_b·M_b[:H] for dense ``M (E, B, N, P)`` and δ = ∂L/∂h ``(E, B, H)``.

    The hidden output h is the first H state components, so only those rows of M are read.
    """
    H = delta.shape[-1]
    g = torch.einsum("ebh,ebhp->ep", delta, M[:, :, :H])
    return layout.split(g)


def unit_local_jacobian(d_hh: Tensor, w_hh: Tensor, local: Tensor) -> Tensor:
    """J = ∂s_t/∂s_{t-1} of a unit-local cell, ``(E, B, N, N)``.

    J[(a, i), (0, l)] = Σ_g d_hh[a, g, i]·W_hh[g·n + i, l] + local[a, 0, i]·δ_il and
    J[(a, i), (c, l)] = local[a, c, i]·δ_il for the other halves c ≥ 1 (the LSTM's c).
    d_hh: (E, B, S, G, n); w_hh: (E, G·n, n); local: (E, B, S, S, n).
    """
    E, B, S, G, n = d_hh.shape
    J = d_hh.new_zeros(E, B, S, n, S, n)
    J[:, :, :, :, 0, :] = torch.einsum("ebagi,egil->ebail", d_hh, w_hh.view(E, G, n, n))
    J.diagonal(dim1=3, dim2=5).add_(local)
    return J.view(E, B, S * n, S * n)


def local_blocks(J: Tensor, halves: int) -> Tensor:
    """The per-unit S×S blocks of J, ``(E, B, S, S, n)``: entry [a, c, i] = J[(a,i), (c,i)]."""
    E, B, N, _ = J.shape
    n = N // halves
    return J.view(E, B, halves, n, halves, n).diagonal(dim1=3, dim2=5)
