"""Issue 17: one-step-ahead prequential forecasting on river's real series, the library's
rules against what a river user tries first.

    python benchmarks/streams.py                      # every series; writes benchmarks/streams_results.json
    python benchmarks/streams.py --series TrumpApproval --quick
    python benchmarks/streams.py --table              # the markdown tables from the saved results

Every method sees the same stream: at row t it forecasts y_t from the rows before t (and,
where a series has them, the exogenous features of row t), is scored, then learns y_t.

Methods. Ours: a vanilla RNN (n = 32, Adam) learned by full RTRL, sparse RTRL k = 4, the
immediate rule, UORO and online TBPTT (window 16), all through ``sparse_rtrl.streams.forecast``
(what ``sparse-rtrl stream`` runs). TBPTT also stands in for deep-river's RollingRegressor
(windowed BPTT): deep-river 0.3.4 pins torch < 2.6 and cannot sit beside torch 2.13; "rolling
w=16" re-implements RollingRegressor's step in plain torch (the window re-run from a zero
state each step), with the rules' grid and stream. River's:
lagged linear regression (StandardScaler | LinearRegression on the last p values, in a
TargetStandardScaler), time_series.SNARIMAX, time_series.HoltWinters, and the last value
ŷ_t = y_{t−1} (no parameters) for scale.

The written rule for hyperparameters: the first 20 % of each series (at least 30 rows) is the
prefix. For each method, every configuration of its grid (GRIDS below) is run prequentially on
the prefix alone; the one with the lowest prefix MAE is then run on the whole series from
scratch. Errors are reported on the rows after the prefix only. Windows after change points:
the mean absolute error over the W = 10 rows from each annotated change point (TCPD's
annotations, every annotator's merged) that lies after the prefix, averaged over those points.
Time per sample: the wall-clock of the final run (predict + learn) over its rows, one thread.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sparse_rtrl.streams import Series, StreamConfig, forecast, load_river_dataset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "streams_results.json"
WINDOW_AFTER_CHANGE = 10

# (river name, target): a multi-target series takes its first target, by rule
SERIES = (
    ("AirlinePassengers", None), ("TrumpApproval", None), ("WaterFlow", None),
    ("drift.AirlinePassengers", None), ("drift.Apple", "Open"), ("drift.Bitcoin", None),
    ("drift.BrentSpotPrice", None), ("drift.Occupancy", "V1"), ("drift.RunLog", "Pace"),
    ("drift.UKCoalEmploy", None),
)

OURS = {
    "full RTRL": ("full", None, {}),
    "sparse k=4": ("sparse", 4, {}),
    "immediate": ("immediate", None, {}),
    "UORO": ("uoro", None, {}),
    "TBPTT w=16": ("tbptt", None, {"window": 16}),
}
ROLLING = "rolling w=16"  # deep-river's RollingRegressor, re-implemented in plain torch
GRIDS = {
    "ours": [{"lr": lr, "difference": d} for lr, d in itertools.product((3e-3, 1e-2, 3e-2), (False, True))],
    "lagged linear": [{"p": p, "difference": d} for p, d in itertools.product((1, 4, 12), (False, True))],
    # the last SNARIMAX and HoltWinters entries are river's documented AirlinePassengers examples
    # (a 12-step season), offered on every series: the prefix decides
    "SNARIMAX": [{"p": p, "d": d, "q": q} for p, d, q in ((1, 0, 0), (2, 1, 0), (2, 1, 1), (4, 1, 1))]
    + [{"p": 12, "d": 1, "q": 12, "m": 12, "sd": 1}],
    "HoltWinters": [{"alpha": a, "beta": b} for a, b in itertools.product((0.3, 0.6, 0.9), (None, 0.1))]
    + [{"alpha": 0.3, "beta": 0.1, "gamma": 0.6, "seasonality": 12, "multiplicative": True}],
    "last value": [{}],
}


def prefix_length(n: int) -> int:
    return max(30, n // 5)


def head(series: Series, n: int) -> Series:
    return Series(series.name, series.target, series.features, series.X[:n], series.y[:n], ())


# -- the methods: each returns forecasts for rows 0..T-1 (NaN where it does not forecast) --
def run_ours(series: Series, name: str, cfg: dict, hidden: int, seed: int) -> np.ndarray:
    rule, k, options = OURS[name]
    run = forecast(series, StreamConfig(hidden=hidden, rule=rule, k=k, options=options, lr=cfg["lr"],
                                        difference=cfg["difference"], seed=seed))
    out = np.full(len(series), np.nan)
    out[run.rows] = run.y_hat
    return out


def run_rolling(series: Series, cfg: dict, hidden: int, seed: int, window: int = 16) -> np.ndarray:
    """deep-river's RollingRegressor, re-implemented: every step runs a torch ``nn.RNN`` (tanh,
    n = ``hidden``) over the last ``window`` inputs from a zero state, forecasts from the last
    output, and takes one Adam step on that error (BPTT through the window). Same causal,
    scaled stream as the library's rules."""
    from collections import deque

    from sparse_rtrl.streams import ForecastingStream

    fs = ForecastingStream.from_series(series, difference=cfg["difference"])
    g = torch.Generator().manual_seed(seed)
    rnn = torch.nn.RNN(fs.inputs.shape[1], hidden, batch_first=True, dtype=torch.float64)
    head_ = torch.nn.Linear(hidden, 1, dtype=torch.float64)
    with torch.no_grad():
        for p in [*rnn.parameters(), *head_.parameters()]:
            p.uniform_(-hidden ** -0.5, hidden ** -0.5, generator=g)
    opt = torch.optim.Adam([*rnn.parameters(), *head_.parameters()], lr=cfg["lr"])
    u = torch.as_tensor(fs.inputs)
    z = torch.as_tensor(fs.targets)
    recent: deque = deque(maxlen=window)
    out = np.full(len(series), np.nan)
    for t in range(len(series)):
        recent.append(u[t])
        h, _ = rnn(torch.stack(list(recent)).unsqueeze(0))
        z_hat = head_(h[0, -1])[0]
        if t < fs.warmup:
            continue
        out[t] = fs.unscale(np.array([float(z_hat)]), np.array([t]))[0]  # the forecast, then learn
        loss = (z_hat - z[t]) ** 2
        loss.backward()
        opt.step()
        opt.zero_grad()
    return out


