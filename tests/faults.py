"""Fault injection for testing that sweeps survive lost workers (test code, not the package)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sparse_rtrl.experiments.runner import execute


def crash_once(markers: Path):
    """A job function that kills its worker process on a job's first attempt when the job's
    seed (or a seed of its group) is odd, and runs it normally on the retry; ``markers``
    remembers the first attempts. A closure, so Ray ships it to workers by value."""
    markers = Path(markers)

    def job(spec):
        seeds = getattr(spec, "seeds", None) or [spec.seed]
        if any(s % 2 == 1 for s in seeds):
            ident = (f"{type(spec).__name__}-{spec.experiment.name}-{list(seeds)}-{getattr(spec, 'method', None)}-"
                     f"{getattr(spec, 'lr', None)}")
            marker = markers / hashlib.sha256(ident.encode()).hexdigest()[:16]
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(ident)
                os._exit(1)  # the worker dies mid-run, as on a lost node
        return execute(spec)

    return job
