"""Loader for recordings that are already binned (.npz arrays, MATLAB v5 .mat)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .binning import check_bin_size
from .errors import DataError
from .plausibility import check_counts_per_bin
from .session import Session

# relative spread of the time steps tolerated in a .mat `time` vector: the Stevenson file's
# 50 ms steps vary by ±0.5 ms from rounding, a gap would be a whole step or more
_STEP_TOLERANCE = 0.05


def load_binned(path, *, bin_size: float | None = None) -> Session:
    """A session stored as counts y ∈ ℕ^{T×C} and velocity v ∈ ℝ^{T×2} per bin.

    Two layouts:

    - ``.npz`` (as the Chewie files in shared/data): ``counts`` (T, C) and ``vel``
      (T, 2); optional ``bin_s`` (bin width, s), ``trial_id`` (T,), ``bin_times`` or
      ``time`` (T,) and ``channel_names`` (C,). Without stored times, ``bin_times`` are
      nominal, index × Δ: a file that kept only some bins (the "moving" selection) has no
      record of the gaps. Files written by :meth:`Session.save` also hold ``source`` and
      ``simulated``, read back into the session (``source`` then names the file and the
      provenance it was saved from).
    - MATLAB v5 ``.mat`` (as the Stevenson 2011 file, read by ``scipy.io.loadmat``):
      ``spikes`` (C, T) counts, ``handVel`` (2 or 3, T; rows x, y[, z], only x, y kept)
      and ``time`` (1, T) in s; Δ is the median step of ``time``. MATLAB v7.3 files are
      HDF5: use :func:`load_indy` for those.

    Counts must be counts per bin: values that look like firing rates in Hz (more than one
    spike per ms of bin, or all multiples of 1/Δ) raise :class:`DataError`
    (:func:`~sparse_rtrl.data.plausibility.check_counts_per_bin` says why).

    Args:
        path: the file; its suffix (.npz or .mat) selects the layout.
        bin_size: Δ in seconds, required when the file does not store it (an .npz without
            ``bin_s``). A width the file stores cannot be changed this way (relabelling bins
            would mis-scale every count): a different value raises :class:`DataError`; use
            :meth:`Session.rebin` to merge bins. A .mat whose ``time`` is uneven takes it as is.

    Example::

        s = load_binned("../shared/data/stevenson2011_m1.mat")   # 15536 bins × 171 units
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file (expected a binned .npz or MATLAB v5 .mat file)")
    if bin_size is not None:
        bin_size = check_bin_size(bin_size)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, bin_size)
    if suffix == ".mat":
        return _load_mat(path, bin_size)
    raise DataError(path, f"unknown suffix '{path.suffix}': load_binned reads .npz and MATLAB v5 .mat")


def _load_npz(path: Path, bin_size):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"cannot read as .npz (truncated or corrupt?): {exc}") from exc
    counts = _required(arrays, "counts", path, "(T, C) spike counts")
    velocity = _required(arrays, "vel", path, "(T, 2) velocity")
    if counts.ndim != 2:
        raise DataError(path, f"expected 'counts' of shape (T, C), got {counts.shape}")
    T, C = counts.shape
    if velocity.shape != (T, 2):
        raise DataError(path, f"expected 'vel' of shape ({T}, 2) (T = rows of 'counts'), got {velocity.shape}")
    if "bin_s" in arrays:
        stored = check_bin_size(np.asarray(arrays["bin_s"]).item())
        _same_width(path, stored, bin_size, 1e-9)
        bin_size = stored
    elif bin_size is None:
        raise DataError(path, "missing key 'bin_s' (bin width in s); pass bin_size=")
    times = next((arrays[k] for k in ("bin_times", "time") if k in arrays), None)
    if times is None:
        times = np.arange(T) * bin_size
    elif np.shape(times) != (T,):
        raise DataError(path, f"expected bin times of shape ({T},), got {np.shape(times)}")
    names = arrays.get("channel_names")
    names = [f"unit {i}" for i in range(C)] if names is None else [str(n) for n in names]
    trial = arrays.get("trial_id")
    if trial is not None and np.shape(trial) != (T,):
        raise DataError(path, f"expected 'trial_id' of shape ({T},), got {np.shape(trial)}")
    check_counts_per_bin(counts, bin_size, path)
    # a file written by Session.save keeps its provenance, above all whether it is simulated
    saved = str(np.asarray(arrays["source"]).item()) if "source" in arrays else None
    return Session(counts=counts, velocity=velocity, bin_times=times, channel_names=names,
                   bin_size=bin_size, source=str(path) if saved is None else f"{path} (saved from: {saved})",
                   trial_id=trial, simulated=bool(np.asarray(arrays.get("simulated", False)).item()))


