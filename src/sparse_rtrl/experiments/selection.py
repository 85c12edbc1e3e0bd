"""Written rules that choose an experiment's learning rate on validation seeds (SPEC §3).

Every rule sees only the validation runs of the experiment's reference method (full RTRL by
default), one learning rate for all methods: nothing is tuned per method or per claim.
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


def describe(rule: str, reference: str) -> str:
    if rule not in RULE_TEXT:
        raise ValueError(f"unknown learning-rate rule {rule!r}: choose one of {', '.join(RULE_TEXT)}")
    return RULE_TEXT[rule].format(ref=reference)


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
