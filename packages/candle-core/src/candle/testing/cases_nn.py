"""Conformance cases of the normalisation ops and the SwiGLU gate (`rms_norm`, `layer_norm`,
`silu_mul`, `group_norm`, `batch_norm`) against `torch.nn.functional`.

The fused cases run the backend's kernel and core's composition; both must match PyTorch.
"""

from __future__ import annotations

from typing import Any

from .spec import In, OpCase

NN_CASES: list[OpCase] = []


def F(m: Any) -> Any:  # noqa: N802
    """`torch.nn.functional` or `candle.nn.functional`."""
    return m.nn.functional


def _add(name: str, fn: Any, *inputs: In, **kw: Any) -> None:
    NN_CASES.append(OpCase(name, fn, tuple(inputs), **kw))


def _silu_mul(m: Any, a: Any, b: Any) -> Any:
    return F(m).silu(a) * b if m.__name__ == "torch" else F(m).silu_mul(a, b)


X = In((3, 5, 8))
V = In((8,))

# --- rms_norm (fused kernel "rms_norm") ------------------------------------------------------------
_add("rms_norm", lambda m, x, w: F(m).rms_norm(x, (8,), w, 1e-5), X, V, fused=True)
_add("rms_norm_default_eps", lambda m, x, w: F(m).rms_norm(x, (8,), w), X, V, fused=True)
_add("rms_norm_no_weight", lambda m, x: F(m).rms_norm(x, (16,), eps=1e-6), In((4, 16)), fused=True)
_add("rms_norm_2d_shape", lambda m, x, w: F(m).rms_norm(x, (3, 4), w, 1e-5), In((2, 3, 4)), In((3, 4)), fused=True)
_add("rms_norm_1d", lambda m, x, w: F(m).rms_norm(x, (6,), w, 1e-5), In((6,)), In((6,)), fused=True)
_add("rms_norm_transposed", lambda m, x, w: F(m).rms_norm(x.transpose(0, 1), (8,), w, 1e-5), In((5, 3, 8)), V,
     fused=True)

# --- layer_norm (fused kernel "layer_norm") --------------------------------------------------------
_add("layer_norm", lambda m, x, w, b: F(m).layer_norm(x, (8,), w, b), X, V, V, fused=True)
_add("layer_norm_eps", lambda m, x, w, b: F(m).layer_norm(x, (8,), w, b, eps=1e-2), X, V, V, fused=True)
_add("layer_norm_no_affine", lambda m, x: F(m).layer_norm(x, (8,)), X, fused=True)
_add("layer_norm_weight_only", lambda m, x, w: F(m).layer_norm(x, (8,), w), X, V, fused=True)
_add("layer_norm_2d_shape", lambda m, x, w, b: F(m).layer_norm(x, (3, 4), w, b), In((2, 3, 4)), In((3, 4)),
     In((3, 4)), fused=True)
_add("layer_norm_offset_input", lambda m, x, w, b: F(m).layer_norm(x * 3.0 + 20.0, (8,), w, b), X, V, V, fused=True,
     tol={"f16": (2e-2, 2e-2), "bf16": (6e-2, 6e-2)}, grad_tol={"f16": (6e-2, 6e-2), "bf16": (3e-1, 3e-1)})

# --- silu_mul (fused kernel "silu_mul") -----------------------------------------------------------
_add("silu_mul", _silu_mul, In((4, 8)), In((4, 8)), fused=True)
_add("silu_mul_bcast", _silu_mul, In((2, 3, 8)), In((8,)), fused=True)
_add("silu_mul_halves", lambda m, x: F(m).silu(x[..., :4]) * x[..., 4:] if m.__name__ == "torch" else
     F(m).silu_mul(x), In((2, 3, 8)), fused=True)
_add("silu_mul_large", lambda m, a, b: _silu_mul(m, a * 30.0, b), In((3, 5)), In((3, 5)), fused=True,
     gradcheck=False)

# --- group_norm (runs the layer_norm kernel on [N, groups, -1]) -------------------------------------
_add("group_norm", lambda m, x, w, b: F(m).group_norm(x, 2, w, b), In((2, 4, 3, 3)), In((4,)), In((4,)), fused=True)
_add("group_norm_no_affine", lambda m, x: F(m).group_norm(x, 3, eps=1e-3), In((2, 6, 5)), fused=True)
_add("group_norm_one_group", lambda m, x, w, b: F(m).group_norm(x, 1, w, b), In((3, 4)), In((4,)), In((4,)),
     fused=True)

# --- batch_norm (composition only) ---------------------------------------------------------------
_add("batch_norm_train", lambda m, x, w, b: F(m).batch_norm(x, None, None, w, b, training=True),
     In((4, 3, 2, 2)), In((3,)), In((3,)))
_add("batch_norm_train_1d", lambda m, x: F(m).batch_norm(x, None, None, training=True, eps=1e-3), In((5, 3)))
_add("batch_norm_eval", lambda m, x, rm, rv, w, b: F(m).batch_norm(x, rm, rv, w, b, training=False),
     In((4, 3, 5)), In((3,), grad=False), In((3,), "pos", grad=False), In((3,)), In((3,)))
