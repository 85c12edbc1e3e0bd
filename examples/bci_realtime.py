"""A recurrent BCI decoder that adapts online, run as a real-time loop: one bin of spike
counts in, one velocity out, then one learning step — and the latency of each bin.

The decoder (vanilla RNN + linear readout) is first trained offline on session A (BPTT,
torch's fused nn.RNN, whose weights load into ``sparse_rtrl.cells.VanillaRNN``). It then
runs over session B bin by bin, exactly as it would be deployed:

    x_t arrives → h_t = learner.step(x_t) → v̂_t = readout(h_t)        (the decode latency)
    the target v_t arrives → loss → learner.backward(loss) → opt.step()  (+ the learning step)

Here the target is the recorded hand velocity (as in the C9 experiments); in a closed-loop
BCI it would be the inferred intended velocity (e.g. ReFIT-style re-aiming), which this
loop does not model. Timings are wall-clock per bin on one thread, in float32.

Usage::

    .venv/bin/python examples/bci_realtime.py                        # synthetic, sparse k=4 and full
    .venv/bin/python examples/bci_realtime.py --source chewie --data-dir ../shared/data
    .venv/bin/python examples/bci_realtime.py --source files --session-a day1.npz --session-b day2.npz
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from sparse_rtrl import OnlineLearner
from sparse_rtrl.cells import VanillaRNN
from sparse_rtrl.errors import SparseRTRLError
from sparse_rtrl.tasks import make_task


def pretrain(task, hidden: int, updates: int, seed: int) -> tuple[VanillaRNN, torch.nn.Linear]:
    """Offline BPTT on session A: Adam on batches of 16 windows of 50 bins (10 bins of burn-in)."""
    torch.manual_seed(seed)
    data = task.sample("A", 20_000, seed)
    rnn = torch.nn.RNN(task.input_size, hidden, batch_first=True)
    readout = torch.nn.Linear(hidden, task.output_size)
    opt = torch.optim.Adam([*rnn.parameters(), *readout.parameters()], lr=3e-3)
    x_all, y_all = data.inputs.float(), data.targets.float()
    rng = np.random.default_rng(seed)
    for _ in range(updates):
        start = torch.as_tensor(rng.integers(0, data.steps - 50, size=16))
        window = start[:, None] + torch.arange(50)
        h, _ = rnn(x_all[window])
        loss = (readout(h[:, 10:]) - y_all[window][:, 10:]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*rnn.parameters(), *readout.parameters()], 1.0)
        opt.step()
    cell = VanillaRNN(task.input_size, hidden)
    cell.load_state_dict({name: getattr(rnn, f"{name}_l0").detach().clone() for name, _ in cell.named_parameters()})
    return cell, readout


def realtime(task, pretrained: VanillaRNN, readout, transport: str, k: int, lr: float, bins: int,
             seed: int) -> dict:
    """Run a copy of the pretrained decoder over the first ``bins`` bins of session B, one
    bin at a time, learning as it goes."""
    cell = VanillaRNN(pretrained.input_size, pretrained.hidden_size)
    cell.load_state_dict(pretrained.state_dict())
    head = torch.nn.Linear(readout.in_features, readout.out_features)
    head.load_state_dict(readout.state_dict())
    options = {"k": k, "seed": seed} if transport == "sparse" else {}
    learner = OnlineLearner(cell, transport, **options)
    opt = torch.optim.Adam([*learner.parameters(), *head.parameters()], lr=lr)
    stream = task.sample("B", bins, seed)
    xs, ys = stream.inputs.float(), stream.targets.float()
    decode, total, cpu, losses = np.empty(bins), np.empty(bins), np.empty(bins), np.empty(bins)
    for t in range(bins):
        c0, t0 = time.thread_time(), time.perf_counter()
        h = learner.step(xs[t])                 # one bin of counts in ...
        v = head(h)                             # ... one velocity out
        t1 = time.perf_counter()
        loss = (v - ys[t]).pow(2).mean()        # the target arrives; learn from it
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        t2, c2 = time.perf_counter(), time.thread_time()
        decode[t], total[t], cpu[t], losses[t] = t1 - t0, t2 - t0, c2 - c0, float(loss.detach())
    warm = slice(min(20, bins // 10), None)  # the first bins include one-off allocations

    def ms(x):
        return 1e3 * float(np.median(x[warm])), 1e3 * float(np.quantile(x[warm], 0.99))

    return {"decode_ms": ms(decode), "total_ms": ms(total), "cpu_ms": ms(cpu),
            "mse_first": float(losses[: bins // 5].mean()), "mse_last": float(losses[-bins // 5:].mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="synthetic", choices=["synthetic", "chewie", "stevenson", "files"])
    p.add_argument("--data-dir", default=None, help="folder of the shared recordings (chewie, stevenson)")
    p.add_argument("--session-a", default=None)
    p.add_argument("--session-b", default=None)
    p.add_argument("--bin-size", type=float, default=None, help="bin width (s) for spike-time files")
    p.add_argument("--transports", default="sparse,full", help="comma-separated: sparse, full, immediate")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--bins", type=int, default=800, help="bins of session B to run (at most its length)")
    p.add_argument("--pretrain-updates", type=int, default=150)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    options = {"source": args.source}
    if args.data_dir:
        options["data_dir"] = args.data_dir
    if args.source == "files":
        options.update(session_a=args.session_a, session_b=args.session_b, bin_size=args.bin_size)
    try:  # a missing or unreadable recording: one line naming the file and where data goes
        task = make_task("bci", **options)
        bins = args.bins if args.source == "synthetic" else min(args.bins, task.session_bins()[1])
    except (SparseRTRLError, OSError) as err:
        print(f"bci_realtime: error: {err}", file=sys.stderr)
        return 2
    cell, readout = pretrain(task, args.hidden, args.pretrain_updates, args.seed)
    print(f"bci {args.source}: {task.input_size} inputs, vanilla RNN n={args.hidden}, float32, "
          f"{torch.get_num_threads()} thread(s); {bins} bins of session B")
    print(f"{'rule':12s} {'decode median':>14s} {'p99':>9s} {'bin median':>11s} {'p99':>9s} "
          f"{'bin CPU median':>15s} {'p99':>9s} {'MSE first 20 %':>15s} {'last 20 %':>10s}")
    for transport in [t.strip() for t in args.transports.split(",") if t.strip()]:
        r = realtime(task, cell, readout, transport, args.k, args.lr, bins, args.seed)
        label = f"sparse k={args.k}" if transport == "sparse" else transport
        print(f"{label:12s} {r['decode_ms'][0]:11.2f} ms {r['decode_ms'][1]:6.2f} ms {r['total_ms'][0]:8.2f} ms "
              f"{r['total_ms'][1]:6.2f} ms {r['cpu_ms'][0]:12.2f} ms {r['cpu_ms'][1]:6.2f} ms "
              f"{r['mse_first']:15.3f} {r['mse_last']:10.3f}")
    print("decode: bin in → velocity out (the state and its sensitivity M advance here); bin: decode + "
          "the learning step (backward + Adam); wall-clock, except 'bin CPU' = this thread's CPU time, "
          "which other processes on a shared machine do not inflate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
