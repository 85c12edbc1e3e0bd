"""Scores of SPEC §3: window losses, recovery, bootstrap confidence intervals, CV.

    L_m      = mean per-step loss over the adaptation window (primary)
    L_m^end  = mean over the window's last 20 % (secondary)
    R_m      = 100·(L_frozen − L_m)/(L_frozen − L_full)      (paired, per seed)
    R_m^imm  = 100·(L_imm − L_m)/(L_imm − L_full)
    CV_m     = std(L_m)/mean(L_m) across seeds

R_m is undefined on a seed where full RTRL does not beat the reference by more than 5 % of
the reference's loss, or where either run diverged; undefined seeds are counted, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

#: full RTRL must beat the reference by more than this fraction of its loss for R to exist
MIN_GAIN = 0.05
END_FRACTION = 0.2


def window_scores(losses: Sequence[float], end_fraction: float = END_FRACTION) -> tuple[float, float]:
    """(L, L_end) of one run; non-finite if the run diverged (non-finite losses)."""
    x = np.asarray(losses, dtype=np.float64)
    if x.size == 0:
        raise ValueError("an empty adaptation window has no score")
    if not np.all(np.isfinite(x)):
        return math.inf, math.inf
    tail = max(1, int(round(end_fraction * x.size)))
    return float(x.mean()), float(x[-tail:].mean())


def recovery(L_ref: float, L_m: float, L_full: float, min_gain: float = MIN_GAIN) -> float | None:
    """100·(L_ref − L_m)/(L_ref − L_full), or None where it is undefined (see module doc)."""
    if not all(math.isfinite(v) for v in (L_ref, L_m, L_full)):
        return None
    gain = L_ref - L_full
    if gain <= min_gain * abs(L_ref):
        return None
    return 100.0 * (L_ref - L_m) / gain


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (seeded, so reports regenerate identically)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def coefficient_of_variation(values: Sequence[float]) -> float:
    """std/mean of the finite values (sample std, ddof = 1); NaN with fewer than two."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size < 2 or x.mean() == 0:
        return math.nan
    return float(x.std(ddof=1) / abs(x.mean()))


@dataclass(frozen=True)
class Summary:
    """Mean ± std and 95 % CI over seeds, with the seeds that could not be scored."""

    mean: float
    std: float
    ci95: tuple[float, float]
    n_seeds: int  # all seeds asked for
    n_scored: int  # seeds with a defined value
    n_undefined: int  # seeds where the value is undefined (e.g. full RTRL did not help)
    n_diverged: int  # seeds where the method's own run diverged

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def summarize(values: Sequence[float | None], diverged: Sequence[bool] | None = None) -> Summary:
    """Summary of per-seed values; None marks an undefined seed, non-finite a diverged one."""
    diverged = list(diverged) if diverged is not None else [False] * len(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    x = np.asarray(finite, dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=1)) if x.size > 1 else (0.0 if x.size == 1 else math.nan)
    return Summary(
        mean=mean,
        std=std,
        ci95=bootstrap_ci(finite),
        n_seeds=len(values),
        n_scored=int(x.size),
        n_undefined=sum(1 for v, d in zip(values, diverged) if (v is None or not math.isfinite(v)) and not d),
        n_diverged=sum(bool(d) for d in diverged),
    )
