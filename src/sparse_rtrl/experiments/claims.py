"""The paper's claims (SPEC §5), how each is measured from the sweep's results, and the
written rule that turns a measurement into a verdict. Paper figures are for side-by-side
reporting only: nothing here feeds back into any run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .metrics import Summary, coefficient_of_variation, recovery, summarize

NUMERIC_RULE = (
    "reproduced: the paper's mean lies inside our 95 % CI, or our mean lies within the paper's "
    "± std, with no diverged or undefined seed; partly: our mean lies within 2 paper std (+ our "
    "CI half-width) of the paper's mean, or the reproduced condition holds but some seed "
    "diverged or was undefined; not reproduced: otherwise"
)


@dataclass
class ClaimResult:
    id: str
    claim: str
    paper: str
    verdict: str
    rule: str
    summary: Summary | None = None
    measured: str = ""
    details: list[str] = field(default_factory=list)
    diverged_runs: dict[str, int] | None = None
    """Diverged runs of every method the row read (label → count; "experiment: label" when
    it read several experiments); None: not tracked, the summary's count stands."""

    @property
    def n_diverged(self) -> int | None:
        """Diverged runs over every method the row reads (not only the summarised one)."""
        if self.diverged_runs is not None:
            return sum(self.diverged_runs.values())
        return self.summary.n_diverged if self.summary else None

    def to_json(self) -> dict:
        s = self.summary
        nan = float("nan")
        n_div = self.n_diverged
        return {
            "id": self.id,
            "claim": self.claim,
            "paper": self.paper,
            "measured": self.measured,
            "measured_mean": s.mean if s else nan,
            "measured_std": s.std if s else nan,
            "ci95": list(s.ci95) if s else [nan, nan],
            "n_seeds": s.n_seeds if s else 0,
            "n_diverged": n_div if n_div is not None else 0,
            "diverged_by_method": dict(self.diverged_runs or {}),
            "n_undefined": s.n_undefined if s else 0,
            "verdict": self.verdict,
            "rule": self.rule,
        }


class ExperimentView:
    """Per-seed numbers of one experiment's evaluation runs."""

    def __init__(self, entry: dict):
        self.entry = entry
        self.config = entry["config"]
        self.runs = entry["methods"]
        #: the methods whose numbers were read (by L, diverged, recoveries): what a claim row used
        self.read: set[str] = set()

    def has(self, label: str) -> bool:
        return bool(self.runs.get(label))

    def seeds(self) -> list[int]:
        return list(self.config.seeds)

    def L(self, label: str, key: str = "L") -> list[float]:
        self.read.add(label)
        runs = self.runs.get(label, {})
        return [runs[s][key] if s in runs else math.nan for s in self.seeds()]

    def diverged(self, label: str) -> list[bool]:
        self.read.add(label)
        runs = self.runs.get(label, {})
        return [bool(runs[s]["diverged"]) if s in runs else False for s in self.seeds()]

    def recoveries(self, label: str, reference: str = "frozen", full: str = "full") -> list[float | None]:
        return [recovery(a, m, f) for a, m, f in zip(self.L(reference), self.L(label), self.L(full))]

    def recovery_summary(self, label: str, reference: str = "frozen", full: str = "full") -> Summary:
        return summarize(self.recoveries(label, reference, full), self.diverged(label))

    def complete(self, *labels: str) -> bool:
        return all(len(self.runs.get(l, {})) == len(self.seeds()) for l in labels)


def diverged_runs(views) -> dict[str, int]:
    """label → diverged runs, for every method read from ``views`` (in the experiments'
    method order; labels prefixed by the experiment when several were read)."""
    views = [e for e in views if e.read]
    out = {}
    for e in views:
        for m in e.config.methods:
            if m.label in e.read:
                runs = e.runs.get(m.label, {})
                key = m.label if len(views) == 1 else f"{e.config.name}: {m.label}"
                out[key] = sum(bool(runs[s]["diverged"]) for s in e.seeds() if s in runs)
    return out


def counting_divergence(build, *views):
    """``build()``'s row(s), each given the diverged runs of every method it read from ``views``."""
    for e in views:
        e.read.clear()
    result = build()
    rows = result if isinstance(result, list) else [result]
    tally = diverged_runs(views)
    for row in rows:
        if row.diverged_runs is None and row.summary is not None:
            row.diverged_runs = tally
    return result


