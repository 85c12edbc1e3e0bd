"""What bounds an ensemble's gain: E = 16 learners at N = 64 against one, side by side in one run.

    python benchmarks/ensemble_bounds.py            # the table
    python benchmarks/ensemble_bounds.py --write    # also writes benchmarks/ensemble_bounds.md

An ensemble of E members advanced as one batched program (``new_ensemble`` + one
``OnlineLearner``) pays the per-step overhead of the learner once instead of E times, but the
work that grows with every member — the product on each member's M, the noise each member's
own generator draws, the selection of each member's kept paths, the read of M for the
gradient — it still pays E times. With W_E the time of that per-member work for all E members
at once and T_1 the step of one learner,

    gain = E·T_1 / T_E  ≤  E·T_1 / W_E,

whatever is done about the rest. The table measures T_1, T_16 and W_16 (each part on the
learner's own shapes: vanilla cell, I = 1, batch 1, float32, one thread), so it says how far the
measured gain is from that bound and which part sets it. (Full RTRL's product is oneDNN's
float32 GEMM, the fastest exact one torch has on this CPU: its FLOPs grow with E, so they bound
the gain.)
Times are the minimum over alternating rounds (wall clock; the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import Learner  # noqa: E402

from sparse_rtrl.transport import kernels, masks  # noqa: E402
from sparse_rtrl.transport.base import Generators, member_seeds  # noqa: E402

N, E, K = 64, 16, 4
RULES = {
    "full": ("full", {}),
    "sparse row k=4": ("sparse", {"k": K, "granularity": "row"}),
    "sparse column k=4": ("sparse", {"k": K, "granularity": "column"}),
    "immediate": ("immediate", {}),
}


def spec(rule: str, E_: int) -> dict:
    name, options = RULES[rule]
    return {"rule": name, "options": options, "N": N, "E": E_, "dtype": "float32"}


def learner_step(rule: str, E_: int):
    obj = Learner(spec(rule, E_))

    def run():
        obj()
        obj.after()
    return run


def per_member_parts(rule: str) -> dict:
    """name → closure: the parts of an E-member step whose work grows with E."""
    g = torch.Generator().manual_seed(0)
    P = N * N + 2 * N  # W_hh, W_ih (I = 1), bias
    M = torch.randn(E, 1, N, P, generator=g) * 0.01
    J = torch.randn(E, 1, N, N, generator=g) * 0.1
    delta = torch.randn(E, 1, N, generator=g)
    gens = Generators(member_seeds(0, E), torch.device("cpu"))
    parts = {}
    if rule == "full":
        parts["J·M (the learner's product)"] = lambda: kernels.matmul_(J, M)
        parts["g = δ·M"] = lambda: kernels.delta_rows(delta, M)
    elif rule == "sparse row k=4":
        index = masks.top_k(torch.rand(E, 1, N, N, generator=g), K)
        weight = J.gather(-1, index)
        parts["noise (16 generators)"] = lambda: masks.member_noise(gens, (1, N, N), J.device)
        scores = torch.rand(E, 1, N, N, generator=g)
        parts["top-k of each row"] = lambda: masks.top_k(scores, K)
        parts["(K ⊙ J)·M"] = lambda: kernels.gather_rows_(index, weight, M)
        parts["g = δ·M"] = lambda: kernels.delta_rows(delta, M)
    elif rule == "sparse column k=4":
        cols = masks.top_k(torch.rand(E, 1, N, generator=g), K)
        weight = J.gather(-1, cols.unsqueeze(2).expand(E, 1, N, K))
        parts["noise (16 generators)"] = lambda: masks.member_noise(gens, (1, N), J.device)
        # the learner forms g in the product's pass: the product alone is a lower bound of both
        parts["J[:, S]·M[S]"] = lambda: kernels.gather_columns_(cols, weight, M)
    return parts


def timed(jobs: dict, rounds: int, seconds: float) -> dict:
    """Minimum seconds per call of each job, jobs alternating round by round."""
    calls = {}
    for name, fn in jobs.items():
        for _ in range(5):
            fn()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.05:
            fn()
            n += 1
        calls[name] = max(3, int(n * seconds / 0.05 / rounds))
    best = {name: float("inf") for name in jobs}
    for _ in range(rounds):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls[name])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per job, all rounds together")
    parser.add_argument("--write", action="store_true", help="write benchmarks/ensemble_bounds.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    jobs, parts_of = {}, {}
    for rule in RULES:
        jobs[f"{rule} E=1"] = learner_step(rule, 1)
        jobs[f"{rule} E=16"] = learner_step(rule, E)
        parts_of[rule] = []
        for name, fn in per_member_parts(rule).items():
            jobs[f"{rule}: {name}"] = fn
            parts_of[rule].append(name)
    t = timed(jobs, args.rounds, args.seconds)
    load_after = os.getloadavg()

    def ms(x):
        return f"{x * 1e3:.3f}"

    lines = ["| rule | step E = 1 (ms) | step E = 16 (ms) | gain 16·T₁/T₁₆ | per-member work at E = 16 (ms) | "
             "bound 16·T₁/W₁₆ |", "|---|---|---|---|---|---|"]
    for rule in RULES:
        t1, t16 = t[f"{rule} E=1"], t[f"{rule} E=16"]
        names = parts_of[rule]
        work = sum(t[f"{rule}: {n}"] for n in names)
        detail = " + ".join(f"{n} {ms(t[f'{rule}: {n}'])}" for n in names) or "—"
        bound = f"{16 * t1 / work:.1f}×" if work else "—"
        lines.append(f"| {rule} | {ms(t1)} | {ms(t16)} | {16 * t1 / t16:.1f}× | "
                     f"{ms(work) if work else '—'} ({detail}) | {bound} |")
    header = (f"Load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
              f"{os.cpu_count()} cores; torch {torch.__version__}; one thread")
    print(header)
    print("\n".join(lines))
    if args.write:
        text = [
            "## Ensembles: what bounds the gain (N = 64, E = 16)", "",
            f"Written by `python benchmarks/ensemble_bounds.py --write` (started {started}); do not edit by "
            f"hand. {header}. Learner API (`OnlineLearner` over `new_ensemble`, `step` + readout + "
            "`backward` + `zero_grad`), vanilla cell, I = 1, batch 1, float32. The per-member work is the "
            "part of an ensemble's step that grows with each member (timed alone on the learner's "
            "shapes); 16·T₁/W₁₆ is the most any ensemble step could gain while it costs that.", "",
            *lines, "",
        ]
        path = Path(__file__).with_name("ensemble_bounds.md")
        path.write_text("\n".join(text))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
