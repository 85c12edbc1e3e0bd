"""``report.md``, ``claims.json`` and the figures, rebuilt from a sweep's result files alone.
The text holds no timestamps or timings, so rebuilding it reproduces it byte for byte."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .._json import json_safe
from ..tasks import make_task
from .families import FAMILIES, evaluate_claims
from .methods import FROZEN_MODEL, IMMEDIATE, READOUT_ONLY
from .metrics import coefficient_of_variation, summarize
from .results import load_results, read_json
from .views import NOT_REQUESTED, NUMERIC_RULE, ExperimentView, Request, fmt
from .selection import describe


def _num(x: float, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—" if x is None or math.isnan(x) else "diverged"
    return f"{x:.{digits}g}"


def _method_table(e: ExperimentView) -> list[str]:
    """Per method: L, L_end, recovery against frozen, immediate and readout-only (the gain that
    needs learning inside the recurrence: R_ro = 100·(L_readout − L_m)/(L_readout − L_full)),
    CV and divergences."""
    refs = [r for r in (IMMEDIATE, READOUT_ONLY) if e.has(r)]
    lines = [f"| method | L (mean ± std) | L_end | recovery vs {FROZEN_MODEL.label} | "
             + "".join(f"recovery vs {r.label} | " for r in refs) + "CV(L) | diverged |",
             "|---|---|---|---|" + "---|" * len(refs) + "---|---|"]
    full_for = {}
    for m in e.config.methods:
        if m.rule == "full":
            full_for[m.dtype] = m
    for m in e.config.methods:
        if not e.has(m):
            lines.append(f"| {m.label} | not run | | |" + " |" * len(refs) + " | |")
            continue
        L = summarize(e.L(m), e.diverged(m))
        L_end = summarize(e.L(m, "L_end"), e.diverged(m))
        full = full_for.get(m.dtype, full_for.get(None))
        recs = ["—"] * (1 + len(refs))
        if full and e.has(full) and e.has(FROZEN_MODEL):
            recs = [fmt(e.recovery_summary(m, reference=r, full=full)) for r in (FROZEN_MODEL, *refs)]
        cv = coefficient_of_variation(e.L(m))
        lines.append(
            f"| {m.label} | {_num(L.mean)} ± {_num(L.std, 2)} | {_num(L_end.mean)} | {' | '.join(recs)} | "
            f"{'—' if math.isnan(cv) else f'{100 * cv:.1f} %'} | {L.n_diverged}/{L.n_seeds} |"
        )
    return lines


def _experiment_section(name: str, entry: dict, e: ExperimentView) -> list[str]:
    c = e.config
    task = make_task(c.task, **c.task_options)
    lr = entry.get("lr") or {}
    lines = [f"### {name} ({', '.join(c.claims)})", ""]
    lines.append(
        f"Task `{c.task}` — {task.describe_shift()} Cell `{c.cell}`, n = {c.hidden_size}"
        + (f", leak {c.leak}" if c.leak != 1.0 else "")
        + f", {c.dtype}; pretraining {c.pretrain_updates} Adam updates (batch {c.pretrain_batch}, "
        f"windows of {c.pretrain_chunk}, lr {c.pretrain_lr:g}); {c.pre_shift_steps} regime-A steps "
        f"then T_a = {c.adapt_steps} scored steps after the shift; online optimizer `{c.optimizer}`; "
        f"evaluation seeds {', '.join(map(str, c.seeds))}; validation seeds "
        f"{', '.join(map(str, c.validation_seeds))}."
    )
    lines.append("")
    def validation(table: dict) -> str:
        return ", ".join(f"{k}: L = {_num(v['mean_L'])}, diverged {v['diverged']}" for k, v in table.items())

    if lr and lr.get("per_method"):
        lines.append("Learning rates chosen **per method**, each on its own validation runs by the rule: "
                     f"{describe(lr['rule'], 'the method', lr.get('extend', 0))}.")
        lines.append("")
        lines += ["| method | learning rate | validation |", "|---|---|---|"]
        lines += [f"| {label} | {v['lr']:g} | {validation(v['table']) or 'single value'} |"
                  for label, v in lr["methods"].items()]
        lines.append("")
    elif lr:
        lines.append(f"Learning rate **{lr['lr']:g}** for every method, chosen by the rule: "
                     f"{describe(lr['rule'], '`' + lr['reference'] + '`', lr.get('extend', 0))}. "
                     f"Validation: {validation(lr.get('table', {})) or 'single value'}.")
        lines.append("")
    snaps = entry.get("snapshots", {})
    if snaps:
        finals = ", ".join(f"seed {s}: {_num(v['final_loss'])} (plateau ratio {_num(v['plateau_ratio'], 3)})"
                           for s, v in sorted(snaps.items()))
        lines.append(f"Pretraining final loss: {finals}.")
        lines.append("")
    if e.has(FROZEN_MODEL):
        frozen = e.runs_of(FROZEN_MODEL)
        pre = summarize([frozen[s]["L_pre_shift"] for s in e.seeds() if s in frozen])
        post = summarize(e.L(FROZEN_MODEL))
        lines.append(f"The shift matters: the frozen model's loss is {_num(pre.mean)} before the shift and "
                     f"{_num(post.mean)} after it ({_num(post.mean / pre.mean, 3)}×).")
        lines.append("")
    return lines + _method_table(e) + [""]


def request_of(sweep: dict, present) -> Request | None:
    """What the sweep was asked to run: ``sweep.json``'s ``"only"`` (the ``--only`` words,
    null for everything) where recorded; else inferred from its profile: every experiment the
    profile always defines (those needing no data) present means no ``--only``, and otherwise
    only what is present was asked for. None for an unknown profile."""
    if "only" in sweep:
        only = sweep["only"]
        if isinstance(only, str):
            only = only.split(",")
        return Request(None if only is None else frozenset(w.strip() for w in only if w.strip()))
    import tempfile

    from .profiles import experiments

    try:
        with tempfile.TemporaryDirectory() as empty:  # a data folder with no recording in it
            always = {e.name for e in experiments(sweep.get("profile"), data_dir=empty)}
    except ValueError:
        return None
    present = set(present)
    return Request(None, inferred=True) if always <= present else Request(frozenset(present), inferred=True)


def _diverged_cell(c) -> str:
    """Diverged runs over every method the row read, with the methods that diverged."""
    n = c.n_diverged
    if n is None:
        return "—"
    which = ", ".join(f"{label} {k}" for label, k in (c.diverged_runs or {}).items() if k)
    return f"{n} ({which})" if which else str(n)


def build_report(out: Path | str) -> Path:
    """Write ``report.md``, ``claims.json`` and ``figures/*.png`` under ``out``."""
    out = Path(out)
    data = load_results(out)
    views = {name: ExperimentView(entry) for name, entry in data["experiments"].items()}
    claims = evaluate_claims(views, request_of(read_json(out / "sweep.json") or {}, views))
    figs = out / "figures"
    figures = []

    for family in FAMILIES:
        figures.extend(family.figures(views, figs))

    (out / "claims.json").write_text(json.dumps(json_safe([c.to_json() for c in claims]), indent=1) + "\n")

    sweep = read_json(out / "sweep.json") or {}
    lines = [f"# sparse_rtrl — reproduction of arXiv 2603.15195 ({data['profile']} profile)", ""]
    lines.append(
        "Every number below comes from the result files under `runs/` and was produced by "
        f"`sparse-rtrl reproduce --profile {data['profile']}` (sparse_rtrl {sweep.get('version', '?')}); "
        "`sparse-rtrl report DIR` rebuilds this file from them. Paper figures are shown side by side "
        "only; nothing was tuned to match them. Recovery R = 100·(L_frozen − L_m)/(L_frozen − L_full), "
        "paired per seed; a seed where full RTRL does not beat the frozen model by more than 5 % of "
        "its loss has no recovery (counted as *undefined*), and diverged runs are counted, never dropped."
    )
    lines += ["", "## Claims", "",
              "| id | claim | paper | measured | 95 % CI | seeds | diverged runs (every method read) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        s = c.summary
        ci = f"{s.ci95[0]:.1f} – {s.ci95[1]:.1f}" if s and s.n_scored and all(map(math.isfinite, s.ci95)) else "—"
        lines.append(f"| {c.id} | {c.claim} | {c.paper} | {c.measured or '—'} | {ci} | "
                     f"{s.n_seeds if s else '—'} | {_diverged_cell(c)} | **{c.verdict}** |")
    numeric = ", ".join(dict.fromkeys(c.id for c in claims if c.rule == NUMERIC_RULE)) or "none measured"
    lines += ["", "## Verdict rules", "", f"- Numeric claims ({numeric}): {NUMERIC_RULE}."]
    for c in claims:
        if c.rule and c.rule != NUMERIC_RULE and c.verdict not in ("not yet measured", NOT_REQUESTED):
            lines.append(f"- {c.id}: {c.rule}.")
    lines += ["", "## Claim details", ""]
    for c in claims:
        lines.append(f"**{c.id}** — {c.claim}. Paper: {c.paper}. Measured: {c.measured or 'not yet measured'}. "
                     f"Verdict: **{c.verdict}**.")
        for d in c.details:
            lines.append(f"- {d}")
        if c.verdict in ("not yet measured", NOT_REQUESTED) and c.rule != "not yet measured":
            lines.append(f"- {c.rule}")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for title, rel in figures:
            lines += [f"**{title}**", "", f"![{title}]({rel})", ""]
    lines += ["## Experiments", ""]
    for name, entry in data["experiments"].items():
        lines += _experiment_section(name, entry, views[name])
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