def fmt(s: Summary | None, unit: str = " %") -> str:
    if s is None or s.n_scored == 0:
        return "undefined"
    text = f"{s.mean:.1f} ± {s.std:.1f}{unit}"
    extra = []
    if s.n_undefined:
        extra.append(f"{s.n_undefined} undefined")
    if s.n_diverged:
        extra.append(f"{s.n_diverged} diverged")
    return text + (f" ({', '.join(extra)})" if extra else "")


def numeric_verdict(s: Summary, mean: float, std: float) -> str:
    if s.n_scored == 0:
        return "inconclusive"
    lo, hi = s.ci95
    half = (hi - lo) / 2 if math.isfinite(hi - lo) else 0.0
    close = lo <= mean <= hi or abs(s.mean - mean) <= std
    clean = s.n_diverged == 0 and s.n_undefined == 0
    if close and clean:
        return "reproduced"
    if close or abs(s.mean - mean) <= 2 * std + half:
        return "partly"
    return "not reproduced"


NOT_REQUESTED = "not requested"


@dataclass(frozen=True)
class Request:
    """What a sweep was asked to run: ``only`` holds the words of ``--only`` (experiment names
    or claim ids), None for everything. A claim row whose experiment is not in the sweep says
    "not requested" when the request left it out, "data absent" when it asked for it."""

    only: frozenset[str] | None = None
    inferred: bool = False
    """True when the sweep did not record its request and ``only`` was inferred from what ran."""

    def includes(self, name: str, claim_ids=()) -> bool:
        return self.only is None or name in self.only or bool(self.only & set(claim_ids))


# -- one function per claim: (views by experiment name) -> ClaimResult -----------------------
def not_requested(cid: str, claim: str, paper: str, names, hint: str = "") -> ClaimResult:
    """The row of a claim none of whose experiments was part of the sweep (``--only``)."""
    why = (f"{', '.join(names)} {'was' if len(names) == 1 else 'were'} not part of this sweep "
           f"(not requested with --only{hint})")
    return ClaimResult(cid, claim, paper, NOT_REQUESTED, why, measured=NOT_REQUESTED)


def _missing(cid: str, claim: str, paper: str, v=None, needs=(), why: str = "not yet measured") -> ClaimResult:
    """"not requested" if an experiment the claim needs (``needs``) is not in the sweep ``v``,
    so this sweep can never measure it; else "not yet measured" (not finished, or ``why``)."""
    absent = [name for name in needs if v is not None and name not in v]
    if absent:
        return not_requested(cid, claim, paper, absent)
    return ClaimResult(cid, claim, paper, "not yet measured", why)


def c1(v):
    cid, claim, paper = "C1", "sparse k=4 of n=64, vanilla RNN: recovery vs full RTRL", "84 ± 6 %"
    e = v.get("sine_vanilla")
    if e is None or not e.complete("frozen", "full", "sparse k=4"):
        return _missing(cid, claim, paper, v, ("sine_vanilla",))
    s = e.recovery_summary("sparse k=4")
    imm = e.recovery_summary("sparse k=4", reference="immediate")
    details = [f"recovery relative to the immediate rule: {fmt(imm)}"]
    # the references say how much of the recovery needs gradient through the recurrence at all
    details += [f"{what}: {fmt(e.recovery_summary(label))}"
                for label, what in (("immediate", "immediate (k = 0)"), ("readout", "readout only (cell frozen)"))
                if e.complete(label)]
    return ClaimResult(cid, claim, paper, numeric_verdict(s, 84, 6), NUMERIC_RULE, s, fmt(s), details)


def c2(v):
    cid, claim, paper = "C2", "k=4 as n grows (n = 64 → 128 → 256)", "84 → 78 %"
    rows, last = [], None
    for name, n in (("sine_vanilla", 64), ("sine_vanilla_n128", 128), ("sine_vanilla_n256", 256)):
        e = v.get(name)
        if e is None or not e.complete("frozen", "full", "sparse k=4"):
            continue
        last = e.recovery_summary("sparse k=4")
        rows.append((n, last))
    if len(rows) < 2:
        return _missing(cid, claim, paper, v, ("sine_vanilla", "sine_vanilla_n128"))  # n = 256: paper only
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
    labels = ("sparse k=4", "sparse k=4 magnitude", "sparse k=4 adversarial")
    if e is None or not e.complete("frozen", "full", *labels):
        return _missing(cid, claim, paper, v, ("sine_vanilla",))
    sums = {l: e.recovery_summary(l) for l in labels}
    means = [s.mean for s in sums.values()]
    spread = max(means) - min(means)
    rule = ("reproduced: the largest difference between the three mean recoveries ≤ 10 points; "
            "partly: ≤ 20 points; not reproduced: otherwise")
    verdict = "reproduced" if spread <= 10 else "partly" if spread <= 20 else "not reproduced"
    details = [f"{l.replace('sparse k=4', 'random') if l == 'sparse k=4' else l}: {fmt(s)}" for l, s in sums.items()]
    for extra in ("sparse k=4 column", "sparse k=4 fixed mask", "sparse k=4 rescaled"):
        if e.complete(extra):
            details.append(f"{extra}: {fmt(e.recovery_summary(extra))}")
    return ClaimResult(cid, claim, paper, verdict, rule, sums["sparse k=4"],
                       f"spread {spread:.1f} points (" + ", ".join(f"{m:.0f}" for m in means) + " %)", details)


