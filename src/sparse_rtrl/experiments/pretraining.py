"""Step 1 of the protocol (SPEC §3): offline pretraining on regime A, for every model.

:func:`pretrain` builds the experiment's model (:func:`~.models.build_model`) and trains it
by the one loop :func:`sparse_rtrl.offline.fit`; what differs between models is only how a
minibatch is drawn and scored:

- a recurrent cell: random windows of ``pretrain_chunk`` steps (whole sequences for
  sequence tasks), unrolled by BPTT from a zero state, gradient norm clipped at 1;
- the transformer: random full windows, each scored at its newest position (the prediction
  the online learner makes; :func:`sparse_rtrl.transformer.pretrain`).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from ..errors import ConfigurationError
from ..offline import fit
from ..tasks import make_task
from ..transformer import CausalTransformer
from ..transformer import pretrain as pretrain_windows
from .config import Experiment
from .models import Snapshot, build_model, derived_seed


def pretrain(exp: Experiment, seed: int) -> Snapshot:
    """``pretrain_updates`` Adam updates (rate ``pretrain_lr``, float64) on batches of
    ``pretrain_batch`` regime-A windows of the seed's pretraining stream."""
    task = make_task(exp.task, **exp.task_options)
    model = build_model(exp, task, seed)
    if isinstance(model, CausalTransformer):
        return _transformer(exp, task, model, seed)
    return _recurrent(exp, task, *model, seed)


def _recurrent(exp: Experiment, task, cell, readout: nn.Linear, seed: int) -> Snapshot:
    length, burn_in = exp.pretrain_chunk, exp.pretrain_burn_in
    data = task.sample("A", max(20 * length, 20_000), derived_seed(seed, "pretrain_data"))
    if not task.continuous_error:
        length, burn_in = int(torch.nonzero(data.starts).flatten()[1]), 0  # one whole sequence
    starts = _windows(data, length)
    rng = np.random.default_rng(derived_seed(seed, "pretrain_batches"))
    fused = cell.fused_twin()  # torch's fused RNN where the cell has one: the same numbers, faster

    def batch_loss() -> torch.Tensor:
        idx = torch.as_tensor(rng.choice(starts, size=exp.pretrain_batch))
        window = idx[:, None] + torch.arange(length)[None, :]
        x, y = data.inputs[window], data.targets[window]  # (batch, length, ·)
        mask = data.error_mask[window].clone()
        mask[:, :burn_in] = False
        hidden = _unroll(cell, fused, x)  # (batch, length, n)
        return task.loss(readout(hidden[mask]), y[mask])

    model = fused if fused is not None else cell
    history = fit([*model.parameters(), *readout.parameters()], batch_loss, exp.pretrain_updates,
                  exp.pretrain_lr, clip_norm=1.0)
    if fused is not None:
        with torch.no_grad():
            for name, p in cell.named_parameters():
                p.copy_(getattr(fused, f"{name}_l0"))
    return Snapshot.from_history({k: v.clone() for k, v in cell.state_dict().items()},
                                 {k: v.clone() for k, v in readout.state_dict().items()}, history)


def _windows(stream, length: int) -> np.ndarray:
    """Valid start indices of training windows: any t for continuous tasks, else sequence starts."""
    T = stream.inputs.shape[0]
    if bool(stream.starts[1:].any()):
        starts = torch.nonzero(stream.starts).flatten().numpy()
        return starts[starts + length <= T]
    return np.arange(0, T - length + 1)


def _unroll(cell, fused: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """Hidden outputs h_t for a batch of windows x (batch, length, I), from zero state."""
    if fused is not None:
        return fused(x)[0]
    stacked = [p.unsqueeze(0) for p in cell.parameters()]
    s = torch.zeros(1, x.shape[0], cell.state_size, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        s = cell.step(stacked, s, x[:, t].unsqueeze(0))
        out.append(cell.hidden(s[0]))
    return torch.stack(out, dim=1)


def _transformer(exp: Experiment, task, model: CausalTransformer, seed: int) -> Snapshot:
    if not task.continuous_error:
        raise ConfigurationError(
            f"the transformer protocol needs a continuous-error task (an error at every step); "
            f"{exp.task!r} scores only sequence ends"
        )
    W = model.config.window
    data = task.sample("A", max(20 * W, 20_000), derived_seed(seed, "pretrain_data"))
    history = pretrain_windows(model, data.inputs, data.targets, steps=exp.pretrain_updates,
                               batch_size=exp.pretrain_batch, lr=exp.pretrain_lr,
                               seed=derived_seed(seed, "pretrain_batches"), loss_fn=task.loss)
    body, readout = split_state(model)
    return Snapshot.from_history(body, readout, history, model_config=asdict(model.config))


def split_state(model: CausalTransformer) -> tuple[dict, dict]:
    """(body, readout) state dicts of the transformer: the snapshot format shared with the
    recurrent cells."""
    state = model.state_dict()
    body = {k: v.clone() for k, v in state.items() if not k.startswith("readout.")}
    readout = {k[len("readout."):]: v.clone() for k, v in state.items() if k.startswith("readout.")}
    return body, readout
