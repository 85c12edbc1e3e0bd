"""The private folder the compiled CPU kernels are cached in, and the checks that keep it safe.

A shared library loaded from a folder is code run in this process, so the folder must be
one that no other user can write to:

* the folder is ``$SPARSE_RTRL_CACHE`` if set, else ``$XDG_CACHE_HOME/sparse_rtrl``, else
  ``~/.cache/sparse_rtrl``; it is created with mode 0700;
* an existing folder is used only if it is a directory owned by this user and not writable
  by group or others (else :class:`CacheError`, naming the owner or mode and the fix);
* when the user's folder cannot be created or written (a read-only home, a container), a
  fresh folder from :func:`tempfile.mkdtemp` is used for this process only (mode 0700, an
  unpredictable name, removed at exit), never a fixed path under the temp dir that another
  user could create first;
* a cached library file is loaded only if it too is owned by this user and not writable by
  group or others.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import tempfile

from .. import settings
from ..errors import ConfigurationError

#: set to a private folder to keep the compiled kernels there
CACHE_ENV = settings.VARIABLES["cache_dir"]


class CacheError(ConfigurationError):
    """The kernel cache folder (or a file in it) is not safe to load code from."""


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None  # no owners to check on Windows


def check_private(path: str, folder: bool = True) -> None:
    """Raise :class:`CacheError` unless ``path`` is owned by this user and not writable by
    group or others (and, for a folder, is a directory)."""
    what = "kernel cache folder" if folder else "cached kernel library"
    st = os.lstat(path)  # a link is not followed: its target could be swapped after the check
    if stat.S_ISLNK(st.st_mode):
        raise CacheError(f"the {what} {path} is a symbolic link: give its real path in {CACHE_ENV} "
                         "(a link could be repointed between the check and the load)")
    if folder and not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the {what} {path} is not a directory: remove it or set {CACHE_ENV} "
                         "to a private folder")
    uid = _uid()
    if uid is None:
        return
    if st.st_uid != uid:
        raise CacheError(
            f"the {what} {path} is owned by user id {st.st_uid}, not by you ({uid}): another user "
            f"could place code there; set {CACHE_ENV} to a folder of your own (mode 0700) and run "
            "`sparse-rtrl build-kernels`")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(
            f"the {what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):03o}): "
            f"another user could place code there; run `chmod go-w {path}` (or set {CACHE_ENV} to a "
            "private folder)")


def user_dir() -> str:
    """The configured cache folder (not created; see :func:`sparse_rtrl.settings.cache_dir`)."""
    return settings.cache_dir()


_temporary: str | None = None


def _temporary_dir() -> str:
    """A fresh 0700 folder with an unpredictable name, for this process, removed at exit."""
    global _temporary
    if _temporary is None:
        _temporary = tempfile.mkdtemp(prefix="sparse_rtrl-kernels-")
        atexit.register(shutil.rmtree, _temporary, True)
    return _temporary


def locate(filename: str) -> tuple[str, str | None]:
    """(path, note): where to find or build ``filename``, and None or a note saying why a
    temporary folder is used instead of the user's one.

    A library already in the user's folder is used even when the folder is read-only (built
    ahead with ``sparse-rtrl build-kernels``). Raises :class:`CacheError` when the user's
    folder exists but is not private: that is a possible attack, so it is refused rather
    than silently replaced.
    """
    root = os.path.realpath(user_dir())  # links in the path resolved once; the folder itself is checked
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as err:
        return os.path.join(_temporary_dir(), filename), f"cannot create the cache folder {root} ({err.strerror})"
    check_private(root)
    path = os.path.join(root, filename)
    if not os.path.exists(path) and not os.access(root, os.W_OK | os.X_OK):
        return os.path.join(_temporary_dir(), filename), f"the cache folder {root} is not writable"
    return path, None
