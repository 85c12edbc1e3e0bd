"""The protocol end to end on a tiny sweep: metrics on hand-made curves, resumption after an
interruption, and a byte-identical report rebuilt from the result files."""

import json
import math

import pytest

from sparse_rtrl.experiments import Experiment, Method, Sweep
from sparse_rtrl.experiments.config import FROZEN, READOUT
from sparse_rtrl.experiments.executors import LocalExecutor
from sparse_rtrl.experiments.metrics import (bootstrap_ci, coefficient_of_variation, recovery,
                                             summarize, window_scores)
from sparse_rtrl.experiments.report import build_report
from sparse_rtrl.experiments.selection import choose_lr


# -- metrics on hand-made numbers ------------------------------------------------------------
def test_window_scores_mean_and_tail():
    L, L_end = window_scores([4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5])
    assert L == pytest.approx(1.5)
    assert L_end == pytest.approx(0.5)  # last 20 % = two steps
    assert window_scores([1.0, float("nan")]) == (math.inf, math.inf)


def test_recovery_closed_form_and_undefined_cases():
    assert recovery(L_ref=2.0, L_m=1.5, L_full=1.0) == pytest.approx(50.0)
    assert recovery(2.0, 0.8, 1.0) == pytest.approx(120.0)  # better than full RTRL
    assert recovery(2.0, 2.5, 1.0) == pytest.approx(-50.0)
    assert recovery(2.0, 1.9, 1.95) is None  # full RTRL gains only 2.5 % < 5 %: undefined
    assert recovery(2.0, 1.5, 2.1) is None  # full RTRL worse than frozen
    assert recovery(2.0, math.inf, 1.0) is None  # the method diverged
    assert recovery(2.0, 1.5, math.inf) is None  # full RTRL diverged


def test_summary_counts_undefined_and_diverged_seeds():
    s = summarize([80.0, None, 90.0, None], diverged=[False, False, False, True])
    assert s.mean == pytest.approx(85.0) and s.std == pytest.approx(math.sqrt(50))
    assert (s.n_seeds, s.n_scored, s.n_undefined, s.n_diverged) == (4, 2, 1, 1)
    assert s.ci95[0] >= 80.0 and s.ci95[1] <= 90.0


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_more_data():
    import numpy as np

    rng = np.random.default_rng(0)
    small, large = rng.normal(10, 2, 10), rng.normal(10, 2, 160)
    lo, hi = bootstrap_ci(small)
    lo2, hi2 = bootstrap_ci(large)
    assert lo < small.mean() < hi and lo2 < large.mean() < hi2
    assert (hi2 - lo2) < 0.5 * (hi - lo)  # ~1/√n: 16× the data, ~4× narrower
    assert bootstrap_ci(small) == bootstrap_ci(small)  # seeded


def test_coefficient_of_variation():
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)
    assert math.isnan(coefficient_of_variation([1.0]))


def test_learning_rate_rule_skips_diverging_rates():
    runs = {
        1e-3: [{"L": 0.5, "diverged": False}, {"L": 0.7, "diverged": False}],
        3e-3: [{"L": 0.2, "diverged": False}, {"L": 0.3, "diverged": False}],
        1e-2: [{"L": 0.1, "diverged": False}, {"L": math.inf, "diverged": True}],
    }
    lr, table = choose_lr("best_stable", runs)
    assert lr == 3e-3 and table[1e-2]["diverged"] == 1
    assert choose_lr("largest_stable", runs)[0] == 3e-3


# -- a tiny sweep end to end ----------------------------------------------------------------
def tiny() -> list[Experiment]:
    methods = (Method("frozen", FROZEN), Method("readout", READOUT), Method("immediate", "immediate"),
               Method("sparse k=4", "sparse", {"k": 4}), Method("full", "full"))
    return [Experiment(
        name="sine_vanilla", claims=("C1", "C4"), task="sine", task_options={}, cell="vanilla",
        hidden_size=8, methods=methods, pretrain_updates=30, pretrain_batch=4, pretrain_chunk=20,
        pre_shift_steps=20, adapt_steps=80, lr_grid=(1e-3, 1e-2), validation_seeds=(100,), seeds=(0, 1),
        diagnostics=("jacobian_spectrum",),
    )]


