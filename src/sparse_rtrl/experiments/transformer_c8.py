"""Claim C8: head-sparse gradient transport in an online transformer. Filled in by the
transformer issue."""

from __future__ import annotations

from pathlib import Path

from .claims import ClaimResult


def experiments(profile: str) -> list:
    """The C8 experiments of ``profile`` (none yet)."""
    return []


def pretrain(exp, seed):
    raise NotImplementedError("the C8 protocol is not wired yet")


def adapt(exp, method, seed, snapshot, lr):
    raise NotImplementedError("the C8 protocol is not wired yet")


def claim(views) -> ClaimResult:
    return ClaimResult("C8", "transformer: sparse transport through 50 % / 33 % of heads vs dense",
                       "50 % beats dense; 33 % borderline", "not yet measured",
                       "the transformer experiment is not wired into this profile yet")


def figures(views, folder: Path) -> list[tuple[str, str]]:
    return []
