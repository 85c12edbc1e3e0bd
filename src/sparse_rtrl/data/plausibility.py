"""Is a binned array spike counts per bin, or firing rates (Hz) that happen to be whole numbers?

Two tests, each a physical or statistical bound that true counts meet (docs/data.md):

1. **Refractoriness.** A neuron cannot fire twice within about 1 ms (its absolute refractory
   period), so a channel holds at most Δ / 1 ms spikes in a bin of Δ s: 100 in a 0.1 s bin.
   A larger value is a rate in Hz (r = y/Δ exceeds y by 1/Δ), or a wrong ``bin_s``. The
   bound is generous on purpose: a threshold-crossing channel that picks up several units
   still stays far below 1000 Hz; and in bins finer than 8 ms it is never below 8 spikes, so
   a multi-unit channel in 1 ms bins is not mistaken for rates.
2. **No common factor.** Rates r = y/Δ stored as whole numbers are all multiples of 1/Δ
   (10 for Δ = 0.1 s), and counts scaled by a constant share that constant. True counts do
   not: a single bin holding an odd count (most non-zero counts are 1) makes the greatest
   common divisor 1. Under Poisson firing each non-zero count is divisible by a prime p with
   probability at most about 1/2, so a factor shared by ``MIN_NONZERO`` = 32 non-zero counts
   has chance below 2⁻³² per prime: the test is only run with at least that many.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

#: the fastest a channel can fire: one spike per millisecond (absolute refractory period)
MAX_RATE_HZ = 1000.0
#: the bound on one bin in the finest bins (Δ < 8 ms): a channel merging a few units
MIN_LIMIT = 8
#: non-zero values needed before a common factor counts as evidence (see the module doc)
MIN_NONZERO = 32

_FIX = ("store spike counts per bin instead (counts = round(rates_hz × bin_s)), e.g. "
        "Session(counts=..., ...).save(path), or correct 'bin_s'")


def check_counts_per_bin(counts, bin_size: float, where) -> None:
    """Raise :class:`DataError` (naming ``where`` and the fix) if ``counts`` cannot be spike
    counts per bin of ``bin_size`` s; arrays that are not whole numbers are left to
    :class:`~sparse_rtrl.data.Session`, which refuses them."""
    y = np.asarray(counts)
    if y.size == 0 or y.dtype == bool or not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        return
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
            return
    y = y.astype(np.int64)
    # a channel may merge a few units: in the finest bins the bound is never below MIN_LIMIT
    top, limit = int(y.max()), max(MAX_RATE_HZ * bin_size, MIN_LIMIT)
    if top > limit:
        raise DataError(where, f"a bin holds {top} 'spikes', more than one per millisecond of the "
                               f"{bin_size:g} s bin (at most {limit:g}): the values look like firing "
                               f"rates in Hz, not spike counts per bin; {_FIX}")
    nonzero = y[y > 0]
    if nonzero.size < MIN_NONZERO:
        return
    g = int(np.gcd.reduce(nonzero))
    if g > 1:
        per_second = 1.0 / bin_size
        if abs(g - per_second) <= 1e-6 * per_second:
            why, fix = f"= 1/Δ for Δ = {bin_size:g} s: they look like firing rates in Hz", _FIX
        else:
            why = "they look like counts scaled by a constant"
            fix = f"divide them by {g} if that is the scale, or {_FIX}"
        raise DataError(where, f"every one of the {nonzero.size} non-zero values is a multiple of {g} "
                               f"({why}); true spike counts share no factor; {fix}")
