"""Online causal transformers with head-sparse gradient transport (claim C8).

The gradient that travels from the newest position back to earlier positions flows only
through the past keys and values of a chosen fraction of attention heads; the rest are
detached. This design is the project's own (the paper's method text is not available); see
docs/transformer.md::

    from sparse_rtrl.transformer import OnlineTransformer
    learner = OnlineTransformer(1, 1, heads=12, window=32, head_fraction=0.5, selection="random")
    y = learner.step(x); learner.backward(loss); optimizer.step()
"""

from .diagnostics import (
    HeadProfile,
    attention_entropy,
    head_contributions,
    head_profile,
    mse,
    past_attention,
)
from .head_rule import HeadSparse
from .heads import IMPORTANCE_SCORES, SELECTIONS, HeadSelection, heads_kept
from .learner import OnlineTransformer
from .model import CausalTransformer, Taps, TransformerConfig
from .training import AdaptResult, adapt, pretrain, windows

__all__ = [
    "AdaptResult",
    "CausalTransformer",
    "HeadProfile",
    "HeadSelection",
    "HeadSparse",
    "IMPORTANCE_SCORES",
    "OnlineTransformer",
    "SELECTIONS",
    "Taps",
    "TransformerConfig",
    "adapt",
    "attention_entropy",
    "head_contributions",
    "head_profile",
    "heads_kept",
    "mse",
    "past_attention",
    "pretrain",
    "windows",
]
