"""Loss functions with `torch.nn.functional`'s signatures and semantics (re-exported by
`candle.nn.functional`): cross_entropy, nll_loss, mse_loss, l1_loss, huber_loss, smooth_l1_loss,
binary_cross_entropy(_with_logits), kl_div."""

from __future__ import annotations

from typing import Any

from .. import autograd as ag
from .. import ops
from ..dtype import int64
from ..errors import DimError, DTypeError, ShapeError, fmt_shape
from ..ops._base import needs_grad, record
from ..tensor import Tensor

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "kl_div",
           "l1_loss", "mse_loss", "nll_loss", "smooth_l1_loss"]

_REDUCTIONS = ("none", "mean", "sum")


# --- helpers ------------------------------------------------------------------------------------
def _reduction(op: str, reduction: str, size_average: bool | None = None, reduce: bool | None = None,
               allowed: tuple[str, ...] = _REDUCTIONS) -> str:
    """The reduction, honouring PyTorch's deprecated `size_average` / `reduce` arguments."""
    if size_average is not None or reduce is not None:
        sa = True if size_average is None else size_average
        rd = True if reduce is None else reduce
        return ("mean" if sa else "sum") if rd else "none"
    if reduction not in allowed:
        raise ValueError(f"{op}: {reduction!r} is not a valid value for reduction (expected one of "
                         f"{', '.join(allowed)})")
    return reduction


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _weighted_mean(total: Tensor, weight_sum: Tensor) -> Tensor:
    """total / weight_sum: NaN when nothing counted (all targets ignored), with a zero gradient then."""
    empty = ops.eq(weight_sum, 0)
    return ops.where(empty, float("nan"), total / ops.where(empty, 1.0, weight_sum))


def _check_input(op: str, x: Any, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise DTypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating-point {name}, got dtype {x._dtype.name}")
    return x


def _same_size(op: str, x: Tensor, t: Tensor) -> None:
    if x._shape != t._shape:
        raise ValueError(f"{op}: target size {fmt_shape(t._shape)} is different to the input size "
                         f"{fmt_shape(x._shape)}; please ensure they have the same size")


def _weighted(op: str, loss: Tensor, x: Tensor, weight: Tensor | None, reduction: str, mean_by_weight: bool) -> Tensor:
    """A pointwise loss times an elementwise `weight` (same size as the input), reduced; the weighted mean
    divides by sum(weight) when `mean_by_weight` (PyTorch's mse/l1), else by the element count (huber)."""
    if weight is None:
        return _reduce(loss, reduction)
    if weight._shape != x._shape:
        raise ValueError(f"{op}: weight {fmt_shape(weight._shape)} and input {fmt_shape(x._shape)} must have the "
                         "same size")
    loss = loss * weight
    if reduction == "mean" and mean_by_weight:
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


# --- negative log-likelihood and cross-entropy --------------------------------------------------
def _class_last(op: str, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor, int]:
    """x with its class dim (1, or 0 for a 1-d input) moved last, as [..., C]; the target as [...];
    and the number of classes. Validates the target's shape and dtype."""
    if x.ndim == 0:
        raise ShapeError(f"{op}: expected an input of 1 or more dims (C), (N, C) or (N, C, d1, ...), got a 0-d one")
    if target._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected class indices of an integer dtype, got a target of dtype "
                         f"{target._dtype.name}")
    if x.ndim == 1:
        expected: tuple[int, ...] = ()
        c = x._shape[0]
    else:
        expected = (x._shape[0],) + x._shape[2:]
        c = x._shape[1]
    if target._shape != expected:
        raise ShapeError(f"shape mismatch in {op}: input {fmt_shape(x._shape)} expects a target of shape "
                         f"{fmt_shape(expected)}, got {fmt_shape(target._shape)}")
    if x.ndim > 2:
        x = ops.movedim(x, 1, -1)
    return x, ops.cast(target, int64), c


def _check_class_weight(op: str, weight: Tensor | None, c: int, x: Tensor) -> None:
    if weight is None:
        return
    if weight._shape != (c,):
        raise ShapeError(f"shape mismatch in {op}: weight {fmt_shape(weight._shape)} must have one value per "
                         f"class [{c}]")
    if weight._dtype is not x._dtype:
        raise DTypeError(f"dtype mismatch in {op}: input {x._dtype.name}, weight {weight._dtype.name}")


