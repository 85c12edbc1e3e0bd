"""Claim C8 end to end on a tiny transformer: the sweep, the report row with its verdict
fields and the per-run head diagnostics; the online protocol against a plain reference
loop; the written verdict rule on hand-made numbers."""

import json
import math

import numpy as np
import pytest
import torch

from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.experiments import Experiment, Method, Sweep
from sparse_rtrl.experiments import transformer_c8 as c8
from sparse_rtrl.experiments.views import ExperimentView
from sparse_rtrl.experiments.executors import LocalExecutor
from sparse_rtrl.experiments.families import adapt_for
from sparse_rtrl.experiments.models import build_model, derived_seed
from sparse_rtrl.experiments.pretraining import pretrain
from sparse_rtrl.experiments.report import build_report
from sparse_rtrl.tasks import make_task

W, H = 4, 4


def tiny(**changes) -> Experiment:
    exp = Experiment(
        name="tiny_transformer", claims=("C8",), task="sine", task_options={}, cell="transformer",
        hidden_size=8, model_options={"heads": H, "blocks": 1, "window": W}, methods=c8.methods(("fixed",)),
        dtype="float64", pretrain_updates=20, pretrain_batch=4, pretrain_chunk=W, pretrain_burn_in=0,
        pre_shift_steps=8, adapt_steps=40, optimizer="sgd", lr_grid=(0.03, 0.1), lr_reference="dense",
        validation_seeds=(100,), seeds=(0, 1), diagnostics=("head_profile",),
    )
    return exp.with_(**changes)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("c8")
    probes, c8.PROBE_WINDOWS = c8.PROBE_WINDOWS, 3  # runs are inline (one worker): fewer probe windows
    try:
        torch.set_num_threads(1)
        assert Sweep(out, [tiny()], executor=LocalExecutor(1), profile="test", progress=False).run()
    finally:
        c8.PROBE_WINDOWS = probes
    build_report(out)
    return out


def test_quick_and_paper_profiles_define_the_c8_experiment():
    for profile, n in (("quick", 3), ("paper", 5)):
        (exp,) = c8.experiments(profile)
        assert exp.claims == ("C8",) and exp.cell == "transformer" and len(exp.seeds) == n
        assert exp.lr_reference == "dense" and not set(exp.seeds) & set(exp.validation_seeds)
        fractions = sorted({c8.method_fraction(m) for m in exp.methods} - {None})
        assert fractions == pytest.approx([0, 1 / 4, 1 / 3, 1 / 2, 1])
        assert adapt_for(exp) is c8.adapt


def test_sweep_writes_the_c8_row_with_its_verdict_fields(finished):
    claims = {c["id"]: c for c in json.loads((finished / "claims.json").read_text())}
    row = claims["C8"]
    assert row["verdict"] in ("reproduced", "partly", "not reproduced", "inconclusive")
    assert row["n_seeds"] == 2 and row["n_diverged"] == 0
    assert "50 % beats dense:" in row["measured"] and "33 % borderline:" in row["measured"]
    assert "R_1/2" in row["rule"] and "R_1/3" in row["rule"]
    report = (finished / "report.md").read_text()
    assert "| C8 |" in report and "specialisation of the snapshot" in report
    for name in ("c8_recovery_vs_fraction", "c8_head_specialisation", "c8_curves"):
        assert f"figures/{name}_tiny_transformer.png" in report
        assert (finished / "figures" / f"{name}_tiny_transformer.png").exists()


def test_per_run_results_hold_the_head_diagnostics(finished):
    run = json.loads((finished / "runs/tiny_transformer/heads 50%/seed0.json").read_text())["result"]
    for key in ("L", "L_end", "L_pre_shift", "diverged", "diverged_at", "curve", "seconds",
                "steps_per_second", "condition_numbers"):
        assert key in run
    assert math.isfinite(run["L"]) and run["heads_kept"] == 2
    usage = torch.tensor(run["head_usage"])  # random 2 of 4 heads per step: rows sum to 2
    assert usage.shape == (1, H) and usage.sum().item() == pytest.approx(2.0)
    assert [p["checkpoint"] for p in run["head_profiles"]] == list(c8.CHECKPOINTS)
    assert [p["step"] for p in run["head_profiles"]] == [0, 20, 40]
    for p in run["head_profiles"]:
        assert torch.tensor(p["contribution"]).shape == (1, H)
        ent = torch.tensor(p["normalised_entropy"])
        assert bool(((ent >= 0) & (ent <= 1 + 1e-9)).all())
    # the snapshot's profile is the same for every method (same snapshot, same held-out windows)
    dense = json.loads((finished / "runs/tiny_transformer/dense/seed0.json").read_text())["result"]
    assert dense["head_profiles"][0]["contribution"] == run["head_profiles"][0]["contribution"]
    assert dense["head_profiles"][-1]["contribution"] != run["head_profiles"][-1]["contribution"]
    fixed = json.loads((finished / "runs/tiny_transformer/heads 50% fixed/seed0.json").read_text())["result"]
    assert sorted(fixed["head_usage"][0]) == [0.0, 0.0, 1.0, 1.0]  # one mask, kept throughout
    snap = torch.load(finished / f"snapshots/{tiny().pretrain_key()}/seed0.pt", weights_only=False)
    assert "embed.weight" in snap["cell_state"] and set(snap["readout_state"]) == {"weight", "bias"}
    assert math.isfinite(snap["final_loss"]) and snap["losses"]


