"""The transport part of a fused step, one small class per rule, on preallocated buffers.

Each product keeps its influence between steps and, given the step's slope d = α·φ'(z_t) and
the cell's blocks, forms the cell's gradient g_t = δ_t·M_t into one flat buffer in the cell's
layout (``ParamLayout``: blocks in parameter order, rows (i, l) row-major):

    full        M_t = J_t·M_{t−1} + Ī_t         M stored transposed, (P, N)
    sparse      M_t = (K_t ⊙ J_t)·M_{t−1} + Ī_t  the rule object itself: M (N, P), its kernels
    column      M_t = J_t[:, S]·M_{t−1}[S] + Ī_t  low rank: M_t = W_t·R_t + Ī_t, R_t (k, P)
    snap1       M_t = diag(J_t)·M_{t−1} + Ī_t    on Ī's pattern only: (N, C), C = Σ_b c_b
    trace λ     M_t = λ·M_{t−1} + Ī_t            the same storage
    immediate   M_t = Ī_t                       never formed: g = (δ ⊙ d) ⊗ u

Ī_t[i, (b, i, l)] = d_i·u_b[l] (u_b = x, h_{t−1} or 1 for block b) sits on one strided
"diagonal" of each block of M, so adding it is one ``addr_`` per block on a view.
A product keeps its new state apart until :meth:`commit`, so a step whose loss or gradient
is not finite leaves M as it was; the one exception is the rule object's own M (row-sparse,
or column-sparse with the kept diagonal), which its update advances in place.
"""

from __future__ import annotations

import torch

from ..influence import UnitLocalImmediate
from ..layout import ParamLayout
from ..transport.base import Generators, TransportContext, load_state, member_seeds, state_to_dict
from ..transport.full import Full
from ..transport.snap1 import SnAp1
from ..transport.sparse import Sparse, SparseState
from ..transport.trace import Immediate, Trace
from .matmul import RightProduct

Tensor = torch.Tensor


def unit_diagonals(M: Tensor, layout: ParamLayout, N: int, strides: tuple[int, int]) -> list[Tensor]:
    """Per block b the view V_b ``(N, c_b)`` with V_b[i, l] = M[i, off_b + i·c_b + l].

    ``strides`` are M's (row i, column p) strides: (P, 1) for M ``(N, P)``, (1, N) for Mᵀ.
    """
    s_i, s_p = strides
    views = []
    for block in layout.blocks:
        c = block.numel // N
        views.append(M.as_strided((N, c), (s_i + c * s_p, s_p), M.storage_offset() + block.offset * s_p))
    return views


class _Product:
    """What every product keeps: the layout, N, P and the flat gradient buffer g."""

    def __init__(self, layout: ParamLayout, N: int, P: int, like: Tensor):
        self.layout, self.N, self.P = layout, N, P
        self.g = like.new_zeros(P)  # the cell's flat gradient, refilled every step

    def reset(self) -> None:  # a new sequence: zero influence
        pass

    def commit(self) -> None:  # the step is kept
        pass

    def state_dict(self) -> dict:
        M = getattr(self, "M", None)
        return {} if M is None else {"M": M[self.cur].clone()}

    def load_state_dict(self, d: dict) -> None:
        if "M" in d:
            self.M[self.cur].copy_(d["M"])


class FullProduct(_Product):
    """M_t = J_t·M_{t−1} + Ī_t on two (P, N) buffers: Mᵀ_t = Mᵀ_{t−1}·J_tᵀ, no copy back."""

    needs_jacobian = True

    def __init__(self, layout, N, P, like):
        super().__init__(layout, N, P, like)
        self.M = [like.new_zeros(P, N), like.new_zeros(P, N)]
        self.diag = [unit_diagonals(m, layout, N, (1, N)) for m in self.M]
        self.mm = RightProduct(P, N, like)
        self.cur = 0

    def reset(self):
        self.M[self.cur].zero_()

    def advance(self, J: Tensor) -> tuple[Tensor, int]:
        """Mᵀ_t ← Mᵀ_{t−1}·J_tᵀ into the free buffer; (the new M, transposed = 1)."""
        new = 1 - self.cur
        self.mm(self.M[self.cur], J, out=self.M[new])
        return self.M[new], 1

    def gradient(self, d: Tensor, J: Tensor, inputs: list[Tensor | None], delta: Tensor, scored=True) -> Tensor:
        M, _ = self.advance(J)
        for view, u in zip(self.diag[1 - self.cur], inputs):
            view.addr_(d, u) if u is not None else view.squeeze(1).add_(d)
        return torch.mv(M, delta, out=self.g) if scored else self.g

    def commit(self):
        self.cur = 1 - self.cur


