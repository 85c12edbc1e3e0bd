"""Strict JSON for result files: NaN and ±inf (an undefined score, a diverged run) as null."""

from __future__ import annotations

import math


def json_safe(x):
    """``x`` with every non-finite float replaced by None, through dicts, lists and tuples."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
