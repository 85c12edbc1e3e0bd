"""Reading a user's CSV stream, with one-line errors that name the line and the column."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .series import Series


def read_csv(path: str | Path, target: str, features: list[str] | None = None) -> Series:
    """A :class:`Series` from a CSV file with a header row.

    Args:
        path: the file.
        target: the column to forecast.
        features: the input columns (default: every column except the target); the model
            also sees the previous row's target unless told otherwise.

    Raises:
        InputError: the file is missing or empty, a named column is absent, a row has the
            wrong number of fields, or a value is empty, NaN/inf or not a number — the message
            names the line (1 = the header) and the column, and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: the byte-order mark Excel writes
        reader = csv.reader(f)
        numbered = [(reader.line_num, r) for r in reader]
    numbered = [(n, r) for n, r in numbered if r and any(c.strip() for c in r)]  # blank lines are not rows
    lines = [n for n, _ in numbered]
    rows = [r for _, r in numbered]
    if not rows:
        raise InputError(f"{path} is empty: expected a header row naming the columns, then one row per step")
    header = [c.strip() for c in rows[0]]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise InputError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} more than once: "
                         "give every column its own name")
    if len(rows) < 2:
        raise InputError(f"{path} has a header but no data rows")
    if target not in header:
        raise InputError(f"{path}: no column {target!r} for --target; the columns are: {', '.join(header)}")
    if features is None:
        features = [c for c in header if c != target]
    else:
        missing = [c for c in features if c not in header]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} for --features; the columns are: {', '.join(header)}")
        if target in features:
            raise InputError(f"{path}: the target {target!r} is also in --features; the model already sees "
                             "the previous row's target")
    used = [header.index(c) for c in [*features, target]]
    data = np.empty((len(rows) - 1, len(used)))
    for i, row in enumerate(rows[1:]):
        line = lines[i + 1]  # the file's own line number, blank lines counted
        if len(row) != len(header):
            raise InputError(f"{path} line {line}: {len(row)} fields, but the header has {len(header)}")
        for j, col in enumerate(used):
            data[i, j] = _number(row[col], path, line, header[col], features)
    return Series(str(path), target, tuple(features), data[:, :-1], data[:, -1])


def _number(text: str, path: Path, line: int, column: str, features: list[str]) -> float:
    s = text.strip()
    hint = ("drop or fill that row" if s == "" or s.lower() in ("nan", "na", "null", "none", "inf", "-inf")
            else "fix the value" + (", or leave the column out with --features" if column in features else ""))
    if s == "":
        raise InputError(f"{path} line {line}, column {column!r}: empty value (a missing entry): {hint}")
    try:
        v = float(s)
    except ValueError:
        raise InputError(f"{path} line {line}, column {column!r}: {s!r} is not a number: {hint}") from None
    if not math.isfinite(v):
        raise InputError(f"{path} line {line}, column {column!r}: {s!r} is not a finite number: {hint}")
    return v
