"""`Optimizer`: parameter groups, per-parameter state and PyTorch's `state_dict` layout.

Subclasses implement `_step_group(group)`, which updates the group's parameters in place with tensor
ops; the base class runs it under `candle.no_grad()`, so optimizers work on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import autograd
from ..errors import CandleError
from ..tensor import Tensor

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

#: state entries that are counters, never cast to the parameter's dtype on load.
_COUNTERS = ("step",)


class _Required:
    """Marks a default that every parameter group must set (like torch's `required`)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required: Any = _Required()


class Optimizer:
    """Base class of optimizers: `param_groups` (dicts holding `params` and per-group options) and
    `state` (a dict from parameter to its state dict)."""

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, got a Tensor")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params")
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: `{"params": [...], **options}`; missing options take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise CandleError("optimizer can only optimize leaf tensors (a non-leaf tensor was given)")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required option {name!r}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError("a parameter group holds the same parameter twice")
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # --- stepping ------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's gradient (or zero it in place with `set_to_none=False`)."""
        with autograd.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient; `closure` (re-evaluating the loss,
        run with grad enabled) is called first and its result returned."""
        loss = None
        if closure is not None:
            with autograd.enable_grad():
                loss = closure()
        with autograd.no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _step_group")

    def _params_with_grad(self, group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.grad is not None]

    # --- state dicts ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """`{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}` like torch:
        parameters are numbered across groups in order. State tensors are shared, not copied."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            for p in g["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore groups' options and per-parameter state saved by `state_dict` (tensors are
        copied, floating ones cast to their parameter's dtype and moved to its device)."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for i, (g, s) in enumerate(zip(self.param_groups, saved)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict's parameter group {i} has {len(s['params'])} parameters, "
                                 f"the optimizer's has {len(g['params'])}")
        by_index = {int(i): p for g, s in zip(self.param_groups, saved) for i, p in zip(s["params"], g["params"])}
        state: dict[Tensor, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            p = by_index.get(int(key))
            if p is None:
                raise ValueError(f"loaded state dict holds state for parameter {key}, which no group lists")
            state[p] = {k: _restore(k, v, p) for k, v in entry.items()}
        self.state = state
        new_groups = []
        for g, s in zip(self.param_groups, saved):
            ng = {k: v for k, v in s.items() if k != "params"}
            ng["params"] = g["params"]
            new_groups.append(ng)
        self.param_groups = new_groups


def _restore(key: str, value: Any, param: Tensor) -> Any:
    if not isinstance(value, Tensor):
        return value
    if key in _COUNTERS:
        return value.item()
    dtype = param.dtype if value.dtype.is_floating_point else None
    return value.detach().to(device=param.device, dtype=dtype, copy=True)
