"""The experiments of ``sparse-rtrl reproduce``, as data, for the ``quick`` and ``paper``
profiles. Both profiles run the same experiments; ``quick`` shrinks seeds, steps and sizes.

Every experiment picks one learning rate for all its methods on validation seeds by the rule
named in its ``lr_rule`` (see ``selection.py``); evaluation seeds are never tuned on.
"""

from __future__ import annotations

from . import bci, credit, transformer_c8
from .claims import BASELINES, FOLLOWUP, SELECTION
from .config import Experiment, Method
from .methods import FROZEN_MODEL, FULL, IMMEDIATE, K4, REFERENCES, SWEEP_K, in_dtype, sparse

SGD_GRID = (0.01, 0.03, 0.1, 0.3)
ADAM_GRID = (3e-4, 1e-3, 3e-3)
RMSPROP_GRID = (1e-4, 3e-4, 1e-3)


def _followup_methods() -> tuple[Method, ...]:
    """C12: the immediate rule and a λ = 0.95 trace against full RTRL, float32 and float64."""
    out = [FROZEN_MODEL]
    for dtype in ("float32", "float64"):
        out += [in_dtype(m, dtype) for m in (FULL, *FOLLOWUP)]
    return tuple(out)


def experiments(profile: str, data_dir=None, session_files=None, bin_size=None) -> list[Experiment]:
    """Every experiment of ``profile`` ("quick" or "paper"); ``data_dir`` holds real
    recordings for the BCI experiments, ``session_files`` = (session A, session B) adds a BCI
    experiment on the user's recordings (``bin_size`` in s for spike-time files; see ``bci.py``)."""
    if profile not in ("quick", "paper"):
        raise ValueError(f"unknown profile {profile!r}: choose 'quick' or 'paper'")
    quick = profile == "quick"
    seeds = (0, 1, 2) if quick else (0, 1, 2, 3, 4)
    # quick: one validation seed and 1000 adaptation steps keep the whole profile well under
    # 20 min on 2 cores (588 s measured); its learning rates are noisier picks than the paper's
    validation = (100,) if quick else (100, 101, 102)
    common = dict(
        seeds=seeds,
        validation_seeds=validation,
        adapt_steps=1000 if quick else 3000,
        pre_shift_steps=200,
        pretrain_updates=400 if quick else 1500,
        lr_grid=ADAM_GRID,
        lr_rule="best_stable",
    )
    sizes = (64, 128) if quick else (64, 128, 256)
    # the sine experiments share snapshots and, through run keys, identical runs (frozen,
    # full, immediate, ...); the spectrum diagnostic is on for all of them so they match
    sine = dict(task="sine", task_options={}, cell="vanilla", hidden_size=64, diagnostics=("jacobian_spectrum",))
    main = Experiment(
        name="sine_vanilla",
        claims=("C1", "C3", "C4", "C5", "C10"),  # C10 compares the adding task with this continuous-error run
        methods=(*REFERENCES, *(sparse(k) for k in SWEEP_K), FULL, *SELECTION, *BASELINES),
        **sine,
        **common,
    )
    out = [main]
    for n in sizes[1:]:
        out.append(Experiment(
            name=f"sine_vanilla_n{n}", claims=("C2",),
            methods=(FROZEN_MODEL, IMMEDIATE, K4, FULL),
            **{**sine, "hidden_size": n}, **common,
        ))
    out.append(Experiment(
        name="lorenz_vanilla", claims=("C6",), task="lorenz", task_options={}, cell="vanilla",
        hidden_size=64, methods=(*REFERENCES, K4, FULL), **common,
    ))
    out.append(Experiment(
        name="sine_lstm", claims=("C7",), task="sine", task_options={}, cell="lstm", hidden_size=32,
        methods=(*REFERENCES, K4, FULL), **common,
    ))
    # length 10: a vanilla RNN learns the adding problem offline in 1500 updates (L = 20 does
    # not get below predicting the mean), so the shift of the rule is visible to the frozen model
    out.append(Experiment(
        name="adding_vanilla", claims=("C10",), task="adding", task_options={"length": 10}, cell="vanilla",
        hidden_size=64, methods=(*REFERENCES, K4, FULL),
        **{**common, "pretrain_updates": 1500, "pretrain_batch": 32},
    ))
    out.append(Experiment(
        name="sine_vanilla_sgd", claims=("C11",), methods=(*REFERENCES, K4, FULL),
        optimizer="sgd", **sine, **{**common, "lr_grid": SGD_GRID},
    ))
    for optimizer, grid in (("adam", ADAM_GRID), ("sgd", SGD_GRID), ("rmsprop", RMSPROP_GRID)):
        out.append(Experiment(
            name=f"followup_{optimizer}", claims=("C12",), methods=_followup_methods(),
            optimizer=optimizer, lr_reference=in_dtype(FULL, "float32").label, **sine, **{**common, "lr_grid": grid},
        ))
    return (out + transformer_c8.experiments(profile) + bci.experiments(profile, data_dir, session_files, bin_size)
            + credit.experiments(profile))
