"""Conformance cases of convolutions, pooling and upsampling.

Each case runs forward (fused kernel and core's composition) and backward against
`torch.nn.functional`; the small float64 ones also get finite-difference checks.
"""

from __future__ import annotations

import warnings
from typing import Any

from .spec import In, OpCase

CONV_CASES: list[OpCase] = []


def F(m: Any) -> Any:  # noqa: N802
    """`torch.nn.functional` for torch, the candle module itself for candle."""
    return m.nn.functional if m.__name__ == "torch" else m


def _up(m: Any, x: Any, nsp: int, **kw: Any) -> Any:
    if m.__name__ == "torch":
        return m.nn.functional.interpolate(x, mode="nearest", **kw)
    return getattr(m, f"upsample_nearest{nsp}d")(x, **kw)


def _call(m: Any, op: str, *args: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():  # torch warns that padding='same' with even kernels copies the input
        warnings.simplefilter("ignore", UserWarning)
        return getattr(F(m), op)(*args, **kw)


def _add(name: str, fn: Any, *inputs: In, **kw: Any) -> None:
    CONV_CASES.append(OpCase(name, fn, tuple(inputs), fused=True, **kw))


def _conv(name: str, x: tuple[int, ...], w: tuple[int, ...], bias: bool = True, op: str = "conv2d",
          **kw: Any) -> None:
    """A convolution case; `kw` are the op's keyword arguments (stride, padding, ...)."""
    extra = {"gradcheck": False} if max(_n(x), _n(w)) > 80 else {}
    if bias:
        o = w[0] if "transpose" not in op else w[1] * kw.get("groups", 1)
        _add(name, lambda m, a, b, c: _call(m, op, a, b, c, **kw), In(x), In(w), In((o,)), **extra)
    else:
        _add(name, lambda m, a, b: _call(m, op, a, b, **kw), In(x), In(w), **extra)


def _n(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --- conv2d ------------------------------------------------------------------------------------
_conv("conv2d", (1, 2, 5, 5), (3, 2, 3, 3))
_conv("conv2d_batch_nobias", (2, 2, 4, 4), (3, 2, 2, 2), bias=False)
_conv("conv2d_stride_pad", (1, 2, 6, 5), (2, 2, 3, 3), stride=2, padding=1)
_conv("conv2d_stride_pad_pairs", (1, 2, 6, 6), (2, 2, 3, 2), stride=(2, 1), padding=(1, 2))
_conv("conv2d_dilation", (1, 2, 6, 6), (2, 2, 2, 3), dilation=(2, 1), padding=1)
_conv("conv2d_groups", (1, 4, 4, 4), (4, 2, 2, 2), groups=2, padding=1)
_conv("conv2d_groups_stride_dilation", (1, 4, 4, 5), (6, 2, 2, 2), groups=2, stride=2, dilation=2, bias=False)
_conv("conv2d_depthwise", (1, 3, 5, 4), (3, 1, 3, 3), groups=3, padding=1)
_conv("conv2d_depthwise_multiplier", (1, 2, 5, 5), (4, 1, 3, 3), groups=2, stride=2)
_conv("conv2d_1x1", (2, 3, 3, 3), (4, 3, 1, 1))
_conv("conv2d_kernel_is_input", (1, 2, 3, 4), (2, 2, 3, 4))
_conv("conv2d_same", (1, 2, 5, 6), (2, 2, 3, 4), padding="same")
_conv("conv2d_same_dilated", (1, 2, 5, 5), (2, 2, 2, 3), padding="same", dilation=2, bias=False)
_conv("conv2d_valid", (1, 2, 5, 5), (2, 2, 3, 3), padding="valid")
_conv("conv2d_unbatched", (2, 5, 5), (3, 2, 3, 3), padding=1)
_conv("conv2d_big", (4, 8, 8, 8), (16, 8, 3, 3), padding=1)
_conv("conv2d_big_groups", (2, 8, 9, 9), (8, 2, 3, 3), groups=4, stride=2, padding=2, dilation=2)

# --- conv1d ------------------------------------------------------------------------------------
_conv("conv1d", (2, 3, 7), (4, 3, 3), op="conv1d")
_conv("conv1d_stride_pad_dilation", (2, 2, 11), (3, 2, 3), op="conv1d", stride=2, padding=2, dilation=2)
_conv("conv1d_groups_nobias", (1, 4, 9), (6, 2, 3), op="conv1d", groups=2, bias=False)
_conv("conv1d_depthwise", (2, 3, 8), (3, 1, 5), op="conv1d", groups=3, padding=2)
_conv("conv1d_same", (1, 2, 9), (3, 2, 4), op="conv1d", padding="same")
_conv("conv1d_unbatched", (3, 8), (2, 3, 3), op="conv1d", padding=1)

# --- conv_transpose2d --------------------------------------------------------------------------
_T2 = "conv_transpose2d"
_conv("conv_transpose2d", (1, 2, 3, 4), (2, 3, 3, 3), op=_T2)
_conv("conv_transpose2d_stride", (1, 2, 3, 3), (2, 2, 3, 3), op=_T2, stride=2)
_conv("conv_transpose2d_stride_pad_outpad", (2, 2, 3, 3), (2, 2, 3, 3), op=_T2, stride=2, padding=1,
      output_padding=1)
_conv("conv_transpose2d_pairs", (1, 2, 3, 4), (2, 3, 2, 3), op=_T2, stride=(2, 3), padding=(1, 0),
      output_padding=(0, 2))
_conv("conv_transpose2d_dilation", (1, 2, 3, 3), (2, 2, 2, 2), op=_T2, dilation=(2, 3), output_padding=(1, 0),
      stride=(2, 1), bias=False)
_conv("conv_transpose2d_groups", (1, 4, 3, 3), (4, 2, 2, 2), op=_T2, groups=2, stride=2)
_conv("conv_transpose2d_depthwise", (1, 3, 4, 4), (3, 1, 3, 3), op=_T2, groups=3, padding=1)
_conv("conv_transpose2d_big_pad", (1, 2, 4, 4), (2, 2, 3, 3), op=_T2, padding=2, stride=2, bias=False)
_conv("conv_transpose2d_unbatched", (2, 3, 3), (2, 2, 3, 3), op=_T2, stride=2, output_padding=1)
_conv("conv_transpose2d_big", (4, 8, 6, 6), (8, 16, 3, 3), op=_T2, stride=2, padding=1, output_padding=1)

# --- conv_transpose1d --------------------------------------------------------------------------
_T1 = "conv_transpose1d"
_conv("conv_transpose1d", (2, 3, 5), (3, 2, 3), op=_T1)
_conv("conv_transpose1d_stride_pad", (2, 2, 6), (2, 3, 4), op=_T1, stride=3, padding=2, output_padding=2)
_conv("conv_transpose1d_groups_dilation", (1, 4, 5), (4, 1, 3), op=_T1, groups=2, dilation=2, bias=False)

# --- max pooling -------------------------------------------------------------------------------
# "distinct" inputs: no ties (finite differences need a unique maximum)
for _name, _shape, _kw in [
    ("max_pool2d", (2, 2, 4, 4), dict(kernel_size=2)),
    ("max_pool2d_stride_pad", (1, 2, 5, 6), dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d_overlap", (1, 2, 5, 5), dict(kernel_size=3, stride=1)),
    ("max_pool2d_dilation", (1, 2, 6, 5), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1))),
    ("max_pool2d_nonsquare", (1, 3, 4, 6), dict(kernel_size=(2, 3), stride=(2, 1))),
    ("max_pool2d_unbatched", (2, 5, 5), dict(kernel_size=2, stride=1, padding=1)),
    ("max_pool2d_big", (4, 8, 12, 12), dict(kernel_size=3, stride=2, padding=1)),
]:
    _add(_name, lambda m, x, _kw=_kw: F(m).max_pool2d(x, **_kw), In(_shape, "distinct"),
         gradcheck=_n(_shape) <= 80)
    _add(f"{_name}_indices", lambda m, x, _kw=_kw: F(m).max_pool2d(x, return_indices=True, **_kw),
         In(_shape, "distinct"), grad=False)
_add("max_pool2d_ties", lambda m, x: F(m).max_pool2d(x, 3, 1, 1, return_indices=True), In((1, 2, 4, 4), "int"),
     dtypes=("f32", "f64"), gradcheck=False)
_add("max_pool2d_int", lambda m, x: F(m).max_pool2d(x, 3, 2, 1, return_indices=True), In((2, 2, 5, 5), "int"),
     dtypes=("i64", "u8"), grad=False)
_add("max_pool1d", lambda m, x: F(m).max_pool1d(x, 3, 2, 1), In((2, 3, 9), "distinct"))
_add("max_pool1d_indices", lambda m, x: F(m).max_pool1d(x, 2, 1, 1, 2, return_indices=True), In((2, 3, 9), "distinct"),
     grad=False)

# --- average pooling ---------------------------------------------------------------------------
for _name, _shape, _kw in [
    ("avg_pool2d", (2, 2, 4, 4), dict(kernel_size=2)),
    ("avg_pool2d_stride_pad", (1, 2, 5, 6), dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d_exclude_pad", (1, 2, 5, 6), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ("avg_pool2d_nonsquare_exclude_pad", (1, 2, 6, 5), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1),
                                                            count_include_pad=False)),
    ("avg_pool2d_overlap", (1, 3, 4, 5), dict(kernel_size=2, stride=1)),
    ("avg_pool2d_divisor", (1, 2, 5, 5), dict(kernel_size=3, padding=1, stride=2, divisor_override=4)),
    ("avg_pool2d_unbatched", (2, 5, 5), dict(kernel_size=2, stride=1, padding=1, count_include_pad=False)),
    ("avg_pool2d_big", (4, 8, 12, 12), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
]:
    _add(_name, lambda m, x, _kw=_kw: F(m).avg_pool2d(x, **_kw), In(_shape), gradcheck=_n(_shape) <= 80)
_add("avg_pool1d", lambda m, x: F(m).avg_pool1d(x, 3, 2, 1), In((2, 3, 9)))
_add("avg_pool1d_exclude_pad", lambda m, x: F(m).avg_pool1d(x, 4, 3, 2, count_include_pad=False), In((2, 3, 10)))

# --- nearest upsampling ------------------------------------------------------------------------
for _name, _shape, _kw in [
    ("upsample_nearest2d_scale2", (2, 2, 3, 3), dict(scale_factor=2)),
    ("upsample_nearest2d_scale_pair", (1, 2, 3, 4), dict(scale_factor=(3, 2))),
    ("upsample_nearest2d_size", (1, 2, 3, 4), dict(size=(5, 7))),
    ("upsample_nearest2d_size_down", (1, 2, 5, 6), dict(size=(3, 4))),
    ("upsample_nearest2d_size_mixed", (1, 3, 4, 6), dict(size=(10, 4))),
    ("upsample_nearest2d_big", (4, 8, 8, 8), dict(scale_factor=2)),
]:
    _add(_name, lambda m, x, _kw=_kw: _up(m, x, 2, **_kw), In(_shape), gradcheck=_n(_shape) <= 80)
# torch's nearest upsampling has no int64 kernel on the CPU: u8 (images) only
_add("upsample_nearest2d_u8", lambda m, x: _up(m, x, 2, size=(7, 5)), In((2, 2, 3, 4), "int"),
     dtypes=("u8",), grad=False)
_add("upsample_nearest1d_u8", lambda m, x: _up(m, x, 1, scale_factor=2), In((2, 2, 3), "int"),
     dtypes=("u8",), grad=False)
_add("upsample_nearest1d_scale", lambda m, x: _up(m, x, 1, scale_factor=3), In((2, 3, 4)))
_add("upsample_nearest1d_size", lambda m, x: _up(m, x, 1, size=11), In((2, 3, 4)))

# --- a small CNN: conv -> relu -> max pool -> conv -> avg pool, gradients through all ----------------
_add("conv2d_cnn_graph", lambda m, x, w1, b1, w2: F(m).avg_pool2d(F(m).conv2d(
    F(m).max_pool2d(F(m).conv2d(x, w1, b1, padding=1).relu(), 2), w2, padding=1), 2),
    In((2, 1, 6, 6)), In((3, 1, 3, 3)), In((3,)), In((2, 3, 2, 2)), gradcheck=False)
