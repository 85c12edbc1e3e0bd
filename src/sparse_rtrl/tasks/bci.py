"""Decoding 2-D velocity from binned spike counts; the shift is a new recording session.

Regime A is session A (the decoder's training day), regime B is session B (a later day,
or the same array after electrode drift). Sources (the ``source`` option):

- ``"synthetic"`` (default): a :class:`~sparse_rtrl.data.DriftingPopulation`; the two
  sessions' tunings are fixed by ``population_seed``, B drifted from A by ``drift``; the
  stream seed draws the reaches and the spike noise.
- ``"chewie"``: two real sessions of monkey Chewie 77 days apart (2013-10-03 → 2013-12-19,
  the "moving" bins), 174 and 155 sorted units that are **not** matched across days.
- ``"stevenson"``: one real session (Stevenson et al. 2011); its first part is A, the rest
  with **simulated** drift (:func:`~sparse_rtrl.data.simulate_drift`) is B.
- ``"files"``: the user's two recordings, ``session_a`` and ``session_b``, read by the
  loaders of :mod:`sparse_rtrl.data`.

Each source is also a typed object holding exactly its options (:mod:`.bci_sources`):
``BCI(source=Files("a.npz", "b.npz"))`` equals ``BCI(source="files", session_a="a.npz",
session_b="b.npz")``. In the flat form an option the source does not read must stay unset
(None): any value, even another source's default, raises ``ConfigurationError``.

See docs/bci.md for the design.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..errors import ConfigurationError
from .bci_sources import SOURCE_OPTIONS, SOURCE_TYPES, Chewie, Files, Stevenson, Synthetic, from_options
from .base import AbstractTask, Segments, Stream, check_float, continuous_stream, fmt, set_field

Tensor = torch.Tensor

SOURCES = tuple(SOURCE_TYPES)
__all__ = ["BCI", "Chewie", "Files", "SOURCE_OPTIONS", "Stevenson", "Synthetic"]
TRANSFORMS = ("sqrt", "log1p", "none")

#: the shared recordings, by source (where to get them: docs/data.md, "Provenance and citation")
CHEWIE_FILES = ("chewie_2013-10-03_bin100ms_moving.npz", "chewie_2013-12-19_bin100ms_moving.npz")
STEVENSON_FILE = "stevenson2011_m1.mat"
DATA_ENV = settings.VARIABLES["data_dir"]

#: bins of the fixed-seed reference draw of synthetic session A that gives its statistics
SYNTHETIC_REFERENCE_BINS = 12_000
_REFERENCE_SEED = 2**31 - 1

#: a channel whose transformed counts do not vary at all in session A is scaled by 1
_MIN_STD = 1e-9

#: the options each source reads (the fields of its type in bci_sources), with their defaults
_SOURCE_SPECIFIC = tuple(dict.fromkeys(o for opts in SOURCE_OPTIONS.values() for o in opts))

#: the source checkout this module runs from (src/sparse_rtrl/tasks/bci.py → the repository)
_CHECKOUT = Path(__file__).resolve().parents[3]


def default_data_dir() -> Path | None:
    """Where the shared recordings are looked for: ``$SPARSE_RTRL_DATA`` if set, else
    ``shared/data`` beside the source checkout (``<checkout>/../shared/data``) if it exists,
    else None. Never relative to the current directory: the same command finds the same
    files wherever it is run from."""
    configured = settings.data_dir()
    if configured is not None:
        return configured
    beside = _CHECKOUT.parent / "shared" / "data"
    return beside if (_CHECKOUT / "pyproject.toml").is_file() and beside.is_dir() else None


def data_files(source: str, data_dir=None) -> list[Path]:
    """The files a real source reads, under ``data_dir`` (default: :func:`default_data_dir`)."""
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    names = {"chewie": CHEWIE_FILES, "stevenson": (STEVENSON_FILE,)}.get(source)
    if names is None:
        raise ConfigurationError(f"source {source!r} reads no shared recording; the real ones are chewie, stevenson")
    if base is None:
        base = expected_data_dir()  # absent: the paths an error message names
    return [base / n for n in names]


def expected_data_dir() -> Path:
    """Where :func:`default_data_dir` looks when ``$SPARSE_RTRL_DATA`` is unset."""
    return _CHECKOUT.parent / "shared" / "data"


def available(source: str, data_dir=None) -> bool:
    """Whether every file of a real source exists under ``data_dir``."""
    return all(p.is_file() for p in data_files(source, data_dir))


@dataclass(frozen=True)
class Prepared:
    """One session as the decoder sees it: inputs (T, width) and targets (T, 2), both
    z-scored with session A's statistics, plus the raw counts' provenance."""

    inputs: np.ndarray
    targets: np.ndarray
    trial: np.ndarray
    source: str
    units: int
    train_bins: int  # the first bins, regime A's stream; the rest of A is held out
    simulated: bool


@dataclass(frozen=True)
class BCI(AbstractTask):
    """Input x_t = (f(y_t) − μ_A)/σ_A, target (v_t − m_A)/s_A; MSE at every step.

    y_t ∈ ℕ^C: the spike counts of bin t (zero-padded to a common width C when the two
    sessions have different numbers of channels: a missing channel reads 0 spikes, like a
    silent electrode); f: ``transform`` (√y by default, variance-stabilising for Poisson
    counts); μ_A, σ_A: per-channel mean and std of f(y) over session A, σ_A floored at
    ``std_floor`` × its median over channels (a channel nearly silent in A would otherwise
    turn one spike into tens of σ: plain z-scoring puts Stevenson's session B at 50 σ);
    v_t: the bin's 2-D velocity, m_A and s_A its per-component mean and std over session A.
    Session B is normalised with **A's** statistics, so the drift (lost, new, rescaled
    channels) shows in the inputs exactly as a deployed decoder would see it.

    Streams. For ``"synthetic"`` every seed is a fresh draw (reaches and spike noise) of the
    two fixed sessions, and ``sample_shift`` is one continuous reach trajectory whose
    tuning switches from A to B at the shift. For the real sources the stream is the
    recording itself, the same for every seed (seeds then vary the model's initialisation,
    pretraining batches and masks). The last ``holdout`` fraction of session A (a quarter by
    default) is held out: ``sample("A", steps, ·)``, the pretraining data, streams only A's
    first bins, and ``sample_shift(before, after, ·)`` is the last ``before`` held-out bins
    of A then the first ``after`` bins of B, so the loss before the shift is a test loss on
    bins the decoder never trained on (A's normalisation statistics come from its training
    bins too). ``sample("B", steps, ·)`` starts at B's first bin. A stream longer than its
    part wraps around to its start (``info["repeat"]`` counts the passes, 0 on the first);
    the C9 experiments take adaptation windows no longer than session B, so every scored bin
    is seen once.

    ``info``: ``"regime"``; ``"bin"`` (int64) the bin of the session; ``"repeat"`` (int64);
    ``"trial"`` (int64) the trial or reach of the bin (−1 if unknown; real trials are
    concatenated, so the signals jump where it changes).
    """

    source: str = "synthetic"
    """"synthetic", "chewie", "stevenson" or "files" (see the module docstring), or a typed
    source object (:class:`Synthetic`, :class:`Chewie`, :class:`Stevenson`, :class:`Files`)
    holding that source's options; stored as the name, the options in the fields below."""
    transform: str = "sqrt"
    """f applied to the counts before z-scoring: "sqrt", "log1p" or "none"."""
    std_floor: float = 0.5
    """σ_A of a channel is floored at this fraction of the median channel's σ_A (0: plain
    z-scoring), so a channel nearly silent in A cannot blow up to tens of σ when it fires."""
    n_channels: int | None = None
    """synthetic: channels of the simulated array (unset: 96)."""
    population_seed: int | None = None
    """synthetic: the seed of the population's tunings (sessions A and B; unset: 0)."""
    drift: float | None = None
    """synthetic: d of DriftingPopulation between A and B; stevenson: d of simulate_drift
    (unset: 0.5)."""
    drift_seed: int | None = None
    """stevenson: the seed of the simulated drift (which channels are lost, gains, …; unset: 0)."""
    split: float | None = None
    """stevenson: the fraction of the recording that forms session A, the rest is B (unset: 0.5)."""
    data_dir: str | None = None
    """chewie, stevenson: the folder of the shared recordings (None: $SPARSE_RTRL_DATA,
    else shared/data beside the source checkout)."""
    session_a: str | None = None
    """files: session A (.npz or MATLAB v5 .mat of binned counts, MATLAB v7.3 Indy file or
    NWB file)."""
    session_b: str | None = None
    """files: session B, same formats."""
    bin_size: float | None = None
    """synthetic: Δ in s (None: 0.05); files: Δ, required for spike-time files (Indy, NWB)
    and for .npz files without ``bin_s``; a binned file that stores its width must agree."""
    holdout: float | None = None
    """chewie, stevenson, files: the fraction of session A's last bins kept out of regime A's
    stream (pretraining) and streamed before the shift, so the frozen loss there is a test
    loss (unset: 0.25; 0: none held out)."""

    name = "bci"
    continuous_error = True

    def __post_init__(self):
        typed = isinstance(self.source, tuple(SOURCE_TYPES.values()))
        if not typed and (not isinstance(self.source, str) or self.source not in SOURCES):
            raise ConfigurationError(f"source must be one of {', '.join(SOURCES)} (or a source object: "
                                     f"Synthetic, Chewie, Stevenson, Files), got {self.source!r}")
        if self.transform not in TRANSFORMS:
            raise ConfigurationError(f"transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}")
        if typed:
            spec = self.source
            flat = [o for o in _SOURCE_SPECIFIC if getattr(self, o) is not None]
            if flat:
                raise ConfigurationError(
                    f"option(s) {', '.join(flat)} given beside source={spec!r}: set them on the source object")
        else:
            spec = from_options(self.source, {o: getattr(self, o) for o in _SOURCE_SPECIFIC})
        # the flat fields mirror the typed source (unset where it has no such option), so the
        # task compares, hashes and round-trips through options() the same in both forms
        set_field(self, "source", spec.name)
        for option in SOURCE_OPTIONS[spec.name]:
            set_field(self, option, getattr(spec, option))
        set_field(self, "std_floor", check_float(self.std_floor, "std_floor", low=0.0))

    @property
    def spec(self):
        """The typed source object: exactly the options this source reads."""
        return SOURCE_TYPES[self.source](**{o: getattr(self, o) for o in SOURCE_OPTIONS[self.source]})

    # -- sizes and description ---------------------------------------------------------------
    @property
    def input_size(self) -> int:
        if self.source == "synthetic":
            return self.n_channels
        return _prepared(self)[0].inputs.shape[1]

    @property
    def output_size(self) -> int:
        return 2

    def describe_shift(self) -> str:
        norm = f"{self.transform} counts and velocity z-scored with session A's statistics"
        if self.source == "synthetic":
            return (f"SIMULATED {self.n_channels}-channel array (synthetic), session A → B with drift d = "
                    f"{fmt(self.drift)} (units lost, new units, gain and baseline changes; "
                    f"population seed {self.population_seed}); {norm}")
        if self.source == "chewie":
            return ("recorded sessions of monkey Chewie 2013-10-03 → 2013-12-19 (77 days; moving bins; "
                    "174 → 155 sorted units, not matched across days, zero-padded to 174 inputs; "
                    f"Dyer et al. 2017); {norm}")
        if self.source == "stevenson":
            return (f"real M1 session (Stevenson et al. 2011): first {fmt(100 * self.split)} % → rest with "
                    f"SIMULATED drift d = {fmt(self.drift)} (seed {self.drift_seed}; not a recorded "
                    f"second session); {norm}")
        sim = [label for label, flag in zip("AB", self.simulated_sessions()) if flag]
        marked = f"; SIMULATED session {' and '.join(sim)} (not a recording as made)" if sim else ""
        return (f"user recordings {Path(self.session_a).name} → {Path(self.session_b).name} "
                f"(channels aligned by column, zero-padded to a common width{marked}); {norm}")

    def simulated_sessions(self) -> tuple[bool, bool]:
        """Whether sessions A and B are simulated rather than recorded: both for synthetic,
        B for stevenson, and for files whatever the files say (:attr:`Session.simulated`, kept
        by :meth:`Session.save`), so a report can label every simulated input."""
        if self.source == "synthetic":
            return True, True
        a, b, _ = _prepared(self)
        return a.simulated, b.simulated

    def sessions_source(self) -> tuple[str, str]:
        """Where sessions A and B come from (B's says "simulated drift" for stevenson)."""
        if self.source == "synthetic":
            return (f"synthetic DriftingPopulation(seed={self.population_seed}, drift={self.drift:g}), session 0",
                    f"synthetic DriftingPopulation(seed={self.population_seed}, drift={self.drift:g}), session 1")
        a, b, _ = _prepared(self)
        return a.source, b.source

    def session_bins(self) -> tuple[int, int]:
        """(T_A, T_B), the bins of the two recorded sessions (real sources: loads the files)."""
        if self.source == "synthetic":
            raise ConfigurationError("synthetic sessions have no fixed length: any number of steps is drawn")
        a, b, _ = _prepared(self)
        return a.inputs.shape[0], b.inputs.shape[0]

    def held_out_bins(self) -> int:
        """Session A's bins kept out of pretraining (``holdout``): the most a shift can stream
        before it (real sources: loads the files)."""
        if self.source == "synthetic":
            raise ConfigurationError("synthetic sessions are drawn fresh for every stream: nothing is held out")
        a = _prepared(self)[0]
        T = a.inputs.shape[0]
        return T if a.train_bins == T else T - a.train_bins  # nothing held out: all of A may stream

    def normalisation(self) -> dict[str, np.ndarray]:
        """Session A's statistics: ``input_mean``, ``input_std`` (width,), ``velocity_mean``,
        ``velocity_std`` (2,), as applied to both sessions."""
        if self.source == "synthetic":
            return dict(_synthetic_reference(self))
        return dict(_prepared(self)[2])

    # -- streams ---------------------------------------------------------------------------------
    def _generate(self, segments: Segments, gen: torch.Generator) -> Stream:
        if self.source == "synthetic":
            seed = int(torch.randint(0, 2**62, (1,), generator=gen, dtype=torch.int64))
            x, v, trial = _synthetic_stream(self, segments, seed)
            stats = _synthetic_reference(self)
            x = (_transform(x, self.transform) - stats["input_mean"]) / stats["input_std"]
            v = (v - stats["velocity_mean"]) / stats["velocity_std"]
            T = x.shape[0]
            info = {"bin": np.arange(T), "repeat": np.zeros(T, dtype=np.int64), "trial": trial}
        else:
            x, v, info = _real_stream(self, segments)
        return _stream(x, v, segments, info)


