"""Soak: a long stream keeps memory flat and every value finite (slow; ``-m slow``).

10⁶ online steps at n = 64 (``--soak-steps`` to change), Adam, a sine stream whose
frequencies shift every 10⁵ steps; the resident memory after the first 10⁴ steps (allocator
and caches warm) may not grow by more than 64 MiB, and the loss must stay finite and small.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

from sparse_rtrl import OnlineLearner
from sparse_rtrl.cells import VanillaRNN


def resident_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(t: int) -> float:
    """A two-tone sine whose frequencies change every 10⁵ steps (a new regime each time)."""
    regime = t // 100_000
    w1, w2 = 0.11 + 0.03 * (regime % 3), 0.37 - 0.05 * (regime % 2)
    return 0.6 * math.sin(w1 * t) + 0.3 * math.sin(w2 * t)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
@pytest.mark.parametrize("rule,options", [("immediate", {}), ("sparse", {"k": 4, "seed": 0})])
def test_a_million_steps_keep_memory_flat_and_values_finite(rule, options, request):
    steps = request.config.getoption("--soak-steps")
    torch.manual_seed(0)
    cell, readout = VanillaRNN(1, 64), torch.nn.Linear(64, 1)
    learner = OnlineLearner(cell, rule, **options)
    opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=1e-3)
    warm, rss0, window, worst, last = min(10_000, steps // 10), None, 0.0, 0.0, math.inf
    started = time.perf_counter()
    for t in range(steps):
        h = learner.step(torch.tensor([stream(t)]))
        loss = (readout(h) - stream(t + 1)).pow(2).sum()
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        window += float(loss.detach())
        if t + 1 == warm:
            rss0 = resident_mib()
        if (t + 1) % 10_000 == 0:
            last = window / 10_000
            worst = max(worst, last)
            window = 0.0
    grown = resident_mib() - rss0
    rate = steps / (time.perf_counter() - started)
    print(f"\n{rule}: {steps} steps at {rate:.0f} steps/s, resident memory grew {grown:.1f} MiB "
          f"after step {warm}, 10⁴-step mean loss: worst {worst:.4f}, last {last:.4f}")
    assert all(torch.isfinite(p).all() for p in [*cell.parameters(), *readout.parameters()])
    assert torch.isfinite(learner.state).all()
    assert grown < 64, f"resident memory grew by {grown:.1f} MiB over {steps} steps"
    variance = 0.6**2 / 2 + 0.3**2 / 2  # what predicting 0 scores
    assert worst < 2 * variance, "the loss blew up somewhere along the stream"
    assert last < 0.25 * variance, "the learner stopped learning"
