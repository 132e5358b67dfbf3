"""Training checkpoints: a model, its optimizer's state and extra values in one safetensors file.

Layout: tensors `model.<state_dict key>`, `optim.state.<param index>.<name>` (the optimizer's state
tensors, indexed like `Optimizer.state_dict()`), `extra.<key>` (tensor values of `extra`); the
header's `__metadata__` holds JSON strings: `optimizer` (class, param_groups, non-tensor state such as
`step`) and `extra` (the other values). No pickle. The file is written atomically (a temporary file,
then a rename), so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .errors import CandleError, FileFormatError
from .io._atomic import PathLike
from .io.safetensors import safe_open, save_safetensors
from .tensor import Tensor

if TYPE_CHECKING:
    from .nn.module import Module
    from .optim.optimizer import Optimizer

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT = "candle.checkpoint"
VERSION = 1
_MODEL, _OPTIM, _EXTRA = "model.", "optim.state.", "extra."


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise CandleError(f"save_checkpoint: {what} is not JSON-serialisable ({e})") from None


def save_checkpoint(path: PathLike, model: Module, optimizer: Optimizer | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Write `model`'s state dict, `optimizer`'s state and `extra` (tensors or JSON values, e.g. the
    epoch or a scheduler's `state_dict()`) to the safetensors file `path`, atomically."""
    tensors: dict[str, Tensor] = {_MODEL + k: v for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": str(VERSION)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, entry in sd["state"].items():
            for k, v in entry.items():
                if isinstance(v, Tensor):
                    tensors[f"{_OPTIM}{idx}.{k}"] = v
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        meta["optimizer"] = _dumps({"class": type(optimizer).__name__, "param_groups": sd["param_groups"],
                                    "state": scalars}, f"the state of {type(optimizer).__name__}")
    if extra:
        plain = {}
        for k, v in extra.items():
            if not isinstance(k, str):
                raise CandleError(f"save_checkpoint: extra keys must be strings, got {k!r}")
            if isinstance(v, Tensor):
                tensors[_EXTRA + k] = v
            else:
                plain[k] = v
        meta["extra"] = _dumps(plain, "extra")
    save_safetensors(tensors, path, metadata=meta)


def load_checkpoint(path: PathLike, model: Module, optimizer: Optimizer | None = None,
                    strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` into `model` (and `optimizer`); returns `extra`.

    Tensors are copied into the model's parameters (cast to their dtype, moved to their device).
    Everything is checked before the model or optimizer is touched.
    """
    where = f"load_checkpoint '{path}'"
    with safe_open(path) as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise FileFormatError(f"{where}: not a candle checkpoint (no format={FORMAT!r} in the metadata)")
        if meta.get("version") != str(VERSION):
            raise FileFormatError(f"{where}: checkpoint version {meta.get('version')!r} is not supported")
        groups = {p: {n[len(p):]: f.get_tensor(n) for n in f.keys() if n.startswith(p)}
                  for p in (_MODEL, _OPTIM, _EXTRA)}
    extra = _loads(meta.get("extra", "{}"), where, "extra")
    extra.update(groups[_EXTRA])
    optim_sd = None
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CandleError(f"{where}: the checkpoint holds no optimizer state")
        optim_sd = _optimizer_state(_loads(meta["optimizer"], where, "optimizer"), groups[_OPTIM], optimizer, where)
    model.load_state_dict(groups[_MODEL], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(optim_sd)  # type: ignore[arg-type]
    return extra


def _loads(text: str, where: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise FileFormatError(f"{where}: the {what!r} metadata is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{where}: the {what!r} metadata is not a JSON object")
    return value


def _optimizer_state(saved: dict[str, Any], tensors: dict[str, Tensor], optimizer: Optimizer,
                     where: str) -> dict[str, Any]:
    """The optimizer state dict stored in a checkpoint, checked against `optimizer`."""
    cls = type(optimizer).__name__
    if saved.get("class") != cls:
        raise CandleError(f"{where}: the checkpoint holds {saved.get('class')} state, the optimizer is a {cls}")
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        n = len(groups) if isinstance(groups, list) else "no"
        raise CandleError(f"{where}: the checkpoint has {n} parameter groups, "
                          f"the optimizer {len(optimizer.param_groups)}")
    for i, (g, s) in enumerate(zip(optimizer.param_groups, groups)):
        if len(g["params"]) != len(s.get("params", ())):
            raise CandleError(f"{where}: parameter group {i} has {len(s.get('params', ()))} parameters in the "
                              f"checkpoint, {len(g['params'])} in the optimizer")
        for k, v in s.items():  # JSON turned tuples (betas) into lists
            if isinstance(g.get(k), tuple) and isinstance(v, list):
                s[k] = tuple(v)
    state: dict[int, dict[str, Any]] = {int(i): dict(entry) for i, entry in saved.get("state", {}).items()}
    for name, t in tensors.items():
        idx, _, key = name.partition(".")
        if not idx.isdigit() or not key:
            raise FileFormatError(f"{where}: malformed optimizer tensor name {_OPTIM + name!r}")
        state.setdefault(int(idx), {})[key] = t
    return {"state": state, "param_groups": groups}
