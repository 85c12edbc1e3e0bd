"""The bci task (C9): streams from every source checked against by-hand numpy computations on
small files written here, the real recordings when present, a tiny C9 sweep end to end, and
the reproduce flags reaching the experiments."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from sparse_rtrl.data import DataError, load_binned, simulate_drift
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.tasks import make_task
from sparse_rtrl.tasks.bci import CHEWIE_FILES, STEVENSON_FILE

from shared_data import SHARED, needs

needs_chewie = needs(*CHEWIE_FILES)
needs_stevenson = needs(STEVENSON_FILE)


# -- small recordings written by the tests -------------------------------------------------------
def fake_counts(T, C, seed, rate=2.0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate * rng.uniform(0.2, 1.5, size=C), size=(T, C))
    vel = rng.normal(3.0, 5.0, size=(T, 2))
    return counts, vel


def write_npz(path, counts, vel, bin_s=0.1, **extra):
    arrays = {"counts": counts.astype(np.int16), "vel": vel.astype(np.float32), **extra}
    if bin_s is not None:
        arrays["bin_s"] = np.float64(bin_s)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def recordings(tmp_path):
    """A (40 bins × 5 channels) and B (30 × 3): different widths, as on the Chewie days."""
    ca, va = fake_counts(40, 5, 0)
    cb, vb = fake_counts(30, 3, 1, rate=4.0)
    a = write_npz(tmp_path / "day1.npz", ca, va, trial_id=np.repeat(np.arange(8), 5))
    b = write_npz(tmp_path / "day2.npz", cb, vb)
    return a, b, (ca, va), (cb, vb)


def by_hand(ca, va, cb, vb, transform=np.sqrt, floor=0.5):
    """z-scoring with session A's statistics, zero-padding to the wider session."""
    width = max(ca.shape[1], cb.shape[1])
    pad = lambda c: np.pad(c.astype(float), ((0, 0), (0, width - c.shape[1])))  # noqa: E731
    fa, fb = transform(pad(ca)), transform(pad(cb))
    mu, sd = fa.mean(0), fa.std(0)
    sd = np.maximum(sd, floor * np.median(sd))
    m, s = va.astype(np.float32).astype(float).mean(0), va.astype(np.float32).astype(float).std(0)
    return (fa - mu) / sd, (va.astype(np.float32) - m) / s, (fb - mu) / sd, (vb.astype(np.float32) - m) / s


# -- the files source, checked by hand --------------------------------------------------------------
def test_files_stream_is_zscored_with_session_a_statistics_and_zero_padded(recordings):
    a, b, (ca, va), (cb, vb) = recordings
    task = make_task("bci", source="files", session_a=str(a), session_b=str(b), holdout=0.0)
    assert (task.input_size, task.output_size) == (5, 2)
    assert task.session_bins() == (40, 30)
    xa, ya, xb, yb = by_hand(ca, va, cb, vb)
    A, B = task.sample("A", 40, 0), task.sample("B", 30, 0)
    np.testing.assert_allclose(A.inputs.numpy(), xa, atol=1e-12)
    np.testing.assert_allclose(A.targets.numpy(), ya, atol=1e-6)
    np.testing.assert_allclose(B.inputs.numpy(), xb, atol=1e-12)
    np.testing.assert_allclose(B.targets.numpy(), yb, atol=1e-6)
    # the two channels day 2 lacks read zero spikes, z-scored with day 1's statistics
    assert torch.allclose(B.inputs[:, 3:], B.inputs[:1, 3:].expand(30, 2))
    assert bool((B.inputs[:, 3:] < 0).all())
    assert A.info["trial"].tolist() == np.repeat(np.arange(8), 5).tolist()
    assert B.info["trial"].tolist() == [-1] * 30  # day 2 stores no trials


