"""The ``sparse-rtrl`` command: the only place where command-line strings become objects.

Every subcommand is a function ``_name(args) -> exit code``; :func:`main` dispatches through
:func:`run`, the one place where errors become messages: a library error
(:class:`~sparse_rtrl.errors.SparseRTRLError`), a missing file or package, or a
``SystemExit(message)`` is printed as one line on stderr with exit code 2. ``--debug`` shows
the full traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .cells import CELLS
from .errors import SparseRTRLError


class CommandError(SparseRTRLError):
    """A command-line usage error found after parsing (the message names the fix)."""


def _demo(args) -> int:
    """Adapt a small network online to a frequency shift and print the loss falling."""
    import torch

    from . import OnlineLearner, VanillaRNN
    from .tasks import make_task

    torch.manual_seed(args.seed)
    task = make_task("sine")
    cell, readout = VanillaRNN(task.input_size, args.hidden), torch.nn.Linear(args.hidden, task.output_size)
    learner = OnlineLearner(cell, args.transport, **({"k": args.k, "seed": args.seed} if args.transport == "sparse" else {}))
    opt = torch.optim.Adam([*learner.parameters(), *readout.parameters()], lr=args.lr)
    stream = task.sample_shift(args.steps // 2, args.steps - args.steps // 2, seed=args.seed)
    x, y = stream.inputs.float(), stream.targets.float()
    block = max(1, args.steps // 10)
    total, t0 = 0.0, time.perf_counter()
    print(f"online {args.transport}{' k=' + str(args.k) if args.transport == 'sparse' else ''}, "
          f"vanilla RNN n={args.hidden}; the frequencies shift at step {args.steps // 2}")
    for t in range(args.steps):
        h = learner.step(x[t])
        loss = task.loss(readout(h), y[t])
        learner.backward(loss)
        opt.step()
        opt.zero_grad()
        total += float(loss.detach())
        if (t + 1) % block == 0:
            marker = "  ← shift" if t + 1 - block < args.steps // 2 <= t + 1 else ""
            print(f"steps {t + 2 - block:5d}–{t + 1:5d}: mean loss {total / block:.4f}{marker}")
            total = 0.0
    print(f"{args.steps / (time.perf_counter() - t0):.0f} steps/s")
    return 0


def _executor(args):
    from .experiments.executors import LocalExecutor

    if args.executor == "ray":
        from .experiments.ray_executor import RayExecutor

        return RayExecutor(address=args.address, workers=args.workers)
    return LocalExecutor(args.workers)


def _select(experiments, only: str | None):
    if not only:
        return experiments
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = [e for e in experiments if e.name in wanted or wanted & set(e.claims)]
    if not chosen:
        names = ", ".join(sorted({e.name for e in experiments} | {c for e in experiments for c in e.claims}))
        raise CommandError(f"--only {only!r} matches no experiment; choose among: {names}")
    return chosen


def _bci_options(args) -> dict:
    """The BCI (C9) options of ``reproduce``: the data folder and the user's two sessions."""
    if (args.session_a is None) != (args.session_b is None):
        raise CommandError("--session-a and --session-b go together: pass both recordings (A = training "
                           "session, B = the later session the decoder adapts to)")
    if args.bin_size is not None and args.session_a is None:
        raise CommandError("--bin-size applies to --session-a/--session-b: pass the two recordings too")
    files = (args.session_a, args.session_b) if args.session_a is not None else None
    return {"data_dir": args.data_dir, "session_files": files, "bin_size": args.bin_size}


def _reproduce(args) -> int:
    from .experiments import Sweep, experiments
    from .experiments.preflight import check

    exps = _select(experiments(args.profile, **_bci_options(args)), args.only)
    out = Path(args.out)
    numerics = check(exps, out, executor=args.executor, workers=args.workers)  # fails in seconds
    if not args.quiet:
        print(f"{len(exps)} experiment(s); numeric path {numerics['numeric_path']}, torch {numerics['torch']}")
    t0 = time.perf_counter()
    executor = _executor(args)
    try:
        only = None if not args.only else [w.strip() for w in args.only.split(",") if w.strip()]
        sweep = Sweep(out, exps, executor=executor, profile=args.profile, progress=not args.quiet,
                      numerics_change=args.numerics_change, only=only)
        complete = sweep.run()
    finally:
        executor.close()
    from .experiments.report import build_report

    path = build_report(out)
    print(f"{'complete' if complete else 'incomplete'} sweep in {time.perf_counter() - t0:.0f} s; report: {path}")
    return 0 if complete else 1


def _report(args) -> int:
    from .experiments.preflight import EXTRAS, PreflightError, missing

    folder = Path(args.dir)
    if not folder.is_dir():
        raise CommandError(f"{folder}: no such folder; pass the --out folder of `sparse-rtrl reproduce`")
    lines = missing(EXTRAS)
    if lines:
        raise PreflightError("\n".join(lines))
    from .experiments.report import build_report

    print(build_report(folder))
    return 0


