"""Where the tests find the real recordings, and what a skipped test tells a fresh clone.

The folder is ``$SPARSE_RTRL_DATA`` if set (the variable the library reads too), else
``shared/data`` beside the repository. The recordings are never part of the repository, so
a fresh clone skips these tests with a message that says where to get the files and how to
point the tests at them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SPARSE_RTRL_DATA"
SHARED = Path(os.environ[ENV]) if os.environ.get(ENV) else Path(__file__).resolve().parents[2] / "shared" / "data"

#: file → where it comes from (docs/data.md, "Provenance and citation of the shared recordings")
ORIGIN = {
    "stevenson2011_m1.mat": "data/m1_stevenson_2011.mat of github.com/KordingLab/spykesML, saved under this name",
    "chewie_2013-10-03_bin100ms_moving.npz": "github.com/nerdslab/myow-neuro (data/mihi-chewie), converted to .npz",
    "chewie_2013-12-19_bin100ms_moving.npz": "github.com/nerdslab/myow-neuro (data/mihi-chewie), converted to .npz",
    "chewie_2013-10-03_bin100ms.npz": "github.com/nerdslab/myow-neuro (data/mihi-chewie), converted to .npz",
}


def absent_reason(*names: str) -> str | None:
    """None if every file is in :data:`SHARED`, else the skip message for a fresh clone."""
    missing = [n for n in names if not (SHARED / n).is_file()]
    if not missing:
        return None
    origins = "; ".join(f"{n}: {ORIGIN.get(n, 'see docs/data.md')}" for n in missing)
    return (f"real recording(s) {', '.join(missing)} not found in {SHARED}. To run this test, put the "
            f"file(s) in one folder and set {ENV}=/path/to/that/folder (or place them in shared/data "
            f"beside the repository); sources and layout: docs/data.md, section 'Provenance and citation "
            f"of the shared recordings' ({origins})")


def needs(*names: str):
    """A skipif marker for tests that read these recordings."""
    reason = absent_reason(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def shared_file(name: str) -> Path:
    """The recording's path, or skip the calling test with :func:`absent_reason`."""
    reason = absent_reason(name)
    if reason is not None:
        pytest.skip(reason)
    return SHARED / name
