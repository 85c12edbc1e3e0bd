"""The sweep driver: plans every run of a profile (pretraining snapshots, validation runs,
evaluation runs), skips runs whose result file already exists with the same key, runs the
rest on an executor and writes each result atomically, so an interrupted sweep resumes
without losing finished runs.

Every result file records its ``numerics``: the numeric path of the sparse products
(``"c-kernels(fma) v2"``, ``"c-kernels v2"`` or ``"torch"``, see
:func:`sparse_rtrl.transport.kernels.numeric_path`) and the torch version. A finished run
counts as done only with the same key *and* the same numerics, so a resumed sweep never
mixes two numeric paths silently: by default (``numerics_change="stop"``) :meth:`Sweep.run`
stops before the first run and names the runs that differ; ``"redo"`` redoes them, ``"keep"``
keeps them (each file still says how it was computed). Files written before numerics were
recorded have no such field: they are kept as done (their key still matches) and counted in
one line. The report reads files by key only, so every older file stays readable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..cells import CELLS
from ..errors import ConfigurationError, SparseRTRLError
from .config import FROZEN, Experiment, Method
from .families import adapt_for
from .pretraining import pretrain
from .results import Layout, format_lr, read_json, run_key, write_json_atomic
from .executors import LocalExecutor
from .grouping import adapt_group, plan_groups
from .jobs import GroupJob, Job, Planned, PretrainJob, RunJob, run_count
from .preflight import numerics
from .selection import choose_lr, grow_grid

NUMERICS_CHANGES = ("stop", "redo", "keep")
#: diagnostics that change no number of a run: validation runs leave them out
ALIGNMENT_DIAGNOSTICS = ("alignment", "alignment_run")


class RunsFailed(SparseRTRLError, RuntimeError):
    """Some runs of a sweep raised; the finished ones are saved (the message lists the rest)."""


class NumericsChanged(ConfigurationError):
    """Finished runs in the output folder were computed by another numeric path or torch."""


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def execute(job: Job) -> dict | list[dict]:
    """Run one job (in a worker), dispatching on its type; returns what the driver writes —
    for a :class:`GroupJob`, one result per seed. One torch thread per job."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exp = job.experiment
        here = numerics(exp.device)
        if job.numerics is not None and here != job.numerics:  # e.g. a cluster node without a compiler
            raise NumericsChanged(f"this worker computes with {here}, the driver expects {job.numerics}: "
                                  "give every node the same torch and a C compiler (`sparse-rtrl "
                                  "build-kernels` shows why the kernels fail), or run there alone")
        match job:
            case PretrainJob():
                return pretrain(exp, job.seed).to_dict()
            case GroupJob():
                snapshots = [torch.load(path, weights_only=False) for path in job.snapshots]
                return adapt_group(exp, job.method, list(job.seeds), snapshots, job.lr)
            case RunJob():
                return adapt_for(exp)(exp, job.method, job.seed, torch.load(job.snapshot, weights_only=False), job.lr)
        raise TypeError(f"execute takes a PretrainJob, RunJob or GroupJob, got {type(job).__name__}")
    finally:
        torch.set_num_threads(threads)


def resources(job: Job) -> dict:
    """Resource hints of a job for cluster executors: one CPU, memory from the size of M
    (dense rules keep N·P numbers per stream and per member of a group of seeds), a GPU when
    the experiment runs on CUDA."""
    exp: Experiment = job.experiment
    n = exp.hidden_size
    kind = CELLS.get(exp.cell)  # None: the transformer (12 blocks of n × n weights a head)
    N = kind.halves * n if kind else n
    gates = kind.gates if kind else 12
    P = gates * n * (n + 100 + 2)  # inputs: ≤ 100 channels in every task here
    method = getattr(job, "method", None)
    dtype = (method and method.dtype) or exp.dtype
    itemsize = 8 if dtype == "float64" else 4
    hint = {"num_cpus": 1, "memory": int(2 * run_count(job) * N * P * itemsize + 400 * 2**20)}
    if exp.device.startswith("cuda"):
        hint["num_gpus"] = 1
    return hint