def run_sweep(out, limit=None):
    return Sweep(out, tiny(), executor=LocalExecutor(1), profile="test", progress=False).run(limit=limit)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert run_sweep(out)
    build_report(out)
    return out


def test_tiny_sweep_writes_results_report_and_claims(finished):
    runs = sorted(p.relative_to(finished).as_posix() for p in (finished / "runs").rglob("seed*.json"))
    assert len(runs) == 2 * 1 + 5 * 2  # validation: 2 rates × 1 seed; evaluation: 5 methods × 2 seeds
    r = json.loads((finished / "runs/sine_vanilla/full/seed0.json").read_text())
    assert r["result"]["condition_numbers"] and r["version"] and r["git_commit"]
    assert r["lr"] in (1e-3, 1e-2)
    claims = json.loads((finished / "claims.json").read_text())
    assert [c["id"] for c in claims] == [f"C{i}" for i in range(1, 13)] + [f"T{i}" for i in range(8)]
    for c in claims:
        assert {"id", "paper", "measured_mean", "measured_std", "ci95", "n_seeds", "n_diverged", "verdict"} <= set(c)
    c1 = claims[0]
    assert c1["n_seeds"] == 2 and c1["verdict"] != "not yet measured"
    report = (finished / "report.md").read_text()
    assert "| C1 |" in report and "| C12 |" in report and "figures/" in report
    assert (finished / "figures" / "curves.png").exists()


def test_report_rebuilds_byte_for_byte(finished):
    before = (finished / "report.md").read_bytes()
    claims = (finished / "claims.json").read_bytes()
    build_report(finished)
    assert (finished / "report.md").read_bytes() == before
    assert (finished / "claims.json").read_bytes() == claims


