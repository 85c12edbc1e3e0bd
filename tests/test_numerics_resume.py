"""Run files record the numeric path and torch version, and a resumed sweep never mixes two
numeric paths silently: it stops (default), redoes or keeps the runs that differ; files
written before the field existed stay done and readable."""

import json

import pytest
import torch

import sparse_rtrl.experiments.runner as runner
from sparse_rtrl.experiments import FROZEN, Experiment, Method, Sweep, load_results
from sparse_rtrl.experiments.executors import LocalExecutor
from sparse_rtrl.experiments.jobs import PretrainJob
from sparse_rtrl.experiments.runner import NumericsChanged, execute
from sparse_rtrl.transport.kernels import numeric_path

OTHER = {"numeric_path": "some-other-path", "torch": "0.0.0"}


def small() -> list[Experiment]:
    return [Experiment(
        name="sine_small", claims=("C1",), task="sine", task_options={}, cell="vanilla", hidden_size=6,
        methods=(Method("frozen", FROZEN), Method("sparse k=2", "sparse", {"k": 2})), pretrain_updates=10,
        pretrain_batch=2, pretrain_chunk=10, pre_shift_steps=10, adapt_steps=30, lr_grid=(1e-3,),
        validation_seeds=(), seeds=(0,),
    )]


def sweep(out, **kw):
    return Sweep(out, small(), executor=LocalExecutor(1), profile="test", progress=False, **kw)


def files(out):
    return sorted([*(out / "runs").rglob("seed*.json"), *(out / "snapshots").rglob("seed*.json")])


def stamps(out):
    return {p: p.stat().st_mtime_ns for p in files(out)}


@pytest.fixture
def finished(tmp_path):
    assert sweep(tmp_path).run()
    return tmp_path


def test_every_run_file_records_the_numeric_path_and_torch(finished):
    paths = files(finished)
    assert len(paths) == 3  # one snapshot, two evaluation runs
    for p in paths:
        assert json.loads(p.read_text())["numerics"] == {"numeric_path": numeric_path("cpu"),
                                                         "torch": torch.__version__}


def test_other_numerics_stop_the_sweep_before_any_run(finished, monkeypatch):
    before = stamps(finished)
    monkeypatch.setattr(runner, "numerics", lambda device="cpu": OTHER)
    with pytest.raises(NumericsChanged, match="3 finished run file.*some-other-path.*--numerics-change redo"):
        sweep(finished).run()
    assert stamps(finished) == before


def test_redo_recomputes_runs_made_with_other_numerics(finished, monkeypatch):
    before = stamps(finished)
    monkeypatch.setattr(runner, "numerics", lambda device="cpu": OTHER)
    assert sweep(finished, numerics_change="redo").run()
    after = stamps(finished)
    assert all(after[p] != t for p, t in before.items())
    assert all(json.loads(p.read_text())["numerics"] == OTHER for p in files(finished))


def test_keep_keeps_them_and_each_file_says_how_it_was_computed(finished, monkeypatch):
    (finished / "runs/sine_small/sparse k=2/seed0.json").unlink()
    before = stamps(finished)
    monkeypatch.setattr(runner, "numerics", lambda device="cpu": OTHER)
    assert sweep(finished, numerics_change="keep").run()
    assert all(stamps(finished)[p] == t for p, t in before.items())
    redone = json.loads((finished / "runs/sine_small/sparse k=2/seed0.json").read_text())
    assert redone["numerics"] == OTHER


def test_files_from_before_numerics_were_recorded_stay_done_and_readable(finished):
    for p in files(finished):  # as an older version wrote them
        data = json.loads(p.read_text())
        del data["numerics"]
        p.write_text(json.dumps(data))
    before = stamps(finished)
    assert sweep(finished).run()
    assert stamps(finished) == before
    loaded = load_results(finished)["experiments"]["sine_small"]["methods"]
    assert set(loaded) == {"frozen", "sparse k=2"} and all(loaded[m][0]["L"] > 0 for m in loaded)


def test_a_worker_with_other_numerics_refuses_to_run():
    exp = small()[0]
    with pytest.raises(NumericsChanged, match="this worker computes with"):
        execute(PretrainJob(exp, 0, numerics=OTHER))
