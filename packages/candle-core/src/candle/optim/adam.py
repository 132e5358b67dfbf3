"""Adam and AdamW (decoupled weight decay), with AMSGrad, following torch.optim's update exactly."""

from __future__ import annotations

from typing import Any

from ..ops.creation import zeros_like
from ..ops.elementwise import maximum
from ._functional import check_non_negative, grad_of, lerp
from .optimizer import Optimizer, ParamsT


class Adam(Optimizer):
    """`torch.optim.Adam`. Moments `m = lerp(m, g, 1 - b1)`, `v = b2 * v + (1 - b2) * g^2`; the step is
    `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)` (with `max(v)` under AMSGrad).
    Weight decay is L2 (added to the gradient) unless `decoupled_weight_decay` (AdamW: `p *= 1 - lr * wd`)."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        check_non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"invalid beta parameter at index {i}: {b}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, eps, wd, amsgrad = group["lr"], group["eps"], group["weight_decay"], group["amsgrad"]
        beta1, beta2 = group["betas"]
        decoupled = group["decoupled_weight_decay"]
        for p in self._params_with_grad(group):
            g = grad_of(p, group["maximize"], 0.0 if decoupled else wd)
            state = self.state.setdefault(p, {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = zeros_like(p.detach())
                state["exp_avg_sq"] = zeros_like(p.detach())
                if amsgrad:
                    state["max_exp_avg_sq"] = zeros_like(p.detach())
            state["step"] += 1
            step = state["step"]
            if decoupled and wd != 0:
                p.mul_(1 - lr * wd)
            exp_avg = state["exp_avg"] = lerp(state["exp_avg"], g, 1 - beta1)
            exp_avg_sq = state["exp_avg_sq"] = state["exp_avg_sq"] * beta2 + g * (1 - beta2) * g
            step_size = lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            if amsgrad:
                exp_avg_sq = state["max_exp_avg_sq"] = maximum(state["max_exp_avg_sq"], exp_avg_sq)
            denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps
            p.add_(exp_avg / denom * -step_size)


class AdamW(Adam):
    """`torch.optim.AdamW`: Adam with decoupled weight decay (`p *= 1 - lr * wd` before the step),
    default `weight_decay=1e-2`."""

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
