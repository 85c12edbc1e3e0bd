"""Figures of the report, drawn from loaded result files only (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .plotting import mean_std as _mean_std
from .plotting import pyplot as _plt
from .plotting import save as _save
from .config import Method
from .methods import FROZEN_MODEL, FULL, IMMEDIATE, SWEEP_K, sparse
from .paper import C1_RECOVERY, C2_RECOVERY
from .views import ExperimentView


def recovery_vs_k(e: ExperimentView, path: Path) -> str | None:
    ks = [k for k in SWEEP_K if e.complete(sparse(k))]
    if not ks or not e.complete(FROZEN_MODEL, FULL, IMMEDIATE):
        return None
    n = e.config.hidden_size
    xs, ys, es = [0], *[[v] for v in _mean_std(e.recoveries(IMMEDIATE))]
    for k in ks:
        m, s = _mean_std(e.recoveries(sparse(k)))
        xs.append(k), ys.append(m), es.append(s)
    xs.append(n), ys.append(100.0), es.append(0.0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label="measured (mean ± std over seeds)")
    ax.axhline(C1_RECOVERY[0], color="tab:red", ls="--", lw=1, label=f"paper, k=4: {C1_RECOVERY[0]:g} %")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel(f"paths kept per unit k (N = {n}; k = {n} is full RTRL)")
    ax.set_ylabel("recovery vs full RTRL (%)")
    ax.set_title("Recovery vs k")
    ax.legend(fontsize=8)
    return _save(fig, path)


def recovery_vs_n(rows: list[tuple[int, list]], path: Path) -> str | None:
    if len(rows) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ns = [n for n, _ in rows]
    ms = [_mean_std(r) for _, r in rows]
    ax.errorbar(ns, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label="measured, k=4")
    paper_n, paper_r = zip(*sorted(C2_RECOVERY.items()))
    ax.plot(paper_n, paper_r, "r--", lw=1, label=f"paper: {paper_r[0]:g} → {paper_r[-1]:g} %")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("hidden units n")
    ax.set_ylabel("recovery vs full RTRL (%)")
    ax.set_title("Recovery of k = 4 as n grows")
    ax.legend(fontsize=8)
    return _save(fig, path)


def recovery_bars(e: ExperimentView, methods: list[Method], path: Path, title: str) -> str | None:
    methods = [m for m in methods if e.complete(m)]
    if not methods or not e.complete(FROZEN_MODEL, FULL):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(methods) + 1.2))
    stats = [_mean_std(e.recoveries(m)) for m in methods]
    ax.barh(range(len(methods)), [m for m, _ in stats], xerr=[s for _, s in stats], capsize=3, color="tab:blue")
    ax.set_yticks(range(len(methods)), [m.label for m in methods])
    ax.invert_yaxis()
    ax.axvline(100, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("recovery vs full RTRL (%)")
    ax.set_title(title)
    return _save(fig, path)


def curves(e: ExperimentView, methods: list[Method], path: Path) -> str | None:
    methods = [m for m in methods if e.complete(m)]
    if not methods:
        return None
    cfg = e.config
    T = cfg.pre_shift_steps + cfg.adapt_steps
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for method in methods:
        runs = e.runs_of(method)
        c = np.array([[np.nan if v is None else v for v in runs[s]["curve"]] for s in e.seeds()], dtype=float)
        c = np.where(np.isfinite(c), c, np.nan)
        counts = np.isfinite(c).sum(axis=0)
        mean = np.where(counts > 0, np.nansum(c, axis=0) / np.maximum(counts, 1), np.nan)
        x = (np.arange(c.shape[1]) + 0.5) * T / c.shape[1] - cfg.pre_shift_steps
        ax.plot(x, mean, label=method.label, lw=1.2)
    ax.axvline(0, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step relative to the shift")
    ax.set_ylabel("per-step loss (mean over seeds)")
    ax.set_title(f"Learning curves around the shift ({cfg.task}, {cfg.cell} n={cfg.hidden_size})")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def condition_histogram(e: ExperimentView, path: Path) -> str | None:
    if not e.complete(FULL):
        return None
    c = np.concatenate([np.asarray(e.runs_of(FULL)[s]["condition_numbers"], dtype=float) for s in e.seeds()])
    if c.size == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(np.log10(c), bins=40, color="tab:green")
    ax.axvspan(math.log10(2.6), math.log10(6.5), color="tab:red", alpha=0.15, label="paper: 2.6 – 6.5")
    ax.set_xlabel("log10 condition number of J_t")
    ax.set_ylabel("count")
    ax.set_title("Recurrent Jacobian conditioning (full RTRL runs)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_spread(e: ExperimentView, methods: list[Method], path: Path) -> str | None:
    methods = [m for m in methods if e.complete(m)]
    if not methods:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, method in enumerate(methods):
        L = np.asarray(e.L(method), dtype=float)
        finite = np.isfinite(L)
        ax.scatter(np.full(finite.sum(), i), L[finite], color="tab:blue", zorder=3)
        if (~finite).any():
            ax.scatter([i], [np.nanmax(np.where(finite, L, np.nan)) if finite.any() else 1.0], marker="x",
                       color="tab:red", s=60, label="diverged" if i == 0 else None)
    ax.set_xticks(range(len(methods)), [m.label for m in methods], rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("L over the adaptation window")
    ax.set_title("Lorenz: loss per seed and method")
    return _save(fig, path)