def run_lagged_linear(series: Series, cfg: dict) -> np.ndarray:
    from river import linear_model, preprocessing

    model = preprocessing.TargetStandardScaler(preprocessing.StandardScaler() | linear_model.LinearRegression())
    y, p, diff = series.y, cfg["p"], cfg["difference"]
    r = np.diff(y, prepend=np.nan) if diff else y
    out = np.full(len(y), np.nan)
    for t in range(len(y)):
        lags = [r[t - j] for j in range(1, p + 1) if t - j >= 0 and np.isfinite(r[t - j])]
        if len(lags) < p or not np.isfinite(r[t]):
            continue
        x = {f"lag{j}": v for j, v in enumerate(lags, 1)}
        x.update({f: float(v) for f, v in zip(series.features, series.X[t])})
        pred = model.predict_one(x)
        out[t] = pred + (y[t - 1] if diff else 0.0)
        model.learn_one(x, float(r[t]))
    return out


def run_snarimax(series: Series, cfg: dict) -> np.ndarray:
    from river import linear_model, preprocessing, time_series

    model = time_series.SNARIMAX(**cfg, regressor=preprocessing.StandardScaler() | linear_model.LinearRegression())
    out = np.full(len(series), np.nan)
    for t, v in enumerate(series.y):
        if t >= 2:
            out[t] = _forecast(model)
        model.learn_one(float(v))
    return out


def run_holt_winters(series: Series, cfg: dict) -> np.ndarray:
    from river import time_series

    model = time_series.HoltWinters(**cfg)
    out = np.full(len(series), np.nan)
    for t, v in enumerate(series.y):
        if t >= 2:
            out[t] = _forecast(model)
        model.learn_one(float(v))
    return out