class Sweep:
    """All runs of a list of experiments under ``out``; :meth:`run` does what is missing.

    ``task`` is the function executed per job (``execute``; tests swap in fault injection).
    ``ensembles``: run the seeds of one (experiment, method, lr) as one ensemble job where
    that pays off (see ``grouping.groupable``); None (default) means yes unless
    ``$SPARSE_RTRL_NO_ENSEMBLE`` is set. Result files are the same either way.
    ``numerics_change``: what to do with finished runs computed by another numeric path or
    torch version ("stop", "redo" or "keep"; see the module docstring).
    ``only``: the ``--only`` words the experiments were selected by (None: all), written to
    ``sweep.json`` so the report tells claims not requested from claims whose data is absent.
    """

    def __init__(self, out: Path | str, experiments: Iterable[Experiment], executor=None,
                 profile: str = "custom", progress: bool = True, task=None, ensembles: bool | None = None,
                 numerics_change: str = "stop", only: Iterable[str] | None = None):
        if numerics_change not in NUMERICS_CHANGES:
            raise ConfigurationError(f"numerics_change={numerics_change!r}: choose one of "
                                     f"{', '.join(NUMERICS_CHANGES)}")
        self.numerics_change = numerics_change
        self._numerics: dict[str, dict] = {}
        self.layout = Layout(Path(out))
        self.experiments = list(experiments)
        self.executor = executor or LocalExecutor()
        self.task = task or execute
        self.profile = profile
        self.progress = progress
        self.ensembles = ensembles
        self.only = None if only is None else sorted(only)
        self._commit = _git_commit()

    # -- numerics -------------------------------------------------------------------------
    def numerics(self, device: str = "cpu") -> dict:
        """The numerics of a run on ``device`` in this process (computed once per device)."""
        if device not in self._numerics:
            self._numerics[device] = numerics(device)
        return self._numerics[device]

    def _recorded(self, data: dict) -> tuple[dict | None, dict]:
        """(what a result file records, what this process would record for that run)."""
        device = (data.get("config") or {}).get("device", "cpu")
        return data.get("numerics"), self.numerics(device)

    def _acceptable(self, data: dict) -> bool:
        recorded, here = self._recorded(data)
        return recorded is None or recorded == here or self.numerics_change == "keep"

    def _finished_files(self) -> list[Path]:
        """The result files of this sweep's experiments that exist (runs and snapshots)."""
        files = set()
        for exp in self.experiments:
            files.update((self.layout.out / "runs" / exp.name).rglob("seed*.json"))
            files.update((self.layout.out / "snapshots" / exp.pretrain_key()).glob("seed*.json"))
        return sorted(files)

    def numerics_survey(self) -> tuple[list[tuple[Path, dict, dict]], int]:
        """(files whose recorded numerics differ from this process's, as (path, recorded,
        here); how many files record none)."""
        differ, legacy = [], 0
        for path in self._finished_files():
            data = read_json(path)
            if data is None:
                continue
            recorded, here = self._recorded(data)
            if recorded is None:
                legacy += 1
            elif recorded != here:
                differ.append((path, recorded, here))
        return differ, legacy

    def _check_numerics(self) -> None:
        """Stop, or say what is redone or kept, before the first run (see the module doc)."""
        differ, legacy = self.numerics_survey()
        say = print if self.progress else (lambda *a, **k: None)
        if legacy:
            say(f"{legacy} finished run file(s) predate numerics recording: kept as done", file=sys.stderr)
        if not differ:
            return
        path, recorded, here = differ[0]
        what = (f"{len(differ)} finished run file(s) in {self.layout.out} were computed with numeric path "
                f"{recorded.get('numeric_path')}, torch {recorded.get('torch')} (e.g. {path}); this process "
                f"uses {here['numeric_path']}, torch {here['torch']}")
        if self.numerics_change == "stop":
            raise NumericsChanged(
                f"{what}. Restore that setup (`sparse-rtrl build-kernels` says why compiled kernels are "
                "missing), or rerun with --numerics-change redo (redo those runs) or keep (keep them: the "
                "sweep then mixes numeric paths), or use another --out")
        say(f"{what}: {'redoing' if self.numerics_change == 'redo' else 'keeping'} them", file=sys.stderr)

    # -- planning -------------------------------------------------------------------------
    def _meta(self, kind: str, exp: Experiment, seed: int, method=None, lr=None) -> dict:
        return {"key": run_key(kind, exp, seed, method, lr), "kind": kind, "experiment": exp.name,
                "seed": seed, "method": None if method is None else method.to_dict(), "lr": lr,
                "config": exp.to_dict(), "version": __version__, "git_commit": self._commit,
                "numerics": self.numerics(exp.device)}

    def _done(self, path: Path, key: str) -> bool:
        """Whether ``path`` holds the finished run ``key`` computed with acceptable numerics."""
        if path.suffix == ".pt":
            summary = read_json(path.with_suffix(".json"))
            return (path.exists() and summary is not None and summary.get("key") == key
                    and self._acceptable(summary))
        data = read_json(path)
        return data is not None and data.get("key") == key and self._acceptable(data)

    def _pretrain_jobs(self) -> list[Planned]:
        jobs, seen = [], set()
        for exp in self.experiments:
            for seed in (*exp.validation_seeds, *exp.seeds):
                path = self.layout.snapshot(exp, seed)
                key = run_key("pretrain", exp, seed)
                if path in seen or self._done(path, key):
                    continue
                seen.add(path)
                jobs.append(Planned(PretrainJob(exp, seed, self.numerics(exp.device)), path,
                                    self._meta("pretrain", exp, seed)))
        return jobs

    def _adapt_job(self, exp, method, seed, lr, path) -> Planned | None:
        key = run_key("adapt", exp, seed, method, lr)
        if self._done(path, key):
            return None
        job = RunJob(exp, method, seed, lr, str(self.layout.snapshot(exp, seed)), self.numerics(exp.device))
        return Planned(job, path, self._meta("adapt", exp, seed, method, lr))

    def _tuned_methods(self, exp: Experiment) -> list[Method]:
        """The methods whose validation runs choose rates: the reference, or every method
        that learns (``lr_per_method``)."""
        if exp.lr_per_method:
            return [m for m in exp.methods if m.rule != FROZEN]
        return [exp.method(exp.lr_reference)]

    @staticmethod
    def _validation_experiment(exp: Experiment) -> Experiment:
        """The experiment as its validation runs run it: without the alignment diagnostics,
        which change no number of a run (only evaluation runs are reported)."""
        return exp.with_(diagnostics=tuple(d for d in exp.diagnostics if d not in ALIGNMENT_DIAGNOSTICS))

    def _validation_results(self, exp: Experiment, method: Method, lr: float) -> list[dict] | None:
        """The finished validation results of ``method`` at ``lr``, or None if one is missing."""
        out, quiet = [], self._validation_experiment(exp)
        for seed in exp.validation_seeds:
            path = self.layout.validation(exp, lr, seed, method)
            if not self._done(path, run_key("adapt", quiet, seed, method, lr)):
                return None
            out.append(read_json(path)["result"])
        return out

    def _grid(self, exp: Experiment, method: Method) -> tuple[list[float], list[float]]:
        return grow_grid(exp.lr_rule, exp.lr_grid, lambda lr: self._validation_results(exp, method, lr),
                         exp.lr_extend)

    def _validation_jobs(self) -> list[Planned]:
        jobs = []
        for exp in self.experiments:
            if len(exp.lr_grid) == 1:
                continue
            quiet = self._validation_experiment(exp)
            for method in self._tuned_methods(exp):
                for lr in self._grid(exp, method)[1]:
                    for seed in exp.validation_seeds:
                        path = self.layout.validation(exp, lr, seed, method)
                        job = self._adapt_job(quiet, method, seed, lr, path)
                        if job:
                            job.meta["phase"] = "validation"
                            jobs.append(job)
        return jobs

    def chosen_lrs(self, exp: Experiment) -> dict[str, tuple[float, dict]]:
        """label → (rate, validation table) for every method (shared: the same for all)."""
        if len(exp.lr_grid) == 1:
            return {m.label: (exp.lr_grid[0], {}) for m in exp.methods}
        chosen = {}
        for method in self._tuned_methods(exp):
            grid, _ = self._grid(exp, method)
            runs = {lr: self._validation_results(exp, method, lr) for lr in grid}
            chosen[method.label] = choose_lr(exp.lr_rule, runs)
        if not exp.lr_per_method:
            shared = chosen[exp.lr_reference]
            return {m.label: shared for m in exp.methods}
        first = next(iter(chosen.values()))
        return {m.label: chosen.get(m.label, first) for m in exp.methods}  # frozen: no rate is used

    def _lr_record(self, exp: Experiment, chosen: dict[str, tuple[float, dict]]) -> dict:
        def table(t):
            return {format_lr(k): v for k, v in t.items()}

        record = {"rule": exp.lr_rule, "reference": exp.lr_reference, "extend": exp.lr_extend,
                  "per_method": exp.lr_per_method}
        if exp.lr_per_method:
            record["lr"] = None
            record["methods"] = {m.label: {"lr": chosen[m.label][0], "table": table(chosen[m.label][1])}
                                 for m in self._tuned_methods(exp)}
        else:
            lr, t = next(iter(chosen.values()))  # shared: the same for every method
            record.update(lr=lr, table=table(t))
        return record

    def _evaluation_jobs(self) -> list[Planned]:
        jobs = []
        for exp in self.experiments:
            chosen = self.chosen_lrs(exp)
            write_json_atomic(self.layout.lr_choice(exp), self._lr_record(exp, chosen))
            for method in exp.methods:
                for seed in exp.seeds:
                    lr = chosen[method.label][0]
                    job = self._adapt_job(exp, method, seed, lr, self.layout.evaluation(exp, method, seed))
                    if job:
                        job.meta["phase"] = "evaluation"
                        jobs.append(job)
        return jobs

    # -- running --------------------------------------------------------------------------
    def _index(self) -> dict[str, Path]:
        """Key → an existing result file, over every run of the output directory."""
        index = {}
        for path in sorted((self.layout.out / "runs").rglob("seed*.json")):
            data = read_json(path)
            if data is not None and "key" in data and self._acceptable(data):
                index.setdefault(data["key"], path)
        return index

    def _dedupe(self, jobs: list[Planned]) -> list[Planned]:
        """Copy results that exist under another name; run each distinct key once."""
        if not jobs or isinstance(jobs[0].job, PretrainJob):
            return jobs
        index, unique = self._index(), {}
        for job in jobs:
            key = job.meta["key"]
            if key in index:  # the copy says how its source was computed
                source = read_json(index[key])
                write_json_atomic(job.path, {**job.meta, "numerics": source.get("numerics"),
                                             "result": source["result"]})
            elif key in unique:
                unique[key].also.append(job)
            else:
                unique[key] = job
        return list(unique.values())

    def _execute(self, stage: str, jobs: list[Planned], limit: list[int]) -> None:
        jobs = self._dedupe(jobs)
        if limit[0] is not None:  # the limit counts runs, before they are grouped
            jobs = jobs[: max(0, limit[0])]
            limit[0] -= len(jobs)
        if not jobs:
            return
        runs = len(jobs)
        jobs = plan_groups(jobs, self.ensembles)
        failures = []
        bar = tqdm(total=runs, desc=stage, disable=not self.progress, unit="run")
        # workers get what they run (the job), not the driver's paths, run keys and "also" targets
        by_id = {id(p.job): p for p in jobs}  # executors yield the objects they were given
        for sent, result, err in self.executor.map(self.task, [p.job for p in jobs]):
            job = by_id[id(sent)]
            bar.update(run_count(sent))
            if err is not None:
                failures.extend((member, err) for member in job.runs())
                continue
            self._write(job, result)
        bar.close()
        if failures:
            lines = "\n".join(f"  {j.meta['experiment']} {j.meta['kind']} seed {j.meta['seed']}: {e!r}"
                              for j, e in failures)
            raise RunsFailed(f"{len(failures)} run(s) failed (finished runs are saved; rerun to retry):\n{lines}")

    def _write(self, job: Planned, result: dict | list[dict]) -> None:
        if isinstance(job.job, GroupJob):  # one file per seed, as if each had run alone
            for member, member_result in zip(job.members, result, strict=True):
                self._write(member, member_result)
            return
        if isinstance(job.job, PretrainJob):
            path: Path = job.path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            torch.save(result, tmp)
            os.replace(tmp, path)
            summary = {k: v for k, v in result.items() if k not in ("cell_state", "readout_state")}
            write_json_atomic(path.with_suffix(".json"), {**job.meta, "result": summary})
        else:
            for target in (job, *job.also):
                write_json_atomic(target.path, {**target.meta, "result": result})

    def run(self, limit: int | None = None) -> bool:
        """Run what is missing; ``limit`` stops after that many runs (for testing resumption).

        Returns True when every run of the sweep is complete.
        """
        self._check_numerics()
        self.layout.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.layout.sweep(), {
            "profile": self.profile, "version": __version__, "only": self.only,
            "experiments": [exp.to_dict() for exp in self.experiments]})
        budget = [limit]
        self._execute("pretraining", self._pretrain_jobs(), budget)
        if budget[0] is not None and budget[0] <= 0 and self._pretrain_jobs():
            return False
        # a grid that grows (lr_extend) plans its next rate once the last ones are finished
        planned = None
        while (jobs := self._validation_jobs()):
            if planned == [j.path for j in jobs] or (budget[0] is not None and budget[0] <= 0):
                return False  # nothing came of the last round (or the run limit is reached)
            planned = [j.path for j in jobs]
            self._execute("validation", jobs, budget)
        self._execute("evaluation", self._evaluation_jobs(), budget)
        return not self._evaluation_jobs()
