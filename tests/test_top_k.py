"""The compiled top-k kernel that picks sparse transport's kept paths.

``masks.top_k`` must give exactly ``torch.topk``'s indices (largest first), whatever the
scores: the kernel answers rows whose top k + 1 are strictly decreasing and marks the others
(ties at or inside the k-th place, NaN, −inf among the k largest), which ``torch.topk`` then
answers row by row. The reference here is ``torch.topk`` itself, on random, tied, NaN and
infinite scores, at every k, in the lane path (k + 1 ≤ 16) and the row path, on 1 and 2
threads, and in a build without AVX2 (the portable C).
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from sparse_rtrl import OnlineLearner, new_ensemble, settings
from sparse_rtrl.cells import VanillaRNN
from sparse_rtrl.transport import _cpu_kernels, masks

needs_kernels = pytest.mark.skipif(_cpu_kernels.get() is None, reason="compiled kernels unavailable")


def score_cases(seed: int):
    """(scores, k) over the shapes the rules pass and the awkward values."""
    g = torch.Generator().manual_seed(seed)
    for n in (1, 2, 5, 16, 17, 33, 64, 100):
        for k in sorted({1, 2, 4, min(15, n), min(16, n), n // 2 or 1, n}):
            if k > n:
                continue
            for shape in ((n,), (3, n), (2, 1, 7, n), (16, 1, 64 if n == 64 else 9, n)):
                yield torch.rand(shape, generator=g), k  # distinct almost surely
            ties = torch.randint(0, 4, (5, n), generator=g).float()  # ties everywhere
            yield ties, k
            edge = torch.randn(4, n, generator=g)
            edge[:, 0] = float("-inf")  # the kept-diagonal exclusion
            if n > 1:
                edge[1, 1] = float("inf")
                edge[2, -1] = float("nan")  # torch.topk ranks NaN largest
            edge[3] = torch.tensor(-0.0) if n > 2 else edge[3]  # ±0 compare equal
            yield edge, k
    # more than 2¹⁶ scores: the kernel's threads share the rows (both paths)
    big = torch.rand(64, 2048, generator=g)
    big[::7, 5] = big[::7, 6]  # a few tied rows among them
    yield big, 4
    yield big, 20
    yield torch.randint(0, 3, (40, 2000), generator=g).float(), 4  # every row tied
    yield torch.randint(0, 3, (4096, 64), generator=g).float(), 4  # many short tied rows, fast counts


@needs_kernels
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_gives_torch_topk_indices(seed):
    for scores, k in score_cases(seed):
        assert torch.equal(masks.top_k(scores, k), scores.topk(k, dim=-1).indices), (tuple(scores.shape), k)


@needs_kernels
def test_ambiguous_rows_are_answered_by_torch_topk():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(40, 64, generator=g)
    assert torch.equal(_cpu_kernels.top_k(scores, 4), scores.topk(4, dim=-1).indices)
    tied = scores.clone()
    top = tied[7].topk(5).indices
    tied[7, top[4]] = tied[7, top[3]]  # the 4th and 5th largest equal: the 4th place is a tie
    tied[9, 0] = float("nan")
    assert torch.equal(_cpu_kernels.top_k(tied, 4), tied.topk(4, dim=-1).indices)
    with pytest.raises(ValueError, match="k must be in"):
        _cpu_kernels.top_k(scores, 65)


@needs_kernels
def test_tensors_the_kernel_must_not_read_go_to_torch():
    """A lazily negated view, scores under torch.vmap, and a 0-d tensor: torch.topk's answer."""
    x = torch.arange(8.0).reshape(1, 8)
    neg = torch._neg_view(x)
    assert torch.equal(masks.top_k(neg, 3), neg.topk(3, dim=-1).indices)
    batch = torch.rand(3, 5, 16, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.vmap(lambda s: masks.top_k(s, 4))(batch), batch.topk(4, dim=-1).indices)
    scalar = torch.tensor(3.0)
    assert torch.equal(masks.top_k(scalar, 1), scalar.topk(1).indices)