def _summary(doc: str) -> str:
    """A rule's docstring to the end of its first complete sentence: the first paragraph,
    and when it ends in ":" or "," the displayed formula after it (and, after a ",", the rest
    of the sentence). Paragraphs are separated by blank lines; a displayed formula keeps its
    lines."""
    import inspect
    import re

    out: list[str] = []
    for para in inspect.cleandoc(doc or "").split("\n\n"):
        if para.startswith(" "):  # a displayed formula, inside the sentence
            out.append(para)
            if out[-2].endswith(":"):  # "…, unbiased:" + formula ends the sentence
                break
            continue
        text = " ".join(para.split())
        if out:  # the sentence goes on after a formula: up to its full stop
            text = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]
        out.append(text)
        if not text.endswith((":", ",")):
            break
    return "\n\n".join(out)


def _rules(args) -> int:
    import dataclasses
    import textwrap

    from .transport import RULES

    for name, cls in sorted(RULES.items()):
        options = ", ".join(
            f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f"{f.name} (required)"
            for f in dataclasses.fields(cls) if f.init)
        lines = []
        for para in _summary(cls.__doc__).split("\n\n"):
            if para.startswith(" "):
                lines += [f"{'':11s}{line}" for line in para.splitlines()]
            else:
                lines += textwrap.wrap(para, 100, initial_indent=" " * 11, subsequent_indent=" " * 11)
        print(f"{name:10s} {lines[0][11:] if lines else ''}")
        lines += textwrap.wrap(f"options: {options or 'none'}", 100, initial_indent=" " * 11,
                               subsequent_indent=" " * 20)
        print("\n".join(lines[1:]))
    return 0