def c4(v):
    cid, claim, paper = "C4", "step function: k = 0 vs any k ≥ 1", "0 → high"
    e = v.get("sine_vanilla")
    if e is None or not e.complete("frozen", "full", "immediate"):
        return _missing(cid, claim, paper, v, ("sine_vanilla",))
    ks = [k for k in (1, 2, 4, 8, 16, 32) if e.complete(f"sparse k={k}")]
    zero = e.recovery_summary("immediate")
    rows = {k: e.recovery_summary(f"sparse k={k}") for k in ks}
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
    if e is None or not e.complete("full"):
        return _missing(cid, claim, paper, v, ("sine_vanilla",))
    per_seed = [np.asarray(e.runs["full"][s]["condition_numbers"]) for s in e.seeds()]
    if not all(c.size for c in per_seed):
        return _missing(cid, claim, paper, why="no condition numbers were recorded")
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
    if e is None or not e.complete("sparse k=4", "full"):
        return _missing(cid, claim, paper, v, ("lorenz_vanilla",))
    cv_s = 100 * coefficient_of_variation(e.L("sparse k=4"))
    cv_f = 100 * coefficient_of_variation(e.L("full"))
    div_s, div_f = sum(e.diverged("sparse k=4")), sum(e.diverged("full"))
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
    details = [f"CV({l}) = {100 * coefficient_of_variation(e.L(l)):.1f} %, diverged {sum(e.diverged(l))}"
               for l in ("frozen", "readout", "immediate", "sparse k=4", "full") if e.complete(l)]
    details.append(f"recovery of sparse k=4: {fmt(e.recovery_summary('sparse k=4'))}")
    return ClaimResult(cid, claim, paper, verdict, rule, s,
                       f"{cv_s:.0f} % vs {cv_f:.0f} % (diverged: {div_s} vs {div_f})", details)


def c7(v):
    cid, claim, paper = "C7", "LSTM: sparse k=4 vs full RTRL", "matches"
    e = v.get("sine_lstm")
    if e is None or not e.complete("frozen", "full", "sparse k=4"):
        return _missing(cid, claim, paper, v, ("sine_lstm",))
    s = e.recovery_summary("sparse k=4")
    rule = ("reproduced: mean recovery ≥ 90 % or the 95 % CI reaches 100 %; partly: mean ≥ 70 %; "
            "not reproduced: otherwise")
    if s.n_scored and (s.mean >= 90 or s.ci95[1] >= 100):
        verdict = "reproduced"
    elif s.n_scored and s.mean >= 70:
        verdict = "partly"
    else:
        verdict = "inconclusive" if not s.n_scored else "not reproduced"
    return ClaimResult(cid, claim, paper, verdict, rule, s, fmt(s),
                       [f"immediate (k = 0): {fmt(e.recovery_summary('immediate'))}"])


def _gain(e: ExperimentView, label: str) -> float:
    """Mean relative improvement over the frozen model, (L_frozen − L_m)/L_frozen."""
    g = [(f - m) / f for f, m in zip(e.L("frozen"), e.L(label)) if math.isfinite(m) and f > 0]
    return float(np.mean(g)) if g else math.nan


