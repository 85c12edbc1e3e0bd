"""The kernel cache never loads code from a folder another user could write: folders are
created 0700, foreign or group/other-writable ones are refused, the fallback is a fresh
mkdtemp folder (never a fixed path), a fallback to the torch path warns once, and
``numeric_path`` says which path computes."""

import os
import stat
import tempfile
import warnings

import pytest
import torch

from sparse_rtrl import cli
from sparse_rtrl.fused import _kernel as fused_kernel
from sparse_rtrl.transport import _cpu_kernels, _kernel_cache, kernels

POSIX = hasattr(os, "getuid")
pytestmark = pytest.mark.skipif(not POSIX, reason="file owners and modes are POSIX")


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tried to build or load the kernels yet."""
    monkeypatch.setattr(_cpu_kernels, "_lib", None)
    monkeypatch.setattr(_cpu_kernels, "_tried", False)
    monkeypatch.setattr(_cpu_kernels, "reason", None)
    monkeypatch.setattr(_kernel_cache, "_temporary", None)
    monkeypatch.setattr(fused_kernel, "_lib", None)
    monkeypatch.setattr(fused_kernel, "_tried", False)
    monkeypatch.delenv("SPARSE_RTRL_NO_EXTENSION", raising=False)
    return monkeypatch


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_cache_folder_is_created_private(fresh, tmp_path):
    root = tmp_path / "new" / "cache"
    fresh.setenv("SPARSE_RTRL_CACHE", str(root))
    path, note = _kernel_cache.locate("lib.so")
    assert note is None and os.path.dirname(path) == str(root)
    assert mode(root) == 0o700 and os.stat(root).st_uid == os.getuid()


@pytest.mark.parametrize("bits", [0o770, 0o707, 0o777])
def test_a_group_or_other_writable_cache_folder_is_refused(fresh, tmp_path, bits):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(bits)
    fresh.setenv("SPARSE_RTRL_CACHE", str(root))
    with pytest.raises(_cpu_kernels.KernelBuildError, match="writable by group or others.*chmod go-w"):
        _cpu_kernels.build()
    assert os.listdir(root) == []  # nothing compiled into it


@pytest.mark.skipif(not POSIX or os.getuid() != 0, reason="handing a folder to another user needs root")
def test_a_cache_folder_owned_by_another_user_is_refused(fresh, tmp_path):
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, 4242, -1)
    fresh.setenv("SPARSE_RTRL_CACHE", str(root))
    with pytest.raises(_cpu_kernels.KernelBuildError, match="owned by user id 4242"):
        _cpu_kernels.build()


def test_a_planted_writable_library_is_not_loaded(fresh, tmp_path):
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    fresh.setenv("SPARSE_RTRL_CACHE", str(root))
    real = _cpu_kernels.build()  # a genuine library, then made writable by others
    os.chmod(real, 0o666)
    fresh.setattr(_cpu_kernels, "_tried", False)
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        assert _cpu_kernels.get() is None


def test_an_unusable_cache_falls_back_to_a_fresh_private_temporary_folder(fresh, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    fresh.setenv("SPARSE_RTRL_CACHE", str(blocker / "cache"))  # cannot be created
    # the fixed path older versions used: another user could have made it first
    predictable = os.path.join(tempfile.gettempdir(), f"sparse_rtrl-{os.getuid()}")
    with pytest.warns(RuntimeWarning, match="private temporary folder"):
        path = _cpu_kernels.build()
    folder = os.path.dirname(path)
    assert folder != predictable and os.path.basename(folder).startswith("sparse_rtrl-kernels-")
    assert mode(folder) == 0o700 and os.stat(folder).st_uid == os.getuid()
    assert _kernel_cache.locate("other.so")[0].startswith(folder)  # one folder per process


def test_the_torch_fallback_warns_once_naming_build_kernels(fresh, tmp_path):
    fresh.setenv("CC", "/nonexistent/compiler")
    fresh.setenv("SPARSE_RTRL_CACHE", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="sparse-rtrl build-kernels") as record:
        assert _cpu_kernels.get() is None
    assert len(record) == 1 and "no C compiler" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cpu_kernels.get() is None  # said once
        assert kernels.numeric_path() == "torch"


def test_the_environment_switch_is_silent(fresh):
    fresh.setenv("SPARSE_RTRL_NO_EXTENSION", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.numeric_path("cpu") == "torch"


def test_numeric_path_names_the_code_that_computes():
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    if _cpu_kernels.get() is None:
        assert kernels.numeric_path() == "torch"
    else:
        assert kernels.numeric_path() == ("c-kernels(fma)" if {"avx2", "fma"} <= flags else "c-kernels") + " v2"
    assert kernels.numeric_path(torch.device("meta")) == "torch"  # not a CPU tensor


def test_build_kernels_command(fresh, tmp_path, capsys):
    root = tmp_path / "cache"
    fresh.setenv("SPARSE_RTRL_CACHE", str(root))
    assert cli.main(["build-kernels"]) == 0
    out = capsys.readouterr().out
    built = sorted(p for p in os.listdir(root) if p.endswith(".so"))  # the fused step's and the products'
    assert [b.split("_")[2] for b in built] == ["fused", "kernels"]
    assert all(str(root / b) in out for b in built) and kernels.numeric_path() in out
    assert fused_kernel.get() is not None
    root.chmod(0o777)
    fresh.setattr(_cpu_kernels, "_tried", False)
    assert cli.main(["build-kernels"]) == 2
    assert "writable by group or others" in capsys.readouterr().err


def test_a_linked_cache_is_used_by_its_real_path_and_a_linked_library_is_refused(fresh, tmp_path):
    """A link could be repointed between the check and the load: the folder is resolved once
    and only its real path is used; a library that is itself a link is refused."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    fresh.setenv("SPARSE_RTRL_CACHE", str(tmp_path / "link"))
    path, note = _kernel_cache.locate("lib.so")
    assert note is None and os.path.dirname(path) == str(real)
    (real / "elsewhere.so").write_bytes(b"")
    (real / "lib.so").symlink_to(real / "elsewhere.so")
    with pytest.raises(_kernel_cache.CacheError, match="is a symbolic link"):
        _kernel_cache.check_private(str(real / "lib.so"), folder=False)


def test_build_kernels_refuses_a_cache_it_cannot_keep(fresh, tmp_path, capsys):
    fresh.setenv("SPARSE_RTRL_CACHE", "/proc/no-such-folder/cache")  # cannot be created
    assert cli.main(["build-kernels"]) == 2
    err = capsys.readouterr().err
    assert "cannot create the cache folder" in err and "SPARSE_RTRL_CACHE" in err
