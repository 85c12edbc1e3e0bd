"""Seeds run as ensembles (``experiments.grouping``): every member's result is its solo run's,
a sweep writes the same files with grouping on or off, resumes after an interruption, and a
group with a diverging member falls back to solo runs."""

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from sparse_rtrl import settings
from sparse_rtrl.experiments import Experiment, Method, Sweep
from sparse_rtrl.experiments import grouping
from sparse_rtrl.experiments.jobs import GroupJob, Planned, PretrainJob, RunJob, run_count
from sparse_rtrl.experiments.config import FROZEN, READOUT
from sparse_rtrl.experiments.executors import LocalExecutor
from sparse_rtrl.experiments.protocol import adapt
from sparse_rtrl.experiments.pretraining import pretrain
from sparse_rtrl.experiments.report import build_report
from sparse_rtrl.experiments.runner import execute, resources

from test_experiments import finished, run_sweep, tiny  # noqa: F401  (the grouped sweep fixture)

NO_ENSEMBLE = settings.VARIABLES["ensembles"]

METHODS = (
    Method("frozen", FROZEN), Method("readout", READOUT), Method("immediate", "immediate"),
    Method("trace", "trace", {"decay": 0.9}),
    Method("sparse k=2", "sparse", {"k": 2}),  # masks from derived_seed(seed, "masks") per member
    Method("sparse seeded", "sparse", {"k": 2, "seed": 7}),  # the same mask seed in every member
    Method("full", "full"), Method("full float64", "full", dtype="float64"),
    Method("tbptt", "tbptt", {"window": 4}), Method("kf", "kf"),
)


def small(**changes) -> Experiment:
    base = dict(name="small", claims=(), task="sine", task_options={}, cell="vanilla", hidden_size=8,
                methods=METHODS, pretrain_updates=20, pretrain_batch=4, pretrain_chunk=20, pre_shift_steps=20,
                adapt_steps=60, lr_grid=(1e-2,), validation_seeds=(100,), seeds=(0, 1, 2),
                diagnostics=("jacobian_spectrum", "predictions"))
    return Experiment(**{**base, **changes})


@pytest.fixture(scope="module")
def snapshots():
    exp = small()
    return {s: pretrain(exp, s).to_dict() for s in exp.seeds}


def assert_same_run(grouped: dict, solo: dict, rtol: float) -> None:
    """Same keys and structure; every number equal up to ``rtol`` (timings aside)."""
    assert set(grouped) == set(solo)
    for key in solo:
        if key in ("seconds", "steps_per_second"):
            assert grouped[key] > 0
        else:
            assert_close(grouped[key], solo[key], rtol, key)


def assert_close(a, b, rtol, where):
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), where
        for k in b:
            assert_close(a[k], b[k], rtol, f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rtol, f"{where}[{i}]")
    elif isinstance(b, float) and isinstance(a, float):
        assert a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.label)
def test_every_member_equals_its_solo_run(method, snapshots):
    exp = small()
    assert grouping.groupable(exp, method)
    seeds = list(exp.seeds)
    grouped = grouping.adapt_ensemble(exp, method, seeds, [snapshots[s] for s in seeds], 1e-2)
    assert grouped is not None  # really ran as one ensemble
    rtol = 1e-10 if method.dtype == "float64" else 1e-5
    for seed, result in zip(seeds, grouped):
        assert_same_run(result, adapt(exp, method, seed, snapshots[seed], 1e-2), rtol)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lstm_and_gru_members_equal_their_solo_runs(cell):
    exp = small(cell=cell, hidden_size=6, dtype="float64" if cell == "gru" else "float32", diagnostics=())
    method = Method("sparse k=2", "sparse", {"k": 2})
    assert grouping.groupable(exp, method)
    snaps = [pretrain(exp, s).to_dict() for s in (0, 1)]
    grouped = grouping.adapt_ensemble(exp, method, [0, 1], snaps, 1e-2)
    rtol = 1e-10 if cell == "gru" else 1e-5
    for seed, result in zip((0, 1), grouped):
        assert_same_run(result, adapt(exp, method, seed, snaps[seed], 1e-2), rtol)