class SparseProduct(_Product):
    """The rule object itself on M ``(1, 1, N, P)``: its update (every selection, granularity,
    rescale and resampling option, the compiled kernels, Ī added in the kernel's pass) and its
    gradient (after a column update, formed in the same pass over M)."""

    needs_jacobian = True

    def __init__(self, layout, N, P, like, rule: Sparse, ctx: TransportContext, d: Tensor, inputs):
        super().__init__(layout, N, P, like)
        self.rule, self.state = rule, rule.init(ctx)
        self.derivs = _Derivs(layout, d, inputs)

    def reset(self):
        self.rule.reset(self.state)

    def state_dict(self) -> dict:
        return {"rule": state_to_dict(self.state)}

    def load_state_dict(self, d: dict) -> None:
        load_state(self.state, d["rule"])

    def gradient(self, d, J, inputs, delta, scored=True):
        # the rule advances M in place (a copy to undo a refused step would cost a pass over M)
        self.derivs.jacobian = J.view(1, 1, self.N, self.N)
        self.rule.update(self.state, self.derivs)
        if scored:
            self.g.copy_(self.rule.flat_gradient(self.state, delta.view(1, 1, self.N))[0])
        else:  # a deferred column update must not wait: its Ī is a view of buffers the next step rewrites
            self.state.flush()
        return self.g


