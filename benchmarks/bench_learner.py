"""Issue 2: steps per second of full RTRL and sparse RTRL (k = 4) at n = 64 and n = 256
(float32, one learner, vanilla cell, B = 1), and an ensemble of 8 learners against 8 solo
runs stepped one after the other, all timed side by side in one process.

    python benchmarks/bench_learner.py               # prints a markdown table (~1-2 minutes)
    python benchmarks/bench_learner.py --json        # a RESULT line for bench_transport.py

Each job is one call of the public API (``learner.step`` + ``learner.backward`` of a readout
loss); "8 solo" steps eight separate learners (seeds 0-7) once each, "ensemble of 8" steps one
``OnlineLearner`` over ``new_ensemble(VanillaRNN, 8, ...)`` (the same eight initialisations)
once. Jobs are interleaved round-robin; the table shows medians, with the minimum (the least
disturbed call) in brackets. The ensemble gain is t(8 solo) / t(ensemble of 8).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import Learner, learner_spec, summary, time_round_robin  # noqa: E402

RULES = (("full", {}), ("sparse k=4", {"k": 4}))


class Solo8:
    """Eight solo learners, stepped once each per call."""

    def __init__(self, rule, options, n):
        self.members = [Learner({**learner_spec(rule, options, n, 1, "float32"), "seed": e}) for e in range(8)]

    def __call__(self):
        for m in self.members:
            m()

    def after(self):
        for m in self.members:
            m.after()


def run(sizes, budget, threads, min_rounds=3) -> dict:
    torch.set_num_threads(threads)
    from sparse_rtrl.transport import _cpu_kernels

    _cpu_kernels.get()
    out = {"threads": torch.get_num_threads(), "rows": []}
    for n in sizes:
        labels, jobs = [], []
        for name, opts in RULES:
            rule = name.split()[0]
            solo = Learner(learner_spec(rule, opts, n, 1, "float32"))
            ens = Learner(learner_spec(rule, opts, n, 8, "float32"))
            eight = Solo8(rule, opts, n)
            for kind, obj in (("solo", solo), ("ensemble of 8", ens), ("8 solo", eight)):
                labels.append((name, kind))
                jobs.append((obj, obj.after))
        times = time_round_robin(jobs, budget, min_rounds, 10_000, warmup=2)
        stats = {lab: summary(t) for lab, t in zip(labels, times)}
        for name, _ in RULES:
            out["rows"].append({"n": n, "rule": name, **{kind: stats[(name, kind)]
                                                         for kind in ("solo", "ensemble of 8", "8 solo")}})
    return out


def table(data) -> list[str]:
    def rate(st, members=1, key="median"):
        return members / st[key]

    lines = [
        f"Float32, vanilla cell, B = 1, {data['threads']} thread(s); steps per second of the public API, median "
        "(best) over interleaved calls. Aggregate = learner-steps per second summed over the 8 members.",
        "",
        "| n | rule | solo steps/s | ensemble of 8: aggregate steps/s | 8 solo runs: aggregate steps/s | ensemble gain |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        s, e, s8 = r["solo"], r["ensemble of 8"], r["8 solo"]
        lines.append(
            f"| {r['n']} | {r['rule']} | {rate(s):.1f} ({rate(s, key='min'):.1f}) | "
            f"{rate(e, 8):.1f} ({rate(e, 8, 'min'):.1f}) | {rate(s8, 8):.1f} ({rate(s8, 8, 'min'):.1f}) | "
            f"{s8['median'] / e['median']:.2f}× ({s8['min'] / e['min']:.2f}×) |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of interleaved timing per size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = run(args.sizes, args.budget, args.threads)
    if args.json:
        print("RESULT " + json.dumps(data), flush=True)
    else:
        print("\n".join(table(data)))


if __name__ == "__main__":
    main()