def _load_mat(path: Path, bin_size):
    try:
        import scipy.io
    except ImportError as exc:
        raise ImportError("reading .mat files needs scipy: pip install 'sparse_rtrl[data]'") from exc
    with open(path, "rb") as fh:
        header = fh.read(128)
    if header[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in header:
        raise DataError(path, "MATLAB v7.3 (HDF5) file: load_binned reads v5 files; "
                              "use load_indy for the O'Doherty/Sabes files")
    try:
        arrays = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises many types (MatReadError, ValueError, …) on bad input
        raise DataError(path, f"cannot read as MATLAB v5 (truncated or corrupt?): {exc}") from exc
    spikes = _required(arrays, "spikes", path, "(units, T) spike counts")
    vel = _required(arrays, "handVel", path, "(3, T) hand velocity")
    time = _required(arrays, "time", path, "(1, T) bin times in s")
    if time.ndim != 2 or min(time.shape) != 1:
        raise DataError(path, f"expected 'time' of shape (1, T), got {time.shape}")
    time = time.ravel().astype(np.float64)
    T = time.size
    if spikes.ndim != 2 or spikes.shape[1] != T:
        raise DataError(path, f"expected 'spikes' of shape (units, {T}) (T = len(time)), got {spikes.shape}")
    if vel.ndim != 2 or vel.shape[1] != T or vel.shape[0] < 2:
        raise DataError(path, f"expected 'handVel' of shape (3, {T}) or (2, {T}), got {vel.shape}")
    if T < 2 and bin_size is None:
        raise DataError(path, "cannot infer the bin width from fewer than 2 time points; pass bin_size=")
    if T >= 2:
        steps = np.diff(time)
        step = float(np.median(steps))
        even = step > 0 and np.max(np.abs(steps - step)) <= _STEP_TOLERANCE * step
        if bin_size is None and not even:
            raise DataError(path, "'time' is not evenly spaced (gaps or disorder); pass bin_size= "
                                  "only if the bins are nonetheless contiguous")
        if even:
            _same_width(path, step, bin_size, _STEP_TOLERANCE)
            bin_size = step if bin_size is None else bin_size
    check_counts_per_bin(spikes, bin_size, path)
    return Session(counts=spikes.T, velocity=vel[:2].T, bin_times=time,
                   channel_names=[f"unit {i}" for i in range(spikes.shape[0])],
                   bin_size=bin_size, source=str(path))


def _same_width(path, stored: float, given: float | None, tolerance: float) -> None:
    """A given bin width must be the file's own: relabelling bins does not rebin them."""
    if given is not None and abs(given - stored) > tolerance * stored:
        raise DataError(path, f"the file's bins are {stored:g} s wide but bin_size={given:g} was given: "
                              f"bin_size does not rebin a binned file; leave it unset, or merge bins with "
                              f"load_binned(path).rebin(k) and Session.save the result")


def _required(arrays, key, path, what):
    if key not in arrays:
        present = ", ".join(k for k in arrays if not k.startswith("__")) or "none"
        raise DataError(path, f"missing key '{key}' ({what}); keys present: {present}")
    return np.asarray(arrays[key])
