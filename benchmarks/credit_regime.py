"""Does the transport-dependent regime work? Frozen, readout-only, immediate, sparse k = 4 and
full RTRL adapting to the ``lag_shift`` (or ``delayed_teacher``) task (SPEC §4b), with the protocol of SPEC §3.

    python benchmarks/credit_regime.py                         # vanilla n = 32, d = 5, 3 seeds
    python benchmarks/credit_regime.py --lags 5 8 10 --seeds 0 1 --cell gru
    python benchmarks/credit_regime.py --task delayed_teacher --lags 3 5

Per lag: pretrain each seed on regime A (``pretraining.pretrain``, offline BPTT), choose one
learning rate for all methods on the validation seed by the rule "best_stable" of
``experiments.selection`` (full RTRL's validation runs), then adapt every method from the
same snapshot on the same stream (``protocol.adapt``) and print

    R        = 100·(L_frozen − L_m)/(L_frozen − L_full)     recovery (SPEC §3)
    R_ro     = 100·(L_readout − L_m)/(L_readout − L_full)   recovery against readout-only
    full_gain = 1 − L_full/L_frozen

mean ± std over seeds (undefined seeds, where full RTRL gains < 5 %, are counted). The
issue's target: immediate and readout-only R < 20 %, full_gain ≥ 0.4.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sparse_rtrl.experiments.config import FROZEN, READOUT, Experiment, Method
from sparse_rtrl.experiments.metrics import recovery, summarize
from sparse_rtrl.experiments.protocol import adapt
from sparse_rtrl.experiments.pretraining import pretrain
from sparse_rtrl.experiments.selection import choose_lr, describe

METHODS = (
    Method("frozen", FROZEN),
    Method("readout", READOUT),
    Method("immediate", "immediate"),
    Method("sparse k=4", "sparse", {"k": 4}),
    Method("full", "full"),
)


def experiment(args, lag: int) -> Experiment:
    return Experiment(
        name=f"credit_{args.task}_{args.cell}_n{args.hidden}_d{lag}", claims=("T0",), task=args.task,
        task_options={"lag": lag}, cell=args.cell, hidden_size=args.hidden, methods=METHODS,
        pretrain_updates=args.pretrain_updates, adapt_steps=args.steps, lr_grid=tuple(args.lr_grid),
        validation_seeds=(args.validation_seed,), seeds=tuple(args.seeds),
    )


def fmt(summary) -> str:
    s = summary
    extra = f"  ({s.n_undefined} undefined)" if s.n_undefined else ""
    return f"{s.mean:7.1f} ± {s.std:5.1f}{extra}"


def run_lag(args, lag: int) -> None:
    exp = experiment(args, lag)
    t0 = time.perf_counter()
    full = exp.method("full")
    snap = pretrain(exp, args.validation_seed).to_dict()
    lr, table = choose_lr(exp.lr_rule, {lr: [adapt(exp, full, args.validation_seed, snap, lr)] for lr in exp.lr_grid})
    print(f"\n## {exp.task}, lag d = {lag}: {exp.cell} n = {exp.hidden_size}, T_a = {exp.adapt_steps}, seeds {list(exp.seeds)}")
    print(f"learning rate {lr:g} ({describe(exp.lr_rule, 'full')}); validation mean L: "
          + ", ".join(f"{k:g}: {v['mean_L']:.3f}" for k, v in table.items()))
    L = {m.label: [] for m in METHODS}
    diverged = {m.label: [] for m in METHODS}
    for seed in exp.seeds:
        snap = pretrain(exp, seed)
        for m in METHODS:
            r = adapt(exp, m, seed, snap.to_dict(), lr)
            L[m.label].append(r["L"])
            diverged[m.label].append(r["diverged"])
        print(f"  seed {seed}: pretrain loss {snap.final_loss:.2e}; L "
              + ", ".join(f"{k} {v[-1]:.3f}" for k, v in L.items()), flush=True)
    print(f"{'method':<12} {'L':>15} {'R %':>22} {'R_ro %':>22}")
    for m in METHODS:
        R = [recovery(f, x, u) for f, x, u in zip(L["frozen"], L[m.label], L["full"])]
        R_ro = [recovery(f, x, u) for f, x, u in zip(L["readout"], L[m.label], L["full"])]
        Ls = np.asarray(L[m.label])
        print(f"{m.label:<12} {Ls.mean():8.4f} ± {Ls.std(ddof=1) if len(Ls) > 1 else 0:.4f} "
              f"{fmt(summarize(R, diverged[m.label])):>22} {fmt(summarize(R_ro, diverged[m.label])):>22}")
    gain = [1 - u / f for f, u in zip(L["frozen"], L["full"])]
    print(f"full_gain = 1 − L_full/L_frozen: {np.mean(gain):.3f} (per seed {', '.join(f'{g:.3f}' for g in gain)})")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="lag_shift", choices=("lag_shift", "delayed_teacher"))
    p.add_argument("--cell", default="vanilla", choices=("vanilla", "lstm", "gru"))
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lags", type=int, nargs="+", default=[5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--validation-seed", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000, help="T_a, the scored adaptation window")
    p.add_argument("--pretrain-updates", type=int, default=300)
    p.add_argument("--lr-grid", type=float, nargs="+", default=[1e-3, 3e-3])
    args = p.parse_args(argv)
    for lag in args.lags:
        run_lag(args, lag)


if __name__ == "__main__":
    main()