def test_interrupted_sweep_resumes_to_the_same_report(finished, tmp_path):
    assert not run_sweep(tmp_path, limit=3)  # "interrupted" after three runs
    done = set((tmp_path / "runs").rglob("seed*.json")) | set((tmp_path / "snapshots").rglob("*.pt"))
    assert len(done) == 3
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert run_sweep(tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished runs were not redone
    build_report(tmp_path)
    assert (tmp_path / "report.md").read_bytes() == (finished / "report.md").read_bytes()


def test_a_corrupt_result_file_is_redone(finished, tmp_path):
    import shutil

    shutil.copytree(finished, tmp_path / "copy")
    victim = tmp_path / "copy/runs/sine_vanilla/full/seed1.json"
    victim.write_text("{ truncated")
    assert run_sweep(tmp_path / "copy")
    assert json.loads(victim.read_text())["result"]["L"] > 0
    build_report(tmp_path / "copy")
    assert (tmp_path / "copy/report.md").read_bytes() == (finished / "report.md").read_bytes()


def test_identical_runs_of_two_experiments_are_done_once(tmp_path):
    from sparse_rtrl.experiments.jobs import PretrainJob
    from sparse_rtrl.experiments.runner import execute

    calls = []

    def counting(job):  # one call per run: a group job runs several seeds
        for _ in getattr(job, "seeds", None) or [job.seed]:
            calls.append(("pretrain" if isinstance(job, PretrainJob) else "adapt", job.experiment.name,
                          getattr(job, "method", None) and job.method.label))
        return execute(job)

    base = tiny()[0]
    twin = base.with_(name="sine_twin", claims=(), lr_reference="exact RTRL", methods=(
        Method("frozen", FROZEN), Method("exact RTRL", "full"), Method("sparse k=2", "sparse", {"k": 2})))
    Sweep(tmp_path, [base, twin], executor=LocalExecutor(1), progress=False, task=counting).run()
    adapt_runs = [c for c in calls if c[0] == "adapt"]
    # the twin's frozen and full runs (labels differ) repeat the base's: only sparse k=2 is new
    assert sum(1 for c in adapt_runs if c[1] == "sine_twin") == 2  # 2 seeds of sparse k=2
    a = json.loads((tmp_path / "runs/sine_vanilla/full/seed0.json").read_text())
    b = json.loads((tmp_path / "runs/sine_twin/exact RTRL/seed0.json").read_text())
    assert a["result"] == b["result"] and b["method"]["label"] == "exact RTRL" and b["experiment"] == "sine_twin"


# -- learning-rate rules: per method, and a grid that grows at its edge ------------------

def test_a_grid_grows_past_the_edge_it_chose_by_the_written_rule():
    from sparse_rtrl.experiments.selection import grow_grid

    L = {1e-4: 0.2, 3e-4: 0.3, 1e-3: 0.5, 3e-5: 0.1, 1e-5: 0.15}  # best at 3e-5: one step below 1e-4

    def results(lr):
        return None if lr not in L else [{"L": L[lr], "diverged": False}]

    # the smallest rate wins: 1e-4 · (1e-4 / 3e-4) = 3.33e-5 is added, then it wins again…
    grid, missing = grow_grid("best_stable", (1e-4, 3e-4, 1e-3), results, extend=2)
    assert grid == [3.33e-5, 1e-4, 3e-4, 1e-3] and missing == [3.33e-5]  # …once its run exists
    L[3.33e-5] = 0.1
    grid, missing = grow_grid("best_stable", (1e-4, 3e-4, 1e-3), results, extend=2)
    assert grid == [1.11e-5, 3.33e-5, 1e-4, 3e-4, 1e-3] and missing == [1.11e-5]
    L[1.11e-5] = 0.12  # 3.33e-5 is now inside the grid: the choice is final
    assert grow_grid("best_stable", (1e-4, 3e-4, 1e-3), results, extend=2) == ([1.11e-5, 3.33e-5, 1e-4, 3e-4, 1e-3], [])
    assert grow_grid("best_stable", (1e-4, 3e-4, 1e-3), results, extend=0)[0] == [1e-4, 3e-4, 1e-3]
    # the largest stable rate chosen at the top edge grows upwards by the top ratio
    up = {1e-4: 0.5, 3e-4: 0.3, 1e-3: 0.2}
    grid, missing = grow_grid("best_stable", (1e-4, 3e-4, 1e-3), lambda lr: [{"L": up[lr], "diverged": False}]
                              if lr in up else None, extend=1)
    assert grid == [1e-4, 3e-4, 1e-3, 3.33e-3] and missing == [3.33e-3]


def test_per_method_rates_are_chosen_on_each_methods_own_validation_runs(tmp_path):
    from sparse_rtrl.experiments.runner import read_json
    from sparse_rtrl.experiments.selection import choose_lr

    exp = tiny()[0].with_(lr_per_method=True, lr_extend=1, name="per_method")
    out = tmp_path / "sweep"
    assert Sweep(out, [exp], executor=LocalExecutor(1), profile="test", progress=False).run()
    record = read_json(out / "runs/per_method/lr.json")
    assert record["per_method"] and set(record["methods"]) == {"readout", "immediate", "sparse k=4", "full"}
    for label, choice in record["methods"].items():
        folder = out / "runs/per_method/validation" / label
        runs = {float(p.name[2:]): [read_json(p / "seed100.json")["result"]] for p in folder.iterdir()}
        assert len(runs) in (2, 3)  # the grid, grown once if its choice fell on an edge
        lr, _ = choose_lr("best_stable", runs)  # the written rule, applied here by hand
        assert choice["lr"] == lr
        if len(runs) == 3:
            assert min(runs) < 1e-3 or max(runs) > 1e-2
        for seed in exp.seeds:
            assert read_json(out / "runs/per_method" / label / f"seed{seed}.json")["lr"] == lr
    build_report(out)
    assert "chosen **per method**" in (out / "report.md").read_text()


def test_the_method_table_reports_recovery_against_readout_only(finished):
    """R_ro = 100·(L_readout − L_m)/(L_readout − L_full), per seed, as the report prints it."""
    from sparse_rtrl.experiments.metrics import summarize
    from sparse_rtrl.experiments.views import fmt

    runs = {label: [json.loads((finished / f"runs/sine_vanilla/{label}/seed{s}.json").read_text())["result"]["L"]
                    for s in (0, 1)] for label in ("readout", "sparse k=4", "full")}
    by_hand = []
    for ro, m, f in zip(runs["readout"], runs["sparse k=4"], runs["full"]):
        by_hand.append(100 * (ro - m) / (ro - f) if ro - f > 0.05 * abs(ro) else None)
    report = (finished / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| method |"))
    assert header.split(" | ")[5] == "recovery vs readout"
    row = next(line for line in report.splitlines() if line.startswith("| sparse k=4 |"))
    assert row.split(" | ")[5] == fmt(summarize(by_hand))


def test_the_alignment_diagnostic_is_one_for_full_rtrl_and_the_floor_for_immediate(tmp_path):
    """On the fixed trajectory, full RTRL's cosine with itself is 1 and the immediate rule's
    cosine equals the floor recorded beside every rule; grouped seeds give their solo numbers."""
    from sparse_rtrl.experiments.grouping import adapt_group
    from sparse_rtrl.experiments.protocol import adapt
    from sparse_rtrl.experiments.pretraining import pretrain

    exp = tiny()[0].with_(diagnostics=("alignment",), adapt_steps=120)
    snaps = [pretrain(exp, s).to_dict() for s in (0, 1)]
    full = adapt(exp, exp.method("full"), 0, snaps[0], 1e-3)["alignment"]
    assert full["cos@1"] == pytest.approx(1.0, abs=1e-6) and full["cos@100"] == pytest.approx(1.0, abs=1e-6)
    imm = adapt(exp, exp.method("immediate"), 0, snaps[0], 1e-3)["alignment"]
    assert imm["cos@1"] == pytest.approx(imm["floor_cos@1"], abs=1e-12) and imm["cos@1"] < 0.999
    assert "alignment" not in adapt(exp, exp.method("frozen"), 0, snaps[0], 1e-3)
    sparse = exp.method("sparse k=4")
    grouped = adapt_group(exp, sparse, [0, 1], snaps, 1e-3)
    solo = [adapt(exp, sparse, s, snap, 1e-3) for s, snap in zip((0, 1), snaps)]
    for g, s in zip(grouped, solo):
        assert {k: v for k, v in g["alignment"].items() if "seconds" not in k} == \
            {k: v for k, v in s["alignment"].items() if "seconds" not in k}


def test_alignment_along_the_run_leaves_learning_bit_identical():
    """With the gradient shadow carried beside the rule, every loss of the run is the same as
    without it; full RTRL's cosine with itself along its run is 1."""
    from sparse_rtrl.experiments.protocol import adapt
    from sparse_rtrl.experiments.pretraining import pretrain

    exp = tiny()[0].with_(adapt_steps=60, diagnostics=())
    shadowed = exp.with_(diagnostics=("alignment_run",))
    snap = pretrain(exp, 0).to_dict()
    for label in ("sparse k=4", "full"):
        plain = adapt(exp, exp.method(label), 0, snap, 1e-2)
        along = adapt(shadowed, exp.method(label), 0, snap, 1e-2)
        assert plain["L"] == along["L"] and plain["curve"] == along["curve"]
        assert along["alignment_run"]["updates"] == 60
    assert along["alignment_run"]["cos_mean"] == pytest.approx(1.0, abs=1e-9)
    assert adapt(shadowed, exp.method("sparse k=4"), 0, snap, 1e-2)["alignment_run"]["cos_mean"] < 0.999
