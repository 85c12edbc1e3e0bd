"""Claim C9: a recurrent decoder of motor-cortex activity, trained on one session, adapts
online to the next session's electrode drift (paper: sparse k = 4 recovers 80 ± 11 % of
full RTRL's gain over 5 seeds, and more stably than full RTRL).

One experiment per setting, each on the ``bci`` task (docs/bci.md):

| setting | experiment | claim row | data |
|---|---|---|---|
| SIMULATED drifting population | ``bci_synthetic`` | C9 | always |
| the same, LSTM decoder (n = 32) | ``bci_synthetic_lstm`` | in the C9 row | paper profile |
| Chewie, 77 days apart (real) | ``bci_chewie`` | C9-chewie | if the two files are in the data folder |
| Stevenson 2011, simulated drift | ``bci_stevenson`` | C9-stevenson | if the file is in the data folder |
| the user's two recordings | ``bci_files`` | C9-files | ``--session-a/--session-b`` |

Every experiment has claims ``("C9",)`` (so ``--only C9`` selects them all), a vanilla RNN
decoder of n = 64 units, and one learning rate for all methods picked on validation seeds by
the ``best_stable`` rule with full RTRL as the reference (the same machinery as the other
claims).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError
from ..tasks import make_task
from ..tasks.bci import CHEWIE_FILES, STEVENSON_FILE, available, default_data_dir, expected_data_dir
from .views import (NUMERIC_RULE, ClaimResult, ExperimentView, Request, counting_divergence, fmt,
                     not_requested, numeric_verdict)
from .config import Experiment, Method
from .methods import FROZEN_MODEL, FULL, IMMEDIATE, K4, READOUT_ONLY, REFERENCES, sparse
from .metrics import coefficient_of_variation
from .paper import C9_RECOVERY

CLAIM = "BCI cross-session drift, k=4: recovery and stability vs full RTRL"
PAPER = "80 ± 11 %"
PAPER_MEAN, PAPER_STD = C9_RECOVERY

#: setting → (experiment name, claim id, what the row is about)
SETTINGS = {
    "synthetic": ("bci_synthetic", "C9", "SIMULATED drifting population (synthetic)"),
    "chewie": ("bci_chewie", "C9-chewie", "Chewie, recorded sessions 77 days apart"),
    "stevenson": ("bci_stevenson", "C9-stevenson", "Stevenson 2011 M1 session, SIMULATED drift"),
    "files": ("bci_files", "C9-files", "user recordings"),
}
REAL_FILES = {"chewie": CHEWIE_FILES, "stevenson": (STEVENSON_FILE,)}

KEY = K4
HIDDEN = 64
#: paper profile only: the synthetic setting with an LSTM decoder, reported in the C9 row
LSTM_NAME, LSTM_HIDDEN = "bci_synthetic_lstm", 32
#: learning rates tried on the validation seeds: lower than the other claims' Adam grid, since
#: a decoder of ~100 inputs takes an Adam step in every input weight at once
LR_GRID = (1e-4, 3e-4, 1e-3)
#: the k of the decoders' sparse methods (quick; paper, and the details of the C9 rows)
QUICK_K, PAPER_K = (4,), (1, 4, 16)


def _methods(quick: bool) -> tuple[Method, ...]:
    return (*REFERENCES, *(sparse(k) for k in (QUICK_K if quick else PAPER_K)), FULL)


#: the share of a recorded session A held out of pretraining (written into the task options, so
#: runs made before session A was split have other keys and are redone, not reused)
HOLDOUT = 0.25


def experiments(profile: str, data_dir: Path | str | None = None,
                session_files: tuple[str, str] | None = None, bin_size: float | None = None) -> list[Experiment]:
    """The C9 experiments of ``profile``: the synthetic one always; Chewie and Stevenson when
    their files are under ``data_dir`` (default: ``$SPARSE_RTRL_DATA``, else shared/data beside
    the source checkout);
    ``bci_files`` when ``session_files`` = (session A, session B) is given (``bin_size`` in s
    for spike-time files). Paths are made absolute, so result keys do not depend on the
    current directory."""
    if profile not in ("quick", "paper"):
        raise ValueError(f"unknown profile {profile!r}: choose 'quick' or 'paper'")
    quick = profile == "quick"
    adapt_cap = 1000 if quick else 3000
    common = dict(
        claims=("C9",), task="bci", cell="vanilla", hidden_size=HIDDEN, methods=_methods(quick),
        seeds=(0, 1, 2) if quick else (0, 1, 2, 3, 4),
        validation_seeds=(100,) if quick else (100, 101, 102),
        pretrain_updates=150 if quick else 600, pre_shift_steps=200,
        lr_grid=LR_GRID, lr_rule="best_stable", lr_reference=FULL.label,
        diagnostics=("predictions",),
    )
    out = [Experiment(name=SETTINGS["synthetic"][0], task_options={}, adapt_steps=adapt_cap, **common)]
    if not quick:  # the same setting with an LSTM decoder (N = 2n = 64 state units)
        out.append(Experiment(name=LSTM_NAME, task_options={}, adapt_steps=adapt_cap,
                              **{**common, "cell": "lstm", "hidden_size": LSTM_HIDDEN,
                                 "methods": _methods(True)}))
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigurationError(f"data_dir {data_dir}: no such directory (the folder holding "
                                 f"{', '.join(CHEWIE_FILES + (STEVENSON_FILE,))})")
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    for source in ("chewie", "stevenson"):
        if base is not None and available(source, base):
            options = {"source": source, "data_dir": str(base.resolve()), "holdout": HOLDOUT}
            out.append(Experiment(name=SETTINGS[source][0], task_options=options,
                                  adapt_steps=_window(options, adapt_cap),
                                  **{**common, "pre_shift_steps": _before(options, common)}))
    if session_files is not None:
        a, b = session_files
        options = {"source": "files", "session_a": str(Path(a).resolve()), "session_b": str(Path(b).resolve()),
                   "holdout": HOLDOUT}
        if bin_size is not None:
            options["bin_size"] = float(bin_size)
        out.append(Experiment(name=SETTINGS["files"][0], task_options=options,
                              adapt_steps=_window(options, adapt_cap),
                              **{**common, "pre_shift_steps": _before(options, common)}))
    return out


def _window(options: dict, cap: int) -> int:
    """T_a for a recorded session B: all of it up to ``cap`` bins, so no scored bin repeats
    (loads the files now: a missing or unreadable file fails before any run starts)."""
    task = make_task("bci", **options)
    return min(cap, task.session_bins()[1])


def _before(options: dict, common: dict) -> int:
    """Bins streamed before the shift for a recorded session A: at most its held-out bins, so
    the frozen decoder's loss there is measured on bins it never trained on."""
    return min(common["pre_shift_steps"], make_task("bci", **options).held_out_bins())


