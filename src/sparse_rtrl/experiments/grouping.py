"""Seeds as ensembles: the adaptation runs of one (experiment, method, learning rate) that
differ only in their seed run as ONE batched program (``sparse_rtrl.ensemble``), when that
pays off.

Member e of the ensemble is its solo run: its own snapshot, stream, mask generator and
optimizer state (the optimizers here are elementwise, so a stacked parameter's optimizer
state is E independent states). Only the rounding of batched products may differ from the
solo run. Every member gets the result dict a solo :func:`~.protocol.adapt` would give, and
the driver writes one result file per seed as before.

Why: a small network leaves the CPU waiting on per-step overhead (Python, dispatch, small
kernels); E members share that overhead. Measured on 2 cores at n = 64, an ensemble of 8
runs ~2× (full RTRL) to ~3× (sparse k = 4) the aggregate steps/s of solo runs; at n = 256
the products dominate and the gain is gone (~1.1×), so large networks stay solo.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import settings
from ..cells import CELLS
from ..ensemble import stack_cells
from ..tasks import make_task
from ..transport import RULES as TRANSPORT_RULES
from .config import FROZEN, READOUT, Experiment, Method
from .jobs import GroupJob, Planned, RunJob
from .protocol import (DTYPES, OPTIMIZERS, PredictionTrace, adapt, adaptation_stream, with_alignment,
                       default_spectrum_every, load_model, make_learner, online_steps, run_result,
                       trained_parameters)

#: the largest hidden size grouped: beyond it the batched products dominate and E solo runs
#: on E cores are as fast (n = 256: ~1.1×), while memory grows E-fold
MAX_HIDDEN = 128
#: the most seeds in one group: the measured gains are for E = 8, and smaller groups leave
#: more independent jobs to spread over workers
MAX_MEMBERS = 8
#: rules whose ensemble member reproduces its solo run, randomness included (each rule says
#: so itself: ``member_reproduces_solo``), and the protocol's frozen and readout-only runs
RULES = frozenset({name for name, cls in TRANSPORT_RULES.items() if cls.member_reproduces_solo} | {FROZEN, READOUT})
#: diagnostics recorded per member (anything else keeps the run solo)
DIAGNOSTICS = frozenset({"jacobian_spectrum", "predictions", "alignment"})


def groupable(exp: Experiment, method: Method) -> bool:
    """Whether the seeds of (exp, method) may run as one ensemble: a stackable RNN cell
    (vanilla, LSTM, GRU; not the transformer) with hidden size ≤ ``MAX_HIDDEN``, a rule of
    ``RULES``, an elementwise optimizer, and only diagnostics recorded per member.

    The GRU groups in float64 only: its float32 gates go through a vectorised sigmoid whose
    rounding depends on an element's position in the batch (unless n is a multiple of the
    SIMD width), so a float32 member would drift from its solo run by amplified rounding.
    Everything grouped here reproduced its solo run bit for bit in float32 on this project's
    machine (float64: to ~1e-11), because each member's products have the shapes they have
    alone; another BLAS may round a batched product differently.

    Streams whose resets or scored steps differ between seeds cannot share one learner;
    that is known only once the streams are drawn, so :func:`adapt_group` checks it and runs
    such seeds solo.
    """
    dtype = method.dtype or exp.dtype
    return (exp.cell in CELLS and exp.hidden_size <= MAX_HIDDEN and method.rule in RULES
            and (method.optimizer or exp.optimizer) in OPTIMIZERS
            and set(exp.diagnostics) <= DIAGNOSTICS
            and (exp.cell != "gru" or dtype == "float64"))


def adapt_group(exp: Experiment, method: Method, seeds: Sequence[int], snapshots: Sequence[dict],
                lr: float, curve_bins: int = 200) -> list[dict]:
    """The results of ``adapt(exp, method, seed, snapshot, lr)`` for every seed, in order.

    Runs the seeds as one ensemble; falls back to solo runs of ALL seeds when their streams
    cannot share a learner (different resets or scored steps) or when any member diverges,
    so a diverged run is recorded exactly as its solo run records it (divergence is rare, and
    the other members' solo reruns keep the group's results a function of the seed alone).
    """
    if len(seeds) > 1:
        results = adapt_ensemble(exp, method, seeds, snapshots, lr, curve_bins)
        if results is not None:
            return results
    return [adapt(exp, method, s, snap, lr, curve_bins) for s, snap in zip(seeds, snapshots)]


def _shared_schedule(streams: list[tuple]) -> bool:
    """Whether every stream resets and is scored at the same steps (then one learner can
    reset, skip and step all members together, as each solo run would)."""
    _, _, mask0, starts0 = streams[0]
    return all(torch.equal(mask, mask0) and torch.equal(starts, starts0) for _, _, mask, starts in streams[1:])


def adapt_ensemble(exp: Experiment, method: Method, seeds: Sequence[int], snapshots: Sequence[dict],
                   lr: float, curve_bins: int = 200) -> list[dict] | None:
    """The solo protocol of :func:`~.protocol.adapt`, step for step, on an ensemble whose
    member e is seed e's run (the same :func:`~.protocol.online_steps` loop); None when the
    seeds cannot run together or a member diverged. ``seconds`` of each result is the group's
    wall time divided by its size: the run's share.
    """
    E = len(seeds)
    task = make_task(exp.task, **exp.task_options)
    dtype = DTYPES[method.dtype or exp.dtype]
    device = torch.device(exp.device)
    streams = [adaptation_stream(exp, task, s) for s in seeds]
    if not _shared_schedule(streams):
        return None
    models = [load_model(exp, task, s, snap, dtype, device) for s, snap in zip(seeds, snapshots)]
    cell = stack_cells([c for c, _ in models])
    # the readouts stay solo modules: a member's prediction is then the same product as in
    # its solo run (a batched readout rounds differently, and learning amplifies rounding)
    readouts = nn.ModuleList(r for _, r in models)
    inputs = torch.stack([s[0] for s in streams], dim=1).unsqueeze(2).to(device, dtype)  # (T, E, 1, I)
    targets = torch.stack([s[1] for s in streams]).to(device, dtype)  # (E, T, out)
    mask, starts = streams[0][2], streams[0][3]
    learner = make_learner(method, cell, list(seeds))
    params = trained_parameters(method, cell, readouts)
    opt = OPTIMIZERS[method.optimizer or exp.optimizer](params, lr=lr) if params else None
    T = inputs.shape[0]
    traces = ([PredictionTrace(exp.pre_shift_steps, T) for _ in range(E)]
              if "predictions" in exp.diagnostics else None)
    run = online_steps(exp, task, learner, cell, readouts, inputs, targets, mask, starts, opt,
                       default_spectrum_every(exp, method), traces)
    if run.diverged_at is not None:
        return None  # a member diverged: the caller reruns the seeds solo
    share = run.seconds / E
    return [with_alignment(run_result(exp, run.losses[e], mask, None, share, run.conds[e],
                                      traces[e] if traces else None, curve_bins), exp, method, s, snap)
            for e, (s, snap) in enumerate(zip(seeds, snapshots))]


def plan_groups(jobs: list[Planned], enabled_: bool | None = None) -> list[Planned]:
    """Driver side: merge the adaptation runs of one (experiment, method, lr) that are
    :func:`groupable` into group entries of at most ``MAX_MEMBERS`` seeds, keeping the order
    of first appearance. A group's :class:`~.jobs.Planned` keeps its member runs (paths, run
    keys, "also" targets) in ``members``; its :class:`~.jobs.GroupJob` holds only experiment,
    method, lr, seeds and snapshot paths. Anything else, and groups of one, stay as they are.
    ``enabled_`` None: :func:`sparse_rtrl.settings.ensembles_enabled`."""
    if enabled_ is None:
        enabled_ = settings.ensembles_enabled()
    if not enabled_:
        return jobs
    out: list = []
    open_groups: dict[tuple, list[Planned]] = {}
    for entry in jobs:
        job = entry.job
        if not isinstance(job, RunJob) or not groupable(job.experiment, job.method):
            out.append(entry)
            continue
        key = (job.experiment.name, repr(job.method), job.lr)
        members = open_groups.get(key)
        if members is None or len(members) == MAX_MEMBERS:
            members = open_groups[key] = []
            out.append(members)  # the group takes the place of its first member
        members.append(entry)
    return [_group(item) if isinstance(item, list) else item for item in out]


def _group(members: list[Planned]) -> Planned:
    if len(members) == 1:
        return members[0]
    first: RunJob = members[0].job
    job = GroupJob(first.experiment, first.method, first.lr, tuple(m.job.seed for m in members),
                   tuple(m.job.snapshot for m in members), first.numerics)
    return Planned(job, None, {}, members=members)