# -- assembling a stream ------------------------------------------------------------------------
def _stream(x, v, segments: Segments, info: dict) -> Stream:
    extras = {k: torch.as_tensor(np.asarray(a, dtype=np.int64)) for k, a in info.items()}
    return continuous_stream(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(v, dtype=torch.float64),
                             segments, **extras)


def _transform(counts: np.ndarray, how: str) -> np.ndarray:
    y = np.asarray(counts, dtype=np.float64)
    if how == "sqrt":
        return np.sqrt(y)
    if how == "log1p":
        return np.log1p(y)
    return y


def _statistics(features: np.ndarray, velocity: np.ndarray, floor: float) -> dict[str, np.ndarray]:
    """μ_A, σ_A of the transformed counts (σ floored at ``floor`` × the median channel's σ)
    and m_A, s_A of the velocity."""
    std = features.std(axis=0)
    lowest = floor * float(np.median(std))
    std = np.maximum(std, lowest)
    return {
        "input_mean": features.mean(axis=0),
        "input_std": np.where(std < _MIN_STD, 1.0, std),
        "velocity_mean": velocity.mean(axis=0),
        "velocity_std": np.maximum(velocity.std(axis=0), _MIN_STD),
    }


# -- synthetic ------------------------------------------------------------------------------------
def _population(task: BCI):
    from ..data import DriftingPopulation

    return DriftingPopulation(n_channels=task.n_channels, drift=task.drift,
                              bin_size=0.05 if task.bin_size is None else task.bin_size)


