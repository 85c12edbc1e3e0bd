"""Sparse-column k = 4 through the learner API against the memory floor of its step, side
by side in one process (issue 15): learner / (rw + read) and (update + gradient) / floor.

    PYTHONPATH=src python benchmarks/bench_column_floor.py            # N = 256, float32, 1 thread
    PYTHONPATH=src python benchmarks/bench_column_floor.py --sizes 256 512 --rounds 40

The floor of a transport step is one read-and-write pass over M (the update rewrites M) plus
one read pass (the gradient δ·M reads it): ``M.mul_(1)`` and ``M.sum()`` on the learner's own
M. All jobs run round-robin, one call each per round, so load from other processes hits them
alike; ratios use each job's fastest call (the least disturbed), medians are printed too.
The jobs are those of ``bench_transport.py`` (its ``Learner`` and bare update / gradient).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import Learner, time_round_robin  # noqa: E402


def measure(N: int, k: int, dtype: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each job, interleaved."""
    spec = {"rule": "sparse", "options": {"k": k, "granularity": "column"}, "N": N, "E": 1, "dtype": dtype}
    learner = Learner(spec)
    learner()
    learner.after()
    update, gradient = learner.bare()
    M = learner.influence()
    jobs = {"learner": (learner, learner.after), "update": (update, None), "gradient": (gradient, None),
            "rw": (lambda: M.mul_(1.0), None), "read": (lambda: M.sum(), None)}
    times = time_round_robin(list(jobs.values()), budget=0.0, min_rounds=rounds, max_rounds=rounds, warmup=2)
    return dict(zip(jobs, times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sparse_rtrl.transport.kernels import numeric_path

    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {numeric_path()}; "
          f"{args.threads} thread(s); {args.dtype}; sparse column k={args.k}; {args.rounds} rounds")
    for N in args.sizes:
        t = measure(N, args.k, args.dtype, args.rounds)
        best = {name: min(ts) for name, ts in t.items()}
        floor = best["rw"] + best["read"]
        print(f"N={N}: " + ", ".join(f"{name} {1e3 * best[name]:.2f} ms (median {1e3 * statistics.median(ts):.2f})"
                                     for name, ts in t.items()))
        print(f"N={N}: floor (rw + read) {1e3 * floor:.2f} ms; learner / floor {best['learner'] / floor:.2f}x; "
              f"(update + gradient) / floor {(best['update'] + best['gradient']) / floor:.2f}x")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
