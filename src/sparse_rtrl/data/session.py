"""One recording session, binned: the type every loader and the generator return."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

Tensor = torch.Tensor


def _as_tensor(x, dtype: torch.dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _integral_counts(x, source: str) -> Tensor:
    """Counts as int64, refusing values that are negative or not whole numbers."""
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(source, f"counts must be integers, got dtype {t.dtype}")
    if t.is_floating_point():
        # binned files often store counts as doubles; accept them only when exact
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise DataError(source, "counts must be whole numbers (finite, no fractions): convert "
                                    "firing rates to spike counts per bin (counts = rates_hz × bin_size)")
    t = t.to(torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise DataError(source, f"counts must be non-negative, found {int(t.min())}")
    return t


@dataclass(frozen=True, eq=False)
class Session:
    """Spike counts y_t ∈ ℕ^C and 2-D velocity v_t ∈ ℝ² in T consecutive time bins.

    Bin t covers [bin_times[t], bin_times[t] + bin_size). Row t of ``counts`` and of
    ``velocity`` describe the same bin, with no lag applied (decoders add their own).

    Attributes:
        counts: ``(T, C)`` int64 spike counts per bin and channel (a channel is one sorted
            unit, one electrode's threshold crossings, or one simulated channel; see
            ``channel_names``). Decoders call ``counts.double()``.
        velocity: ``(T, 2)`` float64 velocity (x, y), mean over the bin, in the recording's
            own units (mm/s for Indy cursors; as stored for pre-binned files). May hold NaN
            where a bin has no behavioural sample (gaps in NWB files); see :meth:`finite`.
        bin_times: ``(T,)`` float64 start time of each bin, in seconds on the recording's
            clock (nominal ``index × bin_size`` for files that store no time).
        channel_names: C names, one per column of ``counts``.
        bin_size: bin width Δ in seconds.
        source: where the session came from: a file path, or a description of the
            generator or simulated drift that produced it.
        trial_id: optional ``(T,)`` int64 trial (reach) index of each bin; −1 outside trials.
        simulated: True when the counts are not a recording as made: a synthetic population,
            or simulated drift applied to a real session. It survives :meth:`take`,
            :meth:`rebin` and :meth:`save`, so a report can label every simulated input.
    """

    counts: Tensor
    velocity: Tensor
    bin_times: Tensor
    channel_names: tuple[str, ...]
    bin_size: float
    source: str
    trial_id: Tensor | None = None
    simulated: bool = False

    def __post_init__(self):
        src = str(self.source)
        counts = _integral_counts(self.counts, src)
        velocity = _as_tensor(self.velocity, torch.float64)
        times = _as_tensor(self.bin_times, torch.float64)
        names = tuple(str(n) for n in self.channel_names)
        if counts.dim() != 2:
            raise DataError(src, f"counts must be (T, C), got shape {tuple(counts.shape)}")
        T, C = counts.shape
        if tuple(velocity.shape) != (T, 2):
            raise DataError(src, f"velocity must be (T, 2) = ({T}, 2), got {tuple(velocity.shape)}")
        if tuple(times.shape) != (T,):
            raise DataError(src, f"bin_times must be (T,) = ({T},), got {tuple(times.shape)}")
        if len(names) != C:
            raise DataError(src, f"{len(names)} channel names for {C} count columns")
        if not float(self.bin_size) > 0:
            raise DataError(src, f"bin_size must be positive, got {self.bin_size}")
        trial = self.trial_id
        if trial is not None:
            trial = _as_tensor(trial, torch.int64)
            if tuple(trial.shape) != (T,):
                raise DataError(src, f"trial_id must be (T,) = ({T},), got {tuple(trial.shape)}")
        # frozen: normalise the fields once, here, so every consumer sees the same dtypes
        for name, value in (("counts", counts), ("velocity", velocity), ("bin_times", times),
                            ("channel_names", names), ("bin_size", float(self.bin_size)),
                            ("source", src), ("trial_id", trial),
                            ("simulated", bool(self.simulated))):
            object.__setattr__(self, name, value)

    @property
    def n_bins(self) -> int:
        return self.counts.shape[0]

    @property
    def n_channels(self) -> int:
        return self.counts.shape[1]

    def take(self, index) -> "Session":
        """The bins ``index`` selects (a slice, index tensor or boolean mask), in that order."""
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index)
        trial = None if self.trial_id is None else self.trial_id[index]
        return dataclasses.replace(
            self, counts=self.counts[index], velocity=self.velocity[index],
            bin_times=self.bin_times[index], trial_id=trial)

    def finite(self) -> "Session":
        """The bins whose velocity is finite (drops the NaN bins of gappy recordings)."""
        return self.take(torch.isfinite(self.velocity).all(dim=1))

    def rebin(self, factor: int) -> "Session":
        """Bins ``factor`` times wider: y'_j = Σ_{i<factor} y_{j·factor+i}, v'_j the mean of those
        v, the bin starting at the first one's time, the trial of the first one. Trailing bins
        that do not fill a wide bin are dropped. The bins must be contiguous (each starts one
        Δ after the previous): a file that kept only some bins cannot be merged this way."""
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise DataError(self.source, f"rebin factor must be a positive int, got {factor!r}")
        factor = int(factor)
        T = (self.n_bins // factor) * factor
        if T == 0:
            raise DataError(self.source, f"{self.n_bins} bins cannot fill one bin {factor} times wider")
        wide = lambda x: x[:T].reshape(T // factor, factor, *x.shape[1:])  # noqa: E731
        steps = torch.diff(wide(self.bin_times), dim=1)  # within each wide bin
        # the loaders accept steps within 5 % of Δ (recorded clocks jitter): so does rebin
        if steps.numel() and not torch.allclose(steps.double(), torch.full_like(steps.double(), self.bin_size),
                                                rtol=0.0, atol=0.05 * self.bin_size):
            raise DataError(self.source, f"bins to merge are not contiguous (bin_times step ≠ {self.bin_size:g} s)")
        trial = None if self.trial_id is None else wide(self.trial_id)[:, 0]
        return dataclasses.replace(
            self, counts=wide(self.counts).sum(1), velocity=wide(self.velocity).mean(1),
            bin_times=wide(self.bin_times)[:, 0], bin_size=self.bin_size * factor, trial_id=trial,
            source=f"rebinned ×{factor} of {self.source}")

    def save(self, path) -> Path:
        """Write the session in the binned ``.npz`` layout that :func:`load_binned` (and the
        ``files`` BCI source) reads: ``counts``, ``vel``, ``bin_s``, ``bin_times``,
        ``channel_names``, ``trial_id`` (if any), ``source`` and ``simulated``. Returns the path.

        Example::

            later = simulate_drift(load_binned("day1.npz"), 0.5, seed=0)
            later.save("day1_drifted.npz")        # reads back with simulated=True
        """
        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise DataError(path, "Session.save writes the .npz layout: give a path ending in .npz")
        arrays = {"counts": self.counts.numpy(), "vel": self.velocity.numpy(), "bin_s": np.float64(self.bin_size),
                  "bin_times": self.bin_times.numpy(), "channel_names": np.asarray(self.channel_names, dtype=str),
                  "source": np.asarray(self.source), "simulated": np.asarray(self.simulated)}
        if self.trial_id is not None:
            arrays["trial_id"] = self.trial_id.numpy()
        # write beside the target, then rename: a crash never leaves a truncated session file
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)
        return path

    def __repr__(self) -> str:
        return (f"Session({self.n_bins} bins × {self.n_channels} channels, "
                f"bin_size={self.bin_size:g} s, source={self.source!r}{', SIMULATED' if self.simulated else ''})")