def c10(v):
    cid, claim, paper = "C10", "error only at sequence end: all RTRL variants degrade", "degrade"
    e, ref = v.get("adding_vanilla"), v.get("sine_vanilla")
    labels = ("immediate", "sparse k=4", "full")
    if e is None or ref is None or not e.complete("frozen", *labels) or not ref.complete("frozen", *labels):
        return _missing(cid, claim, paper, v, ("adding_vanilla", "sine_vanilla"))
    rule = ("gain G = (L_frozen − L)/L_frozen; reproduced: for every RTRL variant (immediate, sparse "
            "k=4, full) G on the end-of-sequence task < half its G with a continuous error (sine); "
            "partly: for some; not reproduced: for none")
    pairs = {l: (_gain(e, l), _gain(ref, l)) for l in labels}
    worse = [l for l, (a, b) in pairs.items() if a < 0.5 * b]
    verdict = "reproduced" if len(worse) == len(labels) else "partly" if worse else "not reproduced"
    s = e.recovery_summary("sparse k=4")
    details = [f"{l}: G = {100 * a:.1f} % end-of-sequence vs {100 * b:.1f} % continuous" for l, (a, b) in pairs.items()]
    details.append(f"recovery of sparse k=4 on the adding task: {fmt(s)}")
    return ClaimResult(cid, claim, paper, verdict, rule, s,
                       ", ".join(f"{l} {100 * a:.0f} vs {100 * b:.0f} %" for l, (a, b) in pairs.items()), details)


def c11(v):
    cid, claim, paper = "C11", "SGD instead of Adam, sparse k=4: recovery", "92 ± 1 %"
    e = v.get("sine_vanilla_sgd")
    if e is None or not e.complete("frozen", "full", "sparse k=4"):
        return _missing(cid, claim, paper, v, ("sine_vanilla_sgd",))
    s = e.recovery_summary("sparse k=4")
    return ClaimResult(cid, claim, paper, numeric_verdict(s, 92, 1), NUMERIC_RULE, s, fmt(s),
                       [f"immediate (k = 0) under SGD: {fmt(e.recovery_summary('immediate'))}"])


def c12(v):
    cid, claim = "C12", "follow-up: k = 0 with Adam in float64 matches full RTRL; fails with SGD or a λ = 0.95 trace"
    paper = "matches / 0–18 %"
    rows, ok = {}, True
    for opt in ("adam", "sgd", "rmsprop"):
        e = v.get(f"followup_{opt}")
        for dtype in ("float32", "float64"):
            for rule_label in ("immediate", "trace 0.95"):
                label = f"{rule_label} {dtype}"
                if e is None or not e.complete("frozen", f"full {dtype}", label):
                    ok = False
                    continue
                rows[(opt, dtype, rule_label)] = e.recovery_summary(label, full=f"full {dtype}")
    if not ok:
        return _missing(cid, claim, paper, v, ("followup_adam", "followup_sgd", "followup_rmsprop"))
    rule = ("reproduced: immediate with Adam in float64 ≥ 80 % recovery, and immediate with SGD and "
            "the λ = 0.95 trace (every optimizer) ≤ 30 %; partly: one of the two halves holds; "
            "not reproduced: neither")
    match = rows[("adam", "float64", "immediate")].mean >= 80
    fails = all(rows[("sgd", d, "immediate")].mean <= 30 for d in ("float32", "float64")) and all(
        s.mean <= 30 for (o, d, r), s in rows.items() if r == "trace 0.95")
    verdict = "reproduced" if match and fails else "partly" if match or fails else "not reproduced"
    details = [f"{r} · {o} · {d}: {fmt(s)}" for (o, d, r), s in rows.items()]
    key = rows[("adam", "float64", "immediate")]
    return ClaimResult(cid, claim, paper, verdict, rule, key,
                       f"Adam/float64 k=0: {key.mean:.0f} %; SGD k=0: "
                       f"{rows[('sgd', 'float64', 'immediate')].mean:.0f} %; trace 0.95 (Adam, f64): "
                       f"{rows[('adam', 'float64', 'trace 0.95')].mean:.0f} %", details)


def evaluate_claims(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult]:
    """Every claim's rows; ``request`` (what the sweep was asked for; None: unknown) tells C9's
    real-data rows "not requested" from "data absent"."""
    from . import bci, transformer_c8  # they import this module

    claims = (c1, c2, c3, c4, c5, c6, c7, transformer_c8.claim, bci.claim, c10, c11, c12)
    out: list[ClaimResult] = []
    for f in claims:  # a claim measured in several settings returns one row per setting
        if f is bci.claim:  # its rows each count their own experiment's divergences
            result = bci.claim(views, request)
        else:
            result = counting_divergence(lambda: f(views), *views.values())
        out.extend(result if isinstance(result, list) else [result])
    return out
