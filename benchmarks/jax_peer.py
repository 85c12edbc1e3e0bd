"""The library's online step against a hand-written ``jax.jit`` step of equal work, side by side
in one run: CPU time per step, one thread, batch 1, float32 (issue 15).

    pip install "jax[cpu]"                     # benchmark-only; not a dependency of the library
    python benchmarks/jax_peer.py              # the table: library / JAX per rule and N
    python benchmarks/jax_peer.py --sizes 32 64 --steps 300
    python benchmarks/jax_peer.py --write      # also writes benchmarks/jax_peer.md (RESULTS.md includes it)

Equal work per step, written here from the equations (vanilla tanh cell, N units, input I = 1,
linear readout to one output, squared error, plain SGD):

    z = W_ih x + b_ih + W_hh h + b_hh,  h' = tanh z,  D = 1 − h'²,  J = diag(D)·W_hh
    Ī[i, (i, l)] = D_i·u_l,  u = [x; h; 1; 1]           (unit-local: row i meets unit i's columns)
    full        M' = J·M + Ī                          (M dense, N × P)
    sparse row  M'[i] = Σ_{j ∈ S_i} J_ij M[j] + Ī[i],   S_i k random sources per row, drawn each step
    sparse col  M' = J[:, S]·M[S] + Ī,                  S k random sources, drawn each step
    snap1       M'[i, l] = J_ii M[i, l] + D_i u_l       (M on Ī's pattern, N × L)
    immediate   M' = Ī                                  (never formed: g = (δ ⊙ D) ⊗ u)

(the peer donates M to the jitted call, so XLA may update it in place; it builds the
unit-local gradients of snap1 and immediate by concatenating blocks, not by a scatter, and
the row-sparse product as k row gathers that XLA fuses into one loop)
    δ = ∂L/∂h',  g = δ·M',  θ ← θ − η g;  the readout learns by its true gradient.

The library runs two of its public APIs: the fused step (``sparse_rtrl.fused.FusedStep``: one
``step(x, y)`` call predicts, scores and learns) and the general learner (``learner.step`` →
readout → loss → ``learner.backward`` → ``torch.optim.SGD.step`` → ``zero_grad``). JAX runs one
jitted call per step (state in, state out, ``block_until_ready``), the online loop a user would
write. Before timing, all three compute the gradients of 5 steps in float64 from the same
parameters with the same fixed masks, and they must agree to 1e-10. CPU time (``time.process_time``) is robust to other jobs; the
machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RULES = ("full", "sparse row k=4", "sparse column k=4", "snap1", "immediate")
K = 4


# -- the JAX peer ------------------------------------------------------------------------------

def jax_step_fn(rule: str, N: int, I: int, lr: float, fixed=None):
    """A jitted ``step(θ, M, h, x, y, key) → (θ, M, h, key, loss)`` for ``rule``."""
    import jax
    import jax.numpy as jnp

    L = I + N + 2  # columns of unit i in each of its rows: [x; h; 1; 1]
    P = N * L
    # column of parameter (i, l) of each block in the flat θ = [W_ih, W_hh, b_ih, b_hh]
    i = np.arange(N)[:, None]
    cols = np.concatenate([i * I + np.arange(I), N * I + i * N + np.arange(N),
                           np.full((N, 1), N * I + N * N) + i, np.full((N, 1), N * I + N * N + N) + i], 1)
    rows = np.broadcast_to(i, cols.shape)

    def unpack(theta):
        w_ih = theta[: N * I].reshape(N, I)
        w_hh = theta[N * I: N * I + N * N].reshape(N, N)
        b_ih, b_hh = theta[N * I + N * N: N * I + N * N + N], theta[N * I + N * N + N:]
        return w_ih, w_hh, b_ih, b_hh

    def flat(per_unit):
        """θ-shaped gradient from unit-local columns (N, L) = [x; h; 1; 1] per unit."""
        return jnp.concatenate([per_unit[:, :I].reshape(-1), per_unit[:, I:I + N].reshape(-1),
                                per_unit[:, I + N], per_unit[:, I + N + 1]])

    def step(theta, readout, M, h, x, y, key):
        w_ih, w_hh, b_ih, b_hh = unpack(theta)
        hn = jnp.tanh(w_ih @ x + b_ih + w_hh @ h + b_hh)
        D = 1.0 - hn * hn
        u = jnp.concatenate([x, h, jnp.ones(2, hn.dtype)])
        local = D[:, None] * u[None, :]  # Ī's nonzero entries, (N, L)
        W_o, b_o = readout
        err = W_o @ hn + b_o - y
        loss = (err * err).sum()
        delta = 2.0 * err @ W_o  # ∂L/∂h'
        key, sub = jax.random.split(key)
        if rule == "immediate":
            g = flat((delta * D)[:, None] * u[None, :])
        elif rule == "snap1":
            M = jnp.diagonal(w_hh)[:, None] * D[:, None] * M + local
            g = flat(delta[:, None] * M)
        else:
            J = D[:, None] * w_hh
            if rule == "full":
                M = J @ M
            elif rule == "sparse row k=4":
                idx = fixed if fixed is not None else jax.lax.top_k(jax.random.uniform(sub, (N, N)), K)[1]
                w = jnp.take_along_axis(J, idx, 1)
                # k gathers of N rows each, fused by XLA into one loop (no (N, k, P) temporary)
                M = sum(w[:, r, None] * M[idx[:, r]] for r in range(K))
            else:
                S = fixed if fixed is not None else jax.lax.top_k(jax.random.uniform(sub, (N,)), K)[1]
                M = J[:, S] @ M[S]
            M = M.at[rows, cols].add(local)
            g = delta @ M
        readout_g = (2.0 * err[:, None] * hn[None, :], 2.0 * err)
        theta = theta - lr * g
        readout = (W_o - lr * readout_g[0], b_o - lr * readout_g[1])
        return theta, readout, M, hn, key, loss, g

    return jax.jit(step, donate_argnums=(2,))  # M updated in place, as the library does


def flat_parameters(cell) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in cell.parameters()]).numpy()


# -- the library side --------------------------------------------------------------------------

def library(rule: str, N: int, dtype, lr: float, seed=0, fixed=None):
    from sparse_rtrl import OnlineLearner, VanillaRNN

    torch.manual_seed(seed)
    cell, readout = VanillaRNN(1, N).to(dtype), torch.nn.Linear(N, 1).to(dtype)
    name, options = {
        "full": ("full", {}), "immediate": ("immediate", {}), "snap1": ("snap1", {}),
        "sparse row k=4": ("sparse", {"k": K}),
        "sparse column k=4": ("sparse", {"k": K, "granularity": "column"}),
    }[rule]
    if fixed is not None:
        options = {"selection": fixed, "granularity": options.get("granularity", "row")}
    learner = OnlineLearner(cell, name, **options)
    opt = torch.optim.SGD([*learner.parameters(), *readout.parameters()], lr=lr)
    return cell, readout, learner, opt


def fused(rule: str, N: int, dtype, lr: float, seed=0, fixed=None):
    from sparse_rtrl.fused import FusedStep

    cell, readout, learner, _ = library(rule, N, dtype, lr, seed, fixed)
    return cell, FusedStep(cell, learner.transport, readout, lr=lr, reduction="sum")


def fused_loop(cell, step, xs, ys, record=None):
    for t in range(len(xs)):
        step.step(xs[t], ys[t])
        if record is not None:
            record.append(step.product.g.clone())


def library_loop(cell, readout, learner, opt, xs, ys, record=None):
    for t in range(len(xs)):
        h = learner.step(xs[t])
        loss = (readout(h) - ys[t]).pow(2).sum()
        learner.backward(loss)
        if record is not None:
            record.append(torch.cat([p.grad.reshape(-1) for p in cell.parameters()]).clone())
        opt.step()
        opt.zero_grad()


def check_equal(rule: str, N: int) -> tuple[float, float]:
    """Largest relative gradient difference to JAX over 5 float64 steps with the same fixed
    masks: (learner, fused)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    g = torch.Generator().manual_seed(1)
    fixed_t = fixed_j = None
    if rule == "sparse row k=4":
        idx = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(N)])
        fixed_t = torch.zeros(N, N, dtype=torch.bool).scatter_(1, idx, True)
        fixed_j = jnp.asarray(np.sort(idx.numpy(), 1))
    elif rule == "sparse column k=4":
        S = torch.randperm(N, generator=g)[:K]
        fixed_t = torch.zeros(N, dtype=torch.bool).index_fill_(0, S, True)
        fixed_j = jnp.asarray(np.sort(S.numpy()))
    cell, readout, learner, opt = library(rule, N, torch.float64, 0.0, fixed=fixed_t)
    xs = torch.randn(5, 1, generator=g, dtype=torch.float64)
    ys = torch.randn(5, 1, generator=g, dtype=torch.float64)
    ours, theirs = [], []
    library_loop(cell, readout, learner, opt, xs, ys, ours)
    fcell, fstep = fused(rule, N, torch.float64, 1e-30, fixed=fixed_t)  # lr ≈ 0: θ stays put
    fused_loop(fcell, fstep, xs, ys, theirs)
    step = jax_step_fn(rule, N, 1, 0.0, fixed_j)
    theta = jnp.asarray(flat_parameters(cell))
    ro = (jnp.asarray(readout.weight.detach().numpy()), jnp.asarray(readout.bias.detach().numpy()))
    M = jnp.zeros((N, N + 3) if rule == "snap1" else (N, theta.shape[0]))
    h, key, worst, worst_fused = jnp.zeros(N), jax.random.PRNGKey(0), 0.0, 0.0
    for t in range(5):
        theta, ro, M, h, key, _, gj = step(theta, ro, M, h, jnp.asarray(xs[t].numpy()), jnp.asarray(ys[t].numpy()), key)
        b = np.asarray(gj)
        worst = max(worst, float(np.linalg.norm(ours[t].numpy() - b) / np.linalg.norm(b)))
        worst_fused = max(worst_fused, float(np.linalg.norm(theirs[t].numpy() - b) / np.linalg.norm(b)))
    jax.config.update("jax_enable_x64", False)
    return worst, worst_fused


