"""RMSprop (optionally centered, with momentum), following torch.optim's update exactly."""

from __future__ import annotations

from typing import Any

from ..ops.creation import zeros_like
from ._functional import check_non_negative, grad_of, lerp
from .optimizer import Optimizer, ParamsT


class RMSprop(Optimizer):
    """`torch.optim.RMSprop`: `v = alpha * v + (1 - alpha) * g^2`; `avg = sqrt(v - mean(g)^2)` when
    centered (`mean(g)` a running average), else `sqrt(v)`; then `avg += eps` and either
    `b = momentum * b + g / avg; p -= lr * b` or `p -= lr * g / avg`."""

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        check_non_negative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        for p in self._params_with_grad(group):
            g = grad_of(p, group["maximize"], group["weight_decay"])
            state = self.state.setdefault(p, {})
            if not state:
                state["step"] = 0
                state["square_avg"] = zeros_like(p.detach())
                if momentum > 0:
                    state["momentum_buffer"] = zeros_like(p.detach())
                if group["centered"]:
                    state["grad_avg"] = zeros_like(p.detach())
            state["step"] += 1
            square_avg = state["square_avg"] = state["square_avg"] * alpha + g * (1 - alpha) * g
            if group["centered"]:
                grad_avg = state["grad_avg"] = lerp(state["grad_avg"], g, 1 - alpha)
                avg = (square_avg - grad_avg * grad_avg).sqrt()
            else:
                avg = square_avg.sqrt()
            avg = avg + eps
            if momentum > 0:
                buf = state["momentum_buffer"] = state["momentum_buffer"] * momentum + g / avg
                p.add_(buf, alpha=-lr)
            else:
                p.add_(g / avg * -lr)