@functools.lru_cache(maxsize=16)
def _synthetic_tunings(task: BCI) -> dict:
    a, b = _population(task).tunings(2, task.population_seed)
    return {"A": a, "B": b}


def _synthetic_stream(task: BCI, segments: Segments, seed: int):
    """Counts (T, C), velocity (T, 2) and reach index of one draw: one continuous reach
    trajectory and within-session drift, each segment's rates from its regime's tuning."""
    from ..data import reach_trajectory

    pop, tunings = _population(task), _synthetic_tunings(task)
    T, C, dt = sum(n for _, n in segments), pop.n_channels, pop.bin_size
    behaviour = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    noise = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    velocity, reach = reach_trajectory(T, dt, behaviour, workspace=pop.workspace,
                                       reach_duration=pop.reach_duration, hold_duration=pop.hold_duration)
    within = np.exp(pop.within_session_drift * np.cumsum(noise.standard_normal((T, C)) * math.sqrt(dt / 60.0), axis=0))
    mean = np.empty((T, C))
    start = 0
    for regime, n in segments:
        part = slice(start, start + n)
        mean[part] = pop.rates(tunings[regime], velocity[part], within[part]) * dt
        start += n
    if pop.dispersion > 0:
        shape = 1.0 / pop.dispersion
        mean = mean * noise.gamma(shape, 1.0 / shape, size=mean.shape)
    return noise.poisson(mean), velocity, reach


