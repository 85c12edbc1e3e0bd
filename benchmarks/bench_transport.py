"""Speed and peak memory of every transport rule versus N, k, E and dtype, next to the
machine's own limits measured in the same run; writes benchmarks/RESULTS.md, a plot
benchmarks/time_per_step.png and the raw numbers benchmarks/results.json.

    python benchmarks/bench_transport.py --quick     # targets + a small grid, ~15-25 minutes
    python benchmarks/bench_transport.py --full      # the whole grid, a few hours on 2 cores
    python benchmarks/bench_transport.py --quick --threads 2 --out-dir /tmp/bench

What is measured (vanilla tanh cell, input size 1, one stream B = 1, so N = n, P = n² + 3n):

* learner: the public API, ``h = learner.step(x)`` + ``learner.backward(loss)`` of a linear
  readout's squared error (gradients zeroed outside the timed region; no optimizer);
* update / gradient: the rule's own ``update`` on derivatives computed beforehand, and its
  ``gradient`` (g = δ·M), so the per-step Python overhead of the learner shows as the rest;
* limits for the same shape: ``mm``, the batched product J·M into a preallocated output
  (compute bound; BLAS), ``rw``, one read-and-write pass over M (``M.mul_(1)``), and
  ``read``, one read pass (``M.sum()``); the memory-bound floor of a transport step is
  rw + read (the update rewrites M once, the gradient reads it once);
* peers: a straightforward torch.func RTRL (J and Ī by ``jacrev`` each step, dense
  M ← J·M + Ī, g = δ·M) and online truncated BPTT (the ``tbptt`` rule, window 16; a plain
  autograd window if that rule is not registered).

Timing: every configuration runs in a fresh subprocess. Phase 1 times the learner alone
(after warm-up steps) and records the peak memory; phase 2 times all jobs of the
configuration round-robin, one call each per round, so bursts of load from other processes
hit every job alike. Tables show medians; target ratios use the minimum of each job over
the interleaved rounds (the least disturbed call, as ``timeit`` advises).

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process's peak resident set) at
the end of phase 1, in the fresh subprocess, minus the resident set just before the model is
built (after importing torch and the library and loading the compiled kernels). torch has no
CPU allocator statistics and tracemalloc does not see its allocations, so the process's own
high-water mark is the honest measure; the increment ("peak MB") is what the configuration
costs, the total ("peak total MB") what the process needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: options each rule is measured with (sparse: k and granularity come from the grid)
OPTIONS = {"trace": {"decay": 0.9}, "tbptt": {"window": 16}, "shadow": {"rule": "immediate"}}
#: rules that keep a dense M (E, B, N, P)
DENSE = {"full", "sparse"}
LENGTH = 64  # input stream length (cycled)


# --------------------------------------------------------------------------------------
# the worker: builds jobs, times them, measures memory (runs in a fresh subprocess)
# --------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _inputs(dtype):
    return torch.sin(0.3 * torch.arange(LENGTH + 1, dtype=dtype)).unsqueeze(-1)


class Learner:
    """An OnlineLearner of a vanilla cell with a linear readout, stepped on a sine."""

    def __init__(self, spec):
        from torch import nn

        from sparse_rtrl import OnlineLearner, StackedLinear, VanillaRNN, new_ensemble

        seed = spec.get("seed", 0)
        torch.manual_seed(seed)
        self.dtype, N, E = DTYPES[spec["dtype"]], spec["N"], spec["E"]
        if E == 1:
            self.cell, self.readout = VanillaRNN(1, N), nn.Linear(N, 1)
        else:
            self.cell, self.readout = new_ensemble(VanillaRNN, E, 1, N, seed=seed), StackedLinear(E, N, 1)
        self.cell.to(self.dtype)
        self.readout.to(self.dtype)
        self.learner = OnlineLearner(self.cell, spec["rule"], **spec.get("options", {}))
        self.xs, self.t = _inputs(self.dtype), 0

    def __call__(self):
        t = self.t % LENGTH
        h = self.learner.step(self.xs[t])
        self.learner.backward((self.readout(h) - self.xs[t + 1]).pow(2).sum())
        self.t += 1

    def after(self):
        self.cell.zero_grad(set_to_none=True)
        self.readout.zero_grad(set_to_none=True)

    def influence(self):
        """The dense M ``(E·B, N, P)`` of rules that keep one; None for the others (whose
        ``influence()`` would build a dense M only for inspection)."""
        if self.learner.transport.name not in ("full", "sparse"):
            return None
        M = self.learner.influence()
        return None if M is None else M.reshape(-1, *M.shape[-2:])

    def bare(self):
        """Closures for the rule's own update and gradient on fixed derivatives (None for
        graph rules, which have no update)."""
        from sparse_rtrl.transport import AbstractTransport

        rule, state, cell = self.learner.transport, self.learner.transport_state, self.cell
        if not isinstance(rule, AbstractTransport):  # window rules (TBPTT) have no update
            return None
        if self.learner.transport_state is None:  # not stepped yet: start the stream
            self()
            self.after()
        state, E = self.learner.transport_state, cell.members
        x = torch.full((E, 1, 1), 0.5, dtype=self.dtype)
        with torch.no_grad():
            derivs = cell.step_with_derivatives(cell.stacked_parameters(), self.learner._state, x,
                                                rule.needs_jacobian)
        delta = torch.ones(E, 1, cell.hidden_size, dtype=self.dtype)

        def update():
            with torch.no_grad():
                rule.update(state, derivs)

        def gradient():
            with torch.no_grad():
                rule.gradient(state, delta)

        return update, gradient


class TorchFuncRTRL:
    """The straightforward RTRL a user would write with torch.func: each step J = ∂s'/∂s and
    Ī = ∂s'/∂θ by ``jacrev``, M ← J·M + Ī densely, g = δ·M (solo, B = 1)."""

    def __init__(self, spec):
        from torch import nn
        from torch.func import jacrev

        from sparse_rtrl import VanillaRNN

        torch.manual_seed(0)
        self.dtype, N = DTYPES[spec["dtype"]], spec["N"]
        cell = VanillaRNN(1, N).to(self.dtype)
        self.readout = nn.Linear(N, 1).to(self.dtype)
        self.params = tuple(p.detach().clone() for p in cell.parameters())
        self.grads = [torch.zeros_like(p) for p in self.params]

        def f(params, h, x):
            w_ih, w_hh, b_ih, b_hh = params
            return torch.tanh(w_ih @ x + b_ih + w_hh @ h + b_hh)

        self.f, self.jac_h, self.jac_p = f, jacrev(f, argnums=1), jacrev(f, argnums=0)
        self.N, self.P = N, sum(p.numel() for p in self.params)
        self.h = torch.zeros(N, dtype=self.dtype)
        self.M = torch.zeros(N, self.P, dtype=self.dtype)
        self.xs, self.t = _inputs(self.dtype), 0

    def __call__(self):
        t = self.t % LENGTH
        x, N = self.xs[t], self.N
        J = self.jac_h(self.params, self.h, x)
        Ibar = torch.cat([d.reshape(N, -1) for d in self.jac_p(self.params, self.h, x)], dim=1)
        self.h = self.f(self.params, self.h, x)
        self.M = J @ self.M + Ibar
        hh = self.h.detach().requires_grad_(True)
        (self.readout(hh) - self.xs[t + 1]).pow(2).sum().backward()
        g = hh.grad @ self.M
        offset = 0
        for acc in self.grads:
            acc += g[offset : offset + acc.numel()].view_as(acc)
            offset += acc.numel()
        self.t += 1

    def after(self):
        self.readout.zero_grad(set_to_none=True)

    def influence(self):
        return self.M.unsqueeze(0)