def time_all(rule: str, N: int, steps: int, lr: float = 1e-4) -> tuple[float, float, float]:
    """CPU seconds per step: (learner, fused, JAX), float32, measured in alternating blocks."""
    import jax
    import jax.numpy as jnp

    g = torch.Generator().manual_seed(2)
    xs = torch.randn(steps, 1, generator=g)
    ys = torch.randn(steps, 1, generator=g)
    cell, readout, learner, opt = library(rule, N, torch.float32, lr)
    fcell, fstep = fused(rule, N, torch.float32, lr)
    step = jax_step_fn(rule, N, 1, lr)
    theta = jnp.asarray(flat_parameters(cell))
    state = [theta, (jnp.asarray(readout.weight.detach().numpy()), jnp.asarray(readout.bias.detach().numpy())),
             jnp.zeros((N, N + 3) if rule == "snap1" else (N, theta.shape[0]), jnp.float32),
             jnp.zeros(N, jnp.float32), jax.random.PRNGKey(0)]
    xj, yj = [jnp.asarray(x.numpy()) for x in xs], [jnp.asarray(y.numpy()) for y in ys]

    def run_jax(lo, hi):
        for t in range(lo, hi):
            out = step(*state[:4], xj[t], yj[t], state[4])
            out[5].block_until_ready()
            state[:] = [out[0], out[1], out[2], out[3], out[4]]

    run_jax(0, min(20, steps))  # compile and warm up
    library_loop(cell, readout, learner, opt, xs[:20], ys[:20])
    fused_loop(fcell, fstep, xs[:20], ys[:20])
    blocks, lib, fu, jx = 4, 0.0, 0.0, 0.0
    edges = np.linspace(0, steps, blocks + 1).astype(int)
    for lo, hi in zip(edges[:-1], edges[1:]):
        t0 = time.process_time()
        library_loop(cell, readout, learner, opt, xs[lo:hi], ys[lo:hi])
        lib += time.process_time() - t0
        t0 = time.process_time()
        fused_loop(fcell, fstep, xs[lo:hi], ys[lo:hi])
        fu += time.process_time() - t0
        t0 = time.process_time()
        run_jax(lo, hi)
        jx += time.process_time() - t0
    return lib / steps, fu / steps, jx / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=600, help="timed steps per rule and size")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--write", action="store_true", help="write the tables to benchmarks/jax_peer.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import jax

    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    out = [f"load average before: {load_before[0]:.2f} on {os.cpu_count()} cores; torch {torch.__version__}"]
    print(out[0])
    worst = 0.0
    for rule in args.rules:
        err, err_fused = check_equal(rule, 8)
        worst = max(worst, err, err_fused)
        print(f"gradients {rule}: relative difference to JAX, learner {err:.1e}, fused {err_fused:.1e} (float64, 5 steps)")
        assert max(err, err_fused) < 1e-10, f"{rule}: the steps do not compute the same gradient"
    rows = {}
    for rule in args.rules:
        for N in args.sizes:
            steps = max(50, args.steps * 32 // N) if rule == "full" else args.steps
            rows[rule, N] = time_all(rule, N, steps)
            print(f"  {rule} N={N}: learner {rows[rule, N][0] * 1e3:.3f} ms, fused {rows[rule, N][1] * 1e3:.3f} ms, "
                  f"JAX {rows[rule, N][2] * 1e3:.3f} ms", flush=True)
    head = "| rule | " + " | ".join(f"N = {N}" for N in args.sizes) + " |"
    tables = []
    for api, col in (("fused step (`FusedStep.step`)", 1), ("learner API (`step` → readout → `backward` → `torch.optim`)", 0)):
        tables += ["", f"{api} / JAX, CPU time per step (library ms / JAX ms); > 1: the library is slower", "",
                   head, "|---|" + "---|" * len(args.sizes)]
        for rule in args.rules:
            cells = [f"{rows[rule, N][col] / rows[rule, N][2]:.2f} ({rows[rule, N][col] * 1e3:.3f} / "
                     f"{rows[rule, N][2] * 1e3:.3f})" for N in args.sizes]
            tables.append(f"| {rule} / JAX | " + " | ".join(cells) + " |")
    load_after = os.getloadavg()
    print("\n".join(tables))
    print(f"\nload average after: {load_after[0]:.2f}")
    if args.write:
        write(started, load_before, load_after, worst, jax.__version__, args, tables)


def write(started, load_before, load_after, worst, jax_version, args, tables) -> None:
    """benchmarks/jax_peer.md: the tables with what they were measured on (RESULTS.md includes it)."""
    from pathlib import Path

    command = "python benchmarks/jax_peer.py --write" + (f" --steps {args.steps}" if args.steps != 600 else "")
    text = [
        "## Library vs a hand-written JAX step (`benchmarks/jax_peer.py`, issue 15)", "",
        f"Written by `{command}` (started {started}); do not edit by hand. One thread, batch 1, float32, "
        f"vanilla cell, I = 1, one output, plain SGD: CPU time per step of the library against one "
        f"`jax.jit` call of equal work (JAX {jax_version}, M donated), {args.steps} steps each (full RTRL: "
        f"fewer at large N) in alternating blocks. Gradients checked equal first (float64, 5 steps, "
        f"fixed masks: worst relative difference {worst:.0e}). Load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.1f}' for x in load_before)}, after {', '.join(f'{x:.1f}' for x in load_after)} "
        "on 2 cores (other jobs shared the machine: the ratios are measured side by side).",
        *tables, "",
    ]
    path = Path(__file__).with_name("jax_peer.md")
    path.write_text("\n".join(text))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
