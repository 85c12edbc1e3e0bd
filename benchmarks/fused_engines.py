"""The fused step's engines side by side, and the torch.compile alternative (issue 15): CPU
time per step, one thread, batch 1, float32, vanilla cell with input I = 1, one output.

    python benchmarks/fused_engines.py              # N = 32, 64; rules full and immediate
    python benchmarks/fused_engines.py --sizes 32 64 128 --steps 2000

Three ways to run the same step (predict, squared error, g = δ·M, SGD):

    compiled   FusedStep(engine="compiled"): four calls of the small C library plus the
               product on M (oneDNN for full RTRL)
    torch      FusedStep(engine="torch"): the same steps as ≈ 25 torch ops on preallocated buffers
    inductor   the step written as one pure function (state in, state out) and compiled by
               ``torch.compile`` (its C++ code for the pointwise work, an extern GEMM)

All three start from the same parameters; their losses over the timed steps must agree to
1e-4 (float32) before the times are printed. The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


def functional_step(rule: str, lr: float):
    """The step as a pure function of (θ, readout, M, h, x, y) for torch.compile; the flat θ
    and M columns follow the cell's layout [W_ih, W_hh, b_ih, b_hh]."""

    def step(w_ih, w_hh, b_ih, b_hh, w_o, b_o, MT, h, x, y):
        N, I = w_ih.shape
        hn = torch.tanh(w_ih @ x + b_ih + w_hh @ h + b_hh)
        d = 1 - hn * hn
        e = w_o @ hn + b_o - y
        loss = (e * e).sum()
        err = 2 * e
        delta = w_o.t() @ err
        local = [d[:, None] * x[None, :], d[:, None] * h[None, :], d[:, None], d[:, None]]
        if rule == "immediate":
            w = delta * d
            g = [w[:, None] * x[None, :], w[:, None] * h[None, :], w, w]
        else:
            MT = MT @ (d[:, None] * w_hh).t()  # (P, N)
            # Ī on unit i's entries of each block: Mᵀ[(b, i, l), i] += d_i u_l
            eye = torch.eye(N, dtype=x.dtype)
            add = torch.cat([(loc[:, :, None] * eye[:, None, :]).reshape(-1, N) for loc in local], 0)
            MT = MT + add
            flat = MT @ delta
            g = [flat[: N * I].view(N, I), flat[N * I: N * I + N * N].view(N, N),
                 flat[N * I + N * N: N * I + N * N + N], flat[N * I + N * N + N:]]
        new = [p - lr * q for p, q in zip((w_ih, w_hh, b_ih, b_hh), g)]
        return (*new, w_o - lr * err[:, None] * hn[None, :], b_o - lr * err, MT, hn, loss)

    return step


def models(N: int):
    from sparse_rtrl import VanillaRNN

    torch.manual_seed(0)
    return VanillaRNN(1, N), nn.Linear(N, 1)


def run_fused(rule, N, engine, xs, ys, lr):
    from sparse_rtrl.fused import FusedStep

    cell, ro = models(N)
    f = FusedStep(cell, rule, ro, lr=lr, reduction="sum", engine=engine)
    return lambda lo, hi: [f.step(xs[t], ys[t])[1] for t in range(lo, hi)]


def run_inductor(rule, N, xs, ys, lr):
    cell, ro = models(N)
    state = [p.detach().clone() for p in cell.parameters()] + [ro.weight.detach().clone(), ro.bias.detach().clone()]
    P = sum(p.numel() for p in cell.parameters())
    state += [torch.zeros(P, N), torch.zeros(N)]
    step = torch.compile(functional_step(rule, lr), dynamic=False)

    def run(lo, hi):
        out = []
        for t in range(lo, hi):
            res = step(*state, xs[t], ys[t])
            state[:] = list(res[:8])
            out.append(float(res[8]))
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rules", nargs="+", default=["full", "immediate"], choices=["full", "immediate"])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch {torch.__version__}")
    rows = []
    for rule in args.rules:
        for N in args.sizes:
            g = torch.Generator().manual_seed(1)
            xs, ys = torch.randn(args.steps + 50, 1, generator=g), torch.randn(args.steps + 50, 1, generator=g)
            runs = {"compiled": run_fused(rule, N, "compiled", xs, ys, 1e-3),
                    "torch": run_fused(rule, N, "torch", xs, ys, 1e-3),
                    "inductor": run_inductor(rule, N, xs, ys, 1e-3)}
            losses = {k: r(0, 50) for k, r in runs.items()}  # warm-up (and compilation)
            times = dict.fromkeys(runs, 0.0)
            edges = [50 + i * args.steps // 4 for i in range(5)]
            for lo, hi in zip(edges[:-1], edges[1:]):
                for k, r in runs.items():
                    t0 = time.process_time()
                    losses[k] += r(lo, hi)
                    times[k] += time.process_time() - t0
            ref = torch.tensor(losses["compiled"])
            for k in ("torch", "inductor"):
                torch.testing.assert_close(torch.tensor(losses[k]), ref, rtol=1e-4, atol=1e-5)
            rows.append((rule, N, {k: v / args.steps * 1e6 for k, v in times.items()}))
            print(f"  {rule} N={N}: " + ", ".join(f"{k} {v:.1f} µs" for k, v in rows[-1][2].items()), flush=True)
    print("\n| rule | N | compiled engine µs | torch engine µs | torch.compile µs |\n|---|---|---|---|---|")
    for rule, N, t in rows:
        print(f"| {rule} | {N} | {t['compiled']:.1f} | {t['torch']:.1f} | {t['inductor']:.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