def test_files_sample_shift_is_end_of_a_then_b_and_long_streams_wrap(recordings):
    a, b, *_ = recordings
    task = make_task("bci", source="files", session_a=str(a), session_b=str(b), holdout=0.0)
    A, B = task.sample("A", 40, 0), task.sample("B", 30, 0)
    s = task.sample_shift(10, 50, 3)
    assert torch.equal(s.inputs[:10], A.inputs[30:]) and torch.equal(s.inputs[10:40], B.inputs)
    assert torch.equal(s.inputs[40:], B.inputs[:20])  # B wrapped around to its start
    assert s.info["bin"].tolist() == list(range(30, 40)) + list(range(30)) + list(range(20))
    assert s.info["repeat"].tolist() == [0] * 40 + [1] * 20
    assert s.info["regime"].tolist() == [0] * 10 + [1] * 50
    long_a = task.sample_shift(50, 5, 0)  # a pre-shift part longer than A ends on A's last bin
    assert torch.equal(long_a.inputs[:50], torch.cat([A.inputs[30:], A.inputs]))
    # a fixed recording: the seed changes nothing
    assert torch.equal(task.sample_shift(10, 50, 4).inputs, s.inputs)


def test_files_transform_floor_and_formats(tmp_path, recordings):
    a, b, (ca, va), (cb, vb) = recordings
    xa, _, xb, _ = by_hand(ca, va, cb, vb, transform=np.log1p, floor=0.0)
    task = make_task("bci", source="files", session_a=str(a), session_b=str(b), transform="log1p", std_floor=0.0,
                     holdout=0.0)
    np.testing.assert_allclose(task.sample("B", 30, 0).inputs.numpy(), xb, atol=1e-12)
    # a channel almost silent in A: its σ is floored at half the median channel's σ
    ca2 = ca.copy()
    ca2[:, 0] = 0
    ca2[7, 0] = 1
    a2 = write_npz(tmp_path / "quiet.npz", ca2, va)
    t2 = make_task("bci", source="files", session_a=str(a2), session_b=str(b), holdout=0.0)
    sd = np.sqrt(ca2.astype(float)).std(0)
    assert t2.normalisation()["input_std"][0] == pytest.approx(0.5 * np.median(sd))
    # MATLAB v5 layout (spikes (C, T), handVel (3, T), time) and an .npz without bin_s
    T = 30
    mat = tmp_path / "b.mat"
    scipy.io.savemat(mat, {"spikes": cb.T.astype(np.uint8), "handVel": np.vstack([vb.T, np.zeros(T)]),
                           "time": (0.1 * np.arange(T))[None]})  # the .npz files' 0.1 s bins
    from_mat = make_task("bci", source="files", session_a=str(a), session_b=str(mat), holdout=0.0).sample("B", T, 0)
    np.testing.assert_allclose(from_mat.inputs.numpy(), by_hand(ca, va, cb, vb)[2], atol=1e-12)
    nobin = write_npz(tmp_path / "nobin.npz", cb, vb, bin_s=None)
    with pytest.raises(DataError, match="bin_s"):
        make_task("bci", source="files", session_a=str(a), session_b=str(nobin)).sample("A", 5, 0)
    assert make_task("bci", source="files", session_a=str(a), session_b=str(nobin),
                     bin_size=0.1).input_size == 5


def test_pretraining_never_sees_the_held_out_bins_streamed_before_the_shift(recordings):
    """holdout = 0.25 of A's 40 bins: pretraining streams bins 0–29 only (wrapping there),
    the shift's A part is the held-out bins 30–39, and A's statistics come from bins 0–29."""
    a, b, (ca, va), (cb, vb) = recordings
    task = make_task("bci", source="files", session_a=str(a), session_b=str(b))
    assert task.holdout == 0.25 and task.held_out_bins() == 10
    A = task.sample("A", 65, 0)
    assert A.info["bin"].tolist() == list(range(30)) * 2 + list(range(5))
    s = task.sample_shift(10, 5, 0)
    assert s.info["bin"].tolist() == list(range(30, 40)) + list(range(5))
    xa, ya, xb, _ = by_hand(ca[:30], va[:30], cb, vb)  # z-scored with the training bins' statistics
    np.testing.assert_allclose(A.inputs[:30].numpy(), xa, atol=1e-12)
    fa = np.sqrt(ca.astype(float))
    sd = fa[:30].std(0)
    sd = np.maximum(sd, 0.5 * np.median(sd))
    np.testing.assert_allclose(s.inputs[:10].numpy(), (fa[30:] - fa[:30].mean(0)) / sd, atol=1e-12)
    np.testing.assert_allclose(s.inputs[10:].numpy(), xb[:5], atol=1e-12)
    with pytest.raises(ConfigurationError, match=r"the 11 bins before the shift .* holdout=0.25 keeps 10 of its 40"):
        task.sample_shift(11, 5, 0)
    none = make_task("bci", source="files", session_a=str(a), session_b=str(b), holdout=0.0)
    assert none.held_out_bins() == 40  # nothing held out: all of A may stream before the shift
    tiny = make_task("bci", source="files", session_a=str(a), session_b=str(b), holdout=0.001)
    assert tiny.held_out_bins() == 1  # a holdout asked for is never rounded away
    with pytest.raises(ConfigurationError, match=r"holdout must lie in \[0, 1\)"):
        make_task("bci", source="files", session_a=str(a), session_b=str(b), holdout=1.0)
    with pytest.raises(ConfigurationError, match="holdout=0.2 is ignored by source 'synthetic'"):
        make_task("bci", holdout=0.2)


