"""The optimizer of a fused step: SGD and Adam as a handful of ``torch._foreach`` calls over
every parameter at once, or any ``torch.optim`` optimizer through ``.grad``.

    SGD   θ ← θ − η·g
    Adam  m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,
          θ ← θ − (η / (1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + ε)

Adam takes the same elementwise steps, in the same order, as ``torch.optim.Adam``'s default
implementation, so the two agree to round-off (tests/test_fused.py holds them to 1e-12 in float64).
"""

from __future__ import annotations

import torch

from ..errors import ConfigurationError

Tensor = torch.Tensor


class SGD:
    def __init__(self, params: list[Tensor], lr: float):
        self.params, self.lr = params, float(lr)

    def step(self, grads: list[Tensor]) -> None:
        torch._foreach_add_(self.params, grads, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


class Adam:
    def __init__(self, params: list[Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0) or eps < 0:
            raise ConfigurationError(f"Adam needs 0 ≤ β₁, β₂ < 1 and ε ≥ 0, got betas={betas}, eps={eps}")
        self.params, self.lr, self.betas, self.eps = params, float(lr), (b1, b2), float(eps)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[Tensor]) -> None:
        b1, b2 = self.betas
        self.t += 1
        torch._foreach_lerp_(self.m, grads, 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - b2)
        step_size = self.lr / (1 - b1 ** self.t)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, (1 - b2 ** self.t) ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.m, denom, value=-step_size)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": [m.clone() for m in self.m], "v": [v.clone() for v in self.v]}

    def load_state_dict(self, d: dict) -> None:
        self.t = int(d["t"])
        for dst, src in zip(self.m + self.v, d["m"] + d["v"]):
            dst.copy_(src)


class TorchOptimizer:
    """Any ``torch.optim.Optimizer`` over the same parameters: the gradients are handed over
    as ``.grad`` and its ``step()`` runs (general, and slower than the two above)."""

    def __init__(self, parameters: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer):
        mine = {id(p) for p in parameters}
        theirs = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not mine <= theirs:
            raise ConfigurationError(
                "the optimizer does not hold every parameter of the cell and the readout: build it "
                "over [*cell.parameters(), *readout.parameters()]")
        self.parameters, self.optimizer = parameters, optimizer

    def step(self, grads: list[Tensor]) -> None:
        for p, g in zip(self.parameters, grads):
            if p.grad is None or p.grad.shape != g.shape:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, d: dict) -> None:
        self.optimizer.load_state_dict(d)


def make_optimizer(optimizer, data: list[Tensor], parameters: list[torch.nn.Parameter], lr, betas, eps):
    if isinstance(optimizer, torch.optim.Optimizer):
        return TorchOptimizer(parameters, optimizer)
    if optimizer not in ("sgd", "adam"):
        raise ConfigurationError(
            f"unknown optimizer {optimizer!r}: choose 'sgd' or 'adam', or pass a torch.optim optimizer")
    if lr is None or not float(lr) > 0:
        raise ConfigurationError(f"the fused step needs a learning rate lr > 0 for {optimizer!r}, got {lr!r}")
    return SGD(data, lr) if optimizer == "sgd" else Adam(data, lr, betas, eps)
