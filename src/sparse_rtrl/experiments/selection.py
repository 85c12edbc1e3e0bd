"""Written rules that choose an experiment's learning rate on validation seeds (SPEC §3).

Two ways to apply a rule, set in the experiment's config: one rate for all methods, chosen on
the validation runs of the reference method (full RTRL by default), or one rate per method,
each chosen on that method's own validation runs (``lr_per_method``). Either way the rule is
written here and the same for every method; nothing is tuned per claim. A grid may grow
(``lr_extend``): see :func:`grow_grid`.
"""

from __future__ import annotations

import math

import numpy as np

RULE_TEXT = {
    "best_stable": (
        "among the grid learning rates at which {ref} diverged on no validation seed, the one "
        "with the lowest mean L over the validation seeds (the smallest rate if none is stable)"
    ),
    "largest_stable": (
        "the largest grid learning rate at which {ref} diverged on no validation seed "
        "(the smallest rate if none is stable)"
    ),
}


EXTEND_TEXT = (
    "a rate chosen at the grid's smallest (largest) value adds the next rate one grid step "
    "below (above) it, the grid's ratio there, and the rule is applied again; at most {n} time(s)"
)


def describe(rule: str, reference: str, extend: int = 0) -> str:
    if rule not in RULE_TEXT:
        raise ValueError(f"unknown learning-rate rule {rule!r}: choose one of {', '.join(RULE_TEXT)}")
    text = RULE_TEXT[rule].format(ref=reference)
    return text + ("; " + EXTEND_TEXT.format(n=extend) if extend else "")


def _round(lr: float) -> float:
    return float(f"{lr:.3g}")


def grow_grid(rule: str, grid, results, extend: int) -> tuple[list[float], list[float]]:
    """The grid as far as the finished validation runs decide it, and its rates still missing.

    ``results(lr)`` gives the validation results at ``lr`` (None until all are finished).
    Starting from ``grid``: while every rate is finished, the rule chooses; a choice at the
    smallest (largest) rate adds one rate a grid step beyond it (the ratio of the two outer
    rates on that side, 3 significant digits), at most ``extend`` times in all. Returns
    (grid, missing); missing is empty when the choice is final.
    """
    grid = sorted(float(lr) for lr in grid)
    grown = 0
    while True:
        missing = [lr for lr in grid if results(lr) is None]
        if missing or grown >= extend or len(grid) < 2:
            return grid, missing
        chosen, _ = choose_lr(rule, {lr: results(lr) for lr in grid})
        if chosen == grid[0]:
            grid.insert(0, _round(grid[0] * grid[0] / grid[1]))
        elif chosen == grid[-1]:
            grid.append(_round(grid[-1] * grid[-1] / grid[-2]))
        else:
            return grid, []
        grown += 1


def choose_lr(rule: str, runs: dict[float, list[dict]]) -> tuple[float, dict]:
    """Apply ``rule`` to ``{lr: [validation results of the reference method]}``.

    Returns the chosen rate and a table {lr: {"mean_L", "diverged"}} for the report.
    """
    describe(rule, "")
    table = {}
    for lr, results in sorted(runs.items()):
        Ls = [r["L"] for r in results]
        diverged = sum(bool(r["diverged"]) or not math.isfinite(r["L"]) for r in results)
        finite = [L for L in Ls if math.isfinite(L)]
        table[lr] = {"mean_L": float(np.mean(finite)) if finite else math.inf, "diverged": diverged}
    stable = [lr for lr, row in table.items() if row["diverged"] == 0]
    if not stable:
        return min(table), table
    if rule == "largest_stable":
        return max(stable), table
    return min(stable, key=lambda lr: (table[lr]["mean_L"], lr)), table