def test_the_rule_keeps_large_models_transformers_and_unsupported_rules_solo():
    exp = small()
    sparse = Method("sparse", "sparse", {"k": 2})
    assert grouping.groupable(exp, sparse)
    assert not grouping.groupable(exp.with_(hidden_size=256), sparse)
    assert not grouping.groupable(exp.with_(cell="transformer"), sparse)
    assert not grouping.groupable(exp, Method("uoro", "uoro"))
    assert not grouping.groupable(exp, Method("shadow", "shadow", {"rule": "immediate"}))
    assert not grouping.groupable(exp.with_(cell="gru"), sparse)  # float32 GRU: rounding by position
    assert grouping.groupable(exp.with_(cell="gru", dtype="float64"), sparse)
    assert not grouping.groupable(exp.with_(diagnostics=("head_stats",)), sparse)


def test_streams_with_different_resets_run_solo(snapshots, monkeypatch):
    exp = small()
    real = grouping.adaptation_stream

    def shifted(exp_, task, seed):  # seed 1 starts a new sequence at step 30, the others do not
        x, y, mask, starts = real(exp_, task, seed)
        starts = starts.clone()
        starts[30] = seed == 1
        return x, y, mask, starts

    monkeypatch.setattr(grouping, "adaptation_stream", shifted)
    assert grouping.adapt_ensemble(exp, METHODS[4], [0, 1], [snapshots[0], snapshots[1]], 1e-2) is None


def test_a_group_with_a_diverging_member_is_rerun_solo(snapshots, monkeypatch):
    exp = small()
    method = Method("full", "full")
    broken = {**snapshots[1], "readout_state": {k: torch.full_like(v, math.nan)
                                                 for k, v in snapshots[1]["readout_state"].items()}}
    group = [snapshots[0], broken, snapshots[2]]
    assert grouping.adapt_ensemble(exp, method, [0, 1, 2], group, 1e-2) is None
    solo_calls = []
    real = grouping.adapt
    monkeypatch.setattr(grouping, "adapt", lambda e, m, s, *a: solo_calls.append(s) or real(e, m, s, *a))
    results = grouping.adapt_group(exp, method, [0, 1, 2], group, 1e-2)
    assert solo_calls == [0, 1, 2]  # every member reran alone
    assert results[1]["diverged"] and results[1]["diverged_at"] == 0 and results[1]["L"] == math.inf
    assert not results[0]["diverged"] and not results[2]["diverged"]
    for seed in (0, 2):
        assert_same_run(results[seed], adapt(exp, method, seed, snapshots[seed], 1e-2), 0.0)


# -- the driver -------------------------------------------------------------------------------
def test_plan_groups_by_experiment_method_and_rate_at_most_eight_seeds(tmp_path):
    exp = small(seeds=tuple(range(10)))
    sweep = Sweep(tmp_path, [exp], executor=LocalExecutor(1), progress=False)
    sparse, uoro = Method("sparse", "sparse", {"k": 2}), Method("uoro", "uoro")
    jobs = [sweep._adapt_job(exp, m, s, 1e-2, tmp_path / f"{m.label}{s}.json") for m in (sparse, uoro)
            for s in exp.seeds]
    planned = grouping.plan_groups(jobs, True)
    kinds = [(type(p.job), run_count(p.job)) for p in planned]
    assert kinds == [(GroupJob, 8), (GroupJob, 2)] + [(RunJob, 1)] * 10
    assert planned[0].job.seeds == tuple(range(8)) and [m.job.seed for m in planned[0].members] == list(range(8))
    assert grouping.plan_groups(jobs, False) == jobs
    assert resources(planned[0].job)["memory"] > resources(planned[2].job)["memory"]


def test_the_environment_variable_and_the_python_switch_turn_grouping_off(monkeypatch):
    monkeypatch.setenv(NO_ENSEMBLE, "1")
    assert not settings.ensembles_enabled()
    monkeypatch.setenv(NO_ENSEMBLE, "0")
    assert settings.ensembles_enabled()
    with settings.using(ensembles=False):
        assert not settings.ensembles_enabled()
        jobs = [Planned(RunJob(small(), METHODS[4], s, 1e-2, "snap"), None, {}) for s in (0, 1)]
        assert grouping.plan_groups(jobs) == jobs
    assert settings.ensembles_enabled()


