"""Flat layout of the recurrent parameters θ: name, shape and offset of each block in P."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamBlock:
    """One parameter tensor, seen as a slice [offset, offset + numel) of the flat θ."""

    name: str
    shape: tuple[int, ...]  # the parameter's own shape, without the ensemble dimension
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class ParamLayout:
    """Blocks in ``named_parameters`` order; M's last dimension follows this order."""

    blocks: tuple[ParamBlock, ...]

    @classmethod
    def from_shapes(cls, named_shapes: list[tuple[str, tuple[int, ...]]]) -> "ParamLayout":
        blocks, offset = [], 0
        for name, shape in named_shapes:
            block = ParamBlock(name, tuple(shape), offset)
            blocks.append(block)
            offset = block.stop
        return cls(tuple(blocks))

    @property
    def size(self) -> int:
        """P, the number of recurrent parameters (per ensemble member)."""
        return self.blocks[-1].stop if self.blocks else 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Cut ``flat (..., P)`` into one tensor per block, shaped ``(..., *block.shape)``."""
        lead = flat.shape[:-1]
        return [flat[..., b.offset : b.stop].reshape(*lead, *b.shape) for b in self.blocks]

    def join(self, tensors: list[torch.Tensor], lead: int = 1) -> torch.Tensor:
        """Inverse of :meth:`split`; ``lead`` leading dimensions are kept."""
        return torch.cat([t.reshape(*t.shape[:lead], -1) for t in tensors], dim=-1)
