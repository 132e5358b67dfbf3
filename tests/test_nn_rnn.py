"""RNN, LSTM, GRU and their cells against torch.nn with copied weights: outputs, final states and
every gradient (float32 and float64)."""

from __future__ import annotations

import numpy as np
import pytest

import candle
from candle.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from candle.testing import assert_close

torch = pytest.importorskip("torch")

DTYPES = ["float32", "float64"]
TOL = {"float32": (1e-4, 1e-5), "float64": (1e-9, 1e-10)}
GTOL = {"float32": (1e-3, 1e-4), "float64": (1e-8, 1e-9)}
KINDS = {"LSTM": (LSTM, torch.nn.LSTM), "GRU": (GRU, torch.nn.GRU), "RNN": (RNN, torch.nn.RNN)}
CELLS = {"LSTMCell": (LSTMCell, torch.nn.LSTMCell), "GRUCell": (GRUCell, torch.nn.GRUCell),
         "RNNCell": (RNNCell, torch.nn.RNNCell)}


def close(a: object, b: object, dtype: str, what: str, grad: bool = False) -> None:
    r, t = (GTOL if grad else TOL)[dtype]
    assert_close(a, b, r, t, "f64" if dtype == "float64" else "f32", what)


def copy_weights(cmod: candle.nn.Module, tmod: torch.nn.Module) -> None:
    tsd = tmod.state_dict()
    assert list(cmod.state_dict()) == list(tsd)
    cmod.load_state_dict({k: candle.tensor(v.numpy()) for k, v in tsd.items()})


def tensors(a: np.ndarray, dtype: str) -> tuple[candle.Tensor, torch.Tensor]:
    return (candle.tensor(a, dtype=dtype).requires_grad_(),
            torch.tensor(a, dtype=getattr(torch, dtype)).requires_grad_())


