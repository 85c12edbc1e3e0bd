"""The adaptation protocol of SPEC §3 for recurrent cells: from the snapshot of step 1
(:func:`~.pretraining.pretrain`, offline on regime A), adapt online on the same post-shift
stream with each method, scoring every step before learning from it (test-then-train)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..evaluate import prequential
from ..learner import OnlineLearner
from ..tasks import make_task
from ..transport import RULES, AbstractTransport, Shadowed
from .config import FROZEN, READOUT, Experiment, Method
from .metrics import window_scores
from .models import build_model, derived_seed

DTYPES = {"float32": torch.float32, "float64": torch.float64}
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}


def adaptation_stream(exp: Experiment, task, seed: int):
    """One stream whose process shifts from A to B: ``pre_shift_steps`` steps of A (not
    scored), then ``adapt_steps`` of B (the scored window)."""
    s = task.sample_shift(exp.pre_shift_steps, exp.adapt_steps, derived_seed(seed, "adapt"))
    return s.inputs, s.targets, s.error_mask, s.starts


def make_learner(method: Method, cell, seed: int | Sequence[int]) -> OnlineLearner:
    """The learner of a method; frozen and readout-only use the cheap immediate rule (unused).

    ``seed`` is the run's seed, or one seed per member for an ensemble cell: member e then
    draws its masks / noise from exactly the generator its solo run would use
    (``derived_seed(seed[e], "masks")``, or the method's own ``seed`` option for every member).
    """
    if method.rule in (FROZEN, READOUT):
        return OnlineLearner(cell, "immediate")
    options = dict(method.options)
    rule = RULES.get(method.rule)
    if rule is not None and "seed" in getattr(rule, "__dataclass_fields__", {}):
        if isinstance(seed, int):
            options.setdefault("seed", derived_seed(seed, "masks"))
        elif "seed" in options:
            options["seed"] = [options["seed"]] * len(seed)  # an int would mean seed + e
        else:
            options["seed"] = [derived_seed(s, "masks") for s in seed]
    return OnlineLearner(cell, method.rule, **options)


#: the fixed trajectory of the "alignment" diagnostic: steps after the shift, window widths
ALIGNMENT_STEPS = 300
ALIGNMENT_WIDTHS = (1, 10, 100)


def alignment_diagnostic(exp: Experiment, method: Method, seed: int, snapshot: dict) -> dict | None:
    """The "alignment" diagnostic of one run: on one fixed trajectory — the pretrained model,
    never updated, on the first ``ALIGNMENT_STEPS`` steps after the shift from a zero state,
    with the frozen readout's loss — the cosine of the method's per-step gradient (and of its
    sums over windows of 10 and 100 steps) with full RTRL's, the immediate rule's cosine (the
    floor that needs no transport), and the rule's time per step there. None for frozen and
    readout-only, which send no gradient into the cell."""
    if method.rule in (FROZEN, READOUT) or "alignment" not in exp.diagnostics:
        return None
    from ..alignment import gradient_alignment

    task = make_task(exp.task, **exp.task_options)
    dtype, device = DTYPES[method.dtype or exp.dtype], torch.device(exp.device)
    cell, readout = load_model(exp, task, seed, snapshot, dtype, device)
    for p in readout.parameters():
        p.requires_grad_(False)  # the loss's readout is fixed: only the cell's gradient is compared
    x, y, mask, _ = adaptation_stream(exp, task, seed)
    start = exp.pre_shift_steps
    xs = x[start : start + ALIGNMENT_STEPS].to(device, dtype)
    ys = y[start : start + ALIGNMENT_STEPS].to(device, dtype)
    scored = mask[start : start + ALIGNMENT_STEPS]

    def loss(t, h):
        return task.loss(readout(h), ys[t]) if bool(scored[t]) else 0.0 * h.sum()

    rule = make_learner(method, cell, seed).transport  # the run's own rule, seeded as the run is
    res = gradient_alignment(cell, {method.label: rule}, xs, loss, ALIGNMENT_WIDTHS)
    out = {"steps": res.steps, "seconds_per_step": res.seconds_per_step.get(method.label),
           "full_seconds_per_step": res.reference_seconds_per_step}
    for label, prefix in ((method.label, ""), ("immediate", "floor_")):
        if label not in res.cosine:
            continue
        for w in ALIGNMENT_WIDTHS:
            out[f"{prefix}cos@{w}"] = res.mean_cosine(label, w)
    return out


def condition_numbers(cell, state: torch.Tensor, x: torch.Tensor) -> list[float]:
    """σ_max/σ_min of J_t for each stream (float64 SVD)."""
    d = cell.step_with_derivatives(cell.stacked_parameters(), state, x, jacobian=True)
    sv = torch.linalg.svdvals(d.jacobian.double().flatten(0, 1))
    return (sv[:, 0] / sv[:, -1]).tolist()


def load_model(exp: Experiment, task, seed: int, snapshot: dict, dtype: torch.dtype,
               device: torch.device) -> tuple[nn.Module, nn.Linear]:
    """The pretrained cell and readout of ``seed`` in the run's dtype, on its device."""
    cell, readout = build_model(exp, task, seed)
    cell.load_state_dict(snapshot["cell_state"])
    readout.load_state_dict(snapshot["readout_state"])
    return cell.to(device, dtype), readout.to(device, dtype)


def trained_parameters(method: Method, cell, readout) -> list[nn.Parameter]:
    """What the online optimizer updates: nothing (frozen), the readout (and the cell's
    parameters then stop requiring gradients), or everything."""
    if method.rule == FROZEN:
        return []
    if method.rule == READOUT:
        for p in cell.parameters():
            p.requires_grad_(False)
        return list(readout.parameters())
    return [*cell.parameters(), *readout.parameters()]


def default_spectrum_every(exp: Experiment, method: Method) -> int:
    """Every 50 steps for full RTRL when the experiment asks for "jacobian_spectrum", else 0."""
    return 50 if ("jacobian_spectrum" in exp.diagnostics and method.rule == "full") else 0


def adapt(exp: Experiment, method: Method, seed: int, snapshot: dict, lr: float,
          curve_bins: int = 200, spectrum_every: int | None = None) -> dict:
    """One online run from ``snapshot``: per-step losses (scored before each update), window
    scores, divergence, timing, and Jacobian condition numbers every ``spectrum_every`` steps
    (default: every 50 steps for full RTRL when the experiment asks for "jacobian_spectrum")."""
    if spectrum_every is None:
        spectrum_every = default_spectrum_every(exp, method)
    task = make_task(exp.task, **exp.task_options)
    dtype = DTYPES[method.dtype or exp.dtype]
    device = torch.device(exp.device)
    cell, readout = load_model(exp, task, seed, snapshot, dtype, device)
    x, y, mask, starts = adaptation_stream(exp, task, seed)
    x, y = x.to(device, dtype), y.to(device, dtype)
    learner = make_learner(method, cell, seed)
    shadowed = ("alignment_run" in exp.diagnostics and method.rule not in (FROZEN, READOUT)
                and isinstance(learner.transport, AbstractTransport))
    if shadowed:  # the shadow carries full RTRL beside the rule; learning is bit-identical
        learner = OnlineLearner(cell, Shadowed(rule=learner.transport))
    params = trained_parameters(method, cell, readout)
    opt = OPTIMIZERS[method.optimizer or exp.optimizer](params, lr=lr) if params else None
    trace = PredictionTrace(exp.pre_shift_steps, x.shape[0]) if "predictions" in exp.diagnostics else None
    run = online_steps(exp, task, learner, cell, [readout], x, y.unsqueeze(0), mask, starts, opt,
                       spectrum_every, None if trace is None else [trace])
    result = run_result(exp, run.losses[0], mask, run.diverged_at, run.seconds, run.conds[0], trace, curve_bins)
    if shadowed:
        result["alignment_run"] = run_alignment(learner.transport_state.history, exp.pre_shift_steps)
    return with_alignment(result, exp, method, seed, snapshot)


def run_alignment(history, shift: int) -> dict:
    """The "alignment_run" diagnostic: along the method's own learning run (its parameters,
    its trajectory), the mean and median over the updates after the shift of the cosine of
    its gradient with full RTRL's on the same trajectory (the gradient shadow's log)."""
    steps, cos = history.steps, history.cosine[:, 0]
    after = cos[(steps > shift) & ~torch.isnan(cos)]  # the update of step t is logged as t + 1
    if not after.numel():
        return {"updates": 0, "cos_mean": math.nan, "cos_median": math.nan}
    return {"updates": int(after.numel()), "cos_mean": float(after.mean()), "cos_median": float(after.median())}


def with_alignment(result: dict, exp: Experiment, method: Method, seed: int, snapshot: dict) -> dict:
    """``result`` with the "alignment" diagnostic added when the experiment asks for it."""
    diagnostic = alignment_diagnostic(exp, method, seed, snapshot)
    return result if diagnostic is None else {**result, "alignment": diagnostic}


@dataclass
class OnlineRun:
    """What :func:`online_steps` measured, per member."""

    losses: np.ndarray  # (E, T): NaN where not scored, inf from the step the run diverged at
    diverged_at: int | None
    conds: list[list[float]]
    seconds: float


def online_steps(exp: Experiment, task, learner: OnlineLearner, cell, readouts: Sequence[nn.Module],
                 inputs: torch.Tensor, targets: torch.Tensor, mask, starts, opt,
                 spectrum_every: int, traces: Sequence["PredictionTrace"] | None = None) -> OnlineRun:
    """The protocol's run through the library's prequential loop (``evaluate.prequential``),
    for a solo run and for an ensemble of E seeds (E = ``len(readouts)``): reset where a
    sequence starts; h_t = learner.step(x_t); on scored steps each member's loss
    L_t = loss(readout_e(h_t^e), y_t^e) is recorded before the update, then their sum is
    backpropagated (each member gets exactly its own gradient) and the optimizer steps;
    cond(J_t) every ``spectrum_every`` steps after the shift.

    ``inputs[t]`` is what the learner steps on (solo: (I,); ensemble: (E, 1, I)); member e's
    hidden state is row e of h_t reshaped to (E, n), its target ``targets[e, t]``. A
    non-finite loss, or a learner's :class:`DivergenceError`, ends the run for every member:
    its losses are inf from that step on.
    """
    E, T = len(readouts), inputs.shape[0]
    conds: list[list[float]] = [[] for _ in range(E)]

    def readout(h):
        h = h.reshape(E, -1)
        return torch.stack([r(h[e]) for e, r in enumerate(readouts)])

    def loss(predictions, y):
        return torch.stack([task.loss(p, y[e]) for e, p in enumerate(predictions)])

    class Diagnostics:  # after each step, before its update: the state is s_t, θ unchanged
        def on_skip(self, t):
            if spectrum_every and t >= exp.pre_shift_steps and (t - exp.pre_shift_steps) % spectrum_every == 0:
                state, x = learner.state.reshape(E, 1, -1), inputs[t].reshape(E, 1, -1)
                for e, c in enumerate(condition_numbers(cell, state, x)):
                    conds[e].append(c)

        def on_step(self, record):
            self.on_skip(record.t)
            for e, trace in enumerate(traces or ()):
                trace.record(record.t, record.y_hat[e], record.y[e])

    stream = ((inputs[t], targets[:, t] if bool(mask[t]) else None, bool(starts[t]) and t > 0) for t in range(T))
    run = prequential(learner, readout, stream, opt, loss=loss, callbacks=[Diagnostics()])
    losses = np.full((E, T), np.nan)
    losses[:, : run.losses.shape[0]] = run.losses.reshape(run.losses.shape[0], -1).T
    if run.diverged_at is not None:
        losses[:, run.diverged_at :] = np.inf
    return OnlineRun(losses, run.diverged_at, conds, run.seconds)


def run_result(exp: Experiment, losses: np.ndarray, mask, diverged_at: int | None, seconds: float,
               conds: list[float], trace: "PredictionTrace | None", curve_bins: int) -> dict:
    """The result dict of one run from its per-step losses (NaN: not scored; inf from the
    step it diverged at) — the one format every adaptation run is written in."""
    T = len(losses)
    window = losses[exp.pre_shift_steps :]
    scored = window[np.asarray(mask[exp.pre_shift_steps :], dtype=bool)]
    L, L_end = window_scores(scored)
    pre = losses[: exp.pre_shift_steps]
    pre = pre[np.asarray(mask[: exp.pre_shift_steps], dtype=bool)]
    tail = pre[-max(1, len(pre) // 2) :]
    extras = {"predictions": trace.to_dict()} if trace is not None else {}
    return {
        **extras,
        "L": L,
        "L_end": L_end,
        "L_pre_shift": float(tail.mean()) if tail.size and np.all(np.isfinite(tail)) else math.inf,
        "diverged": diverged_at is not None,
        "diverged_at": diverged_at,
        "curve": _binned_curve(losses, mask, curve_bins),
        "seconds": seconds,
        "steps_per_second": (diverged_at or T) / max(seconds, 1e-9),
        "condition_numbers": conds,
    }


def _binned_curve(losses: np.ndarray, mask, bins: int) -> list[float | None]:
    """Mean loss per bin of steps (scored steps only); None where a bin has no score."""
    edges = np.linspace(0, len(losses), bins + 1).astype(int)
    m = np.asarray(mask, dtype=bool)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        seg = losses[a:b][m[a:b]]
        if seg.size == 0:
            out.append(None)
        elif not np.all(np.isfinite(seg)):
            out.append(math.inf)
        else:
            out.append(float(seg.mean()))
    return out


# -- opt-in diagnostic: decoded vs true outputs around the shift ("predictions") -------------
class PredictionTrace:
    """Outputs and targets of three windows of ``PREDICTION_WINDOW`` steps (fewer if the
    stream is short): the last steps before the shift ("pre"), the first after it ("post")
    and the last of the adaptation window ("end"); every ``stride``-th step is kept, so at
    most ``PREDICTION_POINTS`` points per window are stored in the result file."""

    PREDICTION_WINDOW = 200
    PREDICTION_POINTS = 100

    def __init__(self, shift: int, total: int):
        after = total - shift
        w = max(1, min(self.PREDICTION_WINDOW, shift, after // 2 if after > 1 else after))
        self.stride = max(1, -(-w // self.PREDICTION_POINTS))
        self.windows = {"pre": (shift - w, shift), "post": (shift, shift + w), "end": (total - w, total)}
        self.data = {k: {"step": [], "prediction": [], "target": []} for k in self.windows}

    def record(self, t: int, prediction: torch.Tensor, target: torch.Tensor) -> None:
        for name, (a, b) in self.windows.items():
            if a <= t < b and (t - a) % self.stride == 0:
                d = self.data[name]
                d["step"].append(t)
                d["prediction"].append([float(v) for v in prediction.detach().reshape(-1)])
                d["target"].append([float(v) for v in target.reshape(-1)])

    def to_dict(self) -> dict:
        return {"stride": self.stride, **self.data}
