"""Convolution, pooling and upsampling reject bad arguments with errors that name the op and the shapes."""

from __future__ import annotations

import re

import pytest

import candle


def t(*shape: int, dtype: str = "float32", device: str = "cpu") -> candle.Tensor:
    return candle.zeros(shape, dtype=dtype, device=device)


# --- convolutions --------------------------------------------------------------------------------
def test_conv2d_channel_mismatch() -> None:
    msg = "shape mismatch in conv2d: input [1, 3, 8, 8] has 3 channels, weight [4, 2, 3, 3] expects 2 (groups=1)"
    with pytest.raises(candle.ShapeError, match=re.escape(msg)):
        candle.conv2d(t(1, 3, 8, 8), t(4, 2, 3, 3))


def test_conv2d_channel_mismatch_with_groups() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("has 4 channels, weight [4, 1, 3, 3] expects 2 (groups=2)")):
        candle.conv2d(t(1, 4, 8, 8), t(4, 1, 3, 3), groups=2)


def test_conv2d_groups_must_divide_output_channels() -> None:
    with pytest.raises(candle.ShapeError, match=r"conv2d: groups=2 must divide the output channels of weight "
                                                r"\[3, 2, 3, 3\]"):
        candle.conv2d(t(1, 4, 8, 8), t(3, 2, 3, 3), groups=2)


@pytest.mark.parametrize("groups", [0, -1, 1.5])
def test_conv2d_bad_groups(groups: object) -> None:
    with pytest.raises(candle.ShapeError, match=r"conv2d: groups must be a positive int"):
        candle.conv2d(t(1, 4, 8, 8), t(4, 4, 3, 3), groups=groups)  # type: ignore[arg-type]


def test_conv_transpose2d_groups_must_divide_input_channels() -> None:
    with pytest.raises(candle.ShapeError, match=r"conv_transpose2d: groups=2 must divide the input channels \(3\)"):
        candle.conv_transpose2d(t(1, 3, 4, 4), t(3, 2, 3, 3), groups=2)


def test_conv_transpose2d_channel_mismatch() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("shape mismatch in conv_transpose2d: input [1, 3, 4, 4] "
                                                          "has 3 channels, weight [4, 2, 3, 3] expects 4")):
        candle.conv_transpose2d(t(1, 3, 4, 4), t(4, 2, 3, 3))


@pytest.mark.parametrize("op,x,w,what", [
    ("conv2d", (8, 8), (4, 3, 3, 3), r"expected a 3-d \(unbatched\) or 4-d \(batched\) input, got shape \[8, 8\]"),
    ("conv2d", (1, 1, 3, 8, 8), (4, 3, 3, 3), r"expected a 3-d \(unbatched\) or 4-d \(batched\) input, got shape "
                                              r"\[1, 1, 3, 8, 8\]"),
    ("conv2d", (1, 3, 8, 8), (4, 3, 3), r"expected a 4-d weight \[out_channels, in_channels/groups, kH, kW\], "
                                        r"got shape \[4, 3, 3\]"),
    ("conv1d", (1, 3, 8, 8), (4, 3, 3), r"expected a 2-d \(unbatched\) or 3-d \(batched\) input"),
    ("conv1d", (1, 3, 8), (4, 3, 3, 3), r"expected a 3-d weight"),
    ("conv_transpose2d", (1, 3, 8, 8), (3, 4, 3), r"expected a 4-d weight \[in_channels, "
                                                  r"out_channels/groups, kH, kW\]"),
])
def test_conv_bad_dims(op: str, x: tuple[int, ...], w: tuple[int, ...], what: str) -> None:
    with pytest.raises(candle.ShapeError, match=f"{op}: {what}"):
        getattr(candle, op)(t(*x), t(*w))


def test_conv2d_kernel_larger_than_padded_input() -> None:
    msg = ("conv2d: kernel [5, 5] (dilated [5, 5]) is larger than the padded input [4, 6] "
           "(input [1, 3, 4, 4], padding [0, 1])")
    with pytest.raises(candle.ShapeError, match=re.escape(msg)):
        candle.conv2d(t(1, 3, 4, 4), t(2, 3, 5, 5), padding=(0, 1))


def test_conv1d_dilated_kernel_larger_than_input() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("conv1d: kernel [3] (dilated [7]) is larger than the "
                                                          "padded input [6]")):
        candle.conv1d(t(1, 2, 6), t(2, 2, 3), dilation=3)


