"""Claim C8: head-sparse gradient transport in an online transformer (SPEC §5).

The paper reports that, in a transformer, sending the gradient to the past through 50 % of
the attention heads beats the dense reference and 33 % is borderline. This module runs the
SPEC §3 protocol with :mod:`sparse_rtrl.transformer` (the design is the project's own; see
docs/transformer.md, "The C8 experiment"):

1. pretraining (:func:`~.pretraining.pretrain`, shared with the recurrent cells): a
   :class:`~sparse_rtrl.transformer.CausalTransformer` learns regime A of the task offline
   (teacher-forced windows, full backprop, Adam).
2. ``adapt``: from that snapshot, on the same A→B stream for every method, test-then-train
   online: predict y_t from the window ending at t, score it, then learn from it. Methods
   differ only in which heads carry gradient to earlier positions:

   ========== ======================================= =========================================
   rule       options                                 meaning
   ========== ======================================= =========================================
   "frozen"   —                                       no updates
   "readout"  —                                       only the readout learns
   "full"     —                                       every head (fraction 1): the dense reference
   "immediate" —                                      no head (fraction 0): the newest position's
                                                      own gradient, the past held fixed
   "heads"    fraction, selection, importance_score   m = ⌊f·H + ½⌋ heads per block
   ========== ======================================= =========================================

   Along the run the head specialisation diagnostics (attention entropy, gradient
   contribution per head) are measured on a fixed held-out set of regime-B windows at the
   start (the snapshot), the middle and the end of the adaptation window.
3. ``claim``: recovery R_f = 100·(L_frozen − L_f)/(L_frozen − L_dense), per seed, and the
   written rule :data:`RULE`.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigurationError
from ..tasks import make_task
from ..transformer import CausalTransformer, OnlineTransformer, head_profile, heads_kept
from .views import ClaimResult, ExperimentView, Request, counting_divergence, fmt, not_requested
from .config import FROZEN, READOUT, Experiment, Method
from .methods import FROZEN_MODEL, IMMEDIATE, READOUT_ONLY
from ..evaluate import prequential
from .models import build_model, derived_seed
from .protocol import DTYPES, OPTIMIZERS, run_result

CLAIM = "transformer: gradient to the past through 50 % / 33 % of the heads vs all (dense)"
PAPER = "50 % beats dense; 33 % borderline"

#: the rules of this protocol besides "frozen" and "readout", and their head fraction
FIXED_FRACTIONS = {"full": 1.0, "immediate": 0.0}
HEAD_OPTIONS = ("fraction", "selection", "importance_score")

#: diagnostics: held-out regime-B windows profiled at each checkpoint, and the checkpoints
#: (fractions of the adaptation window: 0 = the snapshot before any online update)
PROBE_WINDOWS = 8
PROBE_STRIDE = 5
CHECKPOINTS = (0.0, 0.5, 1.0)

#: the band in which R_1/3 counts as "borderline" (points of recovery around dense = 100)
BORDERLINE = (90.0, 110.0)

RULE = (
    "R_f = 100·(L_frozen − L_f)/(L_frozen − L_dense) per seed (dense: every head carries gradient "
    "to the past; random head selection per step and block); '50 % beats dense' ⇔ the 95 % "
    "bootstrap CI of R_1/2 lies above 100; '33 % borderline' ⇔ the mean R_1/3 lies in "
    f"[{BORDERLINE[0]:g}, {BORDERLINE[1]:g}] (within 10 points of dense: neither clearly worse "
    "nor clearly better); reproduced: both hold with no diverged or undefined seed; partly: "
    "exactly one holds, or both with a diverged or undefined seed; not reproduced: neither; "
    "inconclusive: no seed has a recovery (dense does not beat frozen by 5 %)"
)


# -- the experiments -------------------------------------------------------------------------
def heads(fraction: float, selection: str = "random", **options) -> Method:
    """A head-sparse method: ``fraction`` of each block's heads carry gradient to the past;
    labelled e.g. "heads 50%" (labels name result folders: no slashes)."""
    label = f"heads {100 * fraction:.0f}%" + ("" if selection == "random" else f" {selection}")
    return Method(label, "heads", {"fraction": fraction, "selection": selection, **options})


#: the dense reference: every head carries gradient to the past (fraction 1, rule "full")
DENSE = Method("dense", "full")


def methods(selections: tuple[str, ...] = ("fixed",)) -> tuple[Method, ...]:
    """frozen, readout, fraction 0 ("immediate"), 1/4, 1/3, 1/2 (random per step), the
    extra ``selections`` at 1/2, and the dense reference (fraction 1, rule "full")."""
    return (
        FROZEN_MODEL,
        READOUT_ONLY,
        IMMEDIATE,
        heads(1 / 4),
        heads(1 / 3),
        heads(1 / 2),
        *(heads(1 / 2, s) for s in selections),
        DENSE,
    )


def experiments(profile: str) -> list[Experiment]:
    """The C8 experiment of ``profile``: a 12-head, one-block transformer (d_model 48, window
    32) on the sine frequency shift. ``quick`` measures fractions 1, 1/2, 1/3, 1/4, 0 and a
    fixed 1/2 mask on 3 seeds; ``paper`` adds importance selection at 1/2 and uses 5 seeds and
    longer pretraining and adaptation."""
    quick = profile == "quick"
    window = 32
    return [Experiment(
        name="sine_transformer",
        claims=("C8",),
        task="sine",
        task_options={},
        cell="transformer",
        hidden_size=48,
        model_options={"heads": 12, "blocks": 1, "window": window},
        methods=methods(("fixed",) if quick else ("fixed", "importance")),
        dtype="float32",
        pretrain_updates=400 if quick else 1500,
        pretrain_batch=16,
        pretrain_chunk=window,  # the report prints it: the transformer trains on full windows
        pretrain_burn_in=0,
        pretrain_lr=3e-3,
        pre_shift_steps=2 * window,
        adapt_steps=500 if quick else 2000,
        optimizer="adam",
        lr_grid=(1e-4, 3e-4) if quick else (1e-4, 3e-4, 1e-3),
        lr_rule="best_stable",
        lr_reference=DENSE.label,
        validation_seeds=(100, 101) if quick else (100, 101, 102),
        seeds=(0, 1, 2) if quick else (0, 1, 2, 3, 4),
        diagnostics=("head_profile",),
    )]


# -- the protocol (step 1, pretraining, is ``pretraining.pretrain``) ------------------------
def load_snapshot(exp: Experiment, task, seed: int, snapshot: dict) -> CausalTransformer:
    """The pretrained transformer of ``seed`` (float64; body and readout from the snapshot)."""
    model = build_model(exp, task, seed)
    model.load_state_dict({**snapshot["cell_state"], **{f"readout.{k}": v for k, v in snapshot["readout_state"].items()}})
    return model


def head_options(method: Method) -> dict:
    """The learner options of a method: {"head_fraction", "selection", "importance_score"}."""
    if method.rule in (FROZEN, READOUT):
        return {"head_fraction": 0.0, "selection": "random"}  # readout: nothing reaches the past
    if method.rule in FIXED_FRACTIONS:
        if method.options:
            raise ConfigurationError(f"method {method.label!r}: rule {method.rule!r} takes no options")
        return {"head_fraction": FIXED_FRACTIONS[method.rule], "selection": "random"}
    if method.rule != "heads":
        raise ConfigurationError(
            f"method {method.label!r}: the transformer protocol runs the rules 'frozen', 'readout', "
            f"'full' (every head), 'immediate' (no head) and 'heads' (with a fraction), not {method.rule!r}"
        )
    unknown = set(method.options) - set(HEAD_OPTIONS)
    if unknown or "fraction" not in method.options:
        raise ConfigurationError(
            f"method {method.label!r}: 'heads' takes options {', '.join(HEAD_OPTIONS)} with 'fraction' "
            f"required, got {sorted(method.options)}"
        )
    o = method.options
    return {"head_fraction": o["fraction"], "selection": o.get("selection", "random"),
            "importance_score": o.get("importance_score", "gradient")}


def method_fraction(method: Method) -> float | None:
    """The head fraction of a learning method (None for frozen and readout)."""
    if method.rule in (FROZEN, READOUT):
        return None
    return float(head_options(method)["head_fraction"])


def _profile(model: CausalTransformer, probe, loss_fn) -> dict:
    """Head diagnostics of ``model`` on the held-out windows, as JSON lists (blocks × H)."""
    W = model.config.window
    flags = [p.requires_grad for p in model.parameters()]
    try:  # contributions are over every parameter, whatever the method trains
        for q in model.parameters():
            q.requires_grad_(True)
        prof = head_profile(model, probe[0], probe[1], loss_fn=loss_fn, start=W - 1, every=PROBE_STRIDE)
    finally:
        for q, f in zip(model.parameters(), flags):
            q.requires_grad_(f)
    return {
        "entropy": prof.entropy.tolist(),
        "normalised_entropy": prof.normalised_entropy.tolist(),
        "contribution": prof.contribution.tolist(),
        "past_share": prof.past_share.tolist(),
        "past_attention": prof.past_attention.tolist(),
        "contribution_cv": prof.contribution_cv.tolist(),
    }


def readout_inputs(model: CausalTransformer, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """LN(z_L), the readout's input, for every full window of ``x`` (T, I), by batched
    forwards without a graph: ``(T − W + 1, d)``, row r for the window ending at t = r + W − 1."""
    W = model.config.window
    seen = []
    hook = model.readout.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            xs = x.unfold(0, W, 1).transpose(1, 2)
            for i in range(0, xs.shape[0], chunk):
                model(xs[i : i + chunk])
    finally:
        hook.remove()
    return torch.cat(seen)


def online_run(exp: Experiment, method: Method, seed: int, model: CausalTransformer, lr: float,
               x: torch.Tensor, y: torch.Tensor, loss_fn, probe=None, fast: bool = True) -> dict:
    """Test-then-train over the stream (x, y) from ``model`` (changed in place). The first
    W − 1 steps only fill the window. Returns per-step losses (NaN unscored, inf from a
    divergence on), the divergence step, the head usage and the checkpoint profiles.

    ``fast``: frozen and readout-only runs, whose body never changes, read the readout's
    inputs from one batched forward instead of running the learner step by step (the same
    numbers up to round-off; tested).
    """
    c = model.config
    T, W = x.shape[0], c.window
    if method.rule == FROZEN:
        params = []
    elif method.rule == READOUT:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("readout."))
        params = list(model.readout.parameters())
    else:
        params = list(model.parameters())
    opt = OPTIMIZERS[method.optimizer or exp.optimizer](params, lr=lr, foreach=True) if params else None
    if fast and method.rule in (FROZEN, READOUT):
        learner, readout = _Features(readout_inputs(model, x)), model.readout
    else:
        learner, readout = OnlineTransformer.from_model(model, seed=derived_seed(seed, "masks"),
                                                        **head_options(method)), _identity
        with torch.no_grad():
            for t in range(W - 1):
                learner.step(x[t])
    track = isinstance(learner, OnlineTransformer) and method.rule not in (FROZEN, READOUT)
    usage = torch.zeros(c.blocks, c.heads, dtype=torch.float64)
    updates = [0]
    # checkpoint f > 0: after the update of post-shift step round(f·T_a); f = 0: the snapshot
    marks = {exp.pre_shift_steps + round(f * exp.adapt_steps) - 1: f for f in CHECKPOINTS if f > 0}
    profiles = []
    if probe is not None and 0.0 in CHECKPOINTS:
        profiles.append({"checkpoint": 0.0, "step": 0, **_profile(model, probe, loss_fn)})

    class AfterUpdate:  # head usage and the checkpoint diagnostics, once the step has learned
        def on_learned(self, record):
            t = record.t + W - 1
            if opt is not None:
                if track:
                    usage.add_(learner.last_kept.double())
                updates[0] += 1
            if probe is not None and t in marks:
                profiles.append({"checkpoint": marks[t], "step": t + 1 - exp.pre_shift_steps,
                                 **_profile(model, probe, loss_fn)})

    stream = ((x[t], y[t]) for t in range(W - 1, T))  # the first W − 1 steps filled the window
    run = prequential(learner, readout, stream, opt, loss=loss_fn, callbacks=[AfterUpdate()])
    losses = np.full(T, np.nan)
    losses[W - 1 : W - 1 + len(run.losses)] = run.losses
    diverged_at = None if run.diverged_at is None else run.diverged_at + W - 1
    if diverged_at is not None:
        losses[diverged_at:] = np.inf
    return {"losses": losses, "diverged_at": diverged_at, "profiles": profiles,
            "head_usage": (usage / max(updates[0], 1)).tolist() if track and updates[0] else None}


def _identity(prediction: torch.Tensor) -> torch.Tensor:
    return prediction  # the transformer's step already returns the readout's prediction


class _Features:
    """The learner of a frozen body: step t returns the readout's input, read from one batched
    forward of the windows (``readout_inputs``); backward is plain autograd into the readout."""

    def __init__(self, features: torch.Tensor):
        self.features, self.steps = features, 0

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.features[self.steps - 1]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def reset_state(self) -> None:  # one stream: never called
        pass


def adapt(exp: Experiment, method: Method, seed: int, snapshot: dict, lr: float, curve_bins: int = 200) -> dict:
    """One online run from ``snapshot`` on the seed's A→B stream; the keys of
    :func:`sparse_rtrl.experiments.protocol.adapt` plus ``head_profiles`` (the diagnostics at
    each checkpoint), ``head_usage`` (share of updates in which each head carried gradient to
    the past) and ``heads_kept`` (m per block)."""
    task = make_task(exp.task, **exp.task_options)
    dtype = DTYPES[method.dtype or exp.dtype]
    device = torch.device(exp.device)
    model = load_snapshot(exp, task, seed, snapshot).to(device, dtype)
    W = model.config.window
    if exp.pre_shift_steps < W:
        raise ConfigurationError(
            f"experiment {exp.name!r}: pre_shift_steps={exp.pre_shift_steps} must be at least the "
            f"window ({W}) so that the window is full of regime A at the shift"
        )
    stream = task.sample_shift(exp.pre_shift_steps, exp.adapt_steps, derived_seed(seed, "adapt"))
    x, y = stream.inputs.to(device, dtype), stream.targets.to(device, dtype)
    probe = None
    if "head_profile" in exp.diagnostics:
        # a held-out regime-B stream (its own seed key), the same for every method and checkpoint
        held = task.sample("B", W + (PROBE_WINDOWS - 1) * PROBE_STRIDE, derived_seed(seed, "adapt"))
        probe = (held.inputs.to(device, dtype), held.targets.to(device, dtype))
    t0 = time.perf_counter()
    run = online_run(exp, method, seed, model, lr, x, y, task.loss, probe)
    seconds = time.perf_counter() - t0
    losses, diverged_at = run["losses"], run["diverged_at"]
    T = x.shape[0]
    scored = np.zeros(T, dtype=bool)
    scored[W - 1 :] = True  # the first W - 1 steps only fill the window
    return {
        **run_result(exp, losses, scored, diverged_at, seconds, [], None, curve_bins),
        "steps_per_second": ((diverged_at or T) - (W - 1)) / max(seconds, 1e-9),
        "heads_kept": heads_kept(head_options(method)["head_fraction"], model.config.heads),
        "head_usage": run["head_usage"],
        "head_profiles": run["profiles"],
    }


# -- the claim -------------------------------------------------------------------------------
def _c8_views(views: dict[str, ExperimentView]) -> list[tuple[str, ExperimentView]]:
    return [(name, e) for name, e in views.items() if "C8" in e.config.claims]


def _method(e: ExperimentView, fraction: float, selection: str = "random") -> Method | None:
    """The experiment's method with this head fraction and selection (first match)."""
    for m in e.config.methods:
        f = method_fraction(m)
        if f is None or abs(f - fraction) > 1e-9:
            continue
        if fraction in (0.0, 1.0) or head_options(m)["selection"] == selection:
            return m
    return None


