"""The methods the profiles run and the claim families read, each built once. A family refers
to a method by its object (``K4``, ``sparse(k)``, ``in_dtype(FULL, "float64")``), never by its
label, so a label is spelled in one place: here, or in the one family module that alone runs
the method. The labels are the boundary: they name the result folders and the report's rows.

A leaf: it imports nothing of the experiments but the config."""

from __future__ import annotations

from dataclasses import replace

from .config import FROZEN, READOUT, Method

#: the references every experiment compares against
FROZEN_MODEL = Method("frozen", FROZEN)
READOUT_ONLY = Method("readout", READOUT)
IMMEDIATE = Method("immediate", "immediate")
FULL = Method("full", "full")
REFERENCES = (FROZEN_MODEL, READOUT_ONLY, IMMEDIATE)


def sparse(k: int, label: str | None = None, **options) -> Method:
    """Sparse transport keeping k paths per unit, labelled "sparse k=<k>" unless ``label``."""
    return Method(label or f"sparse k={k}", "sparse", {"k": k, **options})


def tbptt(window: int) -> Method:
    return Method(f"tbptt T={window}", "tbptt", {"window": window})


def trace(decay: float) -> Method:
    return Method(f"trace {decay:g}", "trace", {"decay": decay})


def in_dtype(method: Method, dtype: str) -> Method:
    """``method`` run in ``dtype``, labelled "<label> <dtype>" (C12, T5)."""
    return replace(method, label=f"{method.label} {dtype}", dtype=dtype)


#: the k of every recovery-vs-k sweep (C4, T1 and their figures)
SWEEP_K = (1, 2, 4, 8, 16, 32)

#: k = 4, the paper's headline, and its selection strategies and mask options (C3, T2)
K4 = sparse(4)
MAGNITUDE = sparse(4, "sparse k=4 magnitude", selection="magnitude")
ADVERSARIAL = sparse(4, "sparse k=4 adversarial", selection="adversarial")
COLUMN = sparse(4, "sparse k=4 column", granularity="column")
FIXED_MASK = sparse(4, "sparse k=4 fixed mask", resample_every=0)
RESCALED = sparse(4, "sparse k=4 rescaled", rescale=True)

#: the field: the other approximations of RTRL (the baselines of C1's figures, T6)
SNAP1 = Method("snap1", "snap1")
UORO = Method("uoro", "uoro")
KF = Method("kf", "kf")