class LowRankColumnProduct(_Product):
    """Column-sparse transport without the kept diagonal in O(k²·P) work and O(k·P) memory
    per step, M never formed:

        M_t = W_t·R_t + Ī_t,   W_t = J_t[:, S_t] (N × k),   R_t = M_{t−1}[S_t] (k × P)
        R_t = W_{t−1}[S_t]·R_{t−1} + Ī_{t−1}[S_t]
        g_t = δ_t·M_t = (W_tᵀδ_t)·R_t + (δ_t ⊙ d_t) ⊗ u_t  (per block)

    because the new M depends on the k source rows of the old one only, and those rows are
    the same low-rank form plus Ī_{t−1}'s (unit-local) rows. Exactly the dense rule's numbers
    up to round-off (tests/test_fused.py), whatever N: the dense rule's pass over N·P numbers
    becomes a (k × k)·(k × P) product. The selection S_t, the weights (rescale) and the random
    draws are the rule object's own (``Sparse.advance_selection``, ``column_weights``)."""

    needs_jacobian = True

    def __init__(self, layout, N, P, like, rule: Sparse, ctx: TransportContext, d: Tensor, u: Tensor):
        super().__init__(layout, N, P, like)
        k = rule._width(N)
        self.rule, self.k, self.d, self.u = rule, k, d, u
        index = torch.zeros(1, 1, k, dtype=torch.long, device=like.device)
        self.state = SparseState(ctx, like.new_zeros(0), Generators(member_seeds(rule.seed, 1), like.device),
                                 0, False, index)
        self.R = [like.new_zeros(k, P), like.new_zeros(k, P)]
        self.W = [like.new_zeros(N, k), like.new_zeros(N, k)]  # W_{t−1}, and W_t until commit
        self.d_prev, self.d_next = like.new_zeros(N), like.new_zeros(N)
        self.u_prev, self.u_next = torch.zeros_like(u), torch.zeros_like(u)
        # cols[i, l]: the column of M that Ī's entry d_i·û_l of unit i sits in (û = [x; h; 1; 1])
        i = torch.arange(N, device=like.device).unsqueeze(1)
        self.cols = torch.cat([b.offset + i * (b.numel // N) + torch.arange(b.numel // N, device=like.device)
                               for b in layout.blocks], 1)
        self.cols_flat = self.cols.reshape(-1)
        self.rows = torch.arange(k, device=like.device).unsqueeze(1)
        self.v, self.w = like.new_zeros(k), like.new_zeros(N)
        self.cur = 0

    def reset(self):
        self.R[self.cur].zero_()
        self.W[self.cur].zero_()
        self.d_prev.zero_()

    def gradient(self, d, J, inputs, delta, scored=True):
        N, k, new = self.N, self.k, 1 - self.cur
        J4 = J.view(1, 1, N, N)
        self.rule.advance_selection(self.state, J4)
        S = self.state.index.view(k)
        R = self.R[new]
        torch.mm(self.W[self.cur].index_select(0, S), self.R[self.cur], out=R)
        # Ī_{t−1}[S_t]: row r holds unit S_r's entries d_{t−1}·û_{t−1}
        R.index_put_((self.rows, self.cols.index_select(0, S)),
                     self.d_prev.index_select(0, S).unsqueeze(1) * self.u_prev, accumulate=True)
        W = self.W[new]
        W.copy_(self.rule.column_weights(self.state, J4).view(N, k))
        self.d_next.copy_(d)
        self.u_next.copy_(self.u)
        if scored:
            torch.mv(W.t(), delta, out=self.v)
            torch.mv(R.t(), self.v, out=self.g)
            torch.mul(delta, d, out=self.w)
            self.g.index_put_((self.cols_flat,), torch.outer(self.w, self.u).view(-1), accumulate=True)
        return self.g

    def commit(self):
        self.cur = 1 - self.cur
        self.d_prev, self.d_next = self.d_next, self.d_prev
        self.u_prev, self.u_next = self.u_next, self.u_prev

    def state_dict(self) -> dict:
        return {"R": self.R[self.cur].clone(), "W": self.W[self.cur].clone(), "d": self.d_prev.clone(),
                "u": self.u_prev.clone(), "rule": state_to_dict(self.state)}

    def load_state_dict(self, d: dict) -> None:
        self.R[self.cur].copy_(d["R"])
        self.W[self.cur].copy_(d["W"])
        self.d_prev.copy_(d["d"])
        self.u_prev.copy_(d["u"])
        load_state(self.state, d["rule"])


class _Derivs:
    """The two fields of ``StepDerivatives`` that ``Sparse.update`` reads. Ī is the cell's
    unit-local factored form over views of the fused step's own buffers (d, x, h_{t−1}), so it
    is current every step without being rebuilt."""

    def __init__(self, layout, d: Tensor, inputs):
        N = d.shape[0]
        dv = d.view(1, 1, 1, 1, N)
        u = [None if t is None else t.view(1, 1, -1) for t in inputs]
        self.immediate = UnitLocalImmediate(layout, 1, 1, [dv] * len(u), u)
        self.jacobian = None


class DiagonalProduct(_Product):
    """M_t[i, (b, i, l)] = c_i·M_{t−1}[i, (b, i, l)] + d_i·u_b[l] on Ī's pattern, kept as
    (N, C): SnAp-1 with c = diag(J_t), the eligibility trace with c = λ."""

    needs_jacobian = False

    def __init__(self, layout, N, P, like, decay: float | None):
        super().__init__(layout, N, P, like)
        self.decay = decay  # None: the diagonal of J_t (SnAp-1)
        widths = [b.numel // N for b in layout.blocks]
        self.M = [like.new_zeros(N, sum(widths)), like.new_zeros(N, sum(widths))]
        self.cur = 0
        starts = [sum(widths[:j]) for j in range(len(widths))]
        self.bounds = [(s, s + c) for s, c in zip(starts, widths)]
        self.blocks_g = [self.g[b.offset:b.stop].view(N, c) for b, c in zip(layout.blocks, widths)]

    def reset(self):
        self.M[self.cur].zero_()

    def gradient(self, d, jdiag, inputs, delta, scored=True):
        new = 1 - self.cur
        old, M = self.M[self.cur], self.M[new]
        if self.decay is None:
            torch.mul(old, jdiag.unsqueeze(1), out=M)
        else:
            torch.mul(old, self.decay, out=M)
        for (lo, hi), u, g in zip(self.bounds, inputs, self.blocks_g):
            block = M[:, lo:hi]
            block.addr_(d, u) if u is not None else block.squeeze(1).add_(d)
            torch.mul(block, delta.unsqueeze(1), out=g)
        return self.g

    def commit(self):
        self.cur = 1 - self.cur


class ImmediateProduct(_Product):
    """g_t[(b, i, l)] = δ_i·d_i·u_b[l]: Ī contracted with δ, M never stored."""

    needs_jacobian = False

    def __init__(self, layout, N, P, like):
        super().__init__(layout, N, P, like)
        self.w = like.new_zeros(N)
        self.blocks_g = [self.g[b.offset:b.stop].view(N, b.numel // N) for b in layout.blocks]

    def gradient(self, d, jdiag, inputs, delta, scored=True):
        if not scored:
            return self.g
        w = torch.mul(delta, d, out=self.w)
        for u, g in zip(inputs, self.blocks_g):
            torch.outer(w, u, out=g) if u is not None else g.squeeze(1).copy_(w)
        return self.g


#: the rules a fused step runs (SnAp-1 on its unit-local pattern, without a fixed ``pattern``)
SUPPORTED = (Full, Sparse, SnAp1, Trace, Immediate)


def unsupported(rule) -> str | None:
    """Why the fused step cannot run ``rule``, or None."""
    if not isinstance(rule, SUPPORTED):
        names = ", ".join(sorted(c.name for c in SUPPORTED))
        return (f"the fused step runs the rules {names}; {rule.name!r} is not one of them: use "
                "sparse_rtrl.OnlineLearner with this rule")
    if isinstance(rule, SnAp1) and rule.pattern is not None:
        return ("the fused step runs SnAp-1 on its unit-local pattern only; for a fixed pattern "
                "use sparse_rtrl.OnlineLearner")
    return None


def make_product(rule, layout: ParamLayout, N: int, like: Tensor, ctx: TransportContext, d: Tensor,
                 inputs: list[Tensor | None], u: Tensor) -> _Product:
    """The product for ``rule``; ``d``, ``inputs`` and ``u`` are the fused step's buffers of the
    slope, of the blocks' inputs (x, h_{t−1}, or None for a bias) and of û = [x; h_{t−1}; 1; 1],
    read every step."""
    P = layout.size
    if isinstance(rule, Full):
        return FullProduct(layout, N, P, like)
    if isinstance(rule, Sparse):
        if rule.granularity == "column" and not rule.keep_diagonal:
            return LowRankColumnProduct(layout, N, P, like, rule, ctx, d, u)
        return SparseProduct(layout, N, P, like, rule, ctx, d, inputs)
    if isinstance(rule, SnAp1):
        return DiagonalProduct(layout, N, P, like, None)
    if isinstance(rule, Trace):
        return DiagonalProduct(layout, N, P, like, float(rule.decay))
    return ImmediateProduct(layout, N, P, like)
