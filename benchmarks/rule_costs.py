"""Cost of every registered transport rule, side by side: time per online step and bytes of
rule state (M and whatever else the rule carries), vanilla cell, float32, one stream, next to
the formulas of SPEC §2.2. Writes a markdown table (default docs/rule_costs.md).

    python benchmarks/rule_costs.py                      # n = 32, 64, 128; ~1-3 minutes
    python benchmarks/rule_costs.py --sizes 16 32 --steps 5 --out /tmp/costs.md

Time per step is the wall time of ``learner.step(x)`` + ``learner.backward(loss)`` (the
whole online step: the cell's own s, J, Ī included; the "cell alone" row shows that part):
the fastest of ``--repeats`` blocks of ``--steps`` steps, after ``--warmup`` untimed steps.
The minimum (as ``timeit`` advises) and the interleaving of all rules' blocks discount other
processes on a shared machine. "Rule ms" times the rule's own ``update`` + ``gradient``. The growth exponent
is log2 of the ratio between the two largest sizes (sizes a factor 2 apart): with P ≈ n²,
O(N²P) shows as ≈ 4, O(N³) and O(kNP) as ≈ 3, O(P) and O(N²) as ≈ 2. At small n fixed
per-call overheads flatten the exponents; memory exponents are exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from sparse_rtrl import OnlineLearner, VanillaRNN
from sparse_rtrl.transport import RULES, AbstractTransport
from sparse_rtrl.transport.base import Generators

#: options each rule is measured with (rules not listed use their defaults)
OPTIONS = {
    "sparse": {"k": 4},
    "trace": {"decay": 0.9},
    "tbptt": {"window": 16},
    "shadow": {"rule": "immediate"},
}

#: SPEC §2.2: cost per step, memory
FORMULAS = {
    "full": ("O(N²P)", "O(NP)"),
    "sparse": ("O(kNP)", "O(NP)"),
    "immediate": ("O(P) with structure", "O(P)"),
    "trace": ("O(P)", "O(P)"),
    "snap1": ("O(P)", "O(P)"),
    "uoro": ("O(N² + P)", "O(N + P)"),
    "kf": ("O(N³)", "O(N²)"),
    "tbptt": ("O(T·P)", "O(T·N)"),
    "shadow": ("rule + O(N²P) (full RTRL alongside)", "rule + O(NP)"),
}


def state_bytes(obj) -> int:
    """Bytes of the tensors a rule state holds (generators' fixed ~5 kB excluded)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Generators) or obj is None:
        return 0
    if hasattr(obj, "tensors"):
        return sum(state_bytes(t) for t in obj.tensors())
    if dataclasses.is_dataclass(obj):
        return sum(state_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "ctx")
    if hasattr(obj, "state_dict"):
        return sum(state_bytes(v) for v in obj.state_dict().values() if isinstance(v, torch.Tensor))
    return 0


def online_step(name: str, n: int, length: int):
    """A closure running one online step (``step`` + ``backward``) of rule ``name`` at size n,
    and a function giving the bytes of its rule state."""
    torch.manual_seed(0)
    cell, readout = VanillaRNN(1, n), torch.nn.Linear(n, 1)
    learner = OnlineLearner(cell, name, **OPTIONS.get(name, {}))
    xs = torch.sin(0.3 * torch.arange(length + 1, dtype=torch.float32)).unsqueeze(-1)
    clock = [0]

    def step() -> None:
        t = clock[0] % length
        h = learner.step(xs[t])
        learner.backward((readout(h) - xs[t + 1]).pow(2).sum())
        cell.zero_grad(set_to_none=True)  # nothing learns: every rule sees the same stream
        readout.zero_grad(set_to_none=True)
        clock[0] += 1

    return step, lambda: state_bytes(learner.transport_state)


def rule_step(name: str, n: int):
    """A closure running the rule's own arithmetic, ``update`` + ``gradient``, on derivatives
    computed beforehand; None for graph rules, which have no update."""
    torch.manual_seed(0)
    cell = VanillaRNN(1, n)
    learner = OnlineLearner(cell, name, **OPTIONS.get(name, {}))
    rule = learner.transport
    if not isinstance(rule, AbstractTransport):  # window rules (TBPTT) have no update
        return None
    learner.step(torch.zeros(1))
    state, params, s = learner.transport_state, cell.stacked_parameters(), learner._state
    derivs = []
    with torch.no_grad():
        for t in range(16):  # a short stream of real derivatives, reused cyclically
            x = torch.full((1, 1, 1), math.sin(0.3 * t))
            derivs.append(cell.step_with_derivatives(params, s, x, jacobian=rule.needs_jacobian))
            s = derivs[-1].state
    delta, clock = torch.ones(1, 1, n), [0]

    def step() -> None:
        with torch.no_grad():
            rule.update(state, derivs[clock[0] % len(derivs)])
            rule.gradient(state, delta)
        clock[0] += 1

    return step


def cell_step(n: int):
    """A closure computing the cell's s_t, J_t, Ī_t alone (the floor under every rule)."""
    cell = VanillaRNN(1, n)
    params, x, box = cell.stacked_parameters(), torch.zeros(1, 1, 1), [cell.initial_state(1)]

    def step() -> None:
        with torch.no_grad():
            box[0] = cell.step_with_derivatives(params, box[0], x, jacobian=True).state

    return step


def fastest_blocks(jobs: dict, steps: int, repeats: int, warmup: int) -> dict:
    """Seconds per call of each closure: the fastest of ``repeats`` blocks of ``steps`` calls.

    Blocks of all jobs are interleaved (job after job, repeat after repeat), so a burst of
    load from other processes hits every job alike instead of one rule's measurement.
    """
    for step in jobs.values():
        for _ in range(warmup):
            step()
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for key, step in jobs.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            best[key] = min(best[key], (time.perf_counter() - start) / steps)
    return best


def exponent(a: float, b: float, ratio: float) -> str:
    if a <= 0 or b <= 0:
        return "–"
    return f"{math.log(b / a) / math.log(ratio):.1f}"


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def fmt_bytes(b: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b} B"


def machine() -> list[str]:
    return [
        f"- platform: {platform.platform()} ({platform.machine()}, {platform.processor() or 'cpu'})",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"threads: {torch.get_num_threads()} (intra-op)",
        f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=20, help="timed blocks (the fastest counts)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "rule_costs.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = sorted(args.sizes)

    length = args.warmup + args.steps * args.repeats
    jobs, sizes_of = {}, {}
    for n in sizes:
        jobs[("cell", n)] = cell_step(n)
        for name in sorted(RULES):
            jobs[("step", name, n)], sizes_of[(name, n)] = online_step(name, n, length)
            own = rule_step(name, n)
            if own is not None:
                jobs[("rule", name, n)] = own
    best = fastest_blocks(jobs, args.steps, args.repeats, args.warmup)
    rows = []
    for name in sorted(RULES):
        measured = [(best[("step", name, n)], sizes_of[(name, n)]()) for n in sizes]
        own = [best.get(("rule", name, n)) for n in sizes]
        rows.append((name, measured, own))
        print(name, [(fmt_time(t), fmt_bytes(b)) for t, b in measured],
              [None if o is None else fmt_time(o) for o in own], flush=True)
    cell_times = [best[("cell", n)] for n in sizes]

    ratio = sizes[-1] / sizes[-2] if len(sizes) > 1 else 2.0
    head = " | ".join(f"n={n}: ms/step" for n in sizes) + " | " + " | ".join(
        f"n={n}: rule ms" for n in sizes) + " | " + " | ".join(f"n={n}: state" for n in sizes)
    lines = [
        "# Cost of each transport rule (generated)",
        "",
        "Written by `python benchmarks/rule_costs.py`; do not edit by hand. Vanilla cell, float32, "
        f"one stream (B = 1), input size 1, so N = n and P = n² + 3n. Time: wall time of one "
        f"online step (`step` + `backward`, the cell's own s, J, Ī included), the fastest of "
        f"{args.repeats} blocks of {args.steps} steps after {args.warmup} warm-up steps (blocks of "
        "all rules and sizes interleaved). State: bytes of the rule's tensors (M and whatever else it "
        "carries; generator states excluded). Rule ms: the rule's own `update` + `gradient` on "
        "derivatives computed beforehand (no cell, no checks, no autograd), which shows the "
        "asymptotics that the fixed per-step overheads of the full step hide at these sizes. "
        "Exponents: log2 growth of rule ms (full step for tbptt) and of state between the two "
        "largest sizes.",
        "",
        "Options: " + ", ".join(f"{k} {v}" for k, v in sorted(OPTIONS.items())) + "; others default.",
        "",
        "Machine:",
        *machine(),
        "",
        f"| rule | cost (SPEC §2.2) | memory (SPEC §2.2) | {head} | time exp. | memory exp. |",
        "|---" * (5 + 3 * len(sizes)) + "|",
    ]
    for name, measured, own in rows:
        cost, memory = FORMULAS.get(name, ("?", "?"))
        times = " | ".join(fmt_time(t) for t, _ in measured)
        owns = " | ".join("–" if o is None else fmt_time(o) for o in own)
        mems = " | ".join(fmt_bytes(b) for _, b in measured)
        basis = [t for t, _ in measured] if own[-1] is None else own
        t_exp = exponent(basis[-2], basis[-1], ratio) if len(sizes) > 1 else "–"
        m_exp = exponent(measured[-2][1], measured[-1][1], ratio) if len(sizes) > 1 else "–"
        lines.append(f"| {name} | {cost} | {memory} | {times} | {owns} | {mems} | {t_exp} | {m_exp} |")
    cell_row = " | ".join(fmt_time(t) for t in cell_times)
    blanks = " | ".join("–" for _ in sizes)
    c_exp = exponent(cell_times[-2], cell_times[-1], ratio) if len(sizes) > 1 else "–"
    lines.append(f"| *cell alone (s, J, Ī)* | O(N² + P) | – | {cell_row} | {blanks} | {blanks} | {c_exp} | – |")
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