def numbers_close(a: str, b: str, rtol: float = 1e-5) -> bool:
    """Two reports agree up to rounding: the same text around numbers that agree to rtol
    (a last printed digit may flip)."""
    pattern = r"-?\d+\.?\d*(?:e[-+]?\d+)?"
    if re.sub(pattern, "#", a) != re.sub(pattern, "#", b):
        return False
    for x, y in zip(re.findall(pattern, a), re.findall(pattern, b)):
        decimals = len(re.split(r"e", x.split(".")[1])[0]) if "." in x else None
        if x == y:
            continue
        if decimals is None or not math.isclose(float(x), float(y), rel_tol=rtol, abs_tol=1.01 * 10**-decimals):
            return False
    return True


def result_files(out):
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted((out / "runs").rglob("*.json"))}


@pytest.fixture(scope="module")
def solo_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("solo")
    jobs = []

    def counting(job):
        jobs.append(type(job))
        return execute(job)

    assert Sweep(out, tiny(), executor=LocalExecutor(1), profile="test", progress=False, task=counting,
                 ensembles=False).run()
    assert GroupJob not in jobs
    build_report(out)
    return out


def assert_same_sweep(a, b):
    files_a, files_b = result_files(a), result_files(b)
    assert set(files_a) == set(files_b)
    for name, data in files_b.items():
        other = files_a[name]
        assert set(other) == set(data), name
        if "result" not in data:  # lr.json
            assert_close(other, data, 1e-5, name)
            continue
        assert {k: v for k, v in other.items() if k != "result"} == {k: v for k, v in data.items() if k != "result"}
        assert_same_run(other["result"], data["result"], 1e-5)
    assert numbers_close((a / "report.md").read_text(), (b / "report.md").read_text())
    assert numbers_close((a / "claims.json").read_text(), (b / "claims.json").read_text())


def test_a_grouped_sweep_writes_the_same_files_and_report_as_solo_runs(finished, solo_sweep):  # noqa: F811
    assert_same_sweep(finished, solo_sweep)


def test_a_grouped_sweep_groups(tmp_path, monkeypatch):
    monkeypatch.delenv(NO_ENSEMBLE, raising=False)
    jobs = []

    def counting(job):
        jobs.append((type(job), run_count(job)))
        assert isinstance(job, (PretrainJob, RunJob, GroupJob))  # workers get only what they run
        return execute(job)

    assert Sweep(tmp_path, tiny(), executor=LocalExecutor(1), progress=False, task=counting).run()
    # evaluation: 5 methods × 2 seeds as 5 groups; validation: one seed per rate stays solo
    assert jobs.count((GroupJob, 2)) == 5 and jobs.count((RunJob, 1)) == 2


def test_a_sweep_interrupted_inside_a_group_resumes(finished, solo_sweep, tmp_path):  # noqa: F811
    assert not run_sweep(tmp_path, limit=3 + 2 + 3)  # snapshots, validation, and half a group
    done = set((tmp_path / "runs").rglob("seed*.json"))
    assert len(done) == 2 + 3
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert run_sweep(tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # finished runs were not redone
    build_report(tmp_path)
    assert_same_sweep(tmp_path, solo_sweep)
    assert_same_sweep(tmp_path, finished)


def test_a_corrupt_member_file_is_redone_alone(finished, tmp_path):  # noqa: F811
    shutil.copytree(finished, tmp_path / "copy")
    victim = tmp_path / "copy/runs/sine_vanilla/sparse k=4/seed0.json"
    victim.write_text("{ truncated")
    assert run_sweep(tmp_path / "copy")
    assert np.isfinite(json.loads(victim.read_text())["result"]["L"])
    build_report(tmp_path / "copy")
    assert_same_sweep(tmp_path / "copy", finished)
