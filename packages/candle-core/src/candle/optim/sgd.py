"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

from ._functional import check_non_negative, grad_of
from .optimizer import Optimizer, ParamsT


class SGD(Optimizer):
    """`torch.optim.SGD`: with momentum `mu`, `b = mu * b + (1 - dampening) * g` (b = g on the first
    step), then `g = g + mu * b` (nesterov) or `g = b`; finally `p -= lr * g`."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        check_non_negative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        for p in self._params_with_grad(group):
            g = grad_of(p, group["maximize"], group["weight_decay"])
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = g.detach().clone()
                else:
                    buf = buf * momentum + g * (1 - dampening)
                state["momentum_buffer"] = buf
                g = g + buf * momentum if group["nesterov"] else buf
            p.add_(g, alpha=-lr)