def test_conv_transpose2d_negative_output_size() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("conv_transpose2d: the output size [-3, -3] is not "
                                                          "positive (input [1, 2, 1, 1], kernel [3, 3]")):
        candle.conv_transpose2d(t(1, 2, 1, 1), t(2, 2, 3, 3), padding=3)


def test_conv_transpose2d_output_padding_too_large() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("conv_transpose2d: output_padding [2, 2] must be smaller "
                                                          "than the stride [2, 2] or the dilation [1, 1]")):
        candle.conv_transpose2d(t(1, 2, 4, 4), t(2, 2, 3, 3), stride=2, output_padding=2)


def test_conv2d_bias_shape() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("shape mismatch in conv2d: bias [3] must have shape [4]")):
        candle.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), t(3))


@pytest.mark.parametrize("kw,what", [
    (dict(stride=0), r"stride must be positive, got \[0, 0\]"),
    (dict(dilation=(1, 0)), r"dilation must be positive, got \[1, 0\]"),
    (dict(padding=-1), r"padding must be non-negative, got \[-1, -1\]"),
    (dict(padding=(1, 2, 3)), r"padding must be an int or a tuple of 2 ints, got \(1, 2, 3\)"),
    (dict(padding="full"), r"padding must be an int, a tuple, 'same' or 'valid', got 'full'"),
    (dict(padding="same", stride=2), r"padding='same' is not supported for strided convolutions"),
])
def test_conv2d_bad_arguments(kw: dict, what: str) -> None:
    with pytest.raises(candle.ShapeError, match=f"conv2d: {what}"):
        candle.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), **kw)


def test_conv2d_dtype_mismatch() -> None:
    with pytest.raises(candle.DTypeError, match="dtype mismatch in conv2d: input float32, weight float64"):
        candle.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3, dtype="float64"))
    with pytest.raises(candle.DTypeError, match="dtype mismatch in conv2d: input float32, weight float32, "
                                                "bias float16"):
        candle.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3), t(4, dtype="float16"))


def test_conv2d_integer_input() -> None:
    with pytest.raises(candle.DTypeError, match="conv2d: expected floating-point tensors, got input of dtype int64"):
        candle.conv2d(t(1, 3, 8, 8, dtype="int64"), t(4, 3, 3, 3, dtype="int64"))


def test_conv2d_not_a_tensor() -> None:
    with pytest.raises(candle.DTypeError, match="conv2d: weight must be a Tensor, got list"):
        candle.conv2d(t(1, 3, 8, 8), [[1.0]])  # type: ignore[arg-type]


def _other_device() -> str:
    for info in candle.backends():
        if info.name != "cpu" and info.state == "available":
            return info.name
    pytest.skip("no second device available")


def test_conv2d_device_mismatch() -> None:
    dev = _other_device()
    with pytest.raises(candle.DeviceError, match=f"device mismatch in conv2d: tensors on cpu, {dev}"):
        candle.conv2d(t(1, 3, 8, 8), t(4, 3, 3, 3, device=dev))
    with pytest.raises(candle.DeviceError, match="device mismatch in conv_transpose1d"):
        candle.conv_transpose1d(t(1, 3, 8), t(3, 3, 3), t(3, device=dev))


# --- pooling ------------------------------------------------------------------------------------
def test_max_pool2d_padding_too_large() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("max_pool2d: padding [2, 2] must be at most half of the "
                                                          "kernel size [3, 3]")):
        candle.max_pool2d(t(1, 1, 8, 8), 3, padding=2)
    with pytest.raises(candle.ShapeError, match=re.escape("max_pool1d: padding [2] must be at most half of the "
                                                          "kernel size [3]")):  # dilation does not raise the bound
        candle.max_pool1d(t(1, 1, 8), 3, padding=2, dilation=2)


def test_avg_pool2d_padding_too_large() -> None:
    with pytest.raises(candle.ShapeError, match=r"avg_pool2d: padding \[0, 2\] must be at most half"):
        candle.avg_pool2d(t(1, 1, 8, 8), (2, 3), padding=(0, 2))


def test_pool_kernel_larger_than_input() -> None:
    with pytest.raises(candle.ShapeError, match=re.escape("max_pool2d: the output size [0, 2] is not positive "
                                                          "(input [1, 1, 2, 8], kernel [3, 3]")):
        candle.max_pool2d(t(1, 1, 2, 8), 3)
    with pytest.raises(candle.ShapeError, match=r"avg_pool1d: the output size \[0\] is not positive"):
        candle.avg_pool1d(t(1, 1, 3), 4)


