"""Sparse transport: masks have exactly the promised structure, and the fast in-place paths
equal the rule's definition (K ⊙ J)·M + Ī computed densely."""

import itertools

import pytest
import torch

from reference import dense_derivatives, masked_transport, rel_err
from sparse_rtrl import OnlineLearner
from sparse_rtrl.errors import ConfigurationError

from conftest import make_cell
from test_cells import torch_step, torch_twin

T, B = 9, 2


def lockstep(kind, steps=T, **options):
    """Run a sparse learner and, next to it, the dense definition using the learner's masks.

    Yields per step: the mask K (B, N, N), the autodiff J (B, N, N) of that step, the
    learner's M and the reference M.
    """
    cell = make_cell(kind, I=3, n=4)
    twin = torch_twin(cell, kind)
    step = torch_step(twin, kind)
    params = [p.detach() for p in twin.parameters()]
    learner = OnlineLearner(cell, "sparse", **options)
    N, P = cell.state_size, sum(p.numel() for p in params)
    xs = torch.randn(steps, B, 3, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    s = torch.zeros(B, N, dtype=torch.float64)
    M_ref = torch.zeros(B, N, P, dtype=torch.float64)
    for t in range(steps):
        learner.step(xs[t])
        K = learner.transport.current_mask(learner.transport_state)[0]
        Js, new_s = [], []
        for b in range(B):
            J, Ib = dense_derivatives(step, params, s[b], xs[t, b])
            weight = K[b].to(J.dtype) * rescale_weight(learner, N)
            M_ref[b] = masked_transport(J, weight, M_ref[b], Ib)
            Js.append(J)
            new_s.append(step(params, s[b], xs[t, b]))
        s = torch.stack(new_s)
        yield K, torch.stack(Js), learner.influence(), M_ref.clone()


def rescale_weight(learner, N):
    rule = learner.transport
    if not rule.rescale or rule.k == 0:
        return torch.ones(N, N, dtype=torch.float64)
    if rule.keep_diagonal and rule.granularity == "row":
        w = torch.full((N, N), (N - 1) / rule.k, dtype=torch.float64)
        w.fill_diagonal_(1.0)
        return w
    w = torch.full((N, N), N / rule.k, dtype=torch.float64)
    if rule.keep_diagonal:
        w.fill_diagonal_(1.0)
    return w


OPTIONS = [
    dict(granularity=g, selection=sel, keep_diagonal=kd, rescale=rs)
    for g, sel, kd, rs in itertools.product(
        ["row", "column"], ["random", "magnitude", "adversarial"], [False, True], [False, True]
    )
]


@pytest.mark.parametrize("kind", ["vanilla", "lstm"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_fast_path_equals_dense_definition_and_masks_have_their_structure(kind, opts):
    k = 2
    for K, J, M, M_ref in lockstep(kind, k=k, seed=3, **opts):
        N = K.shape[-1]
        assert rel_err(M, M_ref) < 1e-12
        off = K.clone()
        if opts["keep_diagonal"]:
            assert K.diagonal(dim1=-2, dim2=-1).all()
        if opts["granularity"] == "row":
            if opts["keep_diagonal"]:
                off.diagonal(dim1=-2, dim2=-1).fill_(False)
            assert (off.sum(-1) == k).all()  # exactly k (other) sources per row
            score = J.abs()
            if opts["keep_diagonal"]:
                score.diagonal(dim1=-2, dim2=-1).fill_(float("nan"))
            if opts["selection"] != "random":
                for b, i in itertools.product(range(B), range(N)):
                    valid = ~torch.isnan(score[b, i])
                    kept = score[b, i][off[b, i]]
                    dropped = score[b, i][valid & ~off[b, i]]
                    if opts["selection"] == "magnitude":
                        assert kept.min() >= dropped.max()
                    else:
                        assert kept.max() <= dropped.min()
        else:
            cols = K.clone()
            if opts["keep_diagonal"]:
                cols = K & ~torch.eye(N, dtype=torch.bool)
            kept_cols = K.all(dim=-2)  # a column kept for every row
            assert (kept_cols.sum(-1) == k).all()
            assert torch.equal(cols, kept_cols.unsqueeze(-2).expand_as(K) & cols)
            if opts["selection"] != "random":
                norms = J.abs().sum(-2)
                for b in range(B):
                    kept, dropped = norms[b][kept_cols[b]], norms[b][~kept_cols[b]]
                    if opts["selection"] == "magnitude":
                        assert kept.min() >= dropped.max()
                    else:
                        assert kept.max() <= dropped.min()


def test_resample_every_holds_masks_between_draws():
    masks = [K.clone() for K, *_ in lockstep("vanilla", steps=10, k=2, resample_every=3, seed=1)]
    for t in range(1, 10):
        same = torch.equal(masks[t], masks[t - 1])
        assert same == (t % 3 != 0), f"step {t}"
    fixed = [K.clone() for K, *_ in lockstep("vanilla", steps=6, k=2, resample_every=0, seed=1)]
    assert all(torch.equal(m, fixed[0]) for m in fixed)


def test_fixed_masks_are_used_as_given():
    N = 4
    row_mask = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    for K, _, M, M_ref in lockstep("vanilla", selection=row_mask):
        assert torch.equal(K, row_mask.expand_as(K))
        assert rel_err(M, M_ref) < 1e-12
    even = torch.tensor([[1, 1, 0, 0]] * N, dtype=torch.bool)  # equal counts: gather path
    for K, _, M, M_ref in lockstep("vanilla", selection=even):
        assert torch.equal(K, even.expand_as(K))
        assert rel_err(M, M_ref) < 1e-12
    cols = torch.tensor([0, 1, 1, 0], dtype=torch.bool)
    for K, _, M, M_ref in lockstep("vanilla", selection=cols, granularity="column"):
        assert torch.equal(K, cols.expand(N, N).expand_as(K))
        assert rel_err(M, M_ref) < 1e-12


def masks_of(seed, steps=5, **kw):
    return [K.clone() for K, *_ in lockstep("vanilla", steps=steps, k=2, seed=seed, **kw)]


def test_masks_are_reproducible_by_seed_and_differ_across_seeds_and_streams():
    a, b, c = masks_of(5), masks_of(5), masks_of(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not all(torch.equal(m[0], m[1]) for m in a)  # each stream draws its own


def test_random_selection_is_uniform_and_rescale_is_unbiased():
    """Over many draws every off-diagonal path is kept with probability k/(N−1) and the
    rescaled mask averages to one; the average's error shrinks like 1/√draws."""
    from sparse_rtrl.transport import Sparse
    from sparse_rtrl.transport.base import Generators
    from sparse_rtrl.transport import masks

    N, k = 6, 2
    J = torch.ones(1, 1, N, N)
    gens = Generators([0], "cpu")

    def mean_weight(draws):
        total = torch.zeros(N, N)
        for _ in range(draws):
            idx = masks.top_k(masks.row_scores("random", J, gens, keep_diagonal=True), k)
            total += masks.rows_to_mask(idx, N)[0, 0].float() * ((N - 1) / k)
        return total / draws

    off = ~torch.eye(N, dtype=torch.bool)
    small, large = mean_weight(500), mean_weight(8000)
    err_small = (small[off] - 1).abs().mean()
    err_large = (large[off] - 1).abs().mean()
    assert large[off].sub(1).abs().max() < 0.1
    assert err_large < err_small * 0.5  # 16× the draws: about 4× smaller error expected
    assert Sparse(k=2).rescale is False


@pytest.mark.parametrize("granularity", ["row", "column"])
def test_k_out_of_range_names_the_valid_range(granularity):
    cell = make_cell("vanilla", n=4)
    with pytest.raises(ConfigurationError, match=r"k=5 is out of range .* N=4 .* 0 ≤ k ≤ 4"):
        OnlineLearner(cell, "sparse", k=5, granularity=granularity)
    with pytest.raises(ConfigurationError, match=r"0 ≤ k ≤ 3 \(the diagonal is kept"):
        OnlineLearner(cell, "sparse", k=4, keep_diagonal=True)
    with pytest.raises(ConfigurationError, match="k=-1 is out of range"):
        OnlineLearner(cell, "sparse", k=-1)


def test_bad_sparse_options_are_named():
    cell = make_cell("vanilla", n=4)
    with pytest.raises(ConfigurationError, match="needs k"):
        OnlineLearner(cell, "sparse")
    with pytest.raises(ConfigurationError, match="unknown selection 'biggest'"):
        OnlineLearner(cell, "sparse", k=1, selection="biggest")
    with pytest.raises(ConfigurationError, match="granularity must be 'row' or 'column'"):
        OnlineLearner(cell, "sparse", k=1, granularity="block")
    with pytest.raises(ConfigurationError, match="resample_every must be"):
        OnlineLearner(cell, "sparse", k=1, resample_every=-2)
    with pytest.raises(ConfigurationError, match=r"must have shape \(4, 4\)"):
        OnlineLearner(cell, "sparse", selection=torch.ones(3, 3))
