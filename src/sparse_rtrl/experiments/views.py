"""The vocabulary every claim family shares: per-experiment views of the result files, a
claim's result row, the verdict helpers and what the sweep was asked to run. A leaf: it
imports nothing of the experiments but the metrics and the methods."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import Method
from .methods import FROZEN_MODEL, FULL
from .metrics import Summary, recovery, summarize

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
    extra: dict = field(default_factory=dict)
    """Further keys of the row's claims.json entry (e.g. T0's ``readout_mean``, ``full_gain``)."""

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
            **self.extra,
        }


class ExperimentView:
    """Per-seed numbers of one experiment's evaluation runs. Every accessor takes the method
    it reads as a ``Method`` (``methods.K4``, ``methods.sparse(k)``, one of ``config.methods``);
    a label (str) is accepted at the edge, where it comes from a result file."""

    def __init__(self, entry: dict):
        self.entry = entry
        self.config = entry["config"]
        #: label → seed → run record, as stored in the result files
        self.runs = entry["methods"]
        #: the methods whose numbers were read (by L, diverged, recoveries): what a claim row used
        self.read: set[str] = set()

    def label(self, method: Method | str) -> str:
        """The label under which ``method``'s runs are stored (every accessor goes through it)."""
        return method.label if isinstance(method, Method) else method

    def runs_of(self, method: Method | str) -> dict:
        """seed → run record of ``method`` (empty if it never ran); not counted as read."""
        return self.runs.get(self.label(method), {})

    def has(self, method: Method | str) -> bool:
        return bool(self.runs_of(method))

    def seeds(self) -> list[int]:
        return list(self.config.seeds)

    def L(self, method: Method | str, key: str = "L") -> list[float]:
        self.read.add(self.label(method))
        runs = self.runs_of(method)
        return [runs[s][key] if s in runs else math.nan for s in self.seeds()]

    def diverged(self, method: Method | str) -> list[bool]:
        self.read.add(self.label(method))
        runs = self.runs_of(method)
        return [bool(runs[s]["diverged"]) if s in runs else False for s in self.seeds()]

    def recoveries(self, method: Method | str, reference: Method | str = FROZEN_MODEL,
                   full: Method | str = FULL) -> list[float | None]:
        return [recovery(a, m, f) for a, m, f in zip(self.L(reference), self.L(method), self.L(full))]

    def recovery_summary(self, method: Method | str, reference: Method | str = FROZEN_MODEL,
                         full: Method | str = FULL) -> Summary:
        return summarize(self.recoveries(method, reference, full), self.diverged(method))

    def complete(self, *methods: Method | str) -> bool:
        return all(len(self.runs_of(m)) == len(self.seeds()) for m in methods)


def diverged_runs(views) -> dict[str, int]:
    """label → diverged runs, for every method read from ``views`` (in the experiments'
    method order; labels prefixed by the experiment when several were read)."""
    views = [e for e in views if e.read]
    out = {}
    for e in views:
        for m in e.config.methods:
            if m.label in e.read:
                runs = e.runs_of(m)
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


def not_requested(cid: str, claim: str, paper: str, names, hint: str = "") -> ClaimResult:
    """The row of a claim none of whose experiments was part of the sweep (``--only``)."""
    why = (f"{', '.join(names)} {'was' if len(names) == 1 else 'were'} not part of this sweep "
           f"(not requested with --only{hint})")
    return ClaimResult(cid, claim, paper, NOT_REQUESTED, why, measured=NOT_REQUESTED)


def missing(cid: str, claim: str, paper: str, v=None, needs=(), why: str = "not yet measured") -> ClaimResult:
    """"not requested" if an experiment the claim needs (``needs``) is not in the sweep ``v``,
    so this sweep can never measure it; else "not yet measured" (not finished, or ``why``)."""
    absent = [name for name in needs if v is not None and name not in v]
    if absent:
        return not_requested(cid, claim, paper, absent)
    return ClaimResult(cid, claim, paper, "not yet measured", why)


#: C3's written rule on the spread of mean recoveries across selection strategies
SPREAD_RULE = ("reproduced: the largest difference between the mean recoveries ≤ 10 points; "
               "partly: ≤ 20 points; not reproduced: otherwise")


def spread_verdict(means) -> tuple[float, str]:
    """(max − min of the mean recoveries, its verdict by :data:`SPREAD_RULE`)."""
    spread = max(means) - min(means)
    return spread, "reproduced" if spread <= 10 else "partly" if spread <= 20 else "not reproduced"
