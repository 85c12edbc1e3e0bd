"""The figure of a ``sparse-rtrl stream`` run (matplotlib; imported only by the command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .run import StreamRun
from .series import Series


def plot_run(path: str | Path, series: Series, run: StreamRun) -> Path:
    """The series and the forecasts above, the running MAE below; change points dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, height_ratios=(2, 1))
    top.plot(np.arange(len(series)), series.y, color="0.3", lw=1, label=series.target)
    top.plot(run.rows, run.y_hat, color="C1", lw=1, label="one-step forecast")
    top.legend(loc="best", fontsize=8)
    top.set_title(series.name, fontsize=10)
    e = np.abs(run.errors)
    bottom.plot(run.rows, np.cumsum(e) / np.arange(1, len(e) + 1), color="C0", lw=1)
    bottom.set_ylabel("running MAE")
    bottom.set_xlabel("row")
    for ax in (top, bottom):
        for p in series.change_points:
            ax.axvline(p, color="0.6", ls="--", lw=0.6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