class AutogradTBPTT:
    """Online truncated BPTT written plainly (used only if no ``tbptt`` rule is registered):
    each step re-runs the last T steps from the stored state with autograd."""

    def __init__(self, spec):
        from torch import nn

        from sparse_rtrl import VanillaRNN

        torch.manual_seed(0)
        self.dtype, N = DTYPES[spec["dtype"]], spec["N"]
        self.cell = VanillaRNN(1, N).to(self.dtype)
        self.readout = nn.Linear(N, 1).to(self.dtype)
        self.window = spec.get("window", 16)
        self.past = deque(maxlen=self.window - 1)  # (state before, input) pairs
        self.s = torch.zeros(N, dtype=self.dtype)
        self.xs, self.t = _inputs(self.dtype), 0

    def __call__(self):
        t = self.t % LENGTH
        x = self.xs[t]
        s = self.past[0][0] if self.past else self.s
        for _, xp in self.past:
            s = self.cell(xp, s)
        s = self.cell(x, s)
        (self.readout(s) - self.xs[t + 1]).pow(2).sum().backward()
        self.past.append((self.s, x))
        self.s = s.detach()
        self.t += 1

    def after(self):
        self.cell.zero_grad(set_to_none=True)
        self.readout.zero_grad(set_to_none=True)

    def influence(self):
        return None


def _fresh_M(spec):
    N, E, dtype = spec["N"], spec["E"], DTYPES[spec["dtype"]]
    return torch.randn(E, N, N * N + 3 * N, dtype=dtype)


def make_job(spec, owners):
    """(closure, after-hook) and the object behind it for one job spec; ``owners`` holds the
    objects of the jobs before it (``spec["of"]`` indexes them). None for a job that does not
    apply (the bare update of a graph rule)."""
    kind = spec["type"]
    peers = {"learner": Learner, "torchfunc": TorchFuncRTRL, "autograd-tbptt": AutogradTBPTT}
    if kind in peers:
        owner = peers[kind](spec)
        return (owner, owner.after), owner
    base = owners[spec["of"]] if "of" in spec else None
    if kind in ("update", "gradient"):
        if not hasattr(base, "bare_jobs"):
            base.bare_jobs = base.bare()
        if base.bare_jobs is None:
            return None, None
        return (base.bare_jobs[0 if kind == "update" else 1], None), base
    if kind in ("rw", "read", "mm"):
        M = base.influence() if base is not None else None
        if M is None:
            M = _fresh_M(spec)
        if kind == "rw":
            return (lambda: M.mul_(1.0), None), M
        if kind == "read":
            return (lambda: M.sum(), None), M
        S, N, _ = M.shape
        J = torch.randn(S, N, N, dtype=M.dtype) / math.sqrt(N)
        out = torch.empty_like(M)
        return (lambda: torch.bmm(J, M, out=out), None), M
    raise ValueError(f"unknown job type {kind!r}")


