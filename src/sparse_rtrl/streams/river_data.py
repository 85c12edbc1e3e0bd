"""river's bundled real series (``river.datasets``, ``river.drift.datasets``) as a :class:`Series`."""

from __future__ import annotations

import datetime
import numbers

import numpy as np

from ..errors import InputError
from .series import Series

#: the change-point series bundled with river (the Turing change-point benchmark, TCPD)
DRIFT = ("AirlinePassengers", "Apple", "Bitcoin", "BrentSpotPrice", "Occupancy", "RunLog", "UKCoalEmploy")

#: river ships two of them at full resolution, but their change points index TCPD's
#: subsampled series (Apple: every 3rd day, 623 rows; Brent: every 10th day from 2000, 500
#: rows): (first date kept or None, the step)
TCPD_SAMPLING = {"Apple": (None, 3), "BrentSpotPrice": (datetime.datetime(2000, 1, 1), 10)}


def _module(name: str):
    try:
        from river import datasets
        from river.drift import datasets as drift
    except ImportError:
        raise InputError("river datasets need the river package: pip install 'sparse_rtrl[river]'") from None
    if name.startswith("drift."):
        return drift, name[len("drift."):]
    return datasets, name


def load_river_dataset(name: str, target: str | None = None) -> Series:
    """``river.datasets.NAME`` (or ``river.drift.datasets.NAME`` for ``drift.NAME``) as a Series.

    Numeric features are kept (in sorted order); dates and other non-numeric ones are dropped
    (the model sees the order of the rows). For a dataset with several targets (e.g.
    ``drift.Apple``: Open, High, ..., Close) ``target`` picks one. A drift dataset's annotated
    change points (every annotator's, merged) come along in ``change_points``; ``drift.Apple``
    and ``drift.BrentSpotPrice`` are subsampled as in TCPD (see ``TCPD_SAMPLING``) so that
    those points index the rows.
    """
    module, attr = _module(name)
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        choices = sorted(n for n in dir(module) if n[:1].isupper())
        prefix = "drift." if module.__name__.endswith("drift.datasets") else ""
        raise InputError(f"river has no dataset {name!r}; choose one of: "
                         f"{', '.join(prefix + c for c in choices)}")
    ds = cls()
    rows = list(ds)
    if module.__name__.endswith("drift.datasets") and attr in TCPD_SAMPLING:
        start, step = TCPD_SAMPLING[attr]
        first = 0 if start is None else next(i for i, (x, _) in enumerate(rows) if min(x.values()) >= start)
        rows = rows[first::step]
    if not rows:
        raise InputError(f"river dataset {name!r} yielded no rows")
    x0, y0 = rows[0]
    if isinstance(y0, dict):
        if target is None or target not in y0:
            what = "needs --target" if target is None else f"has no target {target!r}"
            raise InputError(f"river dataset {name!r} has several targets and {what}: choose one of "
                             f"{', '.join(map(str, y0))}")
        pick = lambda y: y[target]  # noqa: E731
        tname = target
    else:
        if target is not None and target != "y":
            raise InputError(f"river dataset {name!r} has a single target; drop --target {target!r}")
        pick = lambda y: y  # noqa: E731
        tname = "y"
    features = sorted((k for k, v in x0.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)), key=str)
    X = np.array([[float(x.get(k, np.nan)) for k in features] for x, _ in rows]).reshape(len(rows), len(features))
    y = np.array([float(pick(y)) for _, y in rows])
    keep = np.isfinite(y) & np.isfinite(X).all(axis=1)
    if not keep.all():
        raise InputError(f"river dataset {name!r} has {int((~keep).sum())} rows with missing values")
    return Series(f"river:{name}", tname, tuple(map(str, features)), X, y, _change_points(ds))


def _change_points(ds) -> tuple[int, ...]:
    annotations = getattr(ds, "annotations", None)
    if not annotations:
        return ()
    points = sorted({int(p) for pts in annotations.values() for p in pts})
    merged: list[int] = []
    for p in points:  # annotators mark the same change a few rows apart: keep the first
        if not merged or p - merged[-1] > 5:
            merged.append(p)
    return tuple(merged)