def _nll_parts(op: str, logp: Tensor, target: Tensor, weight: Tensor | None,
               ignore_index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """(per-element loss -w[t] * logp[t] (0 where ignored), per-element weight w[t] * valid,
    the valid mask, logp with classes last, number of classes)."""
    lp, t, c = _class_last(op, logp, target)
    _check_class_weight(op, weight, c, logp)
    valid = ops.ne(t, ignore_index)
    safe = ops.where(valid, t, 0)
    try:
        picked = ops.squeeze(ops.gather(lp, -1, ops.unsqueeze(safe, -1)), -1)
    except DimError as e:
        raise DimError(f"{op}: a target class is out of range for {c} classes ({e})") from None
    wt = ops.cast(valid, lp._dtype)
    if weight is not None:
        wt = ops.reshape(ops.index_select(weight, 0, ops.reshape(safe, (-1,))), t._shape) * wt
    return -picked * wt, wt, valid, lp, c


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average: bool | None = None,  # noqa: A002
             ignore_index: int = -100, reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of class indices given log-probabilities [C], [N, C] or [N, C, d1, ...].

    The mean divides by the summed weights of the non-ignored targets (their count without weight).
    """
    reduction = _reduction("nll_loss", reduction, size_average, reduce)
    loss, wt, _, _, _ = _nll_parts("nll_loss", _check_input("nll_loss", input), target, weight, ignore_index)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else _weighted_mean(loss.sum(), wt.sum())


def _check_smoothing(label_smoothing: float) -> float:
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    return float(label_smoothing)


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                  size_average: bool | None = None, ignore_index: int = -100, reduce: bool | None = None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits [C], [N, C] or [N, C, d1, ...] against class indices or, when the target
    has the input's shape, class probabilities; with class `weight`, `ignore_index` and label smoothing
    (PyTorch's formulas: the smoothed part shares the nll part's weighted-mean denominator)."""
    reduction = _reduction("cross_entropy", reduction, size_average, reduce)
    x = _check_input("cross_entropy", input)
    eps = _check_smoothing(label_smoothing)
    if x.ndim == 0:
        raise ShapeError("cross_entropy: expected an input of 1 or more dims (C), (N, C) or (N, C, d1, ...), "
                         "got a 0-d one")
    cdim = 0 if x.ndim == 1 else 1
    logp = ops.log_softmax(x, cdim)
    if target._shape == x._shape:
        return _cross_entropy_probs(logp, target, weight, ignore_index, reduction, eps, cdim)
    loss, wt, valid, lp, c = _nll_parts("cross_entropy", logp, target, weight, ignore_index)
    if eps == 0.0:
        if reduction == "none":
            return loss
        return loss.sum() if reduction == "sum" else _weighted_mean(loss.sum(), wt.sum())
    smooth = -(lp * weight).sum(-1) if weight is not None else -lp.sum(-1)
    smooth = ops.where(valid, smooth, 0.0)
    if reduction == "none":
        return loss * (1.0 - eps) + smooth * (eps / c)
    if reduction == "sum":
        return loss.sum() * (1.0 - eps) + smooth.sum() * (eps / c)
    return _weighted_mean(loss.sum() * (1.0 - eps) + smooth.sum() * (eps / c), wt.sum())


def _cross_entropy_probs(logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
                         reduction: str, eps: float, cdim: int) -> Tensor:
    if not target._dtype.is_floating_point:
        raise DTypeError(f"cross_entropy: expected a floating-point target of class probabilities, got dtype "
                         f"{target._dtype.name}")
    if ignore_index >= 0:
        raise ValueError("cross_entropy: ignore_index is not supported for class-probability targets")
    c = logp._shape[cdim]
    if eps > 0.0:
        target = target * (1.0 - eps) + eps / c
    prod = logp * target
    if weight is not None:
        _check_class_weight("cross_entropy", weight, c, logp)
        prod = prod * ops.reshape(weight, (c,) + (1,) * (logp.ndim - cdim - 1))
    loss = -prod.sum(cdim)
    if reduction == "mean":
        return loss.sum() / float(loss.numel()) if loss.numel() else loss.sum() / 0.0
    return _reduce(loss, reduction)


# --- regression losses ----------------------------------------------------------------------------
def _diff(op: str, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
    _check_input(op, input)
    if not isinstance(target, Tensor):
        raise DTypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    return input - target


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,  # noqa: A002
             reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """Mean squared error (input and target broadcast); a `weight` mean divides by sum(weight)."""
    reduction = _reduction("mse_loss", reduction, size_average, reduce)
    d = _diff("mse_loss", input, target)
    return _weighted("mse_loss", d * d, input, weight, reduction, True)


def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,  # noqa: A002
            reduction: str = "mean", weight: Tensor | None = None) -> Tensor:
    """Mean absolute error; a `weight` mean divides by sum(weight)."""
    reduction = _reduction("l1_loss", reduction, size_average, reduce)
    return _weighted("l1_loss", ops.abs(_diff("l1_loss", input, target)), input, weight, reduction, True)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0,  # noqa: A002
               weight: Tensor | None = None) -> Tensor:
    """`0.5 d^2` where |d| < delta, else `delta * (|d| - delta / 2)`; a `weight` mean divides by the count."""
    reduction = _reduction("huber_loss", reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = ops.abs(_diff("huber_loss", input, target))
    loss = ops.where(ops.lt(d, delta), d * d * 0.5, (d - 0.5 * delta) * delta)
    return _weighted("huber_loss", loss, input, weight, reduction, False)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
                   reduce: bool | None = None, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """`0.5 d^2 / beta` where |d| < beta, else `|d| - beta / 2` (the L1 loss when beta is 0)."""
    reduction = _reduction("smooth_l1_loss", reduction, size_average, reduce)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    d = ops.abs(_diff("smooth_l1_loss", input, target))
    if beta == 0.0:
        return _reduce(d, reduction)
    return _reduce(ops.where(ops.lt(d, beta), d * d * (0.5 / beta), d - 0.5 * beta), reduction)


# --- binary cross-entropy -------------------------------------------------------------------------
def _bce_pointwise(x: Tensor, t: Tensor) -> Tensor:
    """-(t log x + (1 - t) log(1 - x)) with the logs clamped at -100, and PyTorch's backward
    (input grad (x - t) / max(x (1 - x), 1e-12))."""
    with ag.no_grad():
        log_x = ops.clamp(ops.log(x), min=-100.0)
        log_1mx = ops.clamp(ops.log(1.0 - x), min=-100.0)
        out = (t - 1.0) * log_1mx - t * log_x
    if needs_grad(x, t):
        def grad(g: Tensor) -> tuple[Tensor | None, Tensor | None]:
            gx = g * (x - t) / ops.clamp((1.0 - x) * x, min=1e-12) if x._requires_grad else None
            gt = g * (ops.log(1.0 - x) - ops.log(x)) if t._requires_grad else None  # -logit(x), unclamped
            return gx, gt

        record(out, "binary_cross_entropy", (x, t), grad)
    return out


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities `input` (in [0, 1]) against `target` of the same size;
    `weight` broadcasts to it."""
    reduction = _reduction("binary_cross_entropy", reduction, size_average, reduce)
    x = _check_input("binary_cross_entropy", input)
    _check_input("binary_cross_entropy", target, "target")
    _same_size("binary_cross_entropy", x, target)
    if x.numel() and bool(ops.any(ops.logical_or(ops.lt(x, 0), ops.gt(x, 1)))):
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1")
    loss = _bce_pointwise(x, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def _log_sigmoid(x: Tensor) -> Tensor:
    return ops.minimum(x, 0.0) - ops.log1p(ops.exp(-ops.abs(x)))


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,  # noqa: A002
                                     size_average: bool | None = None, reduce: bool | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of logits, computed stably: `(1 - t) x - w_pos log(sigmoid(x))` with
    `w_pos = 1 + (pos_weight - 1) t` (pos_weight broadcasts over the last dim)."""
    reduction = _reduction("binary_cross_entropy_with_logits", reduction, size_average, reduce)
    x = _check_input("binary_cross_entropy_with_logits", input)
    _check_input("binary_cross_entropy_with_logits", target, "target")
    _same_size("binary_cross_entropy_with_logits", x, target)
    log_sig = _log_sigmoid(x)
    if pos_weight is not None:
        log_sig = log_sig * ((pos_weight - 1.0) * target + 1.0)
    loss = (1.0 - target) * x - log_sig
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


# --- KL divergence --------------------------------------------------------------------------------
def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None, reduce: bool | None = None,  # noqa: A002
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """KL(target || input) pointwise, `input` holding log-probabilities: `target * (log(target) - input)`
    (0 where target is 0), or `exp(target) * (target - input)` with `log_target`. `batchmean` divides the
    sum by the batch size, `mean` by the element count (PyTorch's)."""
    reduction = _reduction("kl_div", reduction, size_average, reduce, _REDUCTIONS + ("batchmean",))
    x = _check_input("kl_div", input)
    t = _check_input("kl_div", target, "target")
    if log_target:
        loss = ops.exp(t) * (t - x)
    else:
        safe = ops.where(ops.eq(t, 0), 1.0, t)
        loss = t * ops.log(safe) - t * x
    if reduction == "batchmean":
        total = loss.sum()
        return total / float(x._shape[0]) if x.ndim else total
    return _reduce(loss, reduction)
