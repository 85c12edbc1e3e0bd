"""What bounds an ensemble's gain: E = 16 learners at N = 64 against one, side by side in one run.

    python benchmarks/ensemble_bounds.py            # the table
    python benchmarks/ensemble_bounds.py --write    # also writes benchmarks/ensemble_bounds.md

An ensemble of E members advanced as one batched program (``new_ensemble`` + one
``OnlineLearner``) pays the per-step overhead of the learner once instead of E times, but the
work that grows with every member — the product on each member's M with Ī, the noise each
member's own generator draws, the selection of its kept paths, the read of M for the gradient
— it still pays E times. That work is the rule's own ``update`` + ``gradient``: timed on the
learner's state with fixed derivatives (no cell, checks or autograd), it takes U_E for E
members, so one member's share is w = (U_16 − U_1)/15 (what stays fixed cancels), and with
T_1 the step of one learner

    gain = E·T_1 / T_E  ≤  E·T_1 / (E·w) = T_1 / w,

whatever is done about the rest, as long as the rule's work is w per member plus a part
c = U_1 − w ≥ 0 that does not grow (U_E = E·w + c ≥ E·w); where U_16 > 16·U_1 (work growing
faster than the members, e.g. out of cache) this bound does not hold and is not printed.
The rest of the step (the cell's derivatives, the checks, the readout and its autograd) runs
the same ops on E times larger tensors, so it costs at least what it costs one learner,
T_1 − U_1, which gives a second bound (the tighter one in every run here), with no condition on U:

    gain  ≤  E·T_1 / (U_E + T_1 − U_1).

The table measures T_1, T_16, U_1 and U_16 side by side, and the parts of U_16 alone on the
learner's shapes (vanilla cell, I = 1, batch 1, float32, one thread), so it says how far the
measured gain is from those bounds and which part sets them.
(Full RTRL's product is oneDNN's float32 GEMM, the fastest exact one torch has on this CPU:
its FLOPs grow with E, so they bound the gain.)

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


def learner_jobs(rule: str, E_: int):
    """The learner's whole step, and its rule's own update + gradient on fixed derivatives."""
    obj = Learner(spec(rule, E_))

    def run():
        obj()
        obj.after()

    update, gradient = obj.bare()

    def rule_work():
        update()
        gradient()
    return run, rule_work


def per_member_parts(rule: str) -> dict:
    """name → closure: the parts of the rule's work for E members, each alone (the breakdown).
    Each applies its product to M again and again, so its factors keep M's values in range: an
    orthogonal J, and kept entries (1, 0, …, 0), so that each new row is one old row (the same
    k-term arithmetic): M neither decays into denormals nor grows."""
    g = torch.Generator().manual_seed(0)
    P = N * N + 2 * N  # W_hh, W_ih (I = 1), bias
    M = torch.randn(E, 1, N, P, generator=g)
    J = torch.linalg.qr(torch.randn(E, 1, N, N, generator=g))[0]
    delta = torch.randn(E, 1, N, generator=g)
    gens = Generators(member_seeds(0, E), torch.device("cpu"))

    def first_only(*shape):
        w = torch.zeros(shape)
        w[..., 0] = 1.0
        return w

    parts = {}
    if rule == "full":
        parts["J·M (the learner's product)"] = lambda: kernels.matmul_(J, M)
        parts["g = δ·M"] = lambda: kernels.delta_rows(delta, M)
    elif rule == "sparse row k=4":
        index = masks.top_k(torch.rand(E, 1, N, N, generator=g), K)
        weight = first_only(E, 1, N, K)
        parts["noise (16 generators)"] = lambda: masks.member_noise(gens, (1, N, N), J.device)
        scores = torch.rand(E, 1, N, N, generator=g)
        parts["top-k of each row"] = lambda: masks.top_k(scores, K)
        parts["(K ⊙ J)·M"] = lambda: kernels.gather_rows_(index, weight, M)
        parts["g = δ·M"] = lambda: kernels.delta_rows(delta, M)
    elif rule == "sparse column k=4":
        cols = masks.top_k(torch.rand(E, 1, N, generator=g), K)
        weight = first_only(E, 1, N, K)
        parts["noise (16 generators)"] = lambda: masks.member_noise(gens, (1, N), J.device)
        # the learner forms g and adds Ī in the product's pass; the product alone:
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
        for E_ in (1, E):
            jobs[f"{rule} E={E_}"], jobs[f"{rule} rule E={E_}"] = learner_jobs(rule, E_)
        parts_of[rule] = []
        for name, fn in per_member_parts(rule).items():
            jobs[f"{rule}: {name}"] = fn
            parts_of[rule].append(name)
    t = timed(jobs, args.rounds, args.seconds)
    load_after = os.getloadavg()

    def ms(x):
        return f"{x * 1e3:.3f}"

    lines = ["| rule | step T₁ (ms) | step T₁₆ (ms) | gain 16·T₁/T₁₆ | update + gradient U₁ / U₁₆ (ms) | "
             "per member w = (U₁₆ − U₁)/15 | bound T₁/w | bound 16·T₁/(U₁₆ + T₁ − U₁) | "
             "parts of U₁₆, each alone (ms) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rule in RULES:
        t1, t16 = t[f"{rule} E=1"], t[f"{rule} E=16"]
        u1, u16 = t[f"{rule} rule E=1"], t[f"{rule} rule E={E}"]
        w = (u16 - u1) / (E - 1)
        parts = ", ".join(f"{n} {ms(t[f'{rule}: {n}'])}" for n in parts_of[rule]) or "—"
        bound = f"{t1 / w:.1f}×" if 0 < w <= u1 else "—"  # needs U_E ≥ E·w, i.e. w ≤ U_1
        tight = f"{E * t1 / (u16 + t1 - u1):.1f}×"
        lines.append(f"| {rule} | {ms(t1)} | {ms(t16)} | {E * t1 / t16:.1f}× | {ms(u1)} / {ms(u16)} | "
                     f"{ms(w)} | {bound} | {tight} | {parts} |")
    header = (f"Load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on "
              f"{os.cpu_count()} cores; torch {torch.__version__}; one thread")
    print(header)
    print("\n".join(lines))
    if args.write:
        text = [
            "## Ensembles: what bounds the gain (N = 64, E = 16)", "",
            f"Written by `python benchmarks/ensemble_bounds.py --write` (started {started}); do not edit by "
            f"hand. {header}. Learner API (`OnlineLearner` over `new_ensemble`, `step` + readout + "
            "`backward` + `zero_grad`), vanilla cell, I = 1, batch 1, float32. U is the rule's own "
            "`update` + `gradient` on the learner's state (fixed derivatives): the part of a step that "
            "grows with each member; T₁/w is the most any ensemble step could gain while one member's "
            "share of it costs w, and 16·T₁/(U₁₆ + T₁ − U₁) the most while the rest of the step costs at "
            "least what it costs one learner (the module docstring has the argument).", "",
            *lines, "",
        ]
        path = Path(__file__).with_name("ensemble_bounds.md")
        path.write_text("\n".join(text))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