def test_missing_files_and_bad_options_give_clear_errors(tmp_path, recordings):
    a, *_ = recordings
    missing = tmp_path / "nowhere" / "day9.npz"
    with pytest.raises(DataError, match="day9.npz.*no such file"):
        make_task("bci", source="files", session_a=str(a), session_b=str(missing)).sample("B", 5, 0)
    with pytest.raises(DataError, match=r"chewie_2013-10-03_bin100ms_moving\.npz.*no such file"):
        make_task("bci", source="chewie", data_dir=str(tmp_path)).sample("A", 5, 0)
    with pytest.raises(ConfigurationError, match="source must be one of"):
        make_task("bci", source="indy")
    with pytest.raises(ConfigurationError, match="needs session_a= and session_b="):
        make_task("bci", source="files", session_a=str(a))
    with pytest.raises(ConfigurationError, match="drift_seed=3 is ignored by source 'synthetic'.*remove it"):
        make_task("bci", drift_seed=3)
    with pytest.raises(ConfigurationError, match="transform must be one of"):
        make_task("bci", transform="log")


def test_stevenson_source_on_a_small_file_splits_and_labels_b_simulated(tmp_path):
    counts, vel = fake_counts(100, 6, 4)
    scipy.io.savemat(tmp_path / STEVENSON_FILE, {"spikes": counts.T.astype(np.uint8),
                                                 "handVel": np.vstack([vel.T, np.zeros(100)]),
                                                 "time": (12.6 + 0.05 * np.arange(100))[None]})
    task = make_task("bci", source="stevenson", data_dir=str(tmp_path), split=0.6, drift=1.0, drift_seed=2,
                     holdout=0.0)
    assert task.session_bins() == (60, 40) and task.input_size == 6
    src_a, src_b = task.sessions_source()
    assert src_b.startswith("simulated drift (d=1, seed=2)") and "simulated" not in src_a
    assert "SIMULATED drift" in task.describe_shift()
    real = load_binned(tmp_path / STEVENSON_FILE)
    later = simulate_drift(real.take(slice(60, None)), 1.0, 2)
    xa, _, xb, _ = by_hand(counts[:60], vel[:60], later.counts.numpy(), vel[60:])
    np.testing.assert_allclose(task.sample_shift(60, 40, 0).inputs.numpy(), np.concatenate([xa, xb]), atol=1e-12)


# -- synthetic ----------------------------------------------------------------------------------------
def test_synthetic_stream_shapes_statistics_and_seeds():
    task = make_task("bci", n_channels=24)
    A = task.sample("A", 6000, 0)
    assert A.inputs.shape == (6000, 24) and A.targets.shape == (6000, 2)
    # inputs and velocity are z-scored with session A's statistics (from a fixed-seed draw;
    # a channel's mean wanders with the within-session drift, so look at the median channel)
    assert A.inputs.mean(0).abs().median() < 0.1 and (A.inputs.std(0) - 1).abs().median() < 0.1
    assert A.targets.mean(0).abs().max() < 0.15 and (A.targets.std(0) - 1).abs().max() < 0.15
    B = task.sample("B", 6000, 0)
    assert (B.inputs.mean(0) - A.inputs.mean(0)).abs().max() > 0.5  # drift shows in A's units
    # the velocity law does not drift: B's targets keep A's scale
    assert B.targets.mean(0).abs().max() < 0.15 and (B.targets.std(0) - 1).abs().max() < 0.15
    # seeds redraw reaches and spikes; the population (tunings) is fixed by population_seed
    assert torch.equal(task.sample("A", 300, 5).inputs, task.sample("A", 300, 5).inputs)
    assert not torch.equal(task.sample("A", 300, 5).targets, task.sample("A", 300, 6).targets)
    other = make_task("bci", n_channels=24, population_seed=1)
    assert not np.allclose(other.normalisation()["input_mean"], task.normalisation()["input_mean"])


