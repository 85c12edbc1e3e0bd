"""The paper's claims measured on recurrent cells (SPEC §5: C1–C7, C10–C12), how each is
measured from the sweep's results, the written rule that turns a measurement into a verdict,
and their figures. Paper figures are for side-by-side reporting only: nothing here feeds
back into any run. (C8 lives in ``transformer_c8``, C9 in ``bci``; ``families`` lists them.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import plots
from .methods import (ADVERSARIAL, COLUMN, FIXED_MASK, FROZEN_MODEL, FULL, IMMEDIATE, K4, KF, MAGNITUDE, READOUT_ONLY,
                      RESCALED, SNAP1, SWEEP_K, UORO, in_dtype, sparse, tbptt, trace)
from .metrics import Summary, coefficient_of_variation, summarize
from .paper import C1_RECOVERY, C11_RECOVERY
from .views import (NUMERIC_RULE, SPREAD_RULE, ClaimResult, ExperimentView, Request, counting_divergence, fmt,
                    missing, numeric_verdict, spread_verdict)

#: the methods of these experiments (``profiles`` runs them; the claims below read them)
SELECTION = (MAGNITUDE, ADVERSARIAL, COLUMN, FIXED_MASK, RESCALED)
BASELINES = (trace(0.9), SNAP1, UORO, KF, tbptt(8))
#: C12: the immediate rule and a λ = 0.95 trace against full RTRL, each in float32 and float64
FOLLOWUP = (IMMEDIATE, trace(0.95))
#: C6's spread across seeds, per method (Lorenz)
LORENZ_SPREAD = (FROZEN_MODEL, READOUT_ONLY, IMMEDIATE, K4, FULL)


def c1(v):
    cid, claim, paper = "C1", "sparse k=4 of n=64, vanilla RNN: recovery vs full RTRL", "84 ± 6 %"
    e = v.get("sine_vanilla")
    if e is None or not e.complete(FROZEN_MODEL, FULL, K4):
        return missing(cid, claim, paper, v, ("sine_vanilla",))
    s = e.recovery_summary(K4)
    imm = e.recovery_summary(K4, reference=IMMEDIATE)
    details = [f"recovery relative to the immediate rule: {fmt(imm)}"]
    # the references say how much of the recovery needs gradient through the recurrence at all
    details += [f"{what}: {fmt(e.recovery_summary(m))}"
                for m, what in ((IMMEDIATE, "immediate (k = 0)"), (READOUT_ONLY, "readout only (cell frozen)"))
                if e.complete(m)]
    return ClaimResult(cid, claim, paper, numeric_verdict(s, *C1_RECOVERY), NUMERIC_RULE, s, fmt(s), details)


def c2(v):
    cid, claim, paper = "C2", "k=4 as n grows (n = 64 → 128 → 256)", "84 → 78 %"
    rows, last = [], None
    for name, n in (("sine_vanilla", 64), ("sine_vanilla_n128", 128), ("sine_vanilla_n256", 256)):
        e = v.get(name)
        if e is None or not e.complete(FROZEN_MODEL, FULL, K4):
            continue
        last = e.recovery_summary(K4)
        rows.append((n, last))
    if len(rows) < 2:
        return missing(cid, claim, paper, v, ("sine_vanilla", "sine_vanilla_n128"))  # n = 256: paper only
    rule = ("reproduced: every n's mean recovery lies in the paper's band 72–90 % (78–84 % ± 6); "
            "partly: every n's mean ≥ 60 %; not reproduced: otherwise")
    means = [s.mean for _, s in rows]
    if all(72 <= m <= 90 for m in means):
        verdict = "reproduced"
    elif all(m >= 60 for m in means):
        verdict = "partly"
    else:
        verdict = "not reproduced"
    measured = " → ".join(f"{s.mean:.0f}" for _, s in rows) + " %"
    details = [f"n = {n} ({4 / n:.1%} of paths): {fmt(s)}" for n, s in rows]
    return ClaimResult(cid, claim, paper, verdict, rule, last, measured + f" (n = {', '.join(str(n) for n, _ in rows)})", details)


def c3(v):
    cid, claim, paper = "C3", "selection invariance: random vs adversarial vs magnitude (k=4)", "all similar"
    e = v.get("sine_vanilla")
    methods = (K4, MAGNITUDE, ADVERSARIAL)
    if e is None or not e.complete(FROZEN_MODEL, FULL, *methods):
        return missing(cid, claim, paper, v, ("sine_vanilla",))
    sums = [e.recovery_summary(m) for m in methods]
    means = [s.mean for s in sums]
    spread, verdict = spread_verdict(means)
    rule = SPREAD_RULE
    details = [f"{'random' if m is K4 else m.label}: {fmt(s)}" for m, s in zip(methods, sums)]
    for extra in (COLUMN, FIXED_MASK, RESCALED):
        if e.complete(extra):
            details.append(f"{extra.label}: {fmt(e.recovery_summary(extra))}")
    return ClaimResult(cid, claim, paper, verdict, rule, sums[0],
                       f"spread {spread:.1f} points (" + ", ".join(f"{m:.0f}" for m in means) + " %)", details)


def c4(v):
    cid, claim, paper = "C4", "step function: k = 0 vs any k ≥ 1", "0 → high"
    e = v.get("sine_vanilla")
    if e is None or not e.complete(FROZEN_MODEL, FULL, IMMEDIATE):
        return missing(cid, claim, paper, v, ("sine_vanilla",))
    ks = [k for k in SWEEP_K if e.complete(sparse(k))]
    zero = e.recovery_summary(IMMEDIATE)
    rows = {k: e.recovery_summary(sparse(k)) for k in ks}
    rule = ("reproduced: mean recovery at k = 0 < 25 % and ≥ 60 % at every k ≥ 1; partly: k = 0 "
            "< 25 % and k = 4 ≥ 60 % (the step comes later than k = 1); not reproduced: otherwise")
    low = zero.n_scored > 0 and zero.mean < 25
    if low and rows and all(s.mean >= 60 for s in rows.values()):
        verdict = "reproduced"
    elif low and 4 in rows and rows[4].mean >= 60:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    measured = f"k=0: {zero.mean:.0f} %, " + ", ".join(f"k={k}: {s.mean:.0f} %" for k, s in rows.items())
    return ClaimResult(cid, claim, paper, verdict, rule, zero, measured,
                       [f"k = 0: {fmt(zero)}"] + [f"k = {k}: {fmt(s)}" for k, s in rows.items()])


def c5(v):
    cid, claim, paper = "C5", "recurrent Jacobian full rank; condition numbers", "2.6 – 6.5"
    e = v.get("sine_vanilla")
    if e is None or not e.complete(FULL):
        return missing(cid, claim, paper, v, ("sine_vanilla",))
    per_seed = [np.asarray(e.runs_of(FULL)[s]["condition_numbers"]) for s in e.seeds()]
    if not all(c.size for c in per_seed):
        return missing(cid, claim, paper, why="no condition numbers were recorded")
    medians = [float(np.median(c)) for c in per_seed]
    allc = np.concatenate(per_seed)
    rule = ("reproduced: every seed's median condition number of J_t (along full RTRL's adaptation "
            "run) lies in [2.6, 6.5] and J_t is never singular; partly: the median over all steps "
            "and seeds lies in [2.6, 6.5]; not reproduced: otherwise")
    finite = np.isfinite(allc).all()
    if finite and all(2.6 <= m <= 6.5 for m in medians):
        verdict = "reproduced"
    elif finite and 2.6 <= float(np.median(allc)) <= 6.5:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    s = summarize(medians)
    q = np.quantile(allc, [0.05, 0.5, 0.95])
    return ClaimResult(cid, claim, paper, verdict, rule, s,
                       f"median {q[1]:.2f} (5–95 %: {q[0]:.2f} – {q[2]:.2f}; max {allc.max():.1f})",
                       [f"per-seed medians: {', '.join(f'{m:.2f}' for m in medians)}",
                        f"{allc.size} Jacobians, all finite and nonsingular: {bool(finite)}"])


def c6(v):
    cid, claim, paper = "C6", "Lorenz: CV of L across seeds, sparse k=4 vs full RTRL", "13 % vs 88 %"
    e = v.get("lorenz_vanilla")
    if e is None or not e.complete(K4, FULL):
        return missing(cid, claim, paper, v, ("lorenz_vanilla",))
    cv_s = 100 * coefficient_of_variation(e.L(K4))
    cv_f = 100 * coefficient_of_variation(e.L(FULL))
    div_s, div_f = sum(e.diverged(K4)), sum(e.diverged(FULL))
    rule = ("reproduced: CV(full) ≥ 2 × CV(sparse) (full RTRL markedly less stable across seeds), "
            "counting a diverged full-RTRL run as instability; partly: CV(full) > CV(sparse); "
            "not reproduced: otherwise")
    if (div_f > div_s) or (math.isfinite(cv_f) and cv_f >= 2 * cv_s):
        verdict = "reproduced"
    elif cv_f > cv_s:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    s = Summary(cv_s, math.nan, (math.nan, math.nan), len(e.seeds()), len(e.seeds()), 0, div_s)
    details = [f"CV({m.label}) = {100 * coefficient_of_variation(e.L(m)):.1f} %, diverged {sum(e.diverged(m))}"
               for m in LORENZ_SPREAD if e.complete(m)]
    details.append(f"recovery of {K4.label}: {fmt(e.recovery_summary(K4))}")
    return ClaimResult(cid, claim, paper, verdict, rule, s,
                       f"{cv_s:.0f} % vs {cv_f:.0f} % (diverged: {div_s} vs {div_f})", details)


def c7(v):
    cid, claim, paper = "C7", "LSTM: sparse k=4 vs full RTRL", "matches"
    e = v.get("sine_lstm")
    if e is None or not e.complete(FROZEN_MODEL, FULL, K4):
        return missing(cid, claim, paper, v, ("sine_lstm",))
    s = e.recovery_summary(K4)
    rule = ("reproduced: mean recovery ≥ 90 % or the 95 % CI reaches 100 %; partly: mean ≥ 70 %; "
            "not reproduced: otherwise")
    if s.n_scored and (s.mean >= 90 or s.ci95[1] >= 100):
        verdict = "reproduced"
    elif s.n_scored and s.mean >= 70:
        verdict = "partly"
    else:
        verdict = "inconclusive" if not s.n_scored else "not reproduced"
    return ClaimResult(cid, claim, paper, verdict, rule, s, fmt(s),
                       [f"immediate (k = 0): {fmt(e.recovery_summary(IMMEDIATE))}"])


def _gain(e: ExperimentView, method) -> float:
    """Mean relative improvement over the frozen model, (L_frozen − L_m)/L_frozen."""
    g = [(f - m) / f for f, m in zip(e.L(FROZEN_MODEL), e.L(method)) if math.isfinite(m) and f > 0]
    return float(np.mean(g)) if g else math.nan


def c10(v):
    cid, claim, paper = "C10", "error only at sequence end: all RTRL variants degrade", "degrade"
    e, ref = v.get("adding_vanilla"), v.get("sine_vanilla")
    methods = (IMMEDIATE, K4, FULL)
    if e is None or ref is None or not e.complete(FROZEN_MODEL, *methods) or not ref.complete(FROZEN_MODEL, *methods):
        return missing(cid, claim, paper, v, ("adding_vanilla", "sine_vanilla"))
    rule = ("gain G = (L_frozen − L)/L_frozen; reproduced: for every RTRL variant (immediate, sparse "
            "k=4, full) G on the end-of-sequence task < half its G with a continuous error (sine); "
            "partly: for some; not reproduced: for none")
    pairs = {m.label: (_gain(e, m), _gain(ref, m)) for m in methods}
    worse = [l for l, (a, b) in pairs.items() if a < 0.5 * b]
    verdict = "reproduced" if len(worse) == len(methods) else "partly" if worse else "not reproduced"
    s = e.recovery_summary(K4)
    details = [f"{l}: G = {100 * a:.1f} % end-of-sequence vs {100 * b:.1f} % continuous" for l, (a, b) in pairs.items()]
    details.append(f"recovery of {K4.label} on the adding task: {fmt(s)}")
    return ClaimResult(cid, claim, paper, verdict, rule, s,
                       ", ".join(f"{l} {100 * a:.0f} vs {100 * b:.0f} %" for l, (a, b) in pairs.items()), details)


def c11(v):
    cid, claim, paper = "C11", "SGD instead of Adam, sparse k=4: recovery", "92 ± 1 %"
    e = v.get("sine_vanilla_sgd")
    if e is None or not e.complete(FROZEN_MODEL, FULL, K4):
        return missing(cid, claim, paper, v, ("sine_vanilla_sgd",))
    s = e.recovery_summary(K4)
    return ClaimResult(cid, claim, paper, numeric_verdict(s, *C11_RECOVERY), NUMERIC_RULE, s, fmt(s),
                       [f"immediate (k = 0) under SGD: {fmt(e.recovery_summary(IMMEDIATE))}"])


def c12(v):
    cid, claim = "C12", "follow-up: k = 0 with Adam in float64 matches full RTRL; fails with SGD or a λ = 0.95 trace"
    paper = "matches / 0–18 %"
    rows, ok = {}, True
    for opt in ("adam", "sgd", "rmsprop"):
        e = v.get(f"followup_{opt}")
        for dtype in ("float32", "float64"):
            full = in_dtype(FULL, dtype)
            for base in FOLLOWUP:
                method = in_dtype(base, dtype)
                if e is None or not e.complete(FROZEN_MODEL, full, method):
                    ok = False
                    continue
                rows[(opt, dtype, base.label)] = e.recovery_summary(method, full=full)
    if not ok:
        return missing(cid, claim, paper, v, ("followup_adam", "followup_sgd", "followup_rmsprop"))
    rule = ("reproduced: immediate with Adam in float64 ≥ 80 % recovery, and immediate with SGD and "
            "the λ = 0.95 trace (every optimizer) ≤ 30 %; partly: one of the two halves holds; "
            "not reproduced: neither")
    imm, tr = (m.label for m in FOLLOWUP)
    match = rows[("adam", "float64", imm)].mean >= 80
    fails = all(rows[("sgd", d, imm)].mean <= 30 for d in ("float32", "float64")) and all(
        s.mean <= 30 for (o, d, r), s in rows.items() if r == tr)
    verdict = "reproduced" if match and fails else "partly" if match or fails else "not reproduced"
    details = [f"{r} · {o} · {d}: {fmt(s)}" for (o, d, r), s in rows.items()]
    key = rows[("adam", "float64", imm)]
    return ClaimResult(cid, claim, paper, verdict, rule, key,
                       f"Adam/float64 k=0: {key.mean:.0f} %; SGD k=0: "
                       f"{rows[('sgd', 'float64', imm)].mean:.0f} %; {tr} (Adam, f64): "
                       f"{rows[('adam', 'float64', tr)].mean:.0f} %", details)


CLAIMS = (c1, c2, c3, c4, c5, c6, c7, c10, c11, c12)


def claims(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult]:
    """This family's rows, each counting the diverged runs of every method it read."""
    return [counting_divergence(lambda: f(views), *views.values()) for f in CLAIMS]