CONFIGS = [  # constructor kwargs, batched, with initial state
    ({}, True, False),
    ({"num_layers": 2}, True, True),
    ({"bidirectional": True}, True, True),
    ({"num_layers": 2, "bidirectional": True, "batch_first": True}, True, True),
    ({"bias": False, "batch_first": True}, True, False),
    ({"num_layers": 2, "bidirectional": True}, False, True),
    ({"num_layers": 2, "dropout": 0.3}, True, False),  # eval mode: no dropout, like torch
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("kind", list(KINDS))
def test_recurrent_layer_matches_torch(kind: str, cfg: tuple, dtype: str) -> None:
    kw, batched, with_state = cfg
    ours, theirs = KINDS[kind]
    i, h, t, n = 3, 4, 5, 2
    torch.manual_seed(0)
    tmod = theirs(i, h, **kw).to(getattr(torch, dtype))
    cmod = ours(i, h, **kw, dtype=dtype)
    copy_weights(cmod, tmod)
    if kw.get("dropout"):
        tmod.eval()
        cmod.eval()
    g = np.random.default_rng(1)
    bf = kw.get("batch_first", False)
    xshape = ((n, t, i) if bf else (t, n, i)) if batched else (t, i)
    cx, tx = tensors(g.standard_normal(xshape), dtype)
    dirs = 2 if kw.get("bidirectional") else 1
    sshape = (kw.get("num_layers", 1) * dirs, n, h) if batched else (kw.get("num_layers", 1) * dirs, h)
    cstate = tstate = None
    leaves = [(cx, tx, "input")]
    if with_state:
        ch, th = tensors(g.standard_normal(sshape), dtype)
        leaves.append((ch, th, "h0"))
        if kind == "LSTM":
            cc, tc = tensors(g.standard_normal(sshape), dtype)
            leaves.append((cc, tc, "c0"))
            cstate, tstate = (ch, cc), (th, tc)
        else:
            cstate, tstate = ch, th
    tout, tstates = tmod(tx, tstate)
    cout, cstates = cmod(cx, cstate)
    close(cout, tout, dtype, "output")
    if kind == "LSTM":
        close(cstates[0], tstates[0], dtype, "h_n")
        close(cstates[1], tstates[1], dtype, "c_n")
        tfinal, cfinal = tstates[0] + 0.5 * tstates[1], cstates[0] + 0.5 * cstates[1]
    else:
        close(cstates, tstates, dtype, "h_n")
        tfinal, cfinal = tstates, cstates
    w1, w2 = g.standard_normal(tuple(tout.shape)), g.standard_normal(tuple(tfinal.shape))
    tt = lambda a: torch.tensor(a, dtype=getattr(torch, dtype))  # noqa: E731
    ((tout * tt(w1)).sum() + (tfinal * tt(w2)).sum()).backward()
    ((cout * candle.tensor(w1, dtype=dtype)).sum() + (cfinal * candle.tensor(w2, dtype=dtype)).sum()).backward()
    for c, tl, name in leaves:
        close(c.grad, tl.grad, dtype, f"grad of {name}", grad=True)
    tparams = dict(tmod.named_parameters())
    for name, p in cmod.named_parameters():
        close(p.grad, tparams[name].grad, dtype, f"grad of {name}", grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind: str, bias: bool, batched: bool, dtype: str) -> None:
    ours, theirs = CELLS[kind]
    torch.manual_seed(0)
    tmod = theirs(3, 4, bias=bias).to(getattr(torch, dtype))
    cmod = ours(3, 4, bias=bias, dtype=dtype)
    copy_weights(cmod, tmod)
    g = np.random.default_rng(2)
    cx, tx = tensors(g.standard_normal((2, 3) if batched else (3,)), dtype)
    ch, th = tensors(g.standard_normal((2, 4) if batched else (4,)), dtype)
    if kind == "LSTMCell":
        cc, tc = tensors(g.standard_normal((2, 4) if batched else (4,)), dtype)
        th2, tc2 = tmod(tx, (th, tc))
        ch2, cc2 = cmod(cx, (ch, cc))
        close(cc2, tc2, dtype, "c'")
        tsum, csum = (th2 * 2 + tc2).sum(), (ch2 * 2 + cc2).sum()
    else:
        th2, ch2 = tmod(tx, th), cmod(cx, ch)
        tsum, csum = (th2 * th2).sum(), (ch2 * ch2).sum()
    close(ch2, th2, dtype, "h'")
    tsum.backward()
    csum.backward()
    close(cx.grad, tx.grad, dtype, "grad of input", grad=True)
    close(ch.grad, th.grad, dtype, "grad of h", grad=True)
    tparams = dict(tmod.named_parameters())
    for name, p in cmod.named_parameters():
        close(p.grad, tparams[name].grad, dtype, f"grad of {name}", grad=True)
    # no state: zeros
    h_default = cmod(cx.detach())
    h_default = h_default[0] if isinstance(h_default, tuple) else h_default
    t_default = tmod(tx.detach())
    t_default = t_default[0] if isinstance(t_default, tuple) else t_default
    close(h_default, t_default, dtype, "h' from zeros")


def test_relu_rnn_and_init_ranges() -> None:
    torch.manual_seed(0)
    tmod = torch.nn.RNN(3, 5, nonlinearity="relu", num_layers=2)
    cmod = RNN(3, 5, nonlinearity="relu", num_layers=2)
    copy_weights(cmod, tmod)
    x = np.random.default_rng(3).standard_normal((4, 2, 3)).astype(np.float32)
    close(cmod(candle.tensor(x))[0], tmod(torch.tensor(x))[0], "float32", "relu rnn")
    bound = 1 / np.sqrt(7)
    fresh = LSTM(3, 7, num_layers=2, bidirectional=True)
    for name, p in fresh.named_parameters():
        a = p.detach().numpy()
        assert a.min() >= -bound and a.max() <= bound and a.std() > bound / 4, name


def test_dropout_between_layers_only_in_training() -> None:
    m = GRU(3, 4, num_layers=2, dropout=0.5)
    x = candle.randn(6, 2, 3)
    train1, _ = m(x)
    m.eval()
    eval1, _ = m(x)
    eval2, _ = m(x)
    close(eval1, eval2, "float32", "eval is deterministic")
    assert not np.allclose(train1.detach().numpy(), eval1.detach().numpy())
    single = GRU(3, 4, num_layers=1, dropout=0.5)  # a single layer has no dropout (torch warns)
    close(single(x)[0], single(x)[0], "float32", "no dropout after the last layer")


def test_errors() -> None:
    m = LSTM(3, 4, num_layers=2)
    with pytest.raises(candle.ShapeError, match="input size 3"):
        m(candle.randn(5, 2, 4))
    with pytest.raises(candle.ShapeError, match="h_0"):
        m(candle.randn(5, 2, 3), (candle.randn(1, 2, 4), candle.randn(2, 2, 4)))
    with pytest.raises(candle.ShapeError, match="tuple"):
        m(candle.randn(5, 2, 3), candle.randn(2, 2, 4))
    with pytest.raises(candle.ShapeError, match="2-d"):
        m(candle.randn(3))
    with pytest.raises(candle.UnsupportedError):
        LSTM(3, 4, proj_size=2)
    with pytest.raises(candle.ShapeError):
        GRUCell(3, 4)(candle.randn(2, 5))
