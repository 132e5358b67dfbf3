"""Recurrent layers with PyTorch's semantics and parameter names: `RNN`, `LSTM`, `GRU` and the
single-step `RNNCell`, `LSTMCell`, `GRUCell`.

Gate layouts match torch so state dicts load as is: LSTM rows are (input, forget, cell, output)
gates, GRU rows (reset, update, new). Every parameter starts uniform in
(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), torch's default. The input projection of a whole
sequence is one matmul per layer and direction; the recurrence runs one step at a time.
"""

from __future__ import annotations

import math
from typing import Any

from ..device import Device
from ..dtype import DType
from ..errors import ShapeError, UnsupportedError, fmt_shape
from ..ops.creation import rand, uniform, zeros
from ..ops.elementwise import relu, sigmoid, tanh, where
from ..ops.indexing import cat, stack
from ..ops.linalg import matmul
from ..ops.shape import chunk, flip, squeeze, transpose, unsqueeze
from ..tensor import Tensor
from .module import Module
from .parameter import Parameter

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _param(shape: tuple[int, ...], bound: float, dtype: DType | str | None, device: Device | str | None) -> Parameter:
    return Parameter(uniform(shape, -bound, bound, dtype=dtype, device=device))


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = matmul(x, transpose(w, 0, 1))
    return y + b if b is not None else y