@functools.lru_cache(maxsize=16)
def _synthetic_reference(task: BCI) -> dict[str, np.ndarray]:
    """Session A's statistics from a fixed-seed draw of ``SYNTHETIC_REFERENCE_BINS`` bins."""
    counts, velocity, _ = _synthetic_stream(task, (("A", SYNTHETIC_REFERENCE_BINS),), _REFERENCE_SEED)
    return _statistics(_transform(counts, task.transform), velocity, task.std_floor)


# -- real recordings -----------------------------------------------------------------------------
def _load(path: Path, bin_size: float | None):
    """A session from any supported file: .npz / MATLAB v5 .mat (binned), MATLAB v7.3 .mat
    (O'Doherty/Sabes, spike times) or .nwb (spike times); NaN-velocity bins are dropped."""
    from ..data import DataError, load_binned, load_indy, load_nwb

    if not path.is_file():
        raise DataError(path, "no such file" + _where_hint(path))
    suffix = path.suffix.lower()
    spike_times = suffix == ".nwb" or (suffix == ".mat" and _is_hdf5(path))
    if spike_times and bin_size is None:
        raise ConfigurationError(f"{path}: a spike-time recording needs a bin width: pass bin_size= (--bin-size)")
    if suffix == ".nwb":
        session = load_nwb(path, bin_size)
    elif spike_times:
        session = load_indy(path, bin_size)
    else:
        session = load_binned(path, bin_size=bin_size)
    return session.finite()