# -- the claim --------------------------------------------------------------------------------
def claim(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult] | ClaimResult:
    """One row per setting: recovery of sparse k = 4 against 80 ± 11 %, and in the details
    the stability comparison (CV of L across seeds, diverged runs) sparse vs full RTRL.

    With no C9 experiment in the sweep (``--only`` left them out) there is one row, C9,
    "not requested"; otherwise the synthetic, Chewie and Stevenson rows always appear and
    C9-files when the user ran their files. A setting not in the sweep says "not requested"
    when ``request`` (what the sweep was asked for) left it out, and "data absent" when it was
    asked for but its files were not found; with ``request`` unknown (None), the data folder
    is looked at now."""
    present = {s for s, (name, _, _) in SETTINGS.items() if name in views}
    if not present:
        return not_requested("C9", CLAIM, PAPER, [name for name, _, _ in SETTINGS.values() if name != "bci_files"])
    rows = []
    for setting in ("synthetic", "chewie", "stevenson", "files"):
        if setting == "files" and setting not in present:
            continue
        name, cid, what = SETTINGS[setting]
        text = f"{CLAIM} — {what}"
        if setting not in present:
            rows.append(_absent(setting, text, request))
            continue
        e = views[name]
        if setting == "files":
            text += _simulated_note(make_task(e.config.task, **e.config.task_options))
        lstm = views.get(LSTM_NAME) if setting == "synthetic" else None
        rows.append(counting_divergence(lambda: _row(cid, text, e, lstm), *[v for v in (e, lstm) if v]))
    return rows


