"""The CUDA table (issue 15): the row-sparse product by the Triton kernel against the pure-torch
path and a read-and-write pass over the same M, and the learner's step, on one GPU.

    python benchmarks/cuda_rows.py --write benchmarks/cuda_rows.md   # on a machine with CUDA
    python benchmarks/cuda_rows.py --device cpu --quick                # a dry run of the script

(K ⊙ J)·M with k = 4 kept sources per row, float32, M of shape (E, 1, N, P), P = N² + 2N (a
vanilla cell with one input). The floor is one read and one write of M (``M.mul_(1.0)``).
Times are the median of CUDA-event-timed calls after warm-up (wall clock on the CPU).
``benchmarks/cuda_check.sh`` runs this after the CUDA tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transport import Learner  # noqa: E402

from sparse_rtrl import OnlineLearner  # noqa: E402
from sparse_rtrl.transport import kernels, triton_rows  # noqa: E402

K = 4
#: the largest M timed (N = 1024 with E = 16 would be 69 GB)
MAX_BYTES = 16e9


def timer(device: str, fn, calls: int) -> float:
    """Median ms of ``fn()`` over ``calls`` calls (after three warm-up calls)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def product_rows(device: str, sizes, members, calls) -> list[str]:
    lines = ["| N | E | Triton (ms) | pure torch (ms) | rw pass over M (ms) | Triton / rw | torch / Triton |",
             "|---|---|---|---|---|---|---|"]
    g = torch.Generator(device=device).manual_seed(0)  # drawn on the device: M reaches 4 GB
    for N in sizes:
        for E in members:
            P = N * N + 2 * N
            if E * N * P * 4 > MAX_BYTES:
                continue
            M = torch.randn(E, 1, N, P, generator=g, device=device)
            index = torch.rand(E, 1, N, N, generator=g, device=device).argsort(-1)[..., :K]
            weight = torch.zeros(E, 1, N, K)
            weight[..., 0] = 1.0  # each new row one old row: M keeps its values over many calls
            weight = weight.to(device)
            usable = device == "cuda" and triton_rows.available(device) and triton_rows.supports(M)
            tri = timer(device, lambda: triton_rows.gather_rows_triton_(index, weight, M), calls) if usable else None
            plain = timer(device, lambda: kernels.gather_rows_torch_(index, weight, M), calls)
            floor = timer(device, lambda: M.mul_(1.0), calls)
            t = f"{tri:.3f}" if tri else "—"
            lines.append(f"| {N} | {E} | {t} | {plain:.3f} | {floor:.3f} | "
                         f"{f'{tri / floor:.2f}' if tri else '—'} | {f'{plain / tri:.1f}' if tri else '—'} |")
    return lines


def learner_rows(device: str, sizes, members, calls) -> list[str]:
    lines = ["| rule | N | E | learner step (ms) | aggregate gain E·T₁/T_E |", "|---|---|---|---|---|"]
    for rule, options, label in (("full", {}, "full"), ("sparse", {"k": K}, "sparse row k=4"),
                                 ("sparse", {"k": K, "granularity": "column"}, "sparse column k=4"),
                                 ("immediate", {}, "immediate")):
        for N in sizes:
            t = {}
            for E in members:
                obj = Learner({"rule": rule, "options": options, "N": N, "E": E, "dtype": "float32"})
                obj.cell.to(device)
                obj.readout.to(device)
                obj.xs = obj.xs.to(device)
                obj.learner = OnlineLearner(obj.cell, rule, **options)  # built on the device

                def step():
                    obj()
                    obj.after()
                t[E] = timer(device, step, calls)
                lines.append(f"| {label} | {N} | {E} | {t[E]:.3f} | "
                             f"{f'{E * t[1] / t[E]:.1f}×' if E > 1 and 1 in t else ''} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes, few calls (a dry run)")
    parser.add_argument("--write", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("cuda_rows.py: no CUDA device here (torch.cuda.is_available() is False); "
                 "run it on a GPU machine, or pass --device cpu --quick for a dry run")
    sizes, members, calls = ([16, 32], [1, 2], 3) if args.quick else ([64, 256, 1024], [1, 16], 50)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (dry run)"
    head = ["## CUDA: the row-sparse product and the learner (`benchmarks/cuda_rows.py`)", "",
            f"{name}; torch {torch.__version__}; triton available: {triton_rows.available(args.device)}; "
            f"numeric path {kernels.numeric_path(args.device)}; float32, k = {K}, median of {calls} calls.", ""]
    text = head + product_rows(args.device, sizes, members, calls) + [""]
    text += learner_rows(args.device, [s for s in sizes if s <= 256], members, calls) + [""]
    print("\n".join(text))
    if args.write:
        args.write.write_text("\n".join(text))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