def figures(views: dict[str, ExperimentView], figs: Path) -> list[tuple[str, str]]:
    """This family's figures under ``figs``, as (title, relative path) pairs."""
    figures = []

    def add(title, name):
        if name:
            figures.append((title, f"figures/{name}"))

    main = views.get("sine_vanilla")
    if main:
        add("Recovery vs k", plots.recovery_vs_k(main, figs / "recovery_vs_k.png"))
        add("Selection strategies and mask options (k = 4)", plots.recovery_bars(
            main, [K4, *SELECTION], figs / "selection.png", "Selection strategies (k = 4)"))
        add("Baselines", plots.recovery_bars(
            main, [IMMEDIATE, *BASELINES, K4, READOUT_ONLY], figs / "baselines.png", "Approximations and baselines"))
        add("Learning curves around the shift", plots.curves(
            main, [FROZEN_MODEL, READOUT_ONLY, IMMEDIATE, sparse(1), K4, FULL], figs / "curves.png"))
        add("Jacobian condition numbers", plots.condition_histogram(main, figs / "condition_numbers.png"))
    rows = []
    for name, n in (("sine_vanilla", 64), ("sine_vanilla_n128", 128), ("sine_vanilla_n256", 256)):
        v = views.get(name)
        if v and v.complete(FROZEN_MODEL, FULL, K4):
            rows.append((n, v.recoveries(K4)))
    add("Recovery vs n", plots.recovery_vs_n(rows, figs / "recovery_vs_n.png"))
    lor = views.get("lorenz_vanilla")
    if lor:
        add("Lorenz: loss spread per method", plots.loss_spread(
            lor, list(LORENZ_SPREAD), figs / "lorenz_spread.png"))
    return figures
