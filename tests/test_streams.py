"""sparse-rtrl stream: bad input gets one line naming the line and column; runs on a CSV
and a river dataset; the forecasts are causal and the reported errors are those of the file."""

import csv
import json
import sys

import numpy as np
import pytest

from sparse_rtrl import ConfigurationError, cli
from sparse_rtrl.streams import ForecastingStream, Series, StreamConfig, forecast, read_csv
from sparse_rtrl.streams.series import running_moments


def _write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _csv_text(T=40, seed=0):
    g = np.random.default_rng(seed)
    a = g.standard_normal(T)
    y = np.convolve(a, [0.0, 1.0, 0.5])[:T] + 10
    return "a,y\n" + "".join(f"{float(a[t])!r},{float(y[t])!r}\n" for t in range(T))


def _stream_cli(capsys, *args):
    rc = cli.main(["stream", *map(str, args), "--quiet"])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("text,target,message", [
    ("", "y", "is empty: expected a header row"),
    ("a,y\n", "y", "has a header but no data rows"),
    ("a,y\n1,2\n", "z", "no column 'z' for --target; the columns are: a, y"),
    ("a,y\n1,2\n3,abc\n", "y", "line 3, column 'y': 'abc' is not a number"),
    ("a,y\n1,2\nNaN,4\n", "y", "line 3, column 'a': 'NaN' is not a finite number: drop or fill that row"),
    ("a,y\n1,2\n3,\n", "y", "line 3, column 'y': empty value"),
    ("a,y\n1,2\n3,4,5\n", "y", "line 3: 3 fields, but the header has 2"),
    ("a,y\n\n1,2\n2,x\n", "y", "line 4, column 'y': 'x' is not a number"),  # blank lines counted
    ("a,a,y\n1,2,3\n", "y", "names column(s) 'a' more than once"),
])
def test_bad_csv_is_one_line_naming_the_place_exit_2(tmp_path, capsys, text, target, message):
    path = _write(tmp_path, text)
    rc, out, err = _stream_cli(capsys, path, "--target", target, "--out", tmp_path / "out")
    assert rc == 2
    assert err.count("\n") == 1 and message in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_other_bad_sources(tmp_path, capsys):
    rc, _, err = _stream_cli(capsys, tmp_path / "none.csv", "--target", "y", "--out", tmp_path / "o")
    assert rc == 2 and "no such file" in err
    rc, _, err = _stream_cli(capsys, _write(tmp_path, "a,y\n1,2\n"), "--out", tmp_path / "o")
    assert rc == 2 and "--target COLUMN" in err
    rc, _, err = _stream_cli(capsys, _write(tmp_path, "a,y\n1,2\n"), "--target", "y", "--features", "b",
                             "--out", tmp_path / "o")
    assert rc == 2 and "no column 'b' for --features" in err
    pytest.importorskip("river")
    rc, _, err = _stream_cli(capsys, "river:NoSuchSet", "--out", tmp_path / "o")
    assert rc == 2 and "river has no dataset 'NoSuchSet'" in err and "TrumpApproval" in err
    rc, _, err = _stream_cli(capsys, "river:drift.Occupancy", "--out", tmp_path / "o")
    assert rc == 2 and "needs --target: choose one of V1, V2, V3, V4" in err
    rc, _, err = _stream_cli(capsys, "river:TrumpApproval", "--rule", "full", "--k", "3", "--out", tmp_path / "o")
    assert rc == 2 and "k applies to rule='sparse' only" in err