def _simulated_note(task) -> str:
    """", SIMULATED session B" (or A, or A and B) for user files that are simulated."""
    sim = [label for label, flag in zip("AB", task.simulated_sessions()) if flag]
    return f", SIMULATED session {' and '.join(sim)}" if sim else ""


def _absent(setting: str, text: str, request: Request | None) -> ClaimResult:
    """The row of a setting that is not in the sweep: not requested, or its data absent."""
    name, cid, _ = SETTINGS[setting]
    if setting == "synthetic":
        return not_requested(cid, text, PAPER, [name])
    base = default_data_dir()
    files = ", ".join(REAL_FILES[setting])
    if request is not None and not request.includes(name, ("C9", cid)):
        # a request inferred from what ran cannot tell "--only bci_synthetic" from "--only C9"
        # without the data: say where the data goes, in case it was asked for
        hint = (f"; or, if it was, its data ({files}) was not found: pass --data-dir or set SPARSE_RTRL_DATA"
                if request.inferred and (base is None or not available(setting, base)) else "")
        return not_requested(cid, text, PAPER, [name], hint)
    if base is None or not available(setting, base):
        where = base if base is not None else expected_data_dir()
        why = (f"not measured: data absent ({files} not found under {where}; pass --data-dir or set "
               f"SPARSE_RTRL_DATA)")
        return ClaimResult(cid, text, PAPER, "not measured", why, measured="data absent")
    if request is not None:  # asked for, yet not run: the files were not there when the sweep ran
        verb = "is" if len(REAL_FILES[setting]) == 1 else "are"
        why = (f"not measured: data absent when the sweep ran ({files} {verb} under {base} now: run "
               f"reproduce again to measure it)")
        return ClaimResult(cid, text, PAPER, "not measured", why, measured="data absent")
    return not_requested(cid, text, PAPER, [name])


STABILITY_RULE = ("more stable: fewer diverged runs, or (as many) CV(L) across seeds at most half of "
                  "full RTRL's; less stable: the reverse; otherwise about as stable (CVs within a factor 2)")


def stability(e: ExperimentView, method: Method = KEY) -> tuple[str, str]:
    """("more stable" | "less stable" | "about as stable" | "not comparable", the sentence
    that says why) for ``method`` against full RTRL, by STABILITY_RULE."""
    cv_s, cv_f = coefficient_of_variation(e.L(method)), coefficient_of_variation(e.L(FULL))
    div_s, div_f = sum(e.diverged(method)), sum(e.diverged(FULL))
    numbers = f"CV of L across seeds {_pct(cv_s)} vs {_pct(cv_f)}, diverged runs {div_s} vs {div_f}"
    if div_s != div_f:
        word = "more stable" if div_s < div_f else "less stable"
    elif not (math.isfinite(cv_s) and math.isfinite(cv_f)):
        word = "not comparable"
    elif cv_f >= 2 * cv_s:
        word = "more stable"
    elif cv_s >= 2 * cv_f:
        word = "less stable"
    else:
        word = "about as stable"
    return word, f"{method.label} is {_versus(word)} full RTRL: {numbers}"


def _versus(word: str) -> str:
    return {"about as stable": "about as stable as", "not comparable": "not comparable with"}.get(word, f"{word} than")