def test_dense_with_sgd_equals_a_plain_backprop_reference():
    exp = tiny(diagnostics=())
    snapshot = pretrain(exp, 0).to_dict()
    lr, seed = 0.05, 0
    result = c8.adapt(exp, exp.method("dense"), seed, snapshot, lr)

    task = make_task("sine")
    model = c8.load_snapshot(exp, task, seed, snapshot)
    s = task.sample_shift(exp.pre_shift_steps, exp.adapt_steps, derived_seed(seed, "adapt"))
    params = list(model.parameters())
    losses = []
    for t in range(W - 1, s.inputs.shape[0]):  # test, then train, by plain autograd and SGD
        pred = model(s.inputs[t - W + 1 : t + 1].unsqueeze(0))[0]
        loss = (pred - s.targets[t]).pow(2).mean()
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
    post = torch.tensor(losses[exp.pre_shift_steps - (W - 1) :], dtype=torch.float64)
    pre = torch.tensor(losses[: exp.pre_shift_steps - (W - 1)], dtype=torch.float64)
    assert result["L"] == pytest.approx(post.mean().item(), rel=1e-10)
    assert result["L_end"] == pytest.approx(post[-8:].mean().item(), rel=1e-10)
    assert result["L_pre_shift"] == pytest.approx(pre[-(len(pre) // 2) :].mean().item(), rel=1e-10)
    assert not result["diverged"] and result["heads_kept"] == H
    frozen = c8.adapt(exp, exp.method("frozen"), seed, snapshot, lr)
    zero = c8.adapt(exp, exp.method("immediate"), seed, snapshot, lr)
    assert frozen["L"] != pytest.approx(result["L"], rel=1e-6)  # the reference can tell them apart
    assert zero["L"] != pytest.approx(result["L"], rel=1e-9)


@pytest.mark.parametrize("label", ["frozen", "readout"])
def test_the_batched_fast_path_equals_the_step_by_step_learner(label):
    exp = tiny(diagnostics=())
    snapshot = pretrain(exp, 1).to_dict()
    task = make_task("sine")
    s = task.sample_shift(exp.pre_shift_steps, exp.adapt_steps, derived_seed(1, "adapt"))
    runs = []
    for fast in (True, False):
        model = c8.load_snapshot(exp, task, 1, snapshot)
        runs.append(c8.online_run(exp, exp.method(label), 1, model, 0.1, s.inputs, s.targets, task.loss, fast=fast))
        runs[-1]["readout"] = model.readout.weight.detach().clone()
    fast, slow = runs
    assert np.allclose(fast["losses"][W - 1 :], slow["losses"][W - 1 :], rtol=1e-12, atol=1e-14)
    assert torch.allclose(fast["readout"], slow["readout"], rtol=1e-12, atol=1e-14)
    assert np.isnan(fast["losses"][: W - 1]).all()


def test_divergence_is_counted_not_dropped():
    exp = tiny(diagnostics=())
    snapshot = pretrain(exp, 0).to_dict()
    r = c8.adapt(exp, exp.method("dense"), 0, snapshot, 1e6)
    assert r["diverged"] and r["L"] == math.inf and r["diverged_at"] >= W - 1


def test_bad_methods_say_how_to_fix_them():
    with pytest.raises(ConfigurationError, match="'heads' takes options"):
        c8.head_options(Method("h", "heads", {"k": 4}))
    with pytest.raises(ConfigurationError, match="runs the rules"):
        c8.head_options(Method("s", "sparse", {"k": 4}))
    with pytest.raises(ConfigurationError, match="unknown transformer model_options"):
        build_model(tiny(model_options={"heads": 4, "window": 4, "dropout": 0.1}), make_task("sine"), 0)


# -- the verdict rule on hand-made numbers ----------------------------------------------------
def view(L: dict[str, list[float]]) -> ExperimentView:
    exp = tiny(seeds=(0, 1, 2, 3, 4), validation_seeds=(100,))
    runs = {label: {s: {"L": v, "diverged": not math.isfinite(v)} for s, v in enumerate(vals)} for label, vals in L.items()}
    return ExperimentView({"config": exp, "methods": runs})


def losses(r_half, r_third, frozen=2.0, dense=1.0):
    """L per seed giving recoveries r (%) against frozen and dense."""
    L = lambda r: [frozen - (frozen - dense) * x / 100 for x in r]
    return {"frozen": [frozen] * 5, "dense": [dense] * 5, "heads 50%": L(r_half), "heads 33%": L(r_third)}


@pytest.mark.parametrize("r_half, r_third, verdict", [
    ([110, 112, 108, 111, 109], [95, 100, 105, 98, 102], "reproduced"),
    ([110, 112, 108, 111, 109], [60, 70, 65, 62, 68], "partly"),
    ([95, 102, 99, 101, 98], [95, 100, 105, 98, 102], "partly"),
    ([80, 85, 82, 84, 81], [60, 70, 65, 62, 68], "not reproduced"),
])
def test_verdict_rule(r_half, r_third, verdict):
    c = c8.claim({"tiny": view(losses(r_half, r_third))})
    assert c.verdict == verdict
    assert c.summary.mean == pytest.approx(sum(r_half) / 5)
    assert ("50 % beats dense: yes" in c.measured) == (min(r_half) > 100)


def test_a_diverged_seed_makes_it_partly_and_no_dense_gain_is_inconclusive():
    L = losses([110, 112, 108, 111, 109], [95, 100, 105, 98, 102])
    L["heads 33%"][0] = math.inf
    c = c8.claim({"tiny": view(L)})
    assert c.verdict == "partly" and c.to_json()["n_seeds"] == 5
    flat = losses([100] * 5, [100] * 5, frozen=1.0, dense=0.99)  # dense gains 1 % < 5 %
    assert c8.claim({"tiny": view(flat)}).verdict == "inconclusive"
    assert c8.claim({}).verdict == "not requested"  # no C8 experiment in the sweep