def test_csv_run_writes_what_it_reports(tmp_path, capsys):
    path = _write(tmp_path, _csv_text())
    rc, out, err = _stream_cli(capsys, path, "--target", "y", "--hidden", 8, "--lr", 0.01, "--out", tmp_path / "out")
    assert rc == 0, err
    with (tmp_path / "out" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [int(r["row"]) for r in rows] == list(range(2, 40))  # two warm-up rows
    y = np.array([float(r["y"]) for r in rows])
    y_hat = np.array([float(r["y_hat"]) for r in rows])
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    assert np.array_equal(y, data[2:, 1])
    assert summary["mae"] == pytest.approx(np.abs(y_hat - y).mean(), rel=1e-12)
    assert summary["rmse"] == pytest.approx(np.sqrt(((y_hat - y) ** 2).mean()), rel=1e-12)
    assert float(rows[-1]["running_mae"]) == pytest.approx(summary["mae"], rel=1e-12)
    assert summary["last_value_mae"] == pytest.approx(np.abs(data[2:, 1] - data[1:-1, 1]).mean())
    assert (tmp_path / "out" / "plot.png").stat().st_size > 1000


@pytest.mark.parametrize("difference", [False, True])
def test_forecasts_are_causal(tmp_path, difference):
    """Changing y at row t changes no forecast up to row t and the forecasts after it."""
    series = read_csv(_write(tmp_path, _csv_text(30)), "y")
    config = StreamConfig(hidden=6, lr=0.01, difference=difference)
    base = forecast(series, config)
    y = series.y.copy()
    y[20] += 5.0
    moved = forecast(Series(series.name, series.target, series.features, series.X, y), config)
    upto = base.rows <= 20
    assert np.array_equal(base.y_hat[upto], moved.y_hat[upto])
    assert not np.allclose(base.y_hat[~upto], moved.y_hat[~upto])


def test_running_moments_match_numpy_on_prefixes():
    v = np.random.default_rng(3).standard_normal((25, 2)) * [1.0, 100.0] + [0.0, 1e6]
    m, s = running_moments(v, include_current=True)
    mp, sp = running_moments(v, include_current=False)
    for t in range(2, 25):
        assert np.allclose(m[t], v[: t + 1].mean(0), rtol=1e-12)
        assert np.allclose(s[t], v[: t + 1].std(0, ddof=1), rtol=1e-9)
        assert np.allclose(mp[t], v[:t].mean(0), rtol=1e-12) and np.allclose(sp[t], v[:t].std(0, ddof=1), rtol=1e-9)
    assert np.array_equal(s[0], [1.0, 1.0]) and np.array_equal(mp[0], [0.0, 0.0])


def test_unscale_inverts_the_scaling():
    series = Series("x", "y", (), np.zeros((12, 0)), np.arange(12.0) ** 2)
    for difference in (False, True):
        fs = ForecastingStream.from_series(series, difference=difference)
        rows = np.arange(fs.warmup, 12)
        assert np.allclose(fs.unscale(fs.targets[rows], rows), series.y[rows])


def test_river_dataset_run(tmp_path, capsys):
    pytest.importorskip("river")
    rc, out, err = _stream_cli(capsys, "river:drift.UKCoalEmploy", "--difference", "--hidden", 8,
                               "--out", tmp_path / "uk")
    assert rc == 0, err
    summary = json.loads((tmp_path / "uk" / "summary.json").read_text())
    assert summary["rows"] == 105 and summary["scored_rows"] == 102
    assert summary["change_points"] == [15, 27, 45, 60, 68, 80]  # the TCPD annotations
    assert np.isfinite(summary["mae"])


def test_no_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "sparse_rtrl.streams.plot", raising=False)
    rc, out, _ = _stream_cli(capsys, _write(tmp_path, _csv_text(10)), "--target", "y", "--hidden", 4,
                             "--out", tmp_path / "o")
    assert rc == 0 and "no plot: matplotlib is not installed" in out
    assert not (tmp_path / "o" / "plot.png").exists()


def test_a_byte_order_mark_and_spaced_features_are_read(tmp_path, capsys):
    """Excel's "CSV UTF-8" starts with a byte-order mark; --features "a, b" has spaces."""
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffa,b,y\n" + "".join(f"{t},{t % 3},{t % 5}\n" for t in range(30)), encoding="utf-8")
    rc, out, err = _stream_cli(capsys, path, "--target", "y", "--features", "a, b", "--out", tmp_path / "o")
    assert rc == 0, err


def test_a_stream_without_inputs_is_a_user_error_and_debug_shows_the_traceback(tmp_path, capsys):
    path = _write(tmp_path, "y\n" + "".join(f"{t % 4}\n" for t in range(20)))
    rc, out, err = _stream_cli(capsys, path, "--target", "y", "--no-lagged-target", "--out", tmp_path / "o")
    assert rc == 2 and "no inputs" in err and "internal error" not in err and err.count("\n") == 1
    with pytest.raises(Exception, match="no inputs"):
        cli.main(["--debug", "stream", str(path), "--target", "y", "--no-lagged-target", "--out",
                  str(tmp_path / "o"), "--quiet"])


@pytest.mark.parametrize("rule,optimizer", [("sparse", "adam"), ("full", "sgd"), ("snap1", "adam")])
def test_the_fused_engine_forecasts_what_the_learner_does(tmp_path, rule, optimizer):
    """engine="auto" steps a vanilla model by the fused step: the same forecasts as the learner
    path to float64 round-off; an LSTM (or rmsprop) falls back to the learner, and
    engine="fused" then says why."""
    series = read_csv(_write(tmp_path, _csv_text(40)), "y")
    config = StreamConfig(hidden=6, lr=0.01, rule=rule, optimizer=optimizer)
    fused = forecast(series, config)
    plain = forecast(series, StreamConfig(hidden=6, lr=0.01, rule=rule, optimizer=optimizer, engine="learner"))
    assert (fused.engine, plain.engine) == ("fused", "learner")
    assert np.array_equal(fused.rows, plain.rows)
    np.testing.assert_allclose(fused.y_hat, plain.y_hat, rtol=1e-10, atol=1e-12)
    assert forecast(series, StreamConfig(hidden=6, cell="lstm")).engine == "learner"
    with pytest.raises(ConfigurationError, match="rmsprop"):
        forecast(series, StreamConfig(hidden=6, optimizer="rmsprop", engine="fused"))
