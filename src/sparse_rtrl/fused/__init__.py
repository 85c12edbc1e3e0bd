"""The fused online step: a vanilla RNN, its transport rule, a linear readout, the squared
error and SGD/Adam as one call per stream element (no autograd, nothing rebuilt per step).

    fused = FusedStep(VanillaRNN(I, N), "sparse", nn.Linear(N, O), lr=1e-3, optimizer="adam", k=4)
    for x, y in stream:
        y_hat, loss = fused.step(x, y)      # predict, score, learn

Same numbers as OnlineLearner + readout + loss + torch.optim (tests/test_fused.py); the
speed against a compiled JAX step is in benchmarks/RESULTS.md.
"""

from .products import SUPPORTED, unsupported
from .step import FusedStep

__all__ = ["FusedStep", "SUPPORTED", "unsupported"]
