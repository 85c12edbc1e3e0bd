"""Sparse gradient transport through k of the N paths into each unit (Shalev-Merin 2026)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import ConfigurationError
from . import masks
from .base import AbstractTransport, Generators, RuleState, TransportContext, member_seeds
from .full import zeros_like_context
from .kernels import delta_rows, fuses_columns, gather_columns_, gather_columns_gradient_, gather_rows_, matmul_

Tensor = torch.Tensor


@dataclass
class SparseState(RuleState):
    M: Tensor  # (E, B, N, P)
    generators: Generators
    steps: int  # updates so far (drives resample_every)
    selected: bool  # whether ``index`` holds a selection yet
    index: Tensor  # row: (E, B, N, k[+1]) sources per row; column: (E, B, k) sources

    def __post_init__(self):
        #: a column update not yet applied to M, (weight, diagonal, Ī): the gradient that
        #: follows applies it in the same pass over M (not a field: never saved)
        self.pending = None

    def flush(self) -> None:
        """Apply the pending column update to M (before anything reads M)."""
        if self.pending is not None:
            weight, diagonal, immediate = self.pending
            self.pending = None
            gather_columns_(self.index, weight, self.M, diagonal, immediate)


@dataclass(frozen=True, eq=False)
class Sparse(AbstractTransport):
    """M_t = (K_t ⊙ J_t)·M_{t−1} + Ī_t, K_t a 0/1 mask keeping k paths into each unit.

    Work O(k·N·P) per step and stream, memory O(N·P). k = N is full RTRL, k = 0 the immediate
    rule.

    Options:
        k: paths kept per row (0 ≤ k ≤ N; ≤ N − 1 with ``keep_diagonal`` at row granularity).
        granularity: "row" — each row i keeps its own k sources; "column" — one set S of k
            sources for all rows, K[:, S] = 1 (J[:, S]·M[S] reads only k rows of M).
        selection: "random" (uniform without replacement), "magnitude" (largest |J_ij| in
            the row; for columns, largest column ℓ1 norm), "adversarial" (smallest), or a
            fixed 0/1 mask: ``(N, N)`` for rows, ``(N,)`` (the set S) for columns.
        resample_every: 1 — a fresh selection each step; R > 1 — every R steps; 0 — chosen
            at the first step and kept for the whole run.
        keep_diagonal: always keep the self path J_ii on top of the k.
        rescale: multiply the k chosen entries by N/k ((N − 1)/k when the diagonal is kept at
            row granularity), which makes K ⊙ J unbiased for random selection.
        seed: the generator's seed (member e of an ensemble uses seed + e, or seed[e]).
    Masks are shared by nothing: every stream of a batch and every ensemble member draws its
    own.
    """

    k: int | None = None
    granularity: str = "row"
    selection: str | Tensor = "random"
    resample_every: int = 1
    keep_diagonal: bool = False
    rescale: bool = False
    seed: int | Sequence[int] = 0

    name = "sparse"

    def __post_init__(self):
        fixed = isinstance(self.selection, Tensor)
        if self.granularity not in ("row", "column"):
            raise ConfigurationError(
                f"granularity must be 'row' or 'column', got {self.granularity!r}"
            )
        if not fixed and self.selection not in masks.SELECTIONS:
            raise ConfigurationError(
                f"unknown selection {self.selection!r}: choose one of {', '.join(masks.SELECTIONS)} "
                "or pass a fixed 0/1 mask tensor"
            )
        if self.k is None and not fixed:
            raise ConfigurationError("sparse transport needs k, the number of paths kept per unit, "
                                     "e.g. transport='sparse', k=4")
        if self.k is not None and (not isinstance(self.k, int) or isinstance(self.k, bool)):
            raise ConfigurationError(f"k must be an int, got {self.k!r}")
        if not isinstance(self.resample_every, int) or self.resample_every < 0:
            raise ConfigurationError(
                f"resample_every must be an int ≥ 0 (0 = fixed for the whole run), got {self.resample_every!r}"
            )
        if fixed and self.rescale:
            raise ConfigurationError("rescale applies to k-of-N selections, not to a fixed mask: "
                                     "scale the mask's entries yourself or drop rescale=True")

    # -- configuration -----------------------------------------------------------------------
    @property
    def fixed_mask(self) -> Tensor | None:
        return self.selection if isinstance(self.selection, Tensor) else None

    def _fixed_k(self, N: int) -> int:
        mask = self.fixed_mask.bool()
        if self.granularity == "column":
            return int(mask.sum())
        counts = mask.sum(dim=-1)
        if bool((counts != counts[0]).any()):
            return -1
        return int(counts[0])

    def check_context(self, ctx: TransportContext) -> None:
        N = ctx.state_size
        mask = self.fixed_mask
        if mask is not None:
            want = (N,) if self.granularity == "column" else (N, N)
            if tuple(mask.shape) != want:
                raise ConfigurationError(
                    f"a fixed {self.granularity} mask must have shape {want} for N={N}, got "
                    f"{tuple(mask.shape)}"
                )
            if self.k is not None and self._fixed_k(N) != self.k:
                raise ConfigurationError(
                    f"k={self.k} disagrees with the fixed mask; leave k=None with a fixed mask"
                )
            return
        top = N - 1 if (self.keep_diagonal and self.granularity == "row") else N
        if not 0 <= self.k <= top:
            extra = " (the diagonal is kept on top of the k)" if top == N - 1 else ""
            raise ConfigurationError(
                f"k={self.k} is out of range for a state of N={N} units: choose 0 ≤ k ≤ {top}{extra}"
            )

    def _width(self, N: int) -> int:
        """Number of kept sources stored per row (row) or in S (column)."""
        k = self._fixed_k(N) if self.fixed_mask is not None else self.k
        if self.granularity == "row" and self.keep_diagonal:
            k += 1
        return max(k, 0)

    # -- the rule ----------------------------------------------------------------------------
    def init(self, ctx: TransportContext) -> SparseState:
        self.check_context(ctx)
        E, B, N = ctx.members, ctx.batch, ctx.state_size
        shape = (E, B, N, self._width(N)) if self.granularity == "row" else (E, B, self._width(N))
        gens = Generators(member_seeds(self.seed, E), ctx.device)
        index = torch.zeros(shape, dtype=torch.long, device=ctx.device)
        return SparseState(ctx, zeros_like_context(ctx), gens, 0, False, index)

    def reset(self, state: SparseState) -> None:
        state.pending = None
        state.M.zero_()

    def _due(self, state: SparseState) -> bool:
        if self.fixed_mask is not None or self.resample_every == 0:
            return not state.selected
        return state.steps % self.resample_every == 0

    def _select(self, state: SparseState, J: Tensor) -> None:
        E, B, N, _ = J.shape
        mask = self.fixed_mask
        if mask is not None:
            mask = mask.to(device=J.device, dtype=torch.bool)
            if self.granularity == "column":
                cols = mask.nonzero().flatten()
                state.index.copy_(cols.expand(E, B, cols.numel()))
            elif self._fixed_k(N) >= 0 and not self.keep_diagonal:
                rows = mask.nonzero()[:, 1].view(N, -1)
                state.index.copy_(rows.expand(E, B, *rows.shape))
        elif self.granularity == "row":
            scores = masks.row_scores(self.selection, J, state.generators, self.keep_diagonal)
            index = masks.top_k(scores, self.k)
            state.index.copy_(masks.with_diagonal(index) if self.keep_diagonal else index)
        else:
            scores = masks.column_scores(self.selection, J, state.generators)
            state.index.copy_(masks.top_k(scores, self.k))
        state.selected = True

    def _dense_fixed(self, N: int) -> bool:
        """A fixed row mask with unequal rows (or with the diagonal added) is applied densely."""
        return (self.fixed_mask is not None and self.granularity == "row"
                and (self._fixed_k(N) < 0 or self.keep_diagonal))

    def current_mask(self, state: SparseState) -> Tensor:
        """The mask K in use, ``(E, B, N, N)`` bool (after the first step)."""
        ctx = state.ctx
        N = ctx.state_size
        if self._dense_fixed(N):
            mask = self.fixed_mask.to(device=ctx.device, dtype=torch.bool).clone()
            if self.keep_diagonal:
                mask.fill_diagonal_(True)
            return mask.expand(ctx.members, ctx.batch, N, N)
        if self.granularity == "row":
            return masks.rows_to_mask(state.index, N)
        return masks.columns_to_mask(state.index, N, self.keep_diagonal)

    def update(self, state: SparseState, derivs) -> None:
        J = derivs.jacobian
        E, B, N, _ = J.shape
        state.flush()  # the previous step's, if no gradient followed it
        self.advance_selection(state, J)
        if self._dense_fixed(N):
            matmul_(J * self.current_mask(state).to(J.dtype), state.M)
        elif self.granularity == "row":
            weight = J.gather(-1, state.index)
            if self.rescale and self.k > 0:
                top = N - 1 if self.keep_diagonal else N
                weight[..., : self.k] *= top / self.k
            gather_rows_(state.index, weight, state.M)
        else:
            k = state.index.shape[-1]
            weight = self.column_weights(state, J)
            diagonal = None
            if self.keep_diagonal:
                own = state.index.unsqueeze(2) == torch.arange(N, device=J.device).view(1, 1, N, 1)
                weight = weight.masked_fill(own, 0.0)
                diagonal = J.diagonal(dim1=-2, dim2=-1)
            if fuses_columns(state.M, k, derivs.immediate):
                state.pending = (weight, diagonal, derivs.immediate)  # done by the gradient's pass
            else:
                gather_columns_(state.index, weight, state.M, diagonal, derivs.immediate)
            return
        derivs.immediate.add_to_dense(state.M)

    def advance_selection(self, state: SparseState, J: Tensor) -> None:
        """The step's kept paths into ``state.index`` (drawn when due) and the step count."""
        if self._due(state):
            self._select(state, J)
        state.steps += 1

    def column_weights(self, state: SparseState, J: Tensor) -> Tensor:
        """The kept entries J[:, S] ``(E, B, N, k)`` of column granularity (rescaled by N/k
        when asked), for the sources S in ``state.index``."""
        E, B, N, _ = J.shape
        k = state.index.shape[-1]
        weight = J.gather(-1, state.index.unsqueeze(2).expand(E, B, N, k))
        return weight * (N / k) if self.rescale and k > 0 else weight

    def gradient(self, state: SparseState, delta):
        """g = δ·M_t[:H]; after a deferred column update, M_t is formed in the same pass."""
        return state.ctx.layout.split(self.flat_gradient(state, delta))

    def flat_gradient(self, state: SparseState, delta) -> Tensor:
        """:meth:`gradient` as one flat ``(E, P)`` tensor in the layout's order."""
        if state.pending is None:
            return delta_rows(delta, state.M)
        weight, diagonal, immediate = state.pending
        state.pending = None
        return gather_columns_gradient_(state.index, weight, state.M, diagonal, immediate, delta)

    def influence(self, state: SparseState):
        state.flush()
        return state.M