def _step(mode: str, xg: Tensor, hg: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One recurrence step from the input part `xg` and the hidden part `hg` of the gate pre-activations."""
    if mode == "LSTM":
        i, f, g, o = chunk(xg + hg, 4, -1)
        assert c is not None
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        return sigmoid(o) * tanh(c), c
    if mode == "GRU":
        xr, xz, xn = chunk(xg, 3, -1)
        hr, hz, hn = chunk(hg, 3, -1)
        r = sigmoid(xr + hr)
        z = sigmoid(xz + hz)
        n = tanh(xn + r * hn)
        return n + z * (h - n), None
    pre = xg + hg
    return (tanh(pre) if mode == "RNN_TANH" else relu(pre)), None


class RNNBase(Module):
    """The multi-layer, optionally bidirectional recurrence shared by RNN, LSTM and GRU."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__()
        if proj_size:
            raise UnsupportedError(f"{type(self).__name__}: proj_size is not supported")
        if input_size <= 0 or hidden_size <= 0 or num_layers <= 0:
            raise ShapeError(f"{type(self).__name__}: input_size, hidden_size and num_layers must be positive, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        dirs = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self._names: list[list[str]] = []
        for layer in range(num_layers):
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                n_in = input_size if layer == 0 else hidden_size * dirs
                names = [f"weight_ih{suffix}", f"weight_hh{suffix}"]
                setattr(self, names[0], _param((gate, n_in), bound, dtype, device))
                setattr(self, names[1], _param((gate, hidden_size), bound, dtype, device))
                if bias:
                    names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
                    setattr(self, names[2], _param((gate,), bound, dtype, device))
                    setattr(self, names[3], _param((gate,), bound, dtype, device))
                self._names.append(names)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def flatten_parameters(self) -> None:
        """A no-op, for code written for torch's cuDNN RNNs."""

    def _weights(self, idx: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        ps = [getattr(self, n) for n in self._names[idx]]
        return (ps[0], ps[1], ps[2], ps[3]) if self.bias else (ps[0], ps[1], None, None)

    def _initial(self, hx: Tensor | None, n: int, like: Tensor, batched: bool, what: str) -> Tensor:
        dirs = 2 if self.bidirectional else 1
        shape = (self.num_layers * dirs, n, self.hidden_size)
        if hx is None:
            return zeros(shape, dtype=like._dtype, device=like._device)
        h = hx if batched else unsqueeze(hx, 1)
        if h._shape != shape:
            want = shape if batched else (shape[0], shape[2])
            got = hx._shape
            raise ShapeError(f"{type(self).__name__}: expected {what} of shape {fmt_shape(want)}, got {fmt_shape(got)}")
        return h

    def _dropout(self, x: Tensor) -> Tensor:
        p = self.dropout
        if p >= 1.0:
            return x * 0.0
        keep = rand(x._shape, dtype=x._dtype, device=x._device) >= p
        return where(keep, x * (1.0 / (1.0 - p)), 0.0)

    def _run(self, x: Tensor, h0: Tensor, c0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """x [T, N, I] -> (output [T, N, dirs*H], h_n, c_n)."""
        dirs = 2 if self.bidirectional else 1
        steps = x._shape[0]
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = layer * dirs + d
                w_ih, w_hh, b_ih, b_hh = self._weights(idx)
                xs = flip(inp, 0) if d else inp
                xg = _linear(xs, w_ih, b_ih)  # [T, N, gates]
                h = h0[idx]
                c = c0[idx] if c0 is not None else None
                ys = []
                for t in range(steps):
                    h, c = _step(self.mode, xg[t], _linear(h, w_hh, b_hh), h, c)
                    ys.append(h)
                y = stack(ys, 0) if ys else zeros((0,) + h._shape, dtype=h._dtype, device=h._device)
                outs.append(flip(y, 0) if d else y)
                hs.append(h)
                if c is not None:
                    cs.append(c)
            inp = cat(outs, -1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                inp = self._dropout(inp)
        return inp, stack(hs, 0), (stack(cs, 0) if cs else None)

    def _forward(self, input: Tensor, hx: Any) -> tuple[Tensor, Tensor, Tensor | None]:  # noqa: A002
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ShapeError(f"{name}: expected a 2-d (unbatched) or 3-d input, got {fmt_shape(input._shape)}")
        if input._shape[-1] != self.input_size:
            raise ShapeError(f"{name}: expected input size {self.input_size}, got input of shape "
                             f"{fmt_shape(input._shape)}")
        batched = input.ndim == 3
        x = input if not batched or not self.batch_first else transpose(input, 0, 1)
        if not batched:
            x = unsqueeze(x, 1)
        n = x._shape[1]
        if self.mode == "LSTM":
            if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise ShapeError(f"{name}: hx must be a tuple (h_0, c_0)")
            h0 = self._initial(hx[0] if hx is not None else None, n, x, batched, "h_0")
            c0 = self._initial(hx[1] if hx is not None else None, n, x, batched, "c_0")
        else:
            h0, c0 = self._initial(hx, n, x, batched, "hx"), None
        out, hn, cn = self._run(x, h0, c0)
        if not batched:
            out, hn = squeeze(out, 1), squeeze(hn, 1)
            cn = squeeze(cn, 1) if cn is not None else None
        elif self.batch_first:
            out = transpose(out, 0, 1)
        return out, hn, cn


class RNN(RNNBase):
    """Elman RNN: `h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)` (or relu with `nonlinearity='relu'`).

    Returns (output, h_n) like torch.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r} (tanh or relu)")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: A002
        out, hn, _ = self._forward(input, hx)
        return out, hn


class LSTM(RNNBase):
    """Long short-term memory, torch's `nn.LSTM` (without proj_size).

    `forward(input, (h_0, c_0))` returns `output, (h_n, c_n)`; input [T, N, input_size]
    ([N, T, input_size] with batch_first, or unbatched [T, input_size]); states
    [num_layers * num_directions, N, hidden_size], zeros when not given.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device=device, dtype=dtype)

    def forward(self, input: Tensor,  # noqa: A002
                hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, hn, cn = self._forward(input, hx)
        assert cn is not None
        return out, (hn, cn)


class GRU(RNNBase):
    """Gated recurrent unit, torch's `nn.GRU`: `forward(input, h_0)` returns `output, h_n`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: A002
        out, hn, _ = self._forward(input, hx)
        return out, hn


# --- cells ----------------------------------------------------------------------------------------
class RNNCellBase(Module):
    """One step of a recurrence: parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate = _GATES[mode] * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight_ih = _param((gate, input_size), bound, dtype, device)
        self.weight_hh = _param((gate, hidden_size), bound, dtype, device)
        if bias:
            self.bias_ih = _param((gate,), bound, dtype, device)
            self.bias_hh = _param((gate,), bound, dtype, device)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _state(self, hx: Tensor | None, x: Tensor, batched: bool) -> Tensor:
        shape = (x._shape[0], self.hidden_size)
        if hx is None:
            return zeros(shape, dtype=x._dtype, device=x._device)
        h = hx if batched else unsqueeze(hx, 0)
        if h._shape != shape:
            raise ShapeError(f"{type(self).__name__}: expected a hidden state of shape "
                             f"{fmt_shape(shape if batched else shape[1:])}, got {fmt_shape(hx._shape)}")
        return h

    def _cell(self, input: Tensor, hx: Tensor | None, cx: Tensor | None) -> tuple[Tensor, Tensor | None, bool]:  # noqa: A002
        name = type(self).__name__
        if input.ndim not in (1, 2) or input._shape[-1] != self.input_size:
            raise ShapeError(f"{name}: expected input [N, {self.input_size}] or [{self.input_size}], got "
                             f"{fmt_shape(input._shape)}")
        batched = input.ndim == 2
        x = input if batched else unsqueeze(input, 0)
        h = self._state(hx, x, batched)
        c = self._state(cx, x, batched) if self.mode == "LSTM" else None
        xg = _linear(x, self.weight_ih, self.bias_ih)
        h, c = _step(self.mode, xg, _linear(h, self.weight_hh, self.bias_hh), h, c)
        if not batched:
            h = squeeze(h, 0)
            c = squeeze(c, 0) if c is not None else None
        return h, c, batched


class RNNCell(RNNCellBase):
    """`h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r} (tanh or relu)")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias,
                         device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._cell(input, hx, None)[0]


class LSTMCell(RNNCellBase):
    """One LSTM step: `forward(input, (h, c))` returns `(h', c')`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Device | str | None = None,
                 dtype: DType | str | None = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:  # noqa: A002
        h, c, _ = self._cell(input, hx[0] if hx is not None else None, hx[1] if hx is not None else None)
        assert c is not None
        return h, c


class GRUCell(RNNCellBase):
    """One GRU step: `forward(input, h)` returns `h'`."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Device | str | None = None,
                 dtype: DType | str | None = None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._cell(input, hx, None)[0]
