"""The results store of a sweep: where every file lives (``Layout``), the identity of a run
(``run_key``), atomic JSON I/O and ``load_results``, which reads a finished or partial sweep
for the report. A leaf of the driver: the report reads results through it without importing
the runner, its executors or torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import FROZEN, Experiment, Method, stable_hash

FORMAT = 1  # bump when result files change meaning


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file beside ``path`` and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or corrupt: the run is redone


def format_lr(lr: float) -> str:
    return f"{lr:.3g}"


class Layout:
    """Where every file of a sweep lives under ``out``."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def snapshot(self, exp: Experiment, seed: int) -> Path:
        return self.out / "snapshots" / exp.pretrain_key() / f"seed{seed}.pt"

    def snapshot_summary(self, exp: Experiment, seed: int) -> Path:
        return self.snapshot(exp, seed).with_suffix(".json")

    def validation(self, exp: Experiment, lr: float, seed: int, method: Method | None = None) -> Path:
        """A validation run; per method (``lr_per_method``) under the method's label."""
        folder = self.out / "runs" / exp.name / "validation"
        if exp.lr_per_method and method is not None:
            folder = folder / method.label
        return folder / f"lr{format_lr(lr)}" / f"seed{seed}.json"

    def evaluation(self, exp: Experiment, method: Method, seed: int) -> Path:
        return self.out / "runs" / exp.name / method.label / f"seed{seed}.json"

    def lr_choice(self, exp: Experiment) -> Path:
        return self.out / "runs" / exp.name / "lr.json"

    def sweep(self) -> Path:
        return self.out / "sweep.json"


RUN_KEY_EXCLUDES = ("name", "claims", "methods", "seeds", "validation_seeds", "lr_grid", "lr_rule",
                    "lr_reference", "lr_per_method", "lr_extend", "optimizer", "dtype")


def run_key(kind: str, exp: Experiment, seed: int, method: Method | None = None, lr: float | None = None) -> str:
    """Identity of a run: everything its numbers depend on, nothing else — not the method's
    label nor the experiment's name, so identical runs of two experiments are done once."""
    if kind == "pretrain":
        return stable_hash({"format": FORMAT, "kind": kind, "pretrain": exp.pretrain_key(), "seed": seed})
    fields = {k: v for k, v in exp.to_dict().items() if k not in RUN_KEY_EXCLUDES}
    how = None
    if method is not None:
        frozen = method.rule == FROZEN
        how = {"rule": method.rule, "options": method.options,
               "optimizer": None if frozen else (method.optimizer or exp.optimizer),
               "dtype": method.dtype or exp.dtype}
        lr = None if frozen else lr
    return stable_hash({"format": FORMAT, "kind": kind, "exp": fields, "seed": seed, "method": how, "lr": lr})


def load_results(out: Path | str) -> dict:
    """Every result file of a sweep, as {experiment: {"config": ..., "lr": the lr.json record,
    "methods": {label: {seed: result}}, "snapshots": {seed: summary}}}, plus the profile."""
    layout = Layout(Path(out))
    sweep = read_json(layout.sweep())
    if sweep is None:
        raise FileNotFoundError(f"{layout.sweep()} is missing: is {out} the --out directory of a sweep?")
    experiments = [experiment_from_dict(d) for d in sweep["experiments"]]
    data = {"profile": sweep["profile"], "experiments": {}}
    for exp in experiments:
        entry = {"config": exp, "lr": read_json(layout.lr_choice(exp)), "methods": {}, "snapshots": {}}
        for method in exp.methods:
            runs = {}
            for seed in exp.seeds:
                r = read_json(layout.evaluation(exp, method, seed))
                if r is not None and r.get("key") == run_key("adapt", exp, seed, method, r.get("lr")):
                    runs[seed] = r["result"]
            entry["methods"][method.label] = runs
        for seed in exp.seeds:
            s = read_json(layout.snapshot_summary(exp, seed))
            if s is not None:
                entry["snapshots"][seed] = s["result"]
        data["experiments"][exp.name] = entry
    return data


def experiment_from_dict(d: dict) -> Experiment:
    d = dict(d)
    d["methods"] = tuple(Method(**m) for m in d["methods"])
    for key in ("claims", "lr_grid", "validation_seeds", "seeds", "diagnostics"):
        d[key] = tuple(d[key])
    return Experiment(**d)