def test_synthetic_shift_switches_tuning_not_behaviour():
    task = make_task("bci", n_channels=32, drift=1.0)
    s = task.sample_shift(3000, 3000, 2)
    # a ridge decoder fitted before the shift decodes the earlier part far better than the later
    X, Y = s.inputs.numpy(), s.targets.numpy()
    X1 = np.c_[X, np.ones(len(X))]
    W = np.linalg.solve(X1[:2000].T @ X1[:2000] + np.eye(33), X1[:2000].T @ Y[:2000])
    err = lambda a, b: float(((X1[a:b] @ W - Y[a:b]) ** 2).mean())  # noqa: E731
    assert err(2000, 3000) < 0.6 * err(3000, 6000)
    # one continuous reach trajectory: the velocity does not jump at the shift
    assert float((s.targets[3000] - s.targets[2999]).abs().max()) < 1.0


# -- the shared recordings -------------------------------------------------------------------------------
@needs_chewie
def test_chewie_sessions_padded_to_174_inputs():
    task = make_task("bci", source="chewie", data_dir=str(SHARED))
    assert task.input_size == 174 and task.session_bins() == (895, 835)
    B = task.sample("B", 835, 0)
    raw_b = load_binned(SHARED / CHEWIE_FILES[1])
    assert raw_b.n_channels == 155
    assert torch.allclose(B.inputs[:, 155:], B.inputs[:1, 155:].expand(835, 19))  # silent padding
    assert "174 → 155" in task.describe_shift() and "not matched" in task.describe_shift()
    s = task.sample_shift(200, 835, 1)
    assert s.info["repeat"].max() == 0 and torch.equal(s.inputs[200:], B.inputs)


@needs_stevenson
def test_stevenson_b_is_labelled_simulated_and_a_is_the_real_first_half():
    task = make_task("bci", source="stevenson", data_dir=str(SHARED), holdout=0.0)
    src_a, src_b = task.sessions_source()
    assert src_b.startswith("simulated drift (d=0.5, seed=0)") and not src_a.startswith("simulated")
    assert "SIMULATED drift" in task.describe_shift() and "not a recorded" in task.describe_shift()
    real = load_binned(SHARED / STEVENSON_FILE)
    half = real.n_bins // 2
    assert task.session_bins() == (half, real.n_bins - half)
    later = simulate_drift(real.take(slice(half, None)), 0.5, 0)
    fa = np.sqrt(real.counts[:half].numpy().astype(float))
    sd = fa.std(0)
    sd = np.maximum(sd, 0.5 * np.median(sd))
    want = (np.sqrt(later.counts[:100].numpy().astype(float)) - fa.mean(0)) / sd
    np.testing.assert_allclose(task.sample("B", 100, 0).inputs.numpy(), want, atol=1e-12)


# -- a tiny C9 sweep end to end --------------------------------------------------------------------------
def tiny_c9(files):
    from sparse_rtrl.experiments import Experiment, Method
    from sparse_rtrl.experiments.config import FROZEN, READOUT

    methods = (Method("frozen", FROZEN), Method("readout", READOUT), Method("immediate", "immediate"),
               Method("sparse k=4", "sparse", {"k": 4}), Method("full", "full"))
    common = dict(claims=("C9",), task="bci", cell="vanilla", hidden_size=6, methods=methods,
                  pretrain_updates=15, pretrain_batch=4, pretrain_chunk=20, pre_shift_steps=20,
                  adapt_steps=60, lr_grid=(1e-3,), validation_seeds=(100,), seeds=(0, 1),
                  diagnostics=("predictions",))
    a, b = files
    return [Experiment(name="bci_synthetic", task_options={"n_channels": 8}, **common),
            Experiment(name="bci_files", task_options={"source": "files", "session_a": str(a),
                                                       "session_b": str(b), "holdout": 0.5},
                       **{**common, "adapt_steps": 30})]


