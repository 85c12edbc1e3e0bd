"""The paper's figures (SPEC §5), in one place: claims, verdicts and figures read them from
here, for side-by-side reporting only (nothing feeds back into any run). A leaf module."""

from __future__ import annotations

#: C1: recovery of sparse k = 4 of n = 64 (vanilla RNN), mean and std over 5 seeds, in %
C1_RECOVERY = (84.0, 6.0)
#: C2: recovery of k = 4 at n = 64 and at n = 256, in %
C2_RECOVERY = {64: 84.0, 256: 78.0}
#: C9: recovery of the BCI decoder with k = 4, mean and std, in %
C9_RECOVERY = (80.0, 11.0)
#: C11: recovery of sparse k = 4 under SGD, mean and std, in %
C11_RECOVERY = (92.0, 1.0)