def _row(cid: str, text: str, e: ExperimentView, lstm: ExperimentView | None = None) -> ClaimResult:
    if not e.complete(FROZEN_MODEL, FULL, KEY):
        return ClaimResult(cid, text, PAPER, "not yet measured", "the sweep has not finished this experiment")
    s = e.recovery_summary(KEY)
    verdict = numeric_verdict(s, PAPER_MEAN, PAPER_STD)
    cv_s, cv_f = coefficient_of_variation(e.L(KEY)), coefficient_of_variation(e.L(FULL))
    div_s, div_f = sum(e.diverged(KEY)), sum(e.diverged(FULL))
    word, sentence = stability(e)
    measured = (f"{fmt(s)}; {_versus(word)} full RTRL (CV(L) {_pct(cv_s)} vs {_pct(cv_f)}, diverged "
                f"{div_s} vs {div_f})")
    details = [f"recovery of {KEY.label} vs full RTRL (paired per seed): {fmt(s)} (paper {PAPER})",
               f"stability: {sentence} (rule: {STABILITY_RULE})"]
    for m in (IMMEDIATE, sparse(1), sparse(16), READOUT_ONLY):
        if e.complete(m):
            details.append(f"recovery of {m.label}: {fmt(e.recovery_summary(m))}")
    details.append(f"recovery of {KEY.label} relative to the immediate rule: "
                   f"{fmt(e.recovery_summary(KEY, reference=IMMEDIATE))}")
    if lstm is not None and lstm.complete(FROZEN_MODEL, FULL, KEY):
        details.append(f"LSTM decoder (n = {lstm.config.hidden_size}, same setting): recovery of {KEY.label} "
                       f"{fmt(lstm.recovery_summary(KEY))}, of immediate {fmt(lstm.recovery_summary(IMMEDIATE))}; "
                       f"stability: {stability(lstm)[1]}")
    frozen = e.runs_of(FROZEN_MODEL)
    L_pre = [frozen[s_]["L_pre_shift"] for s_ in e.seeds() if s_ in frozen]
    details.append(f"decoder MSE (z-scored velocity; 1 = predicting A's mean): frozen before the shift "
                   f"{_mean_std(L_pre)}, frozen after {_mean_std(e.L(FROZEN_MODEL))}, full RTRL "
                   f"{_mean_std(e.L(FULL))}, {KEY.label} {_mean_std(e.L(KEY))}")
    task = make_task(e.config.task, **e.config.task_options)
    details.append(f"setting: {task.describe_shift()}; n = {e.config.hidden_size} vanilla RNN, "
                   f"T_a = {e.config.adapt_steps} bins")
    if e.config.task_options.get("source") in ("chewie", "stevenson", "files"):
        details.append("real recording: every seed sees the same stream (seeds vary the initialisation, "
                       "pretraining batches and masks), and the learning rate was chosen on validation "
                       "seeds of the same recording")
    return ClaimResult(cid, text, PAPER, verdict, NUMERIC_RULE, s, measured, details)


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:.1f} %"


def _mean_std(values) -> str:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return "—"
    return f"{x.mean():.3g} ± {x.std(ddof=1) if x.size > 1 else 0.0:.2g}"


def _tick(setting: str, e: ExperimentView) -> str:
    """The setting's name, marked as simulated where any of its sessions is."""
    if setting == "files":
        simulated = any(make_task(e.config.task, **e.config.task_options).simulated_sessions())
    else:
        simulated = setting in ("synthetic", "stevenson")
    return f"{setting}\n(SIMULATED)" if simulated else setting


# -- figures -------------------------------------------------------------------------------------
def claims(views: dict[str, ExperimentView], request: Request | None = None) -> list[ClaimResult]:
    """This family's rows (C9, one per setting), each counting its own experiment's divergences."""
    rows = claim(views, request)
    return rows if isinstance(rows, list) else [rows]