def _where_hint(path: Path) -> str:
    return (f" (looked in {path.parent}; set the data folder with data_dir= / --data-dir or the "
            f"{DATA_ENV} environment variable)")


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def _sessions(task: BCI):
    """The raw sessions A and B of a real source."""
    if task.source == "chewie":
        a, b = data_files("chewie", task.data_dir)
        return _load(a, None), _load(b, None)
    if task.source == "stevenson":
        from ..data import simulate_drift

        (path,) = data_files("stevenson", task.data_dir)
        real = _load(path, None)
        cut = int(round(task.split * real.n_bins))
        if not 0 < cut < real.n_bins:
            raise ConfigurationError(f"split={task.split} leaves an empty session of the {real.n_bins} bins")
        return real.take(slice(0, cut)), simulate_drift(real.take(slice(cut, None)), task.drift, task.drift_seed)
    return _load(Path(task.session_a), task.bin_size), _load(Path(task.session_b), task.bin_size)


@functools.lru_cache(maxsize=8)
def _prepared(task: BCI) -> tuple[Prepared, Prepared, dict]:
    """Both sessions, zero-padded to a common width, transformed and z-scored with A's
    statistics; and those statistics."""
    a, b = _sessions(task)
    _check_same_bins(a, b)
    width = max(a.n_channels, b.n_channels)
    feats, vels = [], []
    for s in (a, b):
        counts = np.zeros((s.n_bins, width))
        counts[:, : s.n_channels] = s.counts.numpy()
        feats.append(_transform(counts, task.transform))
        vels.append(s.velocity.numpy())
    held = int(round(task.holdout * a.n_bins))
    if task.holdout > 0:
        held = max(1, held)  # a holdout asked for is never rounded away
    if held >= a.n_bins:
        raise ConfigurationError(f"holdout={task.holdout} leaves none of session A's {a.n_bins} bins to train on")
    train = a.n_bins - held
    # A's statistics from the bins the decoder trains on only: the held-out bins stay unseen
    stats = _statistics(feats[0][:train], vels[0][:train], task.std_floor)
    out = []
    for s, f, v, n in zip((a, b), feats, vels, (train, b.n_bins)):
        trial = s.trial_id.numpy() if s.trial_id is not None else np.full(s.n_bins, -1)
        out.append(Prepared(
            inputs=(f - stats["input_mean"]) / stats["input_std"],
            targets=(v - stats["velocity_mean"]) / stats["velocity_std"],
            trial=trial, source=s.source, units=s.n_channels, train_bins=n, simulated=s.simulated))
    return out[0], out[1], stats


