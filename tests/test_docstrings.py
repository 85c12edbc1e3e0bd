"""Every ``>>>`` example in the package's docstrings runs and prints what it says: found by
scanning the source, so a new example is covered without being listed here."""

import doctest
import importlib
from pathlib import Path

import pytest

import sparse_rtrl

ROOT = Path(sparse_rtrl.__file__).resolve().parent
MODULES = sorted(
    "sparse_rtrl." + ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in ROOT.rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)


def test_examples_are_found():
    assert "sparse_rtrl.learner" in MODULES  # the scan works: the learner's example is there


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no example was run"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
