"""What each BCI source reads: options it ignores are refused whatever their value, sessions
of different bin widths are refused, and a simulated session stays labelled SIMULATED."""

import numpy as np
import pytest

from sparse_rtrl.data import DataError, Session, load_binned, simulate_drift
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.tasks import make_task
from sparse_rtrl.tasks.bci import SOURCE_OPTIONS


def write_session(path, T=60, C=4, seed=0, bin_size=0.1):
    rng = np.random.default_rng(seed)
    s = Session(counts=rng.poisson(1.0, size=(T, C)), velocity=rng.normal(size=(T, 2)),
                bin_times=bin_size * np.arange(T), channel_names=[f"u{c}" for c in range(C)],
                bin_size=bin_size, source="by hand")
    return s.save(path), s


@pytest.fixture
def files(tmp_path):
    a, _ = write_session(tmp_path / "a.npz", seed=0)
    b, _ = write_session(tmp_path / "b.npz", seed=1)
    return {"source": "files", "session_a": str(a), "session_b": str(b)}


def other_sources_value(option):
    """A value the option takes by default on a source that reads it (None for paths)."""
    for opts in SOURCE_OPTIONS.values():
        if option in opts and opts[option] is not None:
            return opts[option]
    return "somewhere"


@pytest.mark.parametrize("source", sorted(SOURCE_OPTIONS))
def test_every_option_a_source_ignores_is_refused_even_at_another_sources_default(source, files):
    base = files if source == "files" else {"source": source}
    ignored = sorted({o for opts in SOURCE_OPTIONS.values() for o in opts} - set(SOURCE_OPTIONS[source]))
    assert ignored  # every source ignores something
    for option in ignored:
        value = other_sources_value(option)
        with pytest.raises(ConfigurationError, match=rf"option {option}=.* is ignored by source '{source}'.*remove it"):
            make_task("bci", **base, **{option: value})


def test_files_source_refuses_the_default_drift_as_well_as_another(files):
    for drift in (0.5, 0.3):  # 0.5 used to pass silently, being the default
        with pytest.raises(ConfigurationError, match=r"drift=0\.\d is ignored by source 'files'"):
            make_task("bci", **files, drift=drift)


def test_unset_options_take_the_source_defaults():
    assert make_task("bci") == make_task("bci", n_channels=96, population_seed=0, drift=0.5)
    t = make_task("bci", source="stevenson", data_dir="nowhere")
    assert (t.drift, t.drift_seed, t.split) == (0.5, 0, 0.5)
    assert t.n_channels is None and t.population_seed is None  # not read: left unset


def test_sessions_of_different_bin_widths_are_refused_naming_both_and_the_fix(tmp_path, files):
    narrow, s = write_session(tmp_path / "narrow.npz", T=80, seed=2, bin_size=0.05)
    task = make_task("bci", **{**files, "session_b": str(narrow)})
    with pytest.raises(DataError, match=r"different bin widths, 0\.1 s and 0\.05 s.*rebin\(2\).*bin_size="):
        task.input_size
    # the fix it names works: rebinned and saved, the session combines with A
    wide = load_binned(narrow).rebin(2).save(tmp_path / "wide.npz")
    fixed = make_task("bci", **{**files, "session_b": str(wide)})
    assert fixed.session_bins() == (60, 40)
    np.testing.assert_array_equal(load_binned(wide).counts.numpy(), s.counts.numpy().reshape(40, 2, 4).sum(1))


def test_a_simulated_user_session_is_labelled_simulated(tmp_path, files):
    real = load_binned(files["session_b"])
    drifted = simulate_drift(real, 0.5, seed=0).save(tmp_path / "b_drifted.npz")
    task = make_task("bci", **{**files, "session_b": str(drifted)})
    assert task.simulated_sessions() == (False, True)
    assert "SIMULATED session B" in task.describe_shift()
    assert "simulated drift (d=0.5, seed=0)" in task.sessions_source()[1]
    plain = make_task("bci", **files)
    assert plain.simulated_sessions() == (False, False) and "SIMULATED" not in plain.describe_shift()
    assert "SIMULATED" in make_task("bci", n_channels=8).describe_shift()


def test_typed_sources_equal_their_flat_form_and_round_trip_through_options(files):
    from sparse_rtrl.tasks.bci import BCI, Chewie, Files, Stevenson, Synthetic

    typed = BCI(source=Files(files["session_a"], files["session_b"], bin_size=0.1))
    flat = make_task("bci", **files, bin_size=0.1)
    assert typed == flat and hash(typed) == hash(flat) and typed.source == "files"
    assert typed.spec == Files(files["session_a"], files["session_b"], 0.1)
    assert make_task("bci", **flat.options()) == flat  # unread options come back unset (None)
    assert BCI(source=Synthetic(n_channels=8)) == make_task("bci", n_channels=8)
    assert BCI(source=Stevenson(drift=0.2)).spec == Stevenson(drift=0.2)
    assert BCI(source=Chewie("d")).options()["drift"] is None
    with pytest.raises(ConfigurationError, match="drift given beside source=.*set them on the source object"):
        BCI(source=Files("a", "b"), drift=0.5)
    with pytest.raises(ConfigurationError, match=r"drift must lie in \[0, 1\]"):
        Synthetic(drift=1.5)
    with pytest.raises(ConfigurationError, match="source must be one of"):
        BCI(source=3)
