"""Claim rows built from hand-made results: the diverged count covers every method a row
reads, and a claim left out of the sweep says "not requested", apart from "data absent"."""

import math

import pytest

from sparse_rtrl.experiments import experiments
from sparse_rtrl.experiments.families import evaluate_claims
from sparse_rtrl.experiments.views import ExperimentView, Request
from sparse_rtrl.experiments.report import _diverged_cell, request_of


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    empty = tmp_path_factory.mktemp("no_data")  # no recording: the data-free experiments only
    return {e.name: e for e in experiments("quick", data_dir=str(empty))}


def view(exp, L, diverged=()):
    """Every method of ``exp`` with loss L[label] (default 1.5) on every seed; the labels in
    ``diverged`` diverged on every seed (L = inf, as the runner stores them)."""
    runs = {}
    for m in exp.methods:
        bad = m.label in diverged
        value = math.inf if bad else L.get(m.label, 1.5)
        runs[m.label] = {s: {"L": value, "L_end": value, "diverged": bad, "L_pre_shift": 1.0,
                             "condition_numbers": [3.0, 4.0]} for s in exp.seeds}
    return ExperimentView({"config": exp, "methods": runs})


def rows(views, request=None):
    return {c.id: c for c in evaluate_claims(views, request)}


def test_c3_counts_the_divergence_of_every_method_it_reads(quick, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSE_RTRL_DATA", str(tmp_path))
    e = view(quick["sine_vanilla"], {"frozen": 2.0, "full": 1.0}, diverged=("sparse k=4 rescaled",))
    c3 = rows({"sine_vanilla": e})["C3"]
    n = len(quick["sine_vanilla"].seeds)
    # the summarised method (random k = 4) did not diverge; the rescaled one, read for the
    # details, diverged on every seed: the row says so (it said 0 before)
    assert c3.summary.n_diverged == 0
    assert c3.n_diverged == n and c3.to_json()["n_diverged"] == n
    assert c3.diverged_runs["sparse k=4 rescaled"] == n and c3.diverged_runs["sparse k=4"] == 0
    assert _diverged_cell(c3) == f"{n} (sparse k=4 rescaled {n})"
    # a row that reads no diverged method shows 0, and each row counts only what it read
    c1 = rows({"sine_vanilla": e})["C1"]
    assert "sparse k=4 rescaled" not in c1.diverged_runs and c1.n_diverged == 0


def test_claims_left_out_of_the_sweep_say_not_requested(quick, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSE_RTRL_DATA", str(tmp_path))  # real data absent
    views = {"bci_synthetic": view(quick["bci_synthetic"], {"frozen": 2.0, "full": 1.0})}
    only_synthetic = rows(views, Request(frozenset({"bci_synthetic"})))
    for cid in ("C9-chewie", "C9-stevenson", "C1", "C6", "C8", "C12"):
        assert only_synthetic[cid].verdict == "not requested", cid
        assert only_synthetic[cid].measured == "not requested"
    assert only_synthetic["C9"].verdict not in ("not requested", "not yet measured")
    # asked for C9 as a whole: the real settings' data is genuinely absent
    asked = rows(views, Request(frozenset({"C9"})))
    for cid in ("C9-chewie", "C9-stevenson"):
        assert asked[cid].verdict == "not measured" and asked[cid].measured == "data absent"
        assert "SPARSE_RTRL_DATA" in asked[cid].rule
    assert asked["C1"].verdict == "not requested"
    # no C9 experiment at all
    assert rows({})["C9"].verdict == "not requested"


def test_the_request_is_read_from_the_sweep_or_inferred_from_its_profile(quick):
    always = set(quick)
    assert request_of({"profile": "quick", "only": ["C9"]}, ["bci_synthetic"]) == Request(frozenset({"C9"}))
    assert request_of({"profile": "quick", "only": "C1, C6"}, []) == Request(frozenset({"C1", "C6"}))
    assert request_of({"profile": "quick", "only": None}, []) == Request(None)
    assert request_of({"profile": "quick"}, always) == Request(None, inferred=True)  # no --only: all asked
    assert request_of({"profile": "quick"}, ["bci_synthetic"]) == Request(frozenset({"bci_synthetic"}), inferred=True)
    assert request_of({"profile": "test"}, []) is None  # unknown profile: cannot tell
    assert Request(frozenset({"C9"})).includes("bci_chewie", ("C9", "C9-chewie"))
    assert not Request(frozenset({"bci_synthetic"})).includes("bci_chewie", ("C9", "C9-chewie"))


def test_an_inferred_request_still_says_where_the_data_goes(quick, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSE_RTRL_DATA", str(tmp_path))
    views = {"bci_synthetic": view(quick["bci_synthetic"], {"frozen": 2.0, "full": 1.0})}
    row = rows(views, Request(frozenset({"bci_synthetic"}), inferred=True))["C9-chewie"]
    assert row.verdict == "not requested" and "SPARSE_RTRL_DATA" in row.rule
    recorded = rows(views, Request(frozenset({"bci_synthetic"})))["C9-chewie"]
    assert "SPARSE_RTRL_DATA" not in recorded.rule  # the sweep said what it was asked for


def test_the_sweep_records_what_only_asked_for(tmp_path):
    from sparse_rtrl.experiments import Sweep
    from sparse_rtrl.experiments.runner import read_json

    Sweep(tmp_path / "a", [], only=["C9", "C1"], progress=False).run()
    Sweep(tmp_path / "b", [], progress=False).run()
    assert read_json(tmp_path / "a" / "sweep.json")["only"] == ["C1", "C9"]
    assert request_of(read_json(tmp_path / "a" / "sweep.json"), []) == Request(frozenset({"C1", "C9"}))
    assert read_json(tmp_path / "b" / "sweep.json")["only"] is None


class Recording(ExperimentView):
    """A view that notes every method reference a reader hands it (through ``label``)."""

    def __init__(self, entry: dict, asked: list):
        super().__init__(entry)
        self.asked = asked

    def label(self, method):
        self.asked.append((self.config.name, method))
        return super().label(method)


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_every_claim_row_is_measurable_from_its_profile(profile, tmp_path, monkeypatch):
    """Complete hand-made results for every experiment a profile defines give every claim row
    a verdict: each label a row reads is a method of the experiment it reads (a renamed label
    would turn a row into "not yet measured" here). The rows on real recordings need data.

    And every method the claims and the figures read, the optional ones of the details
    included, is a ``Method`` object (no label typed out in a family) equal to one that a
    profile runs in that experiment (same label, rule, options, dtype); the report's tables
    read Methods too."""
    from test_credit_claims import with_alignment
    from sparse_rtrl.experiments.families import FAMILIES
    from sparse_rtrl.experiments.config import Method
    from sparse_rtrl.experiments.report import _method_table

    monkeypatch.setenv("SPARSE_RTRL_DATA", str(tmp_path))
    exps = experiments(profile, data_dir=str(tmp_path))
    defined = {}
    for p in ("quick", "paper"):
        for e in experiments(p, data_dir=str(tmp_path)):
            defined.setdefault(e.name, []).extend(e.methods)
    L = {"frozen": 1.0, **{m.label: 0.2 for e in exps for m in e.methods if m.rule == "full"}}
    asked = []
    views = {}
    for e in exps:
        v = with_alignment(view(e, L), {})
        for runs in v.runs.values():
            for r in runs.values():
                r["curve"] = [1.0, 0.5]
        views[e.name] = Recording(v.entry, asked)
    rows = evaluate_claims(views)
    unmeasured = {c.id: c.verdict for c in rows if c.verdict in ("not yet measured", "not requested")}
    assert not unmeasured, unmeasured
    assert {c.id for c in rows if c.measured.startswith("data absent")} == {"C9-chewie", "C9-stevenson"}
    assert len({c.id for c in rows}) == len(rows) == 22
    for family in FAMILIES:
        family.figures(views, tmp_path)
    read = list(asked)
    for v in views.values():  # the report's tables probe the references in any experiment
        _method_table(v)
    labels = [m for _, m in asked if not isinstance(m, Method)]
    assert not labels, f"read by a bare label, not a Method: {sorted(set(labels))}"
    undefined = {(name, m.label) for name, m in read if not any(m == d for d in defined[name])}
    assert not undefined, f"read, but no profile runs them (as built here): {sorted(undefined)}"
    assert len(read) > 1000
