"""The library's switches live in one place (``sparse_rtrl.settings``): it is the only reader
of the ``SPARSE_RTRL_*`` environment variables, and each variable has a Python equivalent
that does the same as setting it."""

import ast
from pathlib import Path

import pytest

import sparse_rtrl
from sparse_rtrl import settings
from sparse_rtrl.errors import ConfigurationError
from sparse_rtrl.tasks import bci
from sparse_rtrl.transport import _cpu_kernels, _kernel_cache

ROOT = Path(sparse_rtrl.__file__).resolve().parent


def environment_reads(path: Path) -> list[tuple[int, str]]:
    """(line, key) of every read of the environment in a module; key "?" when it is not a
    string literal (``os.environ[name]``, ``os.environ.get(name)``, ``os.getenv(name)``)."""
    reads = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        env = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "getenv" or (f.attr in ("get", "setdefault", "pop") and _is_environ(f.value)):
                env = node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            env = node.slice
        elif isinstance(node, ast.Name) and node.id == "environ":
            env = ...  # `from os import environ`: any use counts
        if env is not None:
            key = env.value if isinstance(env, ast.Constant) and isinstance(env.value, str) else "?"
            reads.append((node.lineno, key))
    return reads


def _is_environ(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def test_only_settings_reads_the_sparse_rtrl_variables():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "settings.py" and path.parent == ROOT:
            continue
        for line, key in environment_reads(path):
            if key == "?" or key.startswith("SPARSE_RTRL"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} reads {key}")
    assert not offenders, "read it through sparse_rtrl.settings: " + "; ".join(offenders)


def test_the_scan_sees_a_read():  # the check above can fail
    reads = environment_reads(ROOT / "settings.py")
    assert any(key == "XDG_CACHE_HOME" for _, key in reads) and any(key == "?" for _, key in reads)


def test_every_variable_is_named_in_the_docs_table():
    table = (ROOT.parents[1] / "docs" / "architecture.md").read_text()
    for name, variable in settings.VARIABLES.items():
        assert f"`{variable}`" in table and f"{name}=" in table


def test_using_disables_the_compiled_kernels_as_the_variable_does(monkeypatch):
    monkeypatch.delenv(settings.VARIABLES["compiled_kernels"], raising=False)
    monkeypatch.setattr(_cpu_kernels, "reason", None)
    with settings.using(compiled_kernels=False):
        assert _cpu_kernels.disabled() and _cpu_kernels.get() is None
        assert "compiled_kernels=False" in _cpu_kernels.reason
    assert not _cpu_kernels.disabled()
    monkeypatch.setenv(settings.VARIABLES["compiled_kernels"], "1")
    assert _cpu_kernels.disabled()
    with settings.using(compiled_kernels=True):  # the Python setting wins over the environment
        assert not _cpu_kernels.disabled()


def test_using_sets_the_cache_and_data_folders(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.VARIABLES["cache_dir"], str(tmp_path / "env"))
    assert _kernel_cache.user_dir() == str(tmp_path / "env")
    with settings.using(cache_dir=tmp_path / "mine"):
        assert _kernel_cache.user_dir() == str(tmp_path / "mine")
    monkeypatch.delenv(settings.VARIABLES["cache_dir"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _kernel_cache.user_dir() == str(tmp_path / "xdg" / "sparse_rtrl")

    monkeypatch.setenv(settings.VARIABLES["data_dir"], str(tmp_path / "data"))
    assert bci.default_data_dir() == tmp_path / "data"
    with settings.using(data_dir=tmp_path / "other"):
        assert bci.default_data_dir() == tmp_path / "other"
        assert bci.data_files("stevenson")[0].parent == tmp_path / "other"
    assert bci.default_data_dir() == tmp_path / "data"


def test_using_restores_on_error_and_refuses_unknown_names(monkeypatch):
    monkeypatch.delenv(settings.VARIABLES["ensembles"], raising=False)
    with pytest.raises(RuntimeError):
        with settings.using(ensembles=False):
            assert not settings.ensembles_enabled()
            raise RuntimeError
    assert settings.ensembles_enabled()
    with pytest.raises(ConfigurationError, match="unknown settings.*use data_dir"):
        with settings.using(kernels=False):
            pass
