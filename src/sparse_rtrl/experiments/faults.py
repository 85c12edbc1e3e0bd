"""Fault injection for testing that sweeps survive lost workers. Not used by real runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .runner import execute

#: directory where markers are kept; when set, every job's first attempt kills its worker
MARKERS = "SPARSE_RTRL_CRASH_ONCE_DIR"


def crash_once_then_execute(job: dict) -> dict:
    """Kill the worker process on a job's first attempt (if ``$SPARSE_RTRL_CRASH_ONCE_DIR``
    is set and the job's seed, or a seed of its group, is odd), run it normally on the retry."""
    folder = os.environ.get(MARKERS)
    seeds = job.get("seeds") or [job["seed"]]
    if folder and any(s % 2 == 1 for s in seeds):
        ident = f"{job['kind']}-{job['experiment'].name}-{seeds}-{job.get('method')}-{job.get('lr')}"
        marker = Path(folder) / hashlib.sha256(ident.encode()).hexdigest()[:16]
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(ident)
            os._exit(1)  # the worker dies mid-run, as on a lost node
    return execute(job)
