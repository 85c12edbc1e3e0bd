"""Random signs for the unbiased estimators (UORO, KF-RTRL).

Member e draws from its own generator, so an ensemble member sees exactly the noise of the
same run done alone. Signs are drawn as integers whatever the model's dtype, so float32 and
float64 runs of one seed use the same signs.
"""

from __future__ import annotations

import torch

from .base import Generators

Tensor = torch.Tensor


def member_signs(gens: Generators, shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
    """Independent ±1 with probability ½ each, ``(E, *shape)``; member e from generator e."""
    bits = torch.stack([torch.randint(0, 2, shape, generator=g, device=device) for g in gens.items])
    return (2 * bits - 1).to(dtype)