def time_round_robin(jobs, budget, min_rounds, max_rounds, warmup):
    """Per job, the seconds of each call, calls interleaved job after job."""
    for job in jobs:
        if job is None:
            continue
        fn, after = job
        for _ in range(warmup):
            fn()
            if after:
                after()
    times = [[] for _ in jobs]
    start, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        for i, job in enumerate(jobs):
            if job is None:
                continue
            fn, after = job
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
            if after:
                after()
        rounds += 1
    return times


def summary(ts):
    if not ts:
        return {"skipped": True}
    return {"min": min(ts), "median": statistics.median(ts), "mean": statistics.fmean(ts), "n": len(ts)}


def worker(cfg) -> dict:
    """Run one configuration in this process.

    cfg: ``jobs`` (job specs), ``memory`` (index of the job timed alone first, while the peak
    memory is recorded; or None), ``budget`` (seconds per phase), ``min_rounds``,
    ``max_rounds``, ``warmup``, ``threads``.
    """
    torch.set_num_threads(cfg["threads"])
    from sparse_rtrl.transport import _cpu_kernels

    _cpu_kernels.get()  # compile or load outside any measurement
    torch.randn(64, 64) @ torch.randn(64, 64)
    out = {"baseline_rss": rss_bytes(), "kernels": _cpu_kernels.reason or "compiled CPU kernels in use",
           "threads": torch.get_num_threads()}
    specs = cfg["jobs"]
    owners, jobs = [None] * len(specs), [None] * len(specs)
    first = cfg.get("memory")
    if first is not None:
        jobs[first], owners[first] = make_job(specs[first], owners)
        t = time_round_robin([jobs[first]], cfg["budget"] / 2, cfg["min_rounds"], cfg["max_rounds"],
                             cfg["warmup"])
        out["phase1"] = summary(t[0])
        out["peak_rss"] = peak_rss_bytes()
        M = owners[first].influence()
        out["M_bytes"] = 0 if M is None else M.numel() * M.element_size()
    for i, spec in enumerate(specs):
        if i != first:
            jobs[i], owners[i] = make_job(spec, owners)
    if len(specs) > 1 or first is None:
        warm = [None if i == first else j for i, j in enumerate(jobs)]
        time_round_robin(warm, 0, 0, 0, cfg["warmup"])
        times = time_round_robin(jobs, cfg["budget"], cfg["min_rounds"], cfg["max_rounds"], 0)
        out["jobs"] = [dict(spec=s, **summary(t)) for s, t in zip(specs, times)]
    return out


# --------------------------------------------------------------------------------------
# the driver: which configurations, run each in a fresh subprocess, collect
# --------------------------------------------------------------------------------------
def learner_spec(rule, options, N, E, dtype):
    return {"type": "learner", "rule": rule, "options": dict(options), "N": N, "E": E, "dtype": dtype}


def variants(ks):
    """(label, rule, options) for every registered rule; sparse once per granularity and k."""
    from sparse_rtrl.transport import RULES

    out = []
    for name in sorted(RULES):
        if name == "sparse":
            out += [(f"sparse-{g} k={k}", "sparse", {"k": k, "granularity": g})
                    for g in ("row", "column") for k in ks]
        elif name == "shadow":
            out.append(("shadow(immediate)", "shadow", OPTIONS["shadow"]))
        else:
            out.append((name, name, OPTIONS.get(name, {})))
    return out


def peers():
    """(label, job type, extra) of the peer implementations."""
    from sparse_rtrl.transport import RULES

    out = [("torch.func RTRL", "torchfunc", {})]
    if "tbptt" not in RULES:
        out.append(("autograd TBPTT T=16", "autograd-tbptt", {"window": 16}))
    return out


def m_bytes(N, E, dtype):
    return E * N * (N * N + 3 * N) * DTYPES[dtype].itemsize


def estimate(label, rule, N, E, dtype, gflops):
    """(bytes, seconds per step) roughly needed by a configuration, to skip what cannot run."""
    M = m_bytes(N, E, dtype)
    flops = 2.0 * E * N * N * (N * N + 3 * N)
    slow = 1.0 if dtype == "float32" else 2.0
    if rule in ("full", "shadow"):
        return 2 * M, slow * flops / (gflops * 1e9)
    if rule == "torchfunc":
        return 4 * M, 2 * slow * flops / (gflops * 1e9)
    if rule == "sparse":
        return 1.2 * M, M / 2e9
    return 64 << 20, 0.01


def grid_configs(args):
    """One configuration per (variant, N, E, dtype) of the grid."""
    configs = []
    vs = variants(args.ks)
    for dtype in args.dtypes:
        for E in args.ensembles:
            if E > 1 and dtype != args.dtypes[0]:
                continue  # the ensemble sweep in the first dtype only
            for N in args.sizes:
                if E > 1 and N > args.max_ensemble_n:
                    continue
                rows = [(label, rule, opts, "learner") for label, rule, opts in vs
                        if E == 1 or rule != "sparse" or opts["k"] == 4]
                if E == 1 and (dtype == args.dtypes[0] or args.full_peers):
                    rows += [(label, kind, extra, kind) for label, kind, extra in peers()]
                if E > 1:
                    rows = [r for r in rows if r[1] != "shadow"]
                for label, rule, opts, kind in rows:
                    configs.append(grid_config(label, rule, opts, kind, N, E, dtype, args))
    return configs


