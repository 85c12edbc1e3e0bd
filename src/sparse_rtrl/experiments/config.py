"""Experiments as data: what to run (task, model, methods, seeds, budgets) and the written
rule that picks the learning rate on validation seeds (SPEC §3)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: pseudo-rules handled by the protocol itself rather than by a transport rule
FROZEN = "frozen"  # no updates at all
READOUT = "readout"  # only the readout learns


@dataclass(frozen=True)
class Method:
    """One way of adapting: a transport rule and its options, or frozen / readout-only.

    label: the name in tables and plots (unique within an experiment).
    rule: a transport name of ``sparse_rtrl.transport.RULES``, or "frozen" / "readout".
    options: the rule's options (e.g. {"k": 4}).
    optimizer / dtype: per-method overrides of the experiment's (for C11/C12 sweeps).
    """

    label: str
    rule: str
    options: dict = field(default_factory=dict)
    optimizer: str | None = None
    dtype: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Experiment:
    """One adaptation experiment of SPEC §3 (one snapshot per seed, every method adapting
    from it on the same stream).

    Fields:
        name: identifier; result files live under ``runs/<name>/``.
        claims: the claim ids (SPEC §5) this experiment feeds.
        task / task_options: a task of ``sparse_rtrl.tasks`` and its parameters.
        cell / hidden_size / leak: the recurrent model, a name of the cell registry
            (``sparse_rtrl.cells.CELLS``: "vanilla", "lstm", "gru", or one registered with
            ``register_cell``), or "transformer" (hidden_size = d_model) for the C8 experiment.
        model_options: further model settings (e.g. heads, window for the transformer).
        dtype: "float32" or "float64" (a method may override it).
        pretrain_updates / pretrain_batch / pretrain_chunk / pretrain_lr: offline BPTT on
            regime A: that many Adam updates, each on a batch of random windows of
            ``pretrain_chunk`` steps (whole sequences for sequence tasks), from zero state
            with the first ``pretrain_burn_in`` steps of a window not scored.
        pre_shift_steps: regime-A steps streamed online before the shift (not scored; they
            show the curves around the shift).
        adapt_steps: T_a, the scored adaptation window after the shift.
        optimizer: "adam", "sgd" or "rmsprop" for the online phase.
        lr_grid: learning rates tried on the validation seeds.
        lr_rule: the written rule that picks one learning rate for all methods (see
            ``sparse_rtrl.experiments.selection``).
        lr_reference: the method whose validation runs the rule looks at (shared rate).
        lr_per_method: False — one rate for all methods, chosen on ``lr_reference``'s runs;
            True — every method gets its own rate, chosen by the same rule on its own
            validation runs.
        lr_extend: how many rates the grid may grow by when the choice falls on its edge
            (see ``selection.grow_grid``); 0 keeps the grid fixed.
        validation_seeds / seeds: never overlapping; evaluation seeds are never tuned on.
        methods: every method run on every evaluation seed.
        diagnostics: extra per-run measurements, e.g. ("jacobian_spectrum",).
        device: "cpu" or "cuda[:i]"; where the online phase runs.
    """

    name: str
    claims: tuple[str, ...]
    task: str
    task_options: dict
    cell: str
    hidden_size: int
    methods: tuple[Method, ...]
    leak: float = 1.0
    model_options: dict = field(default_factory=dict)
    dtype: str = "float32"
    pretrain_updates: int = 600
    pretrain_batch: int = 16
    pretrain_chunk: int = 50
    pretrain_burn_in: int = 10
    pretrain_lr: float = 3e-3
    pre_shift_steps: int = 200
    adapt_steps: int = 2000
    optimizer: str = "adam"
    lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    lr_rule: str = "best_stable"
    lr_reference: str = "full"
    lr_per_method: bool = False
    lr_extend: int = 0
    validation_seeds: tuple[int, ...] = (100, 101)
    seeds: tuple[int, ...] = (0, 1, 2)
    diagnostics: tuple[str, ...] = ()
    device: str = "cpu"

    def __post_init__(self):
        labels = [m.label for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"experiment {self.name!r}: method labels must be unique, got {labels}")
        if set(self.validation_seeds) & set(self.seeds):
            raise ValueError(f"experiment {self.name!r}: validation and evaluation seeds overlap")

    def method(self, label: str) -> Method:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(f"experiment {self.name!r} has no method {label!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def pretrain_key(self) -> str:
        """Hash of everything the snapshot depends on (shared by experiments that agree)."""
        keys = ("task", "task_options", "cell", "hidden_size", "leak", "model_options", "pretrain_updates",
                "pretrain_batch", "pretrain_chunk", "pretrain_burn_in", "pretrain_lr")
        return stable_hash({k: getattr(self, k) for k in keys})

    def with_(self, **changes: Any) -> "Experiment":
        return replace(self, **changes)


def stable_hash(obj: Any) -> str:
    """A short hash of JSON-serialisable data, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
