"""The four sources of the ``bci`` task as typed objects: each holds exactly the options it
reads, so an option that a source would ignore has nowhere to go.

``BCI(source=Files("day1.npz", "day2.npz"))`` is the same task as
``make_task("bci", source="files", session_a="day1.npz", session_b="day2.npz")``; the flat
form (what ``make_task``, configs and the command line pass) is turned into one of these
objects, and any flat option the object has no field for is refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigurationError
from .base import check_count, check_float, set_field


@dataclass(frozen=True)
class Synthetic:
    """A :class:`~sparse_rtrl.data.DriftingPopulation`: sessions A and B of a simulated array."""

    n_channels: int = 96
    """channels of the simulated array."""
    population_seed: int = 0
    """the seed of the population's tunings (sessions A and B)."""
    drift: float = 0.5
    """d of DriftingPopulation between A and B, in [0, 1]."""
    bin_size: float | None = None
    """Δ in s (None: 0.05)."""

    name = "synthetic"

    def __post_init__(self):
        set_field(self, "n_channels", check_count(self.n_channels, "n_channels", minimum=1))
        set_field(self, "population_seed", check_count(self.population_seed, "population_seed", minimum=0))
        set_field(self, "drift", _unit_interval(self.drift, "drift"))
        if self.bin_size is not None:
            set_field(self, "bin_size", check_float(self.bin_size, "bin_size", positive=True))


@dataclass(frozen=True)
class Chewie:
    """Two recorded sessions of monkey Chewie, 77 days apart (the shared recordings)."""

    data_dir: str | None = None
    """the folder of the shared recordings (None: $SPARSE_RTRL_DATA, else shared/data beside the
    source checkout)."""
    holdout: float = 0.25
    """the fraction of session A's last bins kept out of regime A's stream (the pretraining
    data): the bins streamed before the shift come from them, so the frozen decoder's loss
    before the shift is measured on bins it never trained on; in [0, 1), 0 holds none out."""

    name = "chewie"

    def __post_init__(self):
        if self.data_dir is not None:
            set_field(self, "data_dir", str(self.data_dir))
        set_field(self, "holdout", _holdout(self.holdout))


@dataclass(frozen=True)
class Stevenson:
    """One recorded session (Stevenson et al. 2011): A its first part, B the rest with
    SIMULATED drift."""

    data_dir: str | None = None
    """the folder of the shared recordings (None: $SPARSE_RTRL_DATA, else shared/data beside the
    source checkout)."""
    drift: float = 0.5
    """d of simulate_drift, in [0, 1]."""
    drift_seed: int = 0
    """the seed of the simulated drift (which channels are lost, gains, …)."""
    split: float = 0.5
    """the fraction of the recording that forms session A, in (0, 1)."""
    holdout: float = 0.25
    """the fraction of session A's last bins kept out of regime A's stream (the pretraining
    data): the bins streamed before the shift come from them, so the frozen decoder's loss
    before the shift is measured on bins it never trained on; in [0, 1), 0 holds none out."""

    name = "stevenson"

    def __post_init__(self):
        if self.data_dir is not None:
            set_field(self, "data_dir", str(self.data_dir))
        set_field(self, "drift", _unit_interval(self.drift, "drift"))
        set_field(self, "drift_seed", check_count(self.drift_seed, "drift_seed", minimum=0))
        split = check_float(self.split, "split", positive=True)
        if split >= 1:
            raise ConfigurationError(f"split must lie in (0, 1), got {split}")
        set_field(self, "split", split)
        set_field(self, "holdout", _holdout(self.holdout))


@dataclass(frozen=True)
class Files:
    """The user's two recordings (.npz / MATLAB v5 .mat of binned counts, MATLAB v7.3 Indy
    file or NWB file), read by the loaders of :mod:`sparse_rtrl.data`."""

    session_a: str
    """session A, the decoder's training session."""
    session_b: str
    """session B, the session it adapts to."""
    bin_size: float | None = None
    """Δ in s: required for spike-time files (Indy, NWB) and for .npz files without
    ``bin_s``; a binned file that stores its width must agree (it is not rebinned)."""
    holdout: float = 0.25
    """the fraction of session A's last bins kept out of regime A's stream (the pretraining
    data): the bins streamed before the shift come from them, so the frozen decoder's loss
    before the shift is measured on bins it never trained on; in [0, 1), 0 holds none out."""

    name = "files"

    def __post_init__(self):
        set_field(self, "session_a", str(self.session_a))
        set_field(self, "session_b", str(self.session_b))
        if self.bin_size is not None:
            set_field(self, "bin_size", check_float(self.bin_size, "bin_size", positive=True))
        set_field(self, "holdout", _holdout(self.holdout))


SOURCE_TYPES = {cls.name: cls for cls in (Synthetic, Chewie, Stevenson, Files)}

#: every source's options and their defaults, derived from the types (None: no default)
SOURCE_OPTIONS = {
    name: {f.name: (None if f.default is dataclasses.MISSING else f.default) for f in dataclasses.fields(cls)}
    for name, cls in SOURCE_TYPES.items()
}


def from_options(source: str, options: dict):
    """The typed source for ``source`` from flat ``options`` (option → value, None = unset):
    an option the source has no field for must be unset, whatever value it would take."""
    cls = SOURCE_TYPES[source]
    reads = SOURCE_OPTIONS[source]
    for option, value in options.items():
        if option not in reads and value is not None:
            users = ", ".join(s for s, opts in SOURCE_OPTIONS.items() if option in opts)
            raise ConfigurationError(f"option {option}={value!r} is ignored by source {source!r} (it applies "
                                     f"to {users} only): remove it")
    given = {k: v for k, v in options.items() if k in reads and v is not None}
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    if any(name not in given for name in required):
        raise ConfigurationError(f"source {source!r} needs {' and '.join(n + '=' for n in required)} "
                                 f"(paths of the two recordings)")
    return cls(**given)


def _unit_interval(value, what: str) -> float:
    x = check_float(value, what, low=0.0)
    if x > 1:
        raise ConfigurationError(f"{what} must lie in [0, 1], got {x}")
    return x


def _holdout(value) -> float:
    x = check_float(value, "holdout", low=0.0)
    if x >= 1:
        raise ConfigurationError(f"holdout must lie in [0, 1) (a fraction of session A), got {x}")
    return x