def test_pool_bad_dims() -> None:
    with pytest.raises(candle.ShapeError, match=r"max_pool2d: expected a 3-d \(unbatched\) or 4-d \(batched\) "
                                                r"input, got shape \[8, 8\]"):
        candle.max_pool2d(t(8, 8), 2)
    with pytest.raises(candle.ShapeError, match=r"avg_pool1d: expected a 2-d \(unbatched\) or 3-d"):
        candle.avg_pool1d(t(1, 1, 8, 8), 2)


@pytest.mark.parametrize("kw,what", [
    (dict(kernel_size=0), r"kernel_size must be positive, got \[0, 0\]"),
    (dict(kernel_size=2, stride=(1, 0)), r"stride must be positive, got \[1, 0\]"),
    (dict(kernel_size=(2, 2, 2)), r"kernel_size must be an int or a tuple of 2 ints"),
])
def test_pool_bad_arguments(kw: dict, what: str) -> None:
    with pytest.raises(candle.ShapeError, match=f"max_pool2d: {what}"):
        candle.max_pool2d(t(1, 1, 8, 8), **kw)


def test_pool_ceil_mode_unsupported() -> None:
    with pytest.raises(candle.UnsupportedError, match="max_pool2d: ceil_mode=True is not supported"):
        candle.max_pool2d(t(1, 1, 8, 8), 3, ceil_mode=True)
    with pytest.raises(candle.UnsupportedError, match="avg_pool1d: ceil_mode=True"):
        candle.avg_pool1d(t(1, 1, 8), 3, ceil_mode=True)


def test_avg_pool_integer_input() -> None:
    with pytest.raises(candle.DTypeError, match="avg_pool2d: expected floating-point tensors, got input of dtype "
                                                "uint8"):
        candle.avg_pool2d(t(1, 1, 4, 4, dtype="uint8"), 2)


# --- upsampling ---------------------------------------------------------------------------------
def test_upsample_needs_exactly_one_of_size_and_scale() -> None:
    with pytest.raises(candle.ShapeError, match="upsample_nearest2d: give exactly one of size and scale_factor"):
        candle.upsample_nearest2d(t(1, 1, 4, 4))
    with pytest.raises(candle.ShapeError, match="upsample_nearest2d: give exactly one of size and scale_factor"):
        candle.upsample_nearest2d(t(1, 1, 4, 4), size=8, scale_factor=2)


def test_upsample_bad_size_and_scale() -> None:
    with pytest.raises(candle.ShapeError, match=r"upsample_nearest2d: size must be positive, got \[0, 4\]"):
        candle.upsample_nearest2d(t(1, 1, 4, 4), size=(0, 4))
    with pytest.raises(candle.UnsupportedError, match="upsample_nearest1d: scale_factor must be a positive integer"):
        candle.upsample_nearest1d(t(1, 1, 4), scale_factor=1.5)
    with pytest.raises(candle.ShapeError, match=r"upsample_nearest1d: expected a 2-d \(unbatched\) or 3-d"):
        candle.upsample_nearest1d(t(1, 1, 4, 4), scale_factor=2)


# --- pad ----------------------------------------------------------------------------------------
def test_pad_errors() -> None:
    with pytest.raises(candle.ShapeError, match=r"pad: padding \[1, 1, 1\] must have an even length"):
        candle.pad(t(2, 3), (1, 1, 1))
    with pytest.raises(candle.ShapeError, match=r"pad: padding \(-2, -2\) of dim 1 makes shape \[2, 3\] negative"):
        candle.pad(t(2, 3), (-2, -2))
    with pytest.raises(candle.UnsupportedError, match="pad: mode 'reflect' is not supported"):
        candle.pad(t(2, 3), (1, 1), mode="reflect")


def test_pad_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    import numpy as np

    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    for p in [(1, 2), (1, 0, 0, 2), (-1, 2, 1, -2), (0, 0, 0, 0, 1, 1)]:
        ref = torch.nn.functional.pad(torch.from_numpy(a), p, value=-1.5).numpy()
        x = candle.tensor(a).requires_grad_(True)
        y = candle.pad(x, p, value=-1.5)
        np.testing.assert_array_equal(y.numpy(), ref)
        y.sum().backward()
        tx = torch.from_numpy(a).requires_grad_(True)
        torch.nn.functional.pad(tx, p, value=-1.5).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
