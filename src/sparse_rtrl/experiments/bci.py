"""Claim C9: online decoder adaptation to electrode drift (BCI). Filled in by the BCI issue."""

from __future__ import annotations

from pathlib import Path

from .claims import ClaimResult


def experiments(profile: str, data_dir: Path | None = None) -> list:
    """The C9 experiments of ``profile`` (none yet)."""
    return []


def claim(views) -> ClaimResult:
    return ClaimResult("C9", "BCI cross-session drift, k=4: recovery and stability vs full RTRL",
                       "80 ± 11 %", "not yet measured", "the BCI experiment is not wired into this profile yet")


def figures(views, folder: Path) -> list[tuple[str, str]]:
    return []