def _build_kernels(args) -> int:
    from .transport import _cpu_kernels, kernels

    if _cpu_kernels.disabled():
        raise CommandError("SPARSE_RTRL_NO_EXTENSION is set: unset it to build and use the compiled kernels")
    from .transport import _kernel_cache

    t0 = time.perf_counter()
    path, note = _kernel_cache.locate("probe")
    if note is not None:  # a build there would be removed when this command exits
        raise CommandError(f"{note}: set {_kernel_cache.CACHE_ENV} to a writable folder of your own, then "
                           "run `sparse-rtrl build-kernels` again")
    path = _cpu_kernels.build()  # raises KernelBuildError naming the cause
    numeric = kernels.numeric_path("cpu")  # loads the library
    if numeric == "torch":
        raise CommandError(f"built {path} but could not load it: {_cpu_kernels.reason}")
    from .fused import _kernel as fused_kernel

    fused_path = fused_kernel.build()  # the fused step's small C library
    if fused_kernel.get() is None:
        raise CommandError(f"built {fused_path} but could not load it: {fused_kernel.reason}")
    print(f"compiled CPU kernels ready: {path} and {fused_path} (numeric path {numeric}; "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _check_can_create(path: Path) -> None:
    """``path`` is a writable folder, or can be created: its nearest existing ancestor is."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise CommandError(f"cannot write to {path} ({probe} is not a writable folder): choose another --out")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def _stream(args) -> int:
    """Prequential one-step-ahead forecasting of a CSV column or a river dataset."""
    import json

    import torch

    from .streams import StreamConfig, forecast, load, write_outputs

    torch.set_num_threads(args.threads)  # one sample at a time: tiny ops, threads only add overhead
    options = {k: v for k, v in (("window", args.window), ("decay", args.decay)) if v is not None}
    out = Path(args.out)
    _check_can_create(out)  # before the forecast: a bad --out fails in a second, not after it
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    series = load(args.source, args.target, features)  # errors: one line through run() (--debug: traceback)
    config = StreamConfig(cell=args.cell, hidden=args.hidden, rule=args.rule, k=args.k, options=options,
                          optimizer=args.optimizer, lr=args.lr, seed=args.seed,
                          lagged_target=not args.no_lagged_target, difference=args.difference, engine=args.engine)
    run = forecast(series, config, progress=not args.quiet)
    summary = write_outputs(args.out, series, config, run)
    try:
        from .streams.plot import plot_run

        plot = f", {plot_run(out / 'plot.png', series, run)}"
    except ImportError:
        plot = " (no plot: matplotlib is not installed; pip install matplotlib)"
    print(json.dumps({k: summary[k] for k in ("source", "scored_rows", "mae", "rmse", "last_value_mae",
                                              "seconds_per_row", "diverged_at")}))
    print(f"wrote {out / 'predictions.csv'}, {out / 'summary.json'}{plot}")
    if run.diverged_at is not None:
        print(f"the model diverged at row {run.diverged_at}: lower --lr", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparse-rtrl", description="Online learning by forward gradient transport.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    # --debug after the subcommand too; SUPPRESS keeps a --debug given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", parents=[common], help="measure the paper's claims and write report.md, claims.json, figures")
    r.add_argument("--profile", choices=["quick", "paper"], default="quick")
    r.add_argument("--out", default="results", help="output directory (runs already there are reused)")
    r.add_argument("--only", help="comma-separated claim ids or experiment names (e.g. C1,C6)")
    r.add_argument("--workers", type=_positive_int, default=None, help="parallel runs, ≥ 1 (default: all cores)")
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--data-dir", default=None,
                   help="folder of the shared recordings for the C9 (BCI) experiments "
                        "(default: $SPARSE_RTRL_DATA, else shared/data beside the source checkout)")
    r.add_argument("--session-a", default=None, help="C9 on your own data: the training session "
                   "(.npz/.mat binned counts, MATLAB v7.3 Indy file or .nwb)")
    r.add_argument("--session-b", default=None, help="C9 on your own data: the later session to adapt to")
    r.add_argument("--bin-size", type=float, default=None,
                   help="bin width in s for --session-a/--session-b (needed for spike-time files)")
    r.add_argument("--numerics-change", choices=["stop", "redo", "keep"], default="stop",
                   help="when finished runs in --out were computed by another numeric path or torch "
                        "version: stop and say so (default), redo those runs, or keep them")
    r.set_defaults(func=_reproduce)

    rep = sub.add_parser("report", parents=[common], help="rebuild report.md, claims.json and figures from a results directory")
    rep.add_argument("dir")
    rep.set_defaults(func=_report)

    d = sub.add_parser("demo", parents=[common], help="adapt a small RNN online to a frequency shift")
    d.add_argument("--transport", default="sparse", choices=["full", "sparse", "immediate"])
    d.add_argument("--k", type=int, default=4)
    d.add_argument("--hidden", type=int, default=32)
    d.add_argument("--steps", type=int, default=3000)
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    st = sub.add_parser("stream", parents=[common],
                        help="forecast your own stream one step ahead, prequentially (CSV or river:NAME)")
    st.add_argument("source", help="a CSV file with a header row, or river:NAME (e.g. river:TrumpApproval, "
                    "river:drift.Apple)")
    st.add_argument("--target", help="the column to forecast (CSV; river datasets with several targets)")
    st.add_argument("--features", help="comma-separated input columns (default: all but the target)")
    st.add_argument("--no-lagged-target", action="store_true", help="do not feed the previous target back in")
    st.add_argument("--difference", action="store_true", help="forecast the change y_t - y_(t-1), not the level")
    st.add_argument("--rule", default="sparse", help="transport rule (see `sparse-rtrl rules`)")
    st.add_argument("--k", type=int, default=None, help="paths per unit for --rule sparse (default 4)")
    st.add_argument("--window", type=int, default=None, help="window for --rule tbptt")
    st.add_argument("--decay", type=float, default=None, help="decay for --rule trace")
    st.add_argument("--cell", default="vanilla", choices=sorted(CELLS))
    st.add_argument("--hidden", type=int, default=32)
    st.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd", "rmsprop"])
    st.add_argument("--lr", type=float, default=3e-3)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--engine", default="auto", choices=["auto", "fused", "learner"],
                    help="auto (default): the fused step where it applies (vanilla cell; full, sparse, snap1, "
                    "trace, immediate; adam, sgd), else the general learner")
    st.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1: one sample at a time)")
    st.add_argument("--out", required=True, help="output directory")
    st.add_argument("--quiet", action="store_true", help="no progress bar")
    st.set_defaults(func=_stream)

    rules = sub.add_parser("rules", parents=[common], help="list the transport rules and their options")
    rules.set_defaults(func=_rules)

    bk = sub.add_parser("build-kernels", parents=[common],
                        help="compile the CPU kernels of the sparse products ahead of time")
    bk.set_defaults(func=_build_kernels)
    return p


def _error(message: str) -> int:
    print(f"sparse-rtrl: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``args.func(args)``; errors become one-line messages (exit 2) unless ``args.debug``."""
    debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        saved = "finished runs are saved; run the same command again to resume" if args.command == "reproduce" \
            else "nothing was saved"
        print(f"interrupted: {saved}", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        if debug or not isinstance(exit_.code, str):
            raise
        return _error(exit_.code)
    except (SparseRTRLError, OSError, ImportError) as err:
        if debug:
            raise
        return _error(str(err) or type(err).__name__)
    except Exception as err:  # noqa: BLE001 - a bug: say so, keep the traceback for --debug
        if debug:
            raise
        print(f"sparse-rtrl: internal error: {type(err).__name__}: {err} (rerun with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