def _forecast(model) -> float:
    """The one-step forecast, NaN while the model cannot give one (HoltWinters before it has
    seen its first season raises)."""
    try:
        v = float(model.forecast(horizon=1)[0])
    except (IndexError, ZeroDivisionError, TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def run_last_value(series: Series, cfg: dict) -> np.ndarray:
    out = np.full(len(series), np.nan)
    out[1:] = series.y[:-1]
    return out


def run(series: Series, method: str, cfg: dict, hidden: int, seed: int) -> np.ndarray:
    """Forecasts for every row; where a method gives none (its first rows, a diverged run),
    the last value stands in, as a user would do."""
    if method in OURS:
        f = run_ours(series, method, cfg, hidden, seed)
    elif method == ROLLING:
        f = run_rolling(series, cfg, hidden, seed)
    else:
        f = {"lagged linear": run_lagged_linear, "SNARIMAX": run_snarimax, "HoltWinters": run_holt_winters,
             "last value": run_last_value}[method](series, cfg)
    missing = ~np.isfinite(f)
    missing[0] = False
    f[missing] = series.y[np.flatnonzero(missing) - 1]
    return f


def mae(y: np.ndarray, f: np.ndarray) -> float:
    e = np.abs(f - y)
    e = e[np.isfinite(e)]
    return float(e.mean()) if len(e) else math.inf


def scores(series: Series, f: np.ndarray, start: int) -> dict:
    y = series.y
    rows = np.arange(start, len(y))
    e = f[rows] - y[rows]
    ok = np.isfinite(e)
    after = [cp for cp in series.change_points if cp >= start]
    windows = [np.abs(f[cp:cp + WINDOW_AFTER_CHANGE] - y[cp:cp + WINDOW_AFTER_CHANGE]) for cp in after]
    post = [float(np.nanmean(w)) for w in windows if np.isfinite(w).any()]
    return {"mae": float(np.abs(e[ok]).mean()) if ok.any() else math.inf,
            "rmse": float(np.sqrt((e[ok] ** 2).mean())) if ok.any() else math.inf,
            "post_change_mae": float(np.mean(post)) if post else None,
            "change_points_scored": len(post)}


def benchmark(name: str, target: str | None, hidden: int, seed: int, quick: bool) -> dict:
    series = load_river_dataset(name, target)
    n0 = prefix_length(len(series))
    prefix = head(series, n0)
    methods = [*OURS, ROLLING, "lagged linear", "SNARIMAX", "HoltWinters", "last value"]
    out = {"series": name, "target": series.target, "rows": len(series), "prefix": n0,
           "change_points": list(series.change_points), "methods": {}}
    for method in methods:
        grid = GRIDS["ours"] if method in OURS or method == ROLLING else GRIDS[method]
        if quick:
            grid = grid[:2]
        tried = [(mae(prefix.y, run(prefix, method, cfg, hidden, seed)), i) for i, cfg in enumerate(grid)]
        best = grid[min(tried)[1]]
        t0 = time.perf_counter()
        f = run(series, method, best, hidden, seed)
        seconds = time.perf_counter() - t0
        out["methods"][method] = {"config": best, "prefix_mae": min(tried)[0], **scores(series, f, n0),
                                  "us_per_sample": 1e6 * seconds / len(series)}
        m = out["methods"][method]
        print(f"{name:24s} {method:14s} MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}  post-change "
              f"{m['post_change_mae'] if m['post_change_mae'] is None else round(m['post_change_mae'], 4)}  "
              f"{m['us_per_sample']:.0f} µs  {best}", flush=True)
    return out


def _cell(v: float, best: float) -> str:
    if not math.isfinite(v) or v > 100:
        return "diverged"  # e.g. SNARIMAX on Bitcoin: forecasts of order 1e9 × the series
    return f"**{v:.3f}**" if v == best else f"{v:.3f}"


def spread(files: list[str]) -> str:
    """The seeded methods' relative MAE over seeds (mean ± sd), each seed tuned and run by the rule."""
    runs = [json.loads(Path(f).read_text())["results"] for f in files]
    methods = [*OURS, ROLLING]
    lines = [f"Relative MAE of the RNNs, mean ± sd over {len(runs)} seeds "
             f"({', '.join(str(json.loads(Path(f).read_text())['seed']) for f in files)}).", "",
             "| series | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for i, r in enumerate(runs[0]):
        cells = []
        for m in methods:
            v = np.array([rs[i]["methods"][m]["mae"] / rs[i]["methods"]["last value"]["mae"] for rs in runs])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        lines.append(f"| {r['series']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(results: list[dict]) -> str:
    methods = list(results[0]["methods"])
    lines = ["MAE after the prefix, relative to the last-value forecast (< 1: better than repeating the "
             "last value); **bold**: the best of the row.", "",
             "| series (rows, prefix) | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for r in results:
        base = r["methods"]["last value"]["mae"]
        rel = {m: r["methods"][m]["mae"] / base for m in methods}
        best = min(rel.values())
        cells = [_cell(v, best) for v in rel.values()]
        lines.append(f"| {r['series']} ({r['rows']}, {r['prefix']}) | " + " | ".join(cells) + " |")
    lines += ["", "Post-change MAE (mean over the 10 rows after each annotated change point past the prefix), "
              "relative to the last value's on the same rows.", "",
              "| series (change points scored) | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for r in results:
        base = r["methods"]["last value"]["post_change_mae"]
        if base is None:
            continue
        rel = {m: r["methods"][m]["post_change_mae"] / base for m in methods}
        best = min(rel.values())
        cells = [_cell(v, best) for v in rel.values()]
        lines.append(f"| {r['series']} ({r['methods']['last value']['change_points_scored']}) | "
                     + " | ".join(cells) + " |")
    lines += ["", "RMSE after the prefix, relative to the last value's.", "",
              "| series | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for r in results:
        base = r["methods"]["last value"]["rmse"]
        rel = {m: r["methods"][m]["rmse"] / base for m in methods}
        best = min(rel.values())
        lines.append(f"| {r['series']} | " + " | ".join(_cell(v, best) for v in rel.values()) + " |")
    lines += ["", "Time per sample (µs, predict + learn, median over the series).", "",
              "| " + " | ".join(methods) + " |", "|---" * len(methods) + "|",
              "| " + " | ".join(f"{np.median([r['methods'][m]['us_per_sample'] for r in results]):.0f}"
                                for m in methods) + " |"]
    lines += ["", "Chosen configurations (by the prefix rule).", "", "| series | " + " | ".join(methods) + " |",
              "|---" * (len(methods) + 1) + "|"]
    for r in results:
        lines.append(f"| {r['series']} | " + " | ".join(
            ", ".join(f"{k}={v}" for k, v in r["methods"][m]["config"].items()) or "–" for m in methods) + " |")
    return "\n".join(lines)


def figure(results: list[dict], path: str) -> None:
    """A heat map of MAE relative to the last value: series × method (log colour scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    methods = list(results[0]["methods"])
    rel = np.array([[r["methods"][m]["mae"] / r["methods"]["last value"]["mae"] for m in methods] for r in results])
    shown = np.where(rel > 100, np.nan, rel)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(results) + 1.6))
    im = ax.imshow(shown, cmap="RdBu_r", norm=LogNorm(vmin=0.3, vmax=1 / 0.3), aspect="auto")
    for i in range(len(results)):
        for j in range(len(methods)):
            ax.text(j, i, "div." if np.isnan(shown[i, j]) else f"{rel[i, j]:.2f}", ha="center", va="center",
                    fontsize=7)
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(results)), [r["series"] for r in results], fontsize=8)
    fig.colorbar(im, ax=ax, label="MAE / last-value MAE")
    ax.set_title("One-step-ahead prequential MAE after the prefix (blue: better than the last value)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", help="comma-separated river names (default: all ten)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="two configurations per grid (a smoke test)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--table", action="store_true", help="print the tables of the saved results and exit")
    ap.add_argument("--figure", metavar="PNG", help="draw the heat map of the saved results and exit")
    ap.add_argument("--spread", nargs="+", metavar="RESULTS", help="print our rules' MAE over seeds (result files)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.figure:
        figure(json.loads(Path(args.out).read_text())["results"], args.figure)
        return 0
    if args.spread:
        print(spread(args.spread))
        return 0
    if args.table:
        print(tables(json.loads(Path(args.out).read_text())["results"]))
        return 0
    chosen = SERIES if not args.series else [s for s in SERIES if s[0] in args.series.split(",")]
    if not chosen:
        sys.exit(f"--series {args.series!r} matches none of {', '.join(s for s, _ in SERIES)}")
    results = []
    for name, target in chosen:
        results.append(benchmark(name, target, args.hidden, args.seed, args.quick))
        Path(args.out).write_text(json.dumps({"hidden": args.hidden, "seed": args.seed, "quick": args.quick,
                                              "torch": torch.__version__, "results": results}, indent=1) + "\n")
    print(tables(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