def figures(views: dict[str, ExperimentView], folder: Path) -> list[tuple[str, str]]:
    """Decoded vs true velocity around the shift (first seed) per setting, learning curves,
    and recovery per setting."""
    from . import plots

    out = []
    present = [(s, views[name]) for s, (name, _, _) in SETTINGS.items() if name in views]
    for setting, e in present:
        name = _decoding_figure(e, setting, Path(folder) / f"bci_{setting}_decoding.png")
        if name:
            out.append((f"C9 ({setting}): decoded vs true velocity, before and after adaptation",
                        f"figures/{name}"))
        name = plots.curves(e, [FROZEN_MODEL, READOUT_ONLY, IMMEDIATE, sparse(1), KEY, FULL],
                            Path(folder) / f"bci_{setting}_curves.png")
        if name:
            out.append((f"C9 ({setting}): learning curves around the session change", f"figures/{name}"))
    name = _recovery_figure(present, Path(folder) / "bci_recovery.png")
    if name:
        out.append(("C9: recovery per setting", f"figures/{name}"))
    return out


def _decoding_figure(e: ExperimentView, setting: str, path: Path) -> str | None:
    methods = [m for m in (FROZEN_MODEL, KEY, FULL) if e.has(m)]
    seed = e.seeds()[0]
    runs = [e.runs_of(m).get(seed) for m in methods]
    if not methods or any(r is None or "predictions" not in r for r in runs):
        return None
    from .plotting import pyplot as _plt
    from .plotting import save as _save

    plt = _plt()
    windows = (("pre", "before the shift (session A)"), ("post", "just after the shift (session B)"),
               ("end", "end of adaptation (session B)"))
    fig, axes = plt.subplots(len(methods), 3, figsize=(11, 2.1 * len(methods) + 0.6), squeeze=False, sharey=True)
    for i, (method, run) in enumerate(zip(methods, runs)):
        for j, (key, title) in enumerate(windows):
            ax = axes[i][j]
            w = run["predictions"][key]
            if not w["step"]:
                ax.set_axis_off()
                continue
            t = np.asarray(w["step"]) - e.config.pre_shift_steps
            target, pred = np.asarray(w["target"]), np.asarray(w["prediction"])
            ax.plot(t, target[:, 0], color="k", lw=1.2, label="true")
            ax.plot(t, pred[:, 0], color="tab:red", lw=1.0, label="decoded")
            mse = float(np.mean((pred - target) ** 2))  # over both components
            ax.set_title(f"{method.label}: {title}\nMSE (v_x, v_y) {mse:.2f}", fontsize=8)
            if i == len(methods) - 1:
                ax.set_xlabel("bins after the shift")
            if j == 0:
                ax.set_ylabel("v_x (z-scored)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"C9 {setting}: seed {seed}, {e.config.cell} n = {e.config.hidden_size}", fontsize=9)
    return _save(fig, path)


def _recovery_figure(present: list[tuple[str, ExperimentView]], path: Path) -> str | None:
    rows = [(s, e) for s, e in present if e.complete(FROZEN_MODEL, FULL, KEY)]
    if not rows:
        return None
    from .plotting import mean_std
    from .plotting import pyplot as _plt
    from .plotting import save as _save

    methods = [m for m in (READOUT_ONLY, IMMEDIATE, sparse(1), KEY, sparse(16))
               if all(e.complete(m) for _, e in rows)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        stats = [mean_std(e.recoveries(method)) for _, e in rows]
        x = np.arange(len(rows)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(x, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=2, label=method.label)
    ax.axhspan(PAPER_MEAN - PAPER_STD, PAPER_MEAN + PAPER_STD, color="tab:red", alpha=0.12,
               label=f"paper, k=4: {PAPER}")
    ax.axhline(100, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), [_tick(s, e) for s, e in rows])
    ax.set_ylabel("recovery vs full RTRL (%)")
    ax.set_title("C9: recovery of the adapting decoder, per setting (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _save(fig, path)
