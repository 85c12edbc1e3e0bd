"""The command line: errors are one line on stderr with exit code 2 (tracebacks only with
--debug), ``reproduce`` checks what it needs before its first run, and ``rules`` lists each
rule's whole first sentence and only the options the rule takes."""

import argparse
import dataclasses
import importlib.util
import inspect
import sys
import time
from pathlib import Path

import pytest

import sparse_rtrl.experiments as experiments_pkg
from sparse_rtrl import cli
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.transport import RULES, make_transport

ROOT = Path(__file__).resolve().parents[1]


class NoSweep:
    """Stands in for Sweep: any construction means a run would have started."""

    built = 0

    def __init__(self, *a, **kw):
        type(self).built += 1

    def run(self):
        return True


@pytest.fixture
def no_sweep(monkeypatch):
    NoSweep.built = 0
    monkeypatch.setattr(experiments_pkg, "Sweep", NoSweep)
    return NoSweep


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


# -- reproduce: the preflight ---------------------------------------------------------------------
def test_missing_experiments_extra_fails_in_seconds_before_any_run(tmp_path, monkeypatch, capsys, no_sweep):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    t0 = time.perf_counter()
    rc = cli.main(["reproduce", "--only", "C1", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and time.perf_counter() - t0 < 30
    err = one_error_line(capsys)
    assert "matplotlib" in err and "pip install -e '.[experiments]'" in err
    assert no_sweep.built == 0 and not (tmp_path / "o").exists()


def test_ray_executor_without_ray_fails_before_any_run(tmp_path, monkeypatch, capsys, no_sweep):
    monkeypatch.setitem(sys.modules, "ray", None)
    rc = cli.main(["reproduce", "--only", "C1", "--out", str(tmp_path / "o"), "--executor", "ray", "--quiet"])
    assert rc == 2 and no_sweep.built == 0
    assert "pip install -e '.[ray]'" in one_error_line(capsys)


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_below_one_are_refused_at_parse_time(workers, capsys, no_sweep):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "--workers", workers])
    assert exit_.value.code == 2 and no_sweep.built == 0
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, -1])
def test_executors_refuse_workers_below_one(workers):
    from sparse_rtrl.experiments.executors import LocalExecutor

    with pytest.raises(ConfigurationError, match="≥ 1"):
        LocalExecutor(workers)


def test_missing_session_files_fail_before_any_run(tmp_path, capsys, no_sweep):
    a, b = tmp_path / "day1.npz", tmp_path / "day2.npz"
    rc = cli.main(["reproduce", "--only", "C9", "--out", str(tmp_path / "o"), "--quiet",
                   "--session-a", str(a), "--session-b", str(b)])
    assert rc == 2 and no_sweep.built == 0
    err = one_error_line(capsys)
    assert "day1.npz" in err and "no such file" in err


def test_unwritable_out_fails_before_any_run(tmp_path, capsys, no_sweep):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc = cli.main(["reproduce", "--only", "C1", "--out", str(blocker / "o"), "--quiet"])
    assert rc == 2 and no_sweep.built == 0
    assert "is a file" in one_error_line(capsys)


def test_preflight_passes_and_reports_the_numerics(tmp_path, monkeypatch, capsys, no_sweep):
    import sparse_rtrl.experiments.report as report_mod
    import torch

    from sparse_rtrl.transport.kernels import numeric_path

    monkeypatch.setattr(report_mod, "build_report", lambda out: out / "report.md")
    assert cli.main(["reproduce", "--only", "C1", "--out", str(tmp_path / "o")]) == 0
    assert no_sweep.built == 1
    assert f"numeric path {numeric_path()}, torch {torch.__version__}" in capsys.readouterr().out


# -- one error policy -----------------------------------------------------------------------------
def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in one_error_line(capsys)
    assert cli.main(["report", str(tmp_path)]) == 2  # a folder that is not a sweep's
    assert "sweep.json is missing" in one_error_line(capsys)


def test_report_without_the_experiments_extra_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "pip install -e '.[experiments]'" in one_error_line(capsys)


def test_debug_shows_the_error_itself(tmp_path):
    for argv in (["--debug", "report", str(tmp_path / "missing")], ["report", str(tmp_path / "missing"), "--debug"]):
        with pytest.raises(cli.CommandError, match="no such folder"):
            cli.main(argv)


@pytest.mark.parametrize("raised, code, text", [
    (SystemExit("a message from a subcommand"), 2, "error: a message from a subcommand"),
    (ConfigurationError("bad option; fix it"), 2, "error: bad option; fix it"),
    (FileNotFoundError("gone.txt"), 2, "error: gone.txt"),
    (KeyError("bug"), 1, "internal error: KeyError"),
])
def test_every_error_goes_through_one_handler(raised, code, text, capsys):
    def command(args):
        raise raised

    assert cli.run(argparse.Namespace(func=command, debug=False)) == code
    err = one_error_line(capsys)
    assert err.startswith("sparse-rtrl:") and text in err
    with pytest.raises(type(raised)):
        cli.run(argparse.Namespace(func=command, debug=True))


def test_example_without_data_says_where_to_put_it(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bci_realtime", ROOT / "examples" / "bci_realtime.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--source", "chewie", "--data-dir", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert str(tmp_path) in err and "SPARSE_RTRL_DATA" in err


# -- rules ----------------------------------------------------------------------------------------
def test_rules_print_whole_first_sentences_and_real_options(capsys):
    assert cli.main(["rules"]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    blocks = {}
    for line in out.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
        blocks.setdefault(name, []).append(line)
    assert set(blocks) == set(RULES)
    for name, cls in RULES.items():
        first = " ".join(inspect.cleandoc(cls.__doc__).split("\n\n")[0].split())
        assert first in flat, name  # the whole first paragraph, not its first line
        block = " ".join(" ".join(blocks[name]).split())
        options = block.split("options: ", 1)[1]
        fields = [f.name for f in dataclasses.fields(cls) if f.init]
        assert [o.split("=")[0].split(" (")[0] for o in options.split(", ")] == (fields or ["none"]), name
    assert "options: none" in " ".join(blocks["immediate"])


def test_immediate_takes_no_decay_option():
    with pytest.raises(ConfigurationError, match="has no option"):
        make_transport("immediate", decay=0.0)
    assert make_transport("immediate").name == "immediate"