def grid_config(label, rule, opts, kind, N, E, dtype, args):
    base = {"N": N, "E": E, "dtype": dtype}
    if kind == "learner":
        jobs = [learner_spec(rule, opts, N, E, dtype)]
        if rule != "tbptt":
            jobs += [dict(type="update", of=0, **base), dict(type="gradient", of=0, **base)]
        if rule in DENSE:
            jobs += [dict(type="rw", of=0, **base), dict(type="read", of=0, **base)]
        if rule == "full":
            jobs.append(dict(type="mm", of=0, **base))
    else:
        jobs = [dict(type=kind, **base, **opts)]
    mem, sec = estimate(label, rule if kind == "learner" else kind, N, E, dtype, args.gflops)
    return {"name": f"{label} N={N} E={E} {dtype}", "group": "grid", "label": label, "rule": rule,
            "N": N, "E": E, "dtype": dtype, "jobs": jobs, "memory": 0,
            "estimate": {"bytes": mem, "seconds_per_step": sec}}


def target_configs(args):
    """Configurations whose jobs are timed side by side for the targets."""
    f32 = "float32"
    out = []
    for N in args.target_sizes:
        base = {"N": N, "E": 1, "dtype": f32}
        jobs = [learner_spec("full", {}, N, 1, f32),
                learner_spec("sparse", {"k": 4, "granularity": "row"}, N, 1, f32),
                learner_spec("sparse", {"k": 4, "granularity": "column"}, N, 1, f32)]
        for i in range(3):
            jobs += [dict(type="update", of=i, **base), dict(type="gradient", of=i, **base)]
        jobs += [dict(type="rw", of=0, **base), dict(type="read", of=0, **base), dict(type="mm", of=0, **base)]
        out.append({"name": f"targets N={N}", "group": "targets", "N": N, "jobs": jobs, "memory": None,
                    "estimate": {"bytes": 4 * m_bytes(N, 1, f32),
                                 "seconds_per_step": 2 * estimate("", "full", N, 1, f32, args.gflops)[1]}})
    N = 64
    jobs = []
    for E in () if args.no_ensemble_target else (1, 16):
        first = len(jobs)
        jobs += [learner_spec("full", {}, N, E, f32),
                 learner_spec("sparse", {"k": 4, "granularity": "row"}, N, E, f32),
                 learner_spec("sparse", {"k": 4, "granularity": "column"}, N, E, f32),
                 learner_spec("immediate", {}, N, E, f32)]
        base = {"N": N, "E": E, "dtype": f32}
        for i in range(first, first + 4):
            jobs += [dict(type="update", of=i, **base), dict(type="gradient", of=i, **base)]
        jobs += [dict(type="rw", of=first, **base), dict(type="read", of=first, **base),
                 dict(type="mm", of=first, **base)]
    if jobs:
        jobs.append({"type": "torchfunc", "N": N, "E": 1, "dtype": f32})
        out.append({"name": "targets N=64 ensemble and peers", "group": "targets", "N": N, "jobs": jobs,
                    "memory": None, "estimate": {"bytes": 64 << 20, "seconds_per_step": 0.1}})
    # sparse column k=4 at N=1024 alone (its peak memory is the target)
    if args.big_target:
        cfg = grid_config("sparse-column k=4", "sparse", {"k": 4, "granularity": "column"}, "learner",
                          1024, 1, f32, args)
        cfg.update(name="target sparse-column k=4 N=1024", group="targets-1024")
        out.append(cfg)
    return out


def run_config(cfg, args) -> dict:
    mem, sec = cfg["estimate"]["bytes"], cfg["estimate"]["seconds_per_step"]
    if mem > args.max_mem_gb * 1e9:
        return {"skipped": f"needs ~{mem / 1e9:.1f} GB (limit {args.max_mem_gb:.1f} GB, --max-mem-gb)"}
    steps = args.warmup + 2 * args.min_rounds
    if sec * steps > args.max_config_s:
        return {"skipped": f"~{sec:.0f} s per step estimated (limit {args.max_config_s:g} s per "
                           "configuration, --max-config-s)"}
    work = {k: cfg[k] for k in ("jobs", "memory")}
    work.update(threads=args.threads, budget=args.budget, min_rounds=args.min_rounds,
                max_rounds=args.max_rounds, warmup=args.warmup)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(work)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
        return {"error": f"{why}: {proc.stderr.strip()[-400:]}"}
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_s"] = time.perf_counter() - start
    return res