def test_tiny_c9_sweep_gives_one_claim_row_per_setting_and_figures(tmp_path, recordings, monkeypatch):
    from sparse_rtrl.experiments import Sweep
    from sparse_rtrl.experiments.executors import LocalExecutor
    from sparse_rtrl.experiments.report import build_report

    monkeypatch.setenv("SPARSE_RTRL_DATA", str(tmp_path / "empty"))  # real data "absent"
    out = tmp_path / "sweep"
    assert Sweep(out, tiny_c9(recordings[:2]), executor=LocalExecutor(1), profile="test", progress=False).run()
    build_report(out)
    claims = {c["id"]: c for c in json.loads((out / "claims.json").read_text())}
    assert {"C9", "C9-chewie", "C9-stevenson", "C9-files"} <= set(claims)
    ids = [c["id"] for c in json.loads((out / "claims.json").read_text())]
    assert ids.index("C8") < ids.index("C9") < ids.index("C9-chewie") < ids.index("C9-files") < ids.index("C10")
    for cid in ("C9", "C9-files"):
        assert claims[cid]["n_seeds"] == 2 and claims[cid]["paper"] == "80 ± 11 %"
        assert claims[cid]["verdict"] in ("reproduced", "partly", "not reproduced", "inconclusive")
    for cid in ("C9-chewie", "C9-stevenson"):
        assert claims[cid]["verdict"] == "not measured" and "data absent" in claims[cid]["rule"]
    report = (out / "report.md").read_text()
    assert "stability: sparse k=4" in report and "CV(L)" in report
    assert (out / "figures" / "bci_synthetic_decoding.png").exists()
    assert (out / "figures" / "bci_recovery.png").exists()
    run = json.loads((out / "runs/bci_synthetic/full/seed0.json").read_text())["result"]
    p = run["predictions"]
    assert [len(p[k]["step"]) for k in ("pre", "post", "end")] == [20, 20, 20]
    assert p["post"]["step"][0] == 20 and p["end"]["step"][-1] == 79
    assert np.asarray(p["end"]["prediction"]).shape == (20, 2)
    # the stored target is the stream's own target
    stream = make_task("bci", n_channels=8).sample_shift(20, 60, 3)  # derived_seed(0, "adapt") = 3
    np.testing.assert_allclose(p["post"]["target"], stream.targets[20:40].numpy(), atol=1e-6)


# -- the reproduce flags ------------------------------------------------------------------------------------
def test_reproduce_flags_reach_the_c9_experiments(tmp_path, recordings, monkeypatch):
    import sparse_rtrl.experiments as experiments_pkg
    import sparse_rtrl.experiments.report as report_mod
    from sparse_rtrl import cli
    from sparse_rtrl.cli import CommandError

    a, b, *_ = recordings
    seen = {}

    class Capture:
        def __init__(self, out, exps, **kw):
            seen["exps"] = exps

        def run(self):
            return True

    monkeypatch.setattr(experiments_pkg, "Sweep", Capture)
    monkeypatch.setattr(report_mod, "build_report", lambda out: out / "report.md")
    data = tmp_path / "data"
    data.mkdir()
    ca, va = fake_counts(50, 4, 3)
    for name in CHEWIE_FILES:
        write_npz(data / name, ca, va)
    rc = cli.main(["reproduce", "--profile", "quick", "--only", "C9", "--out", str(tmp_path / "o"), "--quiet",
                   "--data-dir", str(data), "--session-a", str(a), "--session-b", str(b), "--bin-size", "0.1"])
    assert rc == 0
    exps = {e.name: e for e in seen["exps"]}
    assert set(exps) == {"bci_synthetic", "bci_chewie", "bci_files"}  # no stevenson file in data
    assert exps["bci_chewie"].task_options == {"source": "chewie", "data_dir": str(data.resolve()), "holdout": 0.25}
    assert exps["bci_chewie"].adapt_steps == 50  # the whole of (fake) day 2, no more
    assert exps["bci_files"].task_options == {"source": "files", "session_a": str(a.resolve()),
                                              "session_b": str(b.resolve()), "holdout": 0.25, "bin_size": 0.1}
    assert all(e.claims == ("C9",) and len(e.seeds) == 3 for e in exps.values())
    with pytest.raises(CommandError, match="go together"):  # --debug: the error itself
        cli.main(["--debug", "reproduce", "--only", "C9", "--session-a", str(a)])
    with pytest.raises(ConfigurationError, match="no such directory"):
        cli.main(["--debug", "reproduce", "--only", "C9", "--data-dir", str(tmp_path / "nowhere")])