def _check_same_bins(a, b) -> None:
    """Counts per bin scale with the bin width: a decoder z-scored on 0.05 s bins would read
    0.1 s bins as every channel firing twice as fast, so mixed widths are refused."""
    from ..data import DataError

    if not math.isclose(a.bin_size, b.bin_size, rel_tol=1e-9):
        wide, narrow = max(a.bin_size, b.bin_size), min(a.bin_size, b.bin_size)
        ratio = wide / narrow
        how = (f"session.rebin({round(ratio)}) merges {narrow:g} s bins into {wide:g} s ones"
               if abs(ratio - round(ratio)) < 1e-9 else "rebin both to a common width")
        raise DataError(f"{a.source} | {b.source}",
                        f"sessions A and B have different bin widths, {a.bin_size:g} s and {b.bin_size:g} s; "
                        f"bring them to one width first ({how}, then Session.save the result), or for "
                        f"spike-time files (Indy, NWB) pass one bin_size= (--bin-size) for both")


def _real_stream(task: BCI, segments: Segments):
    """The recording. Regime A alone (pretraining) streams A's training bins from the first;
    in a shift, the A part is the last bins of A's held-out tail (all of A's last bins when
    nothing is held out) and the B part starts at B's first bin. Longer than its part: wraps."""
    sessions = dict(zip(("A", "B"), _prepared(task)[:2]))
    xs, vs, bins, repeats, trials = [], [], [], [], []
    shift = len(segments) > 1
    for j, (regime, n) in enumerate(segments):
        s = sessions[regime]
        T, train = s.inputs.shape[0], s.train_bins
        if shift and j == 0:
            first, size = (train, T - train) if train < T else (0, T)
            if train < T and n > size:
                raise ConfigurationError(
                    f"the {n} bins before the shift must come from session A's held-out bins, but "
                    f"holdout={task.holdout} keeps {size} of its {T}: raise holdout or stream fewer "
                    "bins before the shift (pre_shift_steps)")
            position = np.arange(size * math.ceil(n / size) - n, size * math.ceil(n / size))  # ends on the last bin
            index = first + position % size
        else:
            size = train if regime == "A" else T
            position = np.arange(n)
            index = position % size
        xs.append(s.inputs[index]), vs.append(s.targets[index]), trials.append(s.trial[index])
        bins.append(index), repeats.append(position // size)
    info = {"bin": np.concatenate(bins), "repeat": np.concatenate(repeats), "trial": np.concatenate(trials)}
    return np.concatenate(xs), np.concatenate(vs), info
