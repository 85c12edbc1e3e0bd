"""A reaching-like 2-D hand trajectory: point-to-point reaches with bell-shaped speed."""

from __future__ import annotations

import numpy as np


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Fraction of the path covered at normalised time τ ∈ [0, 1]: s(τ) = 10τ³ − 15τ⁴ + 6τ⁵.

    The minimum-jerk profile (Flash & Hogan 1985): ṡ = 30τ²(1 − τ)² is bell-shaped, zero at
    both ends, peak 1.875 at τ = ½.
    """
    tau = np.clip(tau, 0.0, 1.0)
    return tau ** 3 * (10.0 + tau * (-15.0 + 6.0 * tau))


def reach_trajectory(n_bins: int, bin_size: float, rng: np.random.Generator, *,
                     workspace: float, reach_duration: tuple[float, float],
                     hold_duration: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Bin-mean velocity of successive reaches to random targets, and the reach index.

    Model: the hand starts at the centre; reach r holds still for h_r ~ U(hold_duration),
    then moves from p_r to a target p_{r+1} drawn uniformly in the disc of radius
    ``workspace`` along p(t) = p_r + (p_{r+1} − p_r)·s((t − t_r)/D_r), D_r ~ U(reach_duration).
    The velocity of bin j is its exact mean, (p(e_{j+1}) − p(e_j))/Δ, so it is what a
    loader computes from a finely sampled position.

    Returns:
        velocity ``(n_bins, 2)`` (workspace units per s) and reach index ``(n_bins,)`` (the
        reach whose hold-and-move period contains the bin's start).
    """
    total = n_bins * bin_size
    holds, moves, targets = [], [], []
    elapsed = 0.0
    while elapsed <= total:  # draw reaches until the session is covered
        h = rng.uniform(*hold_duration)
        d = rng.uniform(*reach_duration)
        r = workspace * np.sqrt(rng.uniform())
        a = rng.uniform(0.0, 2.0 * np.pi)
        holds.append(h), moves.append(d), targets.append((r * np.cos(a), r * np.sin(a)))
        elapsed += h + d
    holds, moves = np.array(holds), np.array(moves)
    ends = np.concatenate([np.zeros((1, 2)), np.array(targets)])  # p_0 = centre, p_{r+1} = target r
    starts = np.concatenate([[0.0], np.cumsum(holds + moves)[:-1]])  # start of reach r's hold

    edges = np.arange(n_bins + 1) * bin_size
    r = np.searchsorted(starts, edges, side="right") - 1
    tau = (edges - starts[r] - holds[r]) / moves[r]
    position = ends[r] + (ends[r + 1] - ends[r]) * min_jerk(tau)[:, None]
    velocity = np.diff(position, axis=0) / bin_size
    return velocity, r[:-1]
