"""Exactness on a GPU: what the CPU suite checks, on CUDA tensors (skipped without CUDA).

Device and dtype follow the tensors, so a learner on CUDA must give the numbers the theory
gives there too. Independent references only:

* full RTRL's gradient per step equals autograd BPTT of the torch twin, for every registered
  cell, in float64 on the device;
* every deterministic rule (full, immediate, trace, snap1, sparse with magnitude selection or
  a fixed mask, both granularities) equals the same learner run on the CPU in float64 (the
  random rules draw from the device's own generator, so their masks differ by design);
* the fused step's torch engine on the device equals ``OnlineLearner`` + ``nn.Linear`` +
  ``torch.optim`` there, in float64.

``benchmarks/cuda_check.sh`` runs this file with the CUDA kernel tests and the CUDA benchmark
in one go. ``DEVICES`` holds "cuda" when a GPU is present; the tests take the device as a
parameter, so a dry run on the CPU (``pytest tests/test_cuda.py --cuda-dry-run``) exercises
their logic where no GPU is.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import CELL_KINDS, make_cell
from reference import bptt_per_step_grads, rel_err
from sparse_rtrl import FusedStep, OnlineLearner
from sparse_rtrl.cells import VanillaRNN
from test_cells import torch_step, torch_twin
from test_exactness import assert_same, inputs, loss_of_h, readout_vectors
from test_exactness import run_learner as run

T, B = 12, 2


def devices(config) -> list[str]:
    if torch.cuda.is_available():
        return ["cuda"]
    return ["cpu"] if config.getoption("--cuda-dry-run") else []


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        found = devices(metafunc.config)
        metafunc.parametrize("device", found or [pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA device"))])


def on_cpu(increments):
    """Per-step gradient increments moved to the CPU (for the exactness suite's comparison)."""
    return [[g.detach().cpu() for g in step] for step in increments]


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_full_rtrl_equals_bptt_on_the_device(kind, device):
    cell = make_cell(kind, I=3, n=5)
    twin = torch_twin(cell, kind).to(device)
    cell = cell.to(device)
    xs, r = inputs(3).to(device), readout_vectors(5).to(device)
    n = cell.hidden_size
    ref = bptt_per_step_grads(torch_step(twin, kind), list(twin.parameters()), xs,
                              lambda t, s: loss_of_h(r, t, s[..., :n]),
                              torch.zeros(B, cell.state_size, dtype=torch.float64, device=device))
    assert_same(on_cpu(run(OnlineLearner(cell, "full"), xs, r)), on_cpu(ref))


DETERMINISTIC = [
    ("full", {}), ("immediate", {}), ("trace", {"decay": 0.8}), ("snap1", {}),
    ("sparse", {"k": 2, "selection": "magnitude"}),
    ("sparse", {"k": 3, "selection": "magnitude", "keep_diagonal": True, "rescale": True}),
    ("sparse", {"k": 2, "granularity": "column", "selection": "magnitude"}),
    ("sparse", {"k": 20, "selection": "magnitude"}),  # the dense route (k > N/4)
    ("sparse", {"selection": (torch.rand(24, 24, generator=torch.Generator().manual_seed(1)) < 0.2).float()}),
]


@pytest.mark.parametrize("rule,options", DETERMINISTIC, ids=lambda v: str(v) if isinstance(v, str) else None)
@pytest.mark.parametrize("kind", ["vanilla", "gru", "lstm"])
def test_deterministic_rules_give_the_cpus_numbers_on_the_device(rule, options, kind, device):
    n = 12 if kind == "lstm" else 24  # N = 24 state units for every cell (the fixed mask's size)
    base = make_cell(kind, I=3, n=n)
    xs, r = inputs(3), readout_vectors(base.hidden_size)
    cpu_run = run(OnlineLearner(base, rule, **options), xs, r)
    cell = make_cell(kind, I=3, n=n).to(device)
    on_device = run(OnlineLearner(cell, rule, **options), xs.to(device), r.to(device))
    assert_same(on_cpu(on_device), cpu_run)


@pytest.mark.parametrize("rule,options", [("full", {}), ("sparse", {"k": 4, "selection": "magnitude"}),
                                          ("sparse", {"k": 4, "granularity": "column", "selection": "magnitude"}),
                                          ("snap1", {}), ("immediate", {})], ids=str)
def test_fused_torch_engine_equals_the_learner_on_the_device(rule, options, device):
    """FusedStep (torch engine) against OnlineLearner + nn.Linear + MSE + torch.optim.Adam."""
    torch.manual_seed(0)
    cell, readout = VanillaRNN(2, 16).double().to(device), nn.Linear(16, 1).double().to(device)
    twin_cell, twin_readout = copy.deepcopy(cell), copy.deepcopy(readout)
    fused = FusedStep(cell, rule, readout, optimizer="adam", lr=1e-2, engine="torch", **options)
    learner = OnlineLearner(twin_cell, rule, **options)
    opt = torch.optim.Adam([*twin_cell.parameters(), *twin_readout.parameters()], lr=1e-2)
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(30, 2, generator=g, dtype=torch.float64).to(device)
    ys = torch.randn(30, 1, generator=g, dtype=torch.float64).to(device)
    for x, y in zip(xs, ys):
        pred, _ = fused.step(x, y)
        ref = twin_readout(learner.step(x)).reshape(-1)
        learner.backward(nn.functional.mse_loss(ref, y))
        opt.step()
        opt.zero_grad()
        assert rel_err(pred.detach().cpu(), ref.detach().cpu()) < 1e-10
    for a, b in zip([*cell.parameters(), *readout.parameters()], [*twin_cell.parameters(), *twin_readout.parameters()]):
        assert rel_err(a.detach().cpu(), b.detach().cpu()) < 1e-10