def _profiles(e: ExperimentView, method: Method, checkpoint: float) -> list[dict]:
    """The head profile at ``checkpoint`` of each seed's run of ``method`` (seeds without one skipped)."""
    out = []
    for s in e.seeds():
        run = e.runs_of(method).get(s)
        for p in (run or {}).get("head_profiles", []):
            if p["checkpoint"] == checkpoint:
                out.append(p)
    return out


def specialisation(profiles: list[dict]) -> dict | None:
    """Across seeds (mean, std): contribution CV across heads, the share of the summed
    contribution carried by the top half of the heads (50 % if isotropic), and the
    normalised attention entropy (mean over heads, and its spread max − min)."""
    if not profiles:
        return None
    cv, top, ent, spread = [], [], [], []
    for p in profiles:
        c = np.asarray(p["contribution"], dtype=float)
        h = np.asarray(p["normalised_entropy"], dtype=float)
        for row_c, row_h in zip(c, h):
            s = np.sort(row_c)[::-1]
            total = s.sum()
            cv.append(float(s.std() / s.mean()) if s.mean() > 0 else math.nan)
            top.append(float(100 * s[: len(s) // 2].sum() / total) if total > 0 else math.nan)
            ent.append(float(row_h.mean()))
            spread.append(float(row_h.max() - row_h.min()))

    def ms(v):
        v = np.asarray(v, dtype=float)
        return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if v.size > 1 else 0.0

    return {"contribution_cv": ms(cv), "top_half_share": ms(top), "normalised_entropy": ms(ent),
            "entropy_spread": ms(spread), "n": len(profiles)}


def _spec_text(s: dict | None) -> str:
    if s is None:
        return "not measured"
    return (f"contribution CV across heads {s['contribution_cv'][0]:.2f} ± {s['contribution_cv'][1]:.2f}; "
            f"the top half of the heads carries {s['top_half_share'][0]:.0f} ± {s['top_half_share'][1]:.0f} % "
            f"of the summed contribution (50 % if isotropic); normalised attention entropy "
            f"{s['normalised_entropy'][0]:.2f} (spread across heads {s['entropy_spread'][0]:.2f})")


def _claim_for(name: str, e: ExperimentView) -> ClaimResult:
    dense, half, third = _method(e, 1.0), _method(e, 1 / 2), _method(e, 1 / 3)
    if not (dense and half and third) or not e.complete(FROZEN_MODEL, dense, half, third):
        return ClaimResult("C8", CLAIM, PAPER, "not yet measured", "not yet measured")
    r_half = e.recovery_summary(half, full=dense)
    r_third = e.recovery_summary(third, full=dense)
    if r_half.n_scored == 0 and r_third.n_scored == 0:
        return ClaimResult("C8", CLAIM, PAPER, "inconclusive", RULE, r_half,
                           "undefined: the dense method does not beat the frozen model by 5 % on any seed")
    beats = r_half.n_scored > 0 and r_half.ci95[0] > 100
    borderline = r_third.n_scored > 0 and BORDERLINE[0] <= r_third.mean <= BORDERLINE[1]
    clean = all(s.n_diverged == 0 and s.n_undefined == 0 for s in (r_half, r_third))
    if beats and borderline:
        verdict = "reproduced" if clean else "partly"
    else:
        verdict = "partly" if beats or borderline else "not reproduced"
    lo, hi = r_half.ci95
    measured = (f"R(1/2) = {fmt(r_half)} (CI {lo:.0f} – {hi:.0f}): 50 % beats dense: "
                f"{'yes' if beats else 'no'}; R(1/3) = {fmt(r_third)}: 33 % borderline: "
                f"{'yes' if borderline else 'no'}")
    details = [f"experiment `{name}`: {e.config.model_options.get('heads')} heads × "
               f"{e.config.model_options.get('blocks', 1)} block(s), d_model {e.config.hidden_size}, window "
               f"{e.config.model_options.get('window')}, task `{e.config.task}`, optimizer `{e.config.optimizer}`"]
    zero = _method(e, 0.0)
    zero = zero if zero and e.complete(zero) else None
    # recovery relative to fraction 0 exists only where dense beats fraction 0 by > 5 % of its loss
    vs_zero = zero is not None and e.recovery_summary(half, reference=zero, full=dense).n_scored > 0
    for m in e.config.methods:
        if m.label in (FROZEN_MODEL.label, dense.label) or not e.complete(m):
            continue
        f = method_fraction(m)
        what = "readout only" if f is None else f"fraction {f:.3g}"
        line = f"{m.label} ({what}): R = {fmt(e.recovery_summary(m, full=dense))}"
        if vs_zero and m.label != zero.label:
            line += f"; relative to fraction 0: {fmt(e.recovery_summary(m, reference=zero, full=dense))}"
        details.append(line)
    if zero is not None and not vs_zero:
        details.append("recovery relative to fraction 0 is undefined on every seed: dense does not beat "
                       "fraction 0 by more than 5 % of its loss")
    curve = [(f, e.recovery_summary(m, full=dense).mean) for f, m in _fraction_points(e)]
    if len(curve) > 2:
        steps = [b - a for (_, a), (_, b) in zip(curve, curve[1:])]
        shape = "rises monotonically" if all(d >= 0 for d in steps) else "is not monotone"
        details.append(f"mean recovery {shape} with the fraction (" + ", ".join(
            f"{Fraction(f).limit_denominator(64)}: {r:.1f}" for f, r in curve) + " %)")
    L_d, L_h = e.L(dense), e.L(half)
    wins = sum(1 for a, b in zip(L_h, L_d) if math.isfinite(a) and math.isfinite(b) and a < b)
    details.append(f"L(1/2) < L(dense) on {wins} of {len(e.seeds())} seeds")
    details.append("specialisation of the snapshot (held-out regime-B windows, before any online update): "
                   + _spec_text(specialisation(_profiles(e, dense, 0.0))))
    details.append("after dense adaptation (end of the window): " + _spec_text(specialisation(_profiles(e, dense, 1.0))))
    return ClaimResult("C8", CLAIM, PAPER, verdict, RULE, r_half, measured, details)


def claim(views: dict[str, ExperimentView]) -> ClaimResult | list[ClaimResult]:
    """One C8 row per experiment that lists C8 among its claims (one "not yet measured" row if none)."""
    # each row counts the diverged runs of the methods it read from its own experiment
    rows = [counting_divergence(lambda: _claim_for(name, e), e) for name, e in _c8_views(views)]
    if not rows:
        return not_requested("C8", CLAIM, PAPER, ["the C8 experiments"])
    return rows if len(rows) > 1 else rows[0]


# -- figures ---------------------------------------------------------------------------------
def _fraction_points(e: ExperimentView) -> list[tuple[float, Method]]:
    """(head fraction, method) of every completed method that picks its heads at random, by fraction."""
    pts = []
    for m in e.config.methods:
        f = method_fraction(m)
        if f is None or not e.complete(m):
            continue
        if m.rule == "heads" and head_options(m)["selection"] != "random":
            continue
        pts.append((f, m))
    return sorted(pts, key=lambda p: (p[0], p[1].label))


def claims(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult]:
    """This family's rows (C8), counting the diverged runs of every method they read."""
    rows = counting_divergence(lambda: claim(views), *views.values())
    return rows if isinstance(rows, list) else [rows]


def figures(views: dict[str, ExperimentView], folder: Path) -> list[tuple[str, str]]:
    """Recovery vs head fraction, and per-head contribution share and entropy, per C8 experiment."""
    from . import plots

    out = []
    for name, e in _c8_views(views):
        dense = _method(e, 1.0)
        if not dense or not e.complete(FROZEN_MODEL, dense):
            continue
        suffix = "" if name == "sine_transformer" else f"_{name}"
        f = _recovery_figure(e, dense, folder / f"c8_recovery_vs_fraction{suffix}.png")
        if f:
            out.append((f"C8: recovery vs head fraction ({name})", f"figures/{f}"))
        f = _specialisation_figure(e, dense, folder / f"c8_head_specialisation{suffix}.png")
        if f:
            out.append((f"C8: head specialisation ({name})", f"figures/{f}"))
        shown = [m for m in (FROZEN_MODEL, READOUT_ONLY, _method(e, 0.0), _method(e, 1 / 3), _method(e, 1 / 2), dense) if m]
        f = plots.curves(e, shown, folder / f"c8_curves{suffix}.png")
        if f:
            out.append((f"C8: learning curves around the shift ({name})", f"figures/{f}"))
    return out


def _recovery_figure(e: ExperimentView, dense: Method, path: Path) -> str | None:
    from .plotting import mean_std as _mean_std
    from .plotting import pyplot as _plt
    from .plotting import save as _save

    pts = _fraction_points(e)
    if len(pts) < 2:
        return None
    xs = [f for f, _ in pts]
    stats = [_mean_std(e.recoveries(m, full=dense)) for _, m in pts]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.axhspan(*BORDERLINE, color="tab:orange", alpha=0.15, label="'borderline' band (R(1/3))")
    ax.axhline(100, color="k", lw=0.8)
    ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                label="random heads per step (mean ± std over seeds)")
    for m in e.config.methods:
        if m.rule == "heads" and head_options(m)["selection"] != "random" and e.complete(m):
            mean, std = _mean_std(e.recoveries(m, full=dense))
            ax.errorbar([method_fraction(m)], [mean], yerr=[std], marker="s", capsize=3, ls="none", label=m.label)
    if e.complete(READOUT_ONLY):
        ax.axhline(_mean_std(e.recoveries(READOUT_ONLY, full=dense))[0], color="tab:gray", ls=":", lw=1, label="readout only")
    ax.set_xticks(xs, [str(Fraction(x).limit_denominator(64)) for x in xs])
    ax.set_xlabel("share of heads carrying gradient to the past (1 = dense)")
    ax.set_ylabel("recovery vs dense (%)")
    ax.set_title("C8: recovery vs head fraction (paper: 1/2 beats dense, 1/3 borderline)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _specialisation_figure(e: ExperimentView, dense: Method, path: Path) -> str | None:
    """Per head, sorted by contribution within each seed and block: contribution share
    (c / Σ c) and normalised entropy, for the snapshot and after dense adaptation."""
    from .plotting import pyplot as _plt
    from .plotting import save as _save

    series = []
    for checkpoint, title in ((0.0, "snapshot"), (1.0, "after dense adaptation")):
        share, ent = [], []
        for p in _profiles(e, dense, checkpoint):
            for c, h in zip(np.asarray(p["contribution"], float), np.asarray(p["normalised_entropy"], float)):
                order = np.argsort(-c)
                share.append(c[order] / c.sum() if c.sum() > 0 else np.zeros_like(c))
                ent.append(h[order])
        if share:
            series.append((title, np.asarray(share), np.asarray(ent)))
    if not series:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8.5, 3.4))
    width = 0.8 / len(series)
    for i, (title, share, ent) in enumerate(series):
        H = share.shape[1]
        x = np.arange(H) + (i - (len(series) - 1) / 2) * width
        a1.bar(x, share.mean(0), width, yerr=share.std(0), capsize=2, label=title)
        a2.bar(x, ent.mean(0), width, yerr=ent.std(0), capsize=2, label=title)
    H = series[0][1].shape[1]
    a1.axhline(1 / H, color="k", ls="--", lw=0.8, label="isotropic (1/H)")
    a1.set_xlabel("head rank (by contribution, per seed)")
    a1.set_ylabel("share of the summed contribution")
    a1.set_title("gradient to the past, per head", fontsize=9)
    a1.legend(fontsize=7)
    a2.set_xlabel("head rank (by contribution, per seed)")
    a2.set_ylabel("attention entropy / log W")
    a2.set_ylim(0, 1.05)
    a2.set_title("newest query's attention entropy", fontsize=9)
    fig.suptitle(f"C8: head specialisation ({e.config.model_options.get('heads')} heads, mean ± std over seeds)", fontsize=9)
    return _save(fig, path)