def machine_info(threads) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    config = torch.__config__.show()
    blas = next((p.split("=", 1)[1] for p in config.replace(",", " ").split() if p.startswith("BLAS_INFO=")), "?")
    from sparse_rtrl.transport import _cpu_kernels

    _cpu_kernels.get()
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "memory_bytes": mem,
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "blas": blas, "threads": threads,
        "kernels": _cpu_kernels.reason or "compiled CPU kernels (transport/_cpu_kernels.py) in use",
        "load_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def remeasure(configs, args, out_json: Path, what: str) -> None:
    """Run ``configs`` again and replace their entries in results.json (with a note)."""
    data = json.loads(out_json.read_text())
    for cfg in configs:
        res = run_config(cfg, args)
        entry = {**{k: v for k, v in cfg.items() if k != "jobs"}, "jobs": cfg["jobs"], "result": res}
        if any(c["name"] == cfg["name"] for c in data["configs"]):
            data["configs"] = [entry if c["name"] == cfg["name"] else c for c in data["configs"]]
        else:
            data["configs"].insert(0, entry)
        print(f"{cfg['name']}: {res.get('skipped') or res.get('error') or 'done'}", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    data.setdefault("notes", []).append(
        f"{what} measured again on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with `{Path(sys.executable).name} "
        f"{shlex.join(sys.argv)}` (load average then: {', '.join(f'{x:.1f}' for x in load) if load else '–'}); "
        "the rest is from the original run except as noted.")
    out_json.write_text(json.dumps(data, indent=1))
    write_report(data, args.out_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="targets + a small grid (default)")
    mode.add_argument("--full", action="store_true", help="the whole grid")
    mode.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and the plot from results.json")
    mode.add_argument("--remeasure-targets", action="store_true",
                      help="run the target configurations again and replace them in results.json (noted in RESULTS.md)")
    mode.add_argument("--rerun", nargs="+", metavar="NAME",
                      help="run these configurations (names as printed) again and replace them in results.json")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--ks", type=int, nargs="+")
    parser.add_argument("--ensembles", type=int, nargs="+")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--only", nargs="+", help="labels (or rule names) of the grid to run")
    parser.add_argument("--no-grid", action="store_true", help="targets (and issue-2 table) only")
    parser.add_argument("--target-sizes", type=int, nargs="*", default=[256, 512],
                        help="sizes of the side-by-side full/sparse target runs")
    parser.add_argument("--no-ensemble-target", action="store_true", help="skip the N=64 ensemble/peer run")
    parser.add_argument("--no-big-target", action="store_true", help="skip sparse-column k=4 at N=1024")
    parser.add_argument("--no-learner-table", action="store_true", help="skip bench_learner.py (issue 2)")
    parser.add_argument("--budget", type=float, help="seconds of timing per phase of a configuration")
    parser.add_argument("--min-rounds", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-mem-gb", type=float, default=None, help="skip configurations needing more")
    parser.add_argument("--max-config-s", type=float, help="skip configurations estimated to take longer")
    parser.add_argument("--gflops", type=float, default=25.0, help="assumed GFLOP/s for time estimates")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--resume", action="store_true",
                        help="keep the configurations already in results.json and run only the others")
    args = parser.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    out_json = args.out_dir / "results.json"
    if args.report_only:
        data = json.loads(out_json.read_text())
        write_report(data, args.out_dir)
        return
    full = args.full or args.remeasure_targets or bool(args.rerun)
    args.sizes = args.sizes or ([32, 64, 128, 256, 512, 1024] if full else [32, 64, 128, 256])
    args.ks = args.ks or ([1, 4, 16] if full else [4])
    args.ensembles = args.ensembles or ([1, 8, 16] if full else [1, 16])
    args.dtypes = args.dtypes or (["float32", "float64"] if full else ["float32"])
    args.budget = args.budget or (4.0 if full else 1.5)
    args.max_config_s = args.max_config_s or (1200.0 if full else 240.0)
    args.max_ensemble_n = 256
    args.full_peers = full
    args.big_target = not args.no_big_target
    if args.max_mem_gb is None:
        avail = None
        try:
            with open("/proc/meminfo") as f:
                avail = int(next(l for l in f if l.startswith("MemAvailable")).split()[1]) * 1024
        except (OSError, StopIteration):
            pass
        args.max_mem_gb = 0.6 * avail / 1e9 if avail else 8.0
    torch.set_num_threads(args.threads)

    configs = target_configs(args)
    if args.remeasure_targets:
        remeasure(configs, args, out_json, "the target configurations")
        return
    if args.rerun:
        chosen = [c for c in configs + grid_configs(args) if c["name"] in args.rerun]
        missing = set(args.rerun) - {c["name"] for c in chosen}
        if missing:
            raise SystemExit(f"no configuration named {sorted(missing)}")
        remeasure(chosen, args, out_json, ", ".join(args.rerun))
        return
    if not args.no_grid:
        grid = grid_configs(args)
        if args.only:
            grid = [c for c in grid if c["label"] in args.only or c["rule"] in args.only]
        configs += grid
    data = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "mode": "full" if full else "quick",
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(args.threads), "configs": [], "learner_table": None}
    if args.resume and out_json.exists():
        # an interrupted run goes on where it stopped; what it measured is kept, with its header
        data = json.loads(out_json.read_text())
        done = {c["name"] for c in data["configs"]}
        configs = [c for c in configs if c["name"] not in done]
        data.setdefault("notes", []).append(
            f"resumed on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} with `{Path(sys.executable).name} "
            f"{' '.join(sys.argv)}`: {len(configs)} configurations the first run had not reached"
            f"{'' if args.no_learner_table else ' and the issue-2 learner table'} "
            f"(load average then: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, cfg in enumerate(configs):
        res = run_config(cfg, args)
        data["configs"].append({**{k: v for k, v in cfg.items() if k != "jobs"}, "jobs": cfg["jobs"], "result": res})
        status = res.get("skipped") or res.get("error") or f"{res.get('wall_s', 0):.0f} s"
        print(f"[{i + 1}/{len(configs)} {time.perf_counter() - t0:6.0f} s] {cfg['name']}: {status}", flush=True)
        out_json.write_text(json.dumps(data, indent=1))
    if not args.no_learner_table:
        cmd = [sys.executable, str(HERE / "bench_learner.py"), "--json", "--threads", str(args.threads)]
        if not full:
            cmd += ["--budget", "3"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        data["learner_table"] = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-400:]}
        print("bench_learner:", "done" if lines else data["learner_table"]["error"], flush=True)
    data["machine"]["load_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    data["duration_s"] = data.get("duration_s", 0) + time.perf_counter() - t0  # resumed runs add up
    out_json.write_text(json.dumps(data, indent=1))
    write_report(data, args.out_dir)


# --------------------------------------------------------------------------------------
# the report: targets, tables, plot
# --------------------------------------------------------------------------------------
def job_label(spec, specs) -> str:
    kind = spec["type"]
    if kind == "learner":
        o = spec.get("options", {})
        name = spec["rule"] if spec["rule"] != "sparse" else f"sparse-{o.get('granularity', 'row')} k={o['k']}"
        return f"{name} E={spec['E']}"
    if kind in ("update", "gradient"):
        return f"{kind} {job_label(specs[spec['of']], specs)}"
    if kind in ("rw", "read", "mm") and spec.get("E", 1) != 1:
        return f"{kind} E={spec['E']}"
    return kind


def stats_by_label(entry) -> dict:
    res = entry.get("result", {})
    specs = entry["jobs"]
    return {job_label(j["spec"], specs): j for j in res.get("jobs", []) if not j.get("skipped")}


def find(data, name):
    return next((c for c in data["configs"] if c["name"] == name), None)


def fmt_ms(seconds):
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_rate(seconds):
    if not seconds:
        return "–"
    r = 1.0 / seconds
    return f"{r:.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.2f}"


def evaluate_targets(data) -> list[tuple[str, str, str, str]]:
    """(target, measured, threshold, status) rows."""
    rows = []

    def status(ok):
        return "**met**" if ok else "**missed**"

    def mins(entry, *labels):
        st = stats_by_label(entry) if entry else {}
        vals = [st.get(l, {}).get("min") for l in labels]
        return None if any(v is None for v in vals) else vals

    t256 = find(data, "targets N=256")
    v = mins(t256, "full E=1", "mm", "update full E=1", "gradient full E=1")
    if v:
        full, mm, upd, grad = v
        rows.append(("full RTRL at N=256 vs the same-shape matrix product (throughput fraction)",
                     f"learner API {mm / full:.0%} · bare update {mm / upd:.0%} · update+gradient "
                     f"{mm / (upd + grad):.0%}", "≥ 50 %", status(mm / full >= 0.5)))
    for g in ("row", "column"):
        lab = f"sparse-{g} k=4 E=1"
        v = mins(t256, lab, f"update {lab}", f"gradient {lab}", "rw", "read")
        if v:
            learner, upd, grad, rw, rd = v
            detail = (f"update+gradient {(upd + grad) / (rw + rd):.2f}× · learner API {learner / (rw + rd):.2f}× "
                      f"(floor {fmt_ms(rw + rd)} ms)")
            grid = find(data, f"sparse-{g} k=4 N=256 E=1 float32")
            w = mins(grid, f"update {lab}", f"gradient {lab}", "rw", "read") if grid else None
            if w:
                detail += f"; in the grid's own side-by-side run: update+gradient {(w[0] + w[1]) / (w[2] + w[3]):.2f}×"
            rows.append((f"sparse k=4 ({g}) at N=256 vs memory floor (rw + read pass over M)", detail, "≤ 2×",
                         status((upd + grad) / (rw + rd) <= 2)))
    for N, need in ((256, 5), (512, 10)):
        entry = find(data, f"targets N={N}")
        for g in ("row", "column"):
            v = mins(entry, "full E=1", f"sparse-{g} k=4 E=1")
            if v:
                rows.append((f"sparse k=4 ({g}) speed-up over full RTRL at N={N} (learner API)",
                             f"{v[0] / v[1]:.1f}×", f"≥ {need}×", status(v[0] / v[1] >= need)))
    e64 = find(data, "targets N=64 ensemble and peers")
    passes = mins(e64, "rw", "rw E=16")
    for name in ("full", "sparse-row k=4", "sparse-column k=4", "immediate"):
        v = mins(e64, f"{name} E=1", f"{name} E=16")
        if v:
            gain = 16 * v[0] / v[1]
            detail = f"{gain:.1f}×"
            b = mins(e64, f"update {name} E=1", f"gradient {name} E=1", f"update {name} E=16",
                     f"gradient {name} E=16")
            if b:
                detail += f" (bare update+gradient {16 * (b[0] + b[1]) / (b[2] + b[3]):.1f}×)"
            rows.append((f"N=64, ensemble of 16 vs one learner, aggregate steps/s ({name})", detail,
                         "≥ 6×", status(gain >= 6)))
    if passes:
        rows.append(("*context:* one rw pass over M at N=64, E=16 vs E=1 (16× the bytes)",
                     f"{passes[1] / passes[0]:.0f}× the time", "", "–"))
    v = mins(e64, "torchfunc", "full E=1")
    if v:
        detail = f"{v[0] / v[1]:.1f}× faster"
        mm = mins(e64, "mm")
        if mm:
            detail += f" (torch.func RTRL / the J·M product alone: {v[0] / mm[0]:.1f}×, the most any RTRL can gain)"
        rows.append(("full RTRL vs straightforward torch.func RTRL at N=64", detail,
                     "≥ 10×", status(v[0] / v[1] >= 10)))
    big = find(data, "target sparse-column k=4 N=1024")
    res = (big or {}).get("result", {})
    if res.get("phase1") and not res["phase1"].get("skipped"):
        rate, peak = 1 / res["phase1"]["median"], res["peak_rss"]
        rows.append(("sparse k=4 (column) at N=1024: steps/s and peak memory (whole process)",
                     f"{rate:.2f} steps/s · {peak / 1e9:.2f} GB", "≥ 0.5 steps/s, ≤ 8 GB",
                     status(rate >= 0.5 and peak <= 8e9)))
    elif big:
        rows.append(("sparse k=4 (column) at N=1024", res.get("skipped") or res.get("error") or "?", "", "not run"))
    worst = None
    for c in data["configs"]:
        res = c.get("result", {})
        if c.get("rule") not in ("full", "sparse") or c["N"] < 256 or "peak_rss" not in res:
            continue
        P = c["N"] ** 2 + 3 * c["N"]
        allowed = 1.3 * (res["M_bytes"] + c["E"] * P * DTYPES[c["dtype"]].itemsize) + 200e6
        used = res["peak_rss"] - res["baseline_rss"]
        if worst is None or used / allowed > worst[0]:
            worst = (used / allowed, used, allowed, c["name"])
    if worst:
        rows.append(("peak memory ≤ 1.3 × (M + parameters) + 200 MB, N ≥ 256 (worst configuration)",
                     f"{worst[1] / 1e6:.0f} MB of {worst[2] / 1e6:.0f} MB allowed ({worst[3]})",
                     "≤ 100 % of the allowance", status(worst[0] <= 1)))
    return rows


def grid_tables(data) -> list[str]:
    lines = []
    grid = [c for c in data["configs"] if c["group"] in ("grid",)]
    combos = sorted({(c["dtype"], c["E"]) for c in grid}, key=lambda t: (t[0], t[1]))
    for dtype, E in combos:
        sub = [c for c in grid if c["dtype"] == dtype and c["E"] == E]
        sizes = sorted({c["N"] for c in sub})
        labels = list(dict.fromkeys(c["label"] for c in sub))
        cell = {(c["label"], c["N"]): c.get("result", {}) for c in sub}

        def row(fn):
            return " | ".join(fn(cell.get((lab, N), {}), N) for N in sizes)

        def note(res):
            if "skipped" in res:
                return "skip"
            if "error" in res:
                return "error"
            return None

        head = " | ".join(f"N={N}" for N in sizes)
        sep = "|---" * (len(sizes) + 1) + "|"
        lines += [f"### {dtype}, E = {E}", "",
                  "Learner API (`step` + `backward`), steps per second (median step):", "",
                  f"| rule | {head} |", sep]
        for lab in labels:
            lines.append(f"| {lab} | " + row(lambda r, N: note(r) or fmt_rate(r.get("phase1", {}).get("median"))) + " |")
        lines += ["", "Bare rule: `update` + `gradient` ms (min), and the machine's limits for the same "
                  "shape (from the full-RTRL configuration): `mm` J·M by BLAS, `rw` one read-and-write "
                  "pass over M, `read` one read pass:", "", f"| rule | {head} |", sep]

        def bare(r, N):
            if note(r):
                return note(r)
            st = {j["spec"]["type"]: j for j in r.get("jobs", []) if not j.get("skipped")}
            if "update" not in st:
                return "–"
            return fmt_ms(st["update"]["min"] + st["gradient"]["min"])

        for lab in labels:
            lines.append(f"| {lab} | " + row(bare) + " |")
        for kind in ("mm", "rw", "read"):
            def lim(r, N, kind=kind):
                res = cell.get(("full", N), {})
                st = {j["spec"]["type"]: j for j in res.get("jobs", []) if not j.get("skipped")}
                return fmt_ms(st[kind]["min"]) if kind in st else "–"
            lines.append(f"| *limit: {kind}* | " + row(lim) + " |")
        lines += ["", "Peak memory, MB above the process baseline (M alone in the last row):", "",
                  f"| rule | {head} |", sep]
        for lab in labels:
            lines.append(f"| {lab} | " + row(
                lambda r, N: note(r) or (f"{(r['peak_rss'] - r['baseline_rss']) / 1e6:.0f}" if "peak_rss" in r else "–"))
                + " |")
        lines.append("| *M (N·P numbers)* | " + " | ".join(f"{m_bytes(N, E, dtype) / 1e6:.1f}" for N in sizes) + " |")
        skipped = sorted({f"{c['label']} N={c['N']}: {c['result'].get('skipped') or c['result'].get('error')}"
                          for c in sub if "skipped" in c.get("result", {}) or "error" in c.get("result", {})})
        if skipped:
            lines += ["", "Not run: " + "; ".join(skipped) + "."]
        lines.append("")
    return lines


def plot(data, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    grid = [c for c in data["configs"] if c["group"] == "grid" and c["E"] == 1 and c["dtype"] == "float32"]
    if not grid:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    labels = list(dict.fromkeys(c["label"] for c in grid))
    cmap = plt.get_cmap("tab20")
    for i, lab in enumerate(labels):
        pts, bare = [], []
        for c in sorted((c for c in grid if c["label"] == lab), key=lambda c: c["N"]):
            r = c.get("result", {})
            if r.get("phase1", {}).get("median"):
                pts.append((c["N"], r["phase1"]["median"] * 1e3))
            st = {j["spec"]["type"]: j for j in r.get("jobs", []) if not j.get("skipped")}
            if "update" in st and "gradient" in st:
                bare.append((c["N"], (st["update"]["min"] + st["gradient"]["min"]) * 1e3))
        style = dict(marker="o", color=cmap(i % 20), label=lab, linestyle="--" if "torch" in lab or "autograd" in lab else "-")
        if pts:
            axes[0].plot(*zip(*pts), **style)
        if bare:
            axes[1].plot(*zip(*bare), **style)
    for kind, color, text in (("mm", "black", "limit: J·M by BLAS (compute)"),
                              ("floor", "grey", "limit: rw + read pass over M (memory)")):
        pts = []
        for c in sorted((c for c in grid if c["label"] == "full"), key=lambda c: c["N"]):
            st = {j["spec"]["type"]: j for j in c.get("result", {}).get("jobs", []) if not j.get("skipped")}
            if kind == "mm" and "mm" in st:
                pts.append((c["N"], st["mm"]["min"] * 1e3))
            elif kind == "floor" and "rw" in st and "read" in st:
                pts.append((c["N"], (st["rw"]["min"] + st["read"]["min"]) * 1e3))
        for ax in axes:
            if pts:
                ax.plot(*zip(*pts), color=color, linestyle=":", linewidth=2.5, label=text)
    for ax, title in zip(axes, ("learner API: step + backward (median)", "bare rule: update + gradient (min)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (state units; P = N² + 3N)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms per step (float32, one learner)")
    handles, labs = axes[0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(data, out_dir: Path) -> None:
    m = data["machine"]
    load = lambda v: "–" if not v else ", ".join(f"{x:.1f}" for x in v)
    lines = [
        "# Transport benchmarks (generated)",
        "",
        f"Written by `{data['command']}` ({data['mode']} run, started {data['started']}, "
        f"{data.get('duration_s', 0) / 60:.0f} min); do not edit by hand. See docs/performance.md for "
        "the method and what each kernel does; the raw numbers are in results.json.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores"
        + (f", {m['memory_bytes'] / 2**30:.0f} GiB memory" if m.get("memory_bytes") else ""),
        f"- {m['platform']}; python {m['python']}; torch {m['torch']} (BLAS: {m['blas']}); "
        f"intra-op threads: {m['threads']}",
        f"- sparse kernels: {m['kernels']}",
        f"- load average (1, 5, 15 min) at start: {load(m.get('load_start'))}; at end: {load(m.get('load_end'))} "
        "(other processes share this machine: compare ratios measured side by side, not absolute times)",
        "",
        *[f"Note: {n}" for n in data.get("notes", [])],
        "",
        "## Targets",
        "",
        "Float32, one learner, vanilla cell, B = 1, ratios of the fastest of interleaved calls measured in one "
        "process (see the method in the script's docstring).",
        "",
        "| target | measured | threshold | status |",
        "|---|---|---|---|",
    ]
    for row in evaluate_targets(data):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if data.get("learner_table"):
        lines += ["## Issue 2: learner throughput, and an ensemble of 8 against 8 solo runs", ""]
        lt = data["learner_table"]
        if "error" in lt:
            lines += [f"bench_learner.py failed: {lt['error']}", ""]
        else:
            sys.path.insert(0, str(HERE))
            from bench_learner import table

            lines += table(lt) + [""]
    lines += ["## Grid", ""]
    lines += grid_tables(data)
    lines += ["## Side-by-side configurations (all jobs of each timed round-robin in one process)", ""]
    for c in data["configs"]:
        if not c["group"].startswith("targets") or "jobs" not in c.get("result", {}):
            continue
        lines += [f"{c['name']}:", "", "| job | min ms | median ms | calls |", "|---|---|---|---|"]
        for lab, st in stats_by_label(c).items():
            lines.append(f"| {lab} | {fmt_ms(st['min'])} | {fmt_ms(st['median'])} | {st['n']} |")
        lines.append("")
    if plot(data, out_dir / "time_per_step.png"):
        lines += ["![time per step](time_per_step.png)", ""]
    for name in ("jax_peer.md", "ensemble_bounds.md"):  # written by jax_peer.py / ensemble_bounds.py --write
        peer = Path(__file__).with_name(name)
        if peer.exists():
            lines += [peer.read_text()]
    (out_dir / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {out_dir / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