@needs_kernels
def test_non_contiguous_and_non_float32_scores():
    g = torch.Generator().manual_seed(4)
    scores = torch.rand(6, 64, 3, generator=g).transpose(1, 2)  # last dim not contiguous
    assert torch.equal(masks.top_k(scores, 4), scores.topk(4, dim=-1).indices)
    double = scores.double()
    assert torch.equal(masks.top_k(double, 4), double.topk(4, dim=-1).indices)  # torch's path
    assert masks.top_k(scores, 0).shape == (6, 3, 0)


def _portable_library(tmp_path):
    """The kernels' source built without AVX2/FMA (the C a machine without them compiles)."""
    flags = [f for f in _cpu_kernels._flags() if f not in ("-mavx2", "-mfma")]
    with settings.using(cache_dir=str(tmp_path)):
        try:
            path = _cpu_kernels.compile_library(_cpu_kernels.source(), "portable_kernels", flags)
        except _cpu_kernels.KernelBuildError as err:
            pytest.skip(f"no C compiler: {err}")
    return _cpu_kernels.declare(ctypes.CDLL(path))


def check_raw_kernel(lib, threads=1):
    """Call ``top_k_float`` on every case: a row is marked (index −1 in its first place) when
    its answer is not unique (top k + 1 not strictly decreasing, or NaN), the count returned is
    the number of marked rows, and every unmarked row is answered as ``torch.topk`` answers it."""
    for scores, k in score_cases(5):
        rows = scores.contiguous().reshape(-1, scores.shape[-1])
        R, n = rows.shape
        out = torch.empty(R, k, dtype=torch.int64)
        refused = lib.top_k_float(rows.data_ptr(), R, n, k, out.data_ptr(), threads)
        top = rows.topk(min(k + 1, n), dim=-1).values
        steps = top[:, :k + 1].diff(dim=-1)[:, :k] if top.shape[-1] > 1 else top[:, :0]
        unique = (steps < 0).all(-1) & ~rows.isnan().any(-1)
        marked = out[:, 0] < 0
        assert refused == int(marked.sum()), (tuple(scores.shape), k)
        assert not (~unique & ~marked).any(), (tuple(scores.shape), k)  # every ambiguous row marked
        expected = rows.topk(k, dim=-1).indices
        assert torch.equal(out[~marked], expected[~marked]), (tuple(scores.shape), k)
        assert not marked[unique & ~top.isneginf().any(-1)].any(), (tuple(scores.shape), k)  # nor more


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_raw_kernel_answers_unique_rows_and_counts_the_rest(threads):
    check_raw_kernel(_cpu_kernels.get(), threads)


def test_portable_build_answers_unique_rows_and_counts_the_rest(tmp_path):
    check_raw_kernel(_portable_library(tmp_path))


@needs_kernels
@pytest.mark.parametrize("opts", [
    dict(k=4), dict(k=4, selection="magnitude"), dict(k=3, keep_diagonal=True),
    dict(k=4, granularity="column"), dict(k=2, granularity="column", selection="adversarial"),
], ids=str)
def test_learner_runs_bit_identically_with_torch_topk(opts, monkeypatch):
    """The kernel changes no kept path: a learner run with it and with torch.topk alone gives
    the same M and gradients bit for bit (float32 ensemble, B = 2)."""
    def run():
        cell = new_ensemble(VanillaRNN, 3, 2, 24, seed=1)
        learner = OnlineLearner(cell, "sparse", seed=2, **opts)
        xs = torch.randn(12, 3, 2, 2, generator=torch.Generator().manual_seed(3))
        for x in xs:
            h = learner.step(x)
            learner.backward(h.pow(2).sum())
        return learner.influence().clone(), [p.grad.clone() for p in cell.parameters()]

    M_fast, g_fast = run()
    monkeypatch.setattr(_cpu_kernels, "top_k", lambda scores, k: None)  # every row to torch.topk
    M_ref, g_ref = run()
    assert torch.equal(M_fast, M_ref)
    for a, b in zip(g_fast, g_ref):
        assert torch.equal(a, b)
