"""candle.nn layers against torch.nn with the same weights: forward, backward (grads of the input
and of every parameter), running statistics, in float32 and float64; containers; state_dict
errors; train/eval; Module.to(dtype); default initialisation and candle.nn.init statistics."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import candle
import candle.nn as nn
from candle.testing import assert_close

torch = pytest.importorskip("torch")

DTYPES = ("float32", "float64")
_SHORT = {"float32": "f32", "float64": "f64"}


# --- harness ----------------------------------------------------------------------------------------
def _to_torch(a: np.ndarray, dtype: str, grad: bool) -> Any:
    t = torch.from_numpy(np.array(a))
    if t.is_floating_point():
        t = t.to(getattr(torch, dtype)).requires_grad_(grad)
    return t


def _to_candle(a: np.ndarray, dtype: str, grad: bool) -> candle.Tensor:
    if a.dtype.kind == "f":
        return candle.tensor(a, dtype=dtype).requires_grad_(grad)
    return candle.tensor(a)


def _flat(out: Any) -> list[Any]:
    return [o for item in out for o in _flat(item)] if isinstance(out, (tuple, list)) else [out]


def pair(factory: Callable[[Any], Any], dtype: str) -> tuple[Any, Any]:
    """The same layer in torch and candle, candle's loaded from torch's state dict."""
    tmod = factory(torch.nn).to(getattr(torch, dtype))
    cmod = factory(nn).to(dtype)
    sd = tmod.state_dict()
    assert list(cmod.state_dict()) == list(sd), "state_dict keys differ from torch's"
    for k, v in cmod.state_dict().items():
        assert tuple(v.shape) == tuple(sd[k].shape), f"{k}: shape {v.shape} != torch's {tuple(sd[k].shape)}"
    cmod.load_state_dict({k: candle.tensor(v.numpy()) for k, v in sd.items()})
    return cmod, tmod


def check_layer(factory: Callable[[Any], Any], inputs: list[np.ndarray], dtype: str, train: bool = True,
                grad_rtol: float | None = None) -> None:
    """`compare` a new pair of layers built by `factory`."""
    compare(*pair(factory, dtype), inputs, dtype, train, grad_rtol)


def compare(cmod: Any, tmod: Any, inputs: list[np.ndarray], dtype: str, train: bool = True,
            grad_rtol: float | None = None) -> None:
    """Forward, backward of sum(out * w), and the state after, against torch."""
    cmod.train(train)
    tmod.train(train)
    tin = [_to_torch(a, dtype, True) for a in inputs]
    cin = [_to_candle(a, dtype, True) for a in inputs]
    tout, cout = _flat(tmod(*tin)), _flat(cmod(*cin))
    dt = _SHORT[dtype]
    assert len(tout) == len(cout)
    for i, (c, t) in enumerate(zip(cout, tout)):
        assert_close(c, t, dtype=dt, what=f"output {i}")
    w = np.random.default_rng(0).standard_normal(tuple(tout[0].shape))
    (tout[0] * _to_torch(w, dtype, False)).sum().backward()
    (cout[0] * _to_candle(w, dtype, False)).sum().backward()
    gr, ga = (1e-3, 1e-4) if dtype == "float32" else (1e-8, 1e-9)
    gr = max(gr, grad_rtol or 0.0)
    for i, (c, t) in enumerate(zip(cin, tin)):
        if t.is_floating_point():
            assert_close(c.grad, t.grad, gr, ga, dt, f"grad of input {i}")
    tparams = dict(tmod.named_parameters())
    cparams = dict(cmod.named_parameters())
    assert list(cparams) == list(tparams)
    for name, p in cparams.items():
        if tparams[name].grad is None:
            assert p.grad is None or not np.abs(p.grad.numpy()).any(), name
        else:
            assert_close(p.grad, tparams[name].grad, gr, ga, dt, f"grad of {name}")
    for k, v in tmod.state_dict().items():
        assert_close(cmod.state_dict()[k], v, dtype=dt, what=f"state {k} after forward")


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --- layers: (id, factory, input shapes) ------------------------------------------------------------
X2 = [(4, 6)]
LAYERS: list[tuple[str, Callable[[Any], Any], list[tuple[int, ...]]]] = [
    ("linear", lambda m: m.Linear(6, 3), X2),
    ("linear_nobias", lambda m: m.Linear(6, 3, bias=False), X2),
    ("linear_3d_input", lambda m: m.Linear(6, 5), [(2, 4, 6)]),
    ("linear_1d_input", lambda m: m.Linear(6, 2), [(6,)]),
    ("bilinear", lambda m: m.Bilinear(3, 4, 2), [(5, 3), (5, 4)]),
    ("bilinear_nobias", lambda m: m.Bilinear(3, 2, 4, bias=False), [(2, 3, 3), (2, 3, 2)]),
    ("identity", lambda m: m.Identity(7, key="ignored"), X2),
    ("flatten", lambda m: m.Flatten(), [(2, 3, 4)]),
    ("flatten_range", lambda m: m.Flatten(0, 1), [(2, 3, 4)]),
    ("unflatten", lambda m: m.Unflatten(1, (2, 3)), X2),
    ("relu", lambda m: m.ReLU(), X2),
    ("relu6", lambda m: m.ReLU6(), [(4, 6)]),
    ("hardtanh", lambda m: m.Hardtanh(-0.5, 0.7), X2),
    ("gelu", lambda m: m.GELU(), X2),
    ("gelu_tanh", lambda m: m.GELU(approximate="tanh"), X2),
    ("silu", lambda m: m.SiLU(), X2),
    ("sigmoid", lambda m: m.Sigmoid(), X2),
    ("tanh", lambda m: m.Tanh(), X2),
    ("softplus", lambda m: m.Softplus(), X2),
    ("softplus_beta_threshold", lambda m: m.Softplus(beta=2.0, threshold=1.0), X2),
    ("mish", lambda m: m.Mish(), X2),
    ("leaky_relu", lambda m: m.LeakyReLU(0.2), X2),
    ("elu", lambda m: m.ELU(0.5), X2),
    ("hardswish", lambda m: m.Hardswish(), [(5, 8)]),
    ("hardsigmoid", lambda m: m.Hardsigmoid(), [(5, 8)]),
    ("logsigmoid", lambda m: m.LogSigmoid(), X2),
    ("softsign", lambda m: m.Softsign(), X2),
    ("glu", lambda m: m.GLU(), X2),
    ("softmax", lambda m: m.Softmax(dim=1), [(2, 3, 4)]),
    ("log_softmax", lambda m: m.LogSoftmax(dim=-1), [(2, 3, 4)]),
    ("layer_norm", lambda m: m.LayerNorm(6), [(2, 4, 6)]),
    ("layer_norm_2d_shape", lambda m: m.LayerNorm((3, 4), eps=1e-3), [(2, 3, 4)]),
    ("layer_norm_no_affine", lambda m: m.LayerNorm(6, elementwise_affine=False), X2),
    ("layer_norm_no_bias", lambda m: m.LayerNorm(6, bias=False), X2),
    ("rms_norm", lambda m: m.RMSNorm(6), [(2, 4, 6)]),
    ("rms_norm_eps", lambda m: m.RMSNorm(6, eps=1e-5), X2),
    ("rms_norm_2d_shape", lambda m: m.RMSNorm((3, 4)), [(2, 3, 4)]),
    ("rms_norm_no_affine", lambda m: m.RMSNorm(6, elementwise_affine=False), X2),
    ("group_norm", lambda m: m.GroupNorm(2, 4), [(3, 4, 5)]),
    ("group_norm_4d", lambda m: m.GroupNorm(3, 6, eps=1e-3), [(2, 6, 3, 2)]),
    ("group_norm_no_affine", lambda m: m.GroupNorm(1, 4, affine=False), [(3, 4)]),
    ("batch_norm1d", lambda m: m.BatchNorm1d(4), [(8, 4)]),
    ("batch_norm1d_3d", lambda m: m.BatchNorm1d(3, momentum=0.3), [(4, 3, 5)]),
    ("batch_norm1d_cumulative", lambda m: m.BatchNorm1d(4, momentum=None), [(6, 4)]),
    ("batch_norm1d_no_affine", lambda m: m.BatchNorm1d(4, affine=False), [(6, 4)]),
    ("batch_norm1d_untracked", lambda m: m.BatchNorm1d(4, track_running_stats=False), [(6, 4)]),
    ("batch_norm1d_no_bias", lambda m: m.BatchNorm1d(4, bias=False), [(6, 4)]),
    ("group_norm_no_bias", lambda m: m.GroupNorm(2, 4, bias=False), [(3, 4, 2)]),
    ("batch_norm2d", lambda m: m.BatchNorm2d(3), [(4, 3, 5, 5)]),
    ("conv1d", lambda m: m.Conv1d(3, 4, 3), [(2, 3, 9)]),
    ("conv1d_options", lambda m: m.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), [(2, 4, 11)]),
    ("conv1d_same", lambda m: m.Conv1d(3, 2, 4, padding="same", bias=False), [(2, 3, 8)]),
    ("conv1d_reflect", lambda m: m.Conv1d(3, 4, 3, padding=2, padding_mode="reflect"), [(2, 3, 7)]),
    ("conv1d_circular_same", lambda m: m.Conv1d(2, 3, 4, padding="same", padding_mode="circular"), [(1, 2, 9)]),
    ("conv1d_unbatched", lambda m: m.Conv1d(3, 4, 3), [(3, 9)]),
    ("conv2d", lambda m: m.Conv2d(3, 4, 3), [(2, 3, 7, 6)]),
    ("conv2d_options", lambda m: m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=2), [(2, 4, 7, 6)]),
    ("conv2d_dilation_valid", lambda m: m.Conv2d(2, 3, 2, dilation=2, padding="valid"), [(1, 2, 6, 6)]),
    ("conv2d_same_even_kernel", lambda m: m.Conv2d(2, 3, (2, 4), padding="same"), [(2, 2, 5, 6)]),
    ("conv2d_replicate", lambda m: m.Conv2d(2, 3, 3, padding=1, padding_mode="replicate"), [(2, 2, 5, 5)]),
    ("conv2d_reflect", lambda m: m.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="reflect"), [(1, 2, 5, 6)]),
    ("conv2d_circular", lambda m: m.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), [(1, 2, 4, 5)]),
    ("conv_transpose1d", lambda m: m.ConvTranspose1d(3, 4, 3, stride=2), [(2, 3, 5)]),
    ("conv_transpose1d_options", lambda m: m.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1,
                                                              groups=2, dilation=1), [(2, 4, 5)]),
    ("conv_transpose2d", lambda m: m.ConvTranspose2d(3, 2, 3), [(2, 3, 4, 5)]),
    ("conv_transpose2d_options", lambda m: m.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                                              groups=2, bias=False), [(1, 4, 4, 3)]),
    ("max_pool1d", lambda m: m.MaxPool1d(2), [(2, 3, 8)]),
    ("max_pool1d_options", lambda m: m.MaxPool1d(3, stride=2, padding=1), [(2, 3, 9)]),
    ("max_pool2d", lambda m: m.MaxPool2d(2), [(2, 3, 6, 4)]),
    ("max_pool2d_options", lambda m: m.MaxPool2d(3, stride=2, padding=1, dilation=1), [(1, 2, 7, 7)]),
    ("max_pool2d_indices", lambda m: m.MaxPool2d(2, return_indices=True), [(1, 2, 4, 6)]),
    ("avg_pool1d", lambda m: m.AvgPool1d(3, 2, 1), [(2, 3, 8)]),
    ("avg_pool2d", lambda m: m.AvgPool2d(2), [(2, 3, 6, 4)]),
    ("avg_pool2d_exclude_pad", lambda m: m.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
     [(1, 2, 7, 6)]),
    ("avg_pool2d_divisor", lambda m: m.AvgPool2d(2, divisor_override=3), [(1, 2, 4, 4)]),
    ("upsample_scale", lambda m: m.Upsample(scale_factor=2), [(1, 2, 3, 4)]),
    ("upsample_size", lambda m: m.Upsample(size=(5, 7)), [(1, 2, 3, 4)]),
    ("upsample_1d", lambda m: m.Upsample(scale_factor=3, mode="nearest"), [(2, 2, 4)]),
    ("sequential_mlp", lambda m: m.Sequential(m.Linear(6, 8), m.GELU(), m.LayerNorm(8), m.Linear(8, 2)), X2),
    ("sequential_cnn", lambda m: m.Sequential(m.Conv2d(1, 4, 3, padding=1), m.BatchNorm2d(4), m.ReLU(),
                                              m.MaxPool2d(2), m.Flatten(), m.Linear(16, 3)), [(3, 1, 4, 4)]),
]

# torch's float64 hardsigmoid backward multiplies by float32(1/6): a 3e-8 relative error
GRAD_RTOL = {"hardsigmoid": 1e-7}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,factory,shapes", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(name: str, factory: Callable[[Any], Any], shapes: list[tuple[int, ...]],
                             dtype: str) -> None:
    check_layer(factory, [rand(*s, seed=i) for i, s in enumerate(shapes)], dtype, grad_rtol=GRAD_RTOL.get(name))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factory,shape", [
    (lambda m: m.BatchNorm1d(4), (8, 4)),
    (lambda m: m.BatchNorm2d(3, momentum=0.5), (4, 3, 2, 3)),
    (lambda m: m.BatchNorm1d(3, momentum=None), (5, 3)),
    (lambda m: m.Dropout(0.5), (4, 6)),
    (lambda m: m.Sequential(m.Linear(6, 4), m.Dropout(0.3), m.BatchNorm1d(4)), (5, 6)),
], ids=["bn1d", "bn2d", "bn_cumulative", "dropout", "mixed"])
def test_eval_mode_matches_torch(factory: Callable[[Any], Any], shape: tuple[int, ...], dtype: str) -> None:
    """Training steps update the running statistics like torch's; eval mode then uses them."""
    cmod, tmod = pair(factory, dtype)
    has_dropout = any(isinstance(m, nn.Dropout) for m in cmod.modules())
    for step in range(3):
        x = rand(*shape, seed=10 + step) * 2 + 1
        with torch.no_grad():
            tmod(_to_torch(x, dtype, False))
        if not has_dropout:
            cmod(_to_candle(x, dtype, False))
    if has_dropout:  # the dropout masks differ: take torch's statistics
        cmod.load_state_dict({k: candle.tensor(v.numpy()) for k, v in tmod.state_dict().items()})
    for k, v in tmod.state_dict().items():
        assert_close(cmod.state_dict()[k], v, dtype=_SHORT[dtype], what=k)
    compare(cmod, tmod, [rand(*shape, seed=3)], dtype, train=False)


def test_embedding_matches_torch_and_padding_idx_gets_no_grad() -> None:
    idx = np.array([[1, 2, 0], [2, 5, 2]])
    for dtype in DTYPES:
        for kw in ({}, {"padding_idx": 2}, {"padding_idx": -1}):
            cmod, tmod = pair(lambda m, kw=kw: m.Embedding(6, 4, **kw), dtype)
            tout, cout = tmod(torch.from_numpy(idx)), cmod(candle.tensor(idx))
            assert_close(cout, tout, dtype=_SHORT[dtype])
            w = rand(*tout.shape)
            (tout * _to_torch(w, dtype, False)).sum().backward()
            (cout * _to_candle(w, dtype, False)).sum().backward()
            assert_close(cmod.weight.grad, tmod.weight.grad, dtype=_SHORT[dtype])
    emb = nn.Embedding(5, 3, padding_idx=1)
    assert emb.weight[1].tolist() == [0.0, 0.0, 0.0]


def test_embedding_from_pretrained() -> None:
    w = candle.randn(4, 3)
    emb = nn.Embedding.from_pretrained(w)
    assert not emb.weight.requires_grad
    assert np.array_equal(emb(candle.tensor([3, 0])).numpy(), w.numpy()[[3, 0]])
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad
    with pytest.raises(candle.ShapeError, match="2-d"):
        nn.Embedding.from_pretrained(candle.randn(4))
    with pytest.raises(candle.DimError):
        emb(candle.tensor([4]))


def test_conv_transpose_output_size_matches_torch() -> None:
    for factory, shape, size in [
        (lambda m: m.ConvTranspose2d(2, 3, 3, stride=2, padding=1), (1, 2, 4, 4), (8, 8)),
        (lambda m: m.ConvTranspose2d(2, 3, 3, stride=3), (1, 2, 3, 2), [1, 3, 10, 8]),
        (lambda m: m.ConvTranspose1d(2, 2, 2, stride=2), (2, 2, 5), (11,)),
    ]:
        cmod, tmod = pair(factory, "float64")
        x = rand(*shape)
        t = tmod(torch.from_numpy(x), output_size=size)
        c = cmod(candle.tensor(x), output_size=size)
        assert_close(c, t, dtype="f64")
    with pytest.raises(ValueError, match="valid sizes"):
        nn.ConvTranspose2d(2, 3, 3, stride=2)(candle.randn(1, 2, 4, 4), output_size=(12, 12))


def test_layer_argument_errors() -> None:
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="expected 4D input"):
        nn.BatchNorm2d(3)(candle.randn(2, 3, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(candle.randn(2, 3, 4, 4))
    with pytest.raises(candle.ShapeError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(candle.randn(1, 3))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    with pytest.raises(candle.ShapeError, match="matmul"):
        nn.Linear(4, 2)(candle.randn(3, 5))
    with pytest.raises(candle.ShapeError, match="layer_norm"):
        nn.LayerNorm(4)(candle.randn(3, 5))


# --- containers ------------------------------------------------------------------------------------
def test_sequential_indexing_slicing_and_mutation() -> None:
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and list(s) == [a, b, c]
    assert s[0] is a and s[-1] is c and s[1] is b
    head = s[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    assert list(s[::-1]) == [c, b, a]
    with pytest.raises(IndexError, match="out of range"):
        s[3]
    assert s(candle.randn(4, 2)).shape == (4, 1)
    assert list(dict(s.named_parameters())) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    d = nn.Tanh()
    s.append(d)
    assert s[3] is d and len(s) == 4
    s.insert(1, nn.Identity())
    assert [type(m).__name__ for m in s] == ["Linear", "Identity", "ReLU", "Linear", "Tanh"]
    assert list(s._modules) == ["0", "1", "2", "3", "4"]
    del s[1]
    assert [type(m).__name__ for m in s] == ["Linear", "ReLU", "Linear", "Tanh"]
    assert list(s._modules) == ["0", "1", "2", "3"]
    assert s.pop(-1) is d and len(s) == 3
    s[1] = nn.GELU()
    assert isinstance(s[1], nn.GELU)
    s.extend([nn.Sigmoid(), nn.Identity()])
    assert len(s) == 5
    del s[3:]
    assert len(s) == 3
    assert len(s + nn.Sequential(nn.ReLU())) == 4
    with pytest.raises(TypeError, match="not a Module"):
        s.append(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.ReLU(), 3)


def test_sequential_with_ordered_dict_matches_torch_names() -> None:
    def build(m: Any) -> Any:
        return m.Sequential(OrderedDict([("fc", m.Linear(3, 4)), ("act", m.ReLU()), ("out", m.Linear(4, 2))]))

    s = build(nn)
    assert s.fc is s[0] and s.out is s[-1]
    assert list(s.state_dict()) == list(build(torch.nn).state_dict()) == ["fc.weight", "fc.bias", "out.weight",
                                                                           "out.bias"]
    sub = s[1:]
    assert list(sub._modules) == ["act", "out"]
    check_layer(build, [rand(5, 3)], "float64")


def test_module_list() -> None:
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and isinstance(layers[1], nn.Linear)
    assert isinstance(layers[1:], nn.ModuleList) and len(layers[1:]) == 2
    assert len(list(layers.parameters())) == 6
    layers.append(nn.ReLU())
    layers.insert(0, nn.Identity())
    assert isinstance(layers[0], nn.Identity) and isinstance(layers[-1], nn.ReLU)
    assert list(layers._modules) == [str(i) for i in range(5)]
    layers += [nn.Tanh()]
    assert len(layers) == 6
    del layers[0]
    assert isinstance(layers[0], nn.Linear) and list(layers._modules) == [str(i) for i in range(5)]
    layers[0] = nn.GELU()
    assert isinstance(layers[0], nn.GELU)
    assert isinstance(layers.pop(), nn.Tanh) and len(layers) == 4
    assert len(layers + nn.ModuleList([nn.ReLU()])) == 5
    assert list(nn.ModuleList().parameters()) == []

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])

    assert list(Net().state_dict()) == ["blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]


def test_module_dict() -> None:
    d = nn.ModuleDict({"enc": nn.Linear(2, 3), "act": nn.ReLU()})
    assert len(d) == 2 and list(d) == ["enc", "act"] and "enc" in d and "dec" not in d
    assert list(d.keys()) == ["enc", "act"]
    assert [type(m).__name__ for m in d.values()] == ["Linear", "ReLU"]
    assert [k for k, _ in d.items()] == ["enc", "act"]
    d["dec"] = nn.Linear(3, 2)
    assert list(d.state_dict()) == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]
    d.update([("act", nn.GELU()), ("extra", nn.Identity())])
    assert isinstance(d["act"], nn.GELU) and list(d) == ["enc", "act", "dec", "extra"]
    assert isinstance(d.pop("extra"), nn.Identity) and "extra" not in d
    del d["act"]
    assert list(d) == ["enc", "dec"]
    with pytest.raises(KeyError):
        d["nope"]
    with pytest.raises(TypeError):
        d["x"] = 3  # type: ignore[assignment]
    with pytest.raises(ValueError, match="pair"):
        d.update([nn.ReLU()])  # type: ignore[list-item]
    d.clear()
    assert len(d) == 0


# --- state_dict, train/eval, to(dtype) ---------------------------------------------------------------
def test_state_dict_matches_torch_for_every_layer() -> None:
    for name, factory, _ in LAYERS:
        sd_c, sd_t = factory(nn).state_dict(), factory(torch.nn).state_dict()
        assert list(sd_c) == list(sd_t), name
        for k in sd_t:
            assert tuple(sd_c[k].shape) == tuple(sd_t[k].shape), (name, k)
            assert sd_c[k].dtype.name == str(sd_t[k].dtype).removeprefix("torch."), (name, k)


def test_load_state_dict_errors_name_the_keys() -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    good = m.state_dict()
    missing = {k: v for k, v in good.items() if k != "1.running_var"}
    with pytest.raises(candle.CandleError, match=r"missing keys: 1\.running_var"):
        m.load_state_dict(missing)
    extra = dict(good, **{"2.weight": candle.zeros(3)})
    with pytest.raises(candle.CandleError, match=r"unexpected keys: 2\.weight"):
        m.load_state_dict(extra)
    bad = dict(good, **{"0.weight": candle.zeros(4, 4)})
    with pytest.raises(candle.ShapeError, match=r"'0\.weight' has shape \[4, 4\].*\[4, 3\]"):
        m.load_state_dict(bad)
    assert m.load_state_dict(missing, strict=False) == (["1.running_var"], [])
    assert m.load_state_dict(extra, strict=False) == ([], ["2.weight"])
    new = {k: candle.full(v.shape, 0.5, dtype=v.dtype) for k, v in good.items()}
    m.load_state_dict(new)
    assert m[0].weight.tolist()[0] == [0.5] * 3 and m[1].num_batches_tracked.item() == 0
    assert m[0].weight.requires_grad


def test_train_eval_switch_dropout_and_batchnorm() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    assert m.training and all(x.training for x in m.modules())
    assert m.eval() is m and not any(x.training for x in m.modules())
    x = candle.randn(6, 4)
    y1, y2 = m(x), m(x)
    assert np.array_equal(y1.numpy(), y2.numpy())  # no dropout, running stats, nothing updated
    assert m[2].num_batches_tracked.item() == 0
    m.train()
    m(x)
    assert m[2].num_batches_tracked.item() == 1
    assert not np.allclose(m[2].running_mean.numpy(), 0)


def test_dropout_statistics_and_scaling() -> None:
    drop = nn.Dropout(0.25)
    x = candle.ones(200, 500)
    y = drop(x).numpy()
    zeros = (y == 0).mean()
    assert abs(zeros - 0.25) < 0.01
    assert np.allclose(y[y != 0], 1 / 0.75)
    drop.eval()
    assert drop(x) is x
    g = candle.ones(10, 10, requires_grad=True)
    out = nn.Dropout(0.5)(g)
    out.sum().backward()
    assert np.array_equal(g.grad.numpy() != 0, out.detach().numpy() != 0)


def test_module_to_dtype_keeps_identity_and_int_buffers() -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    w = m[0].weight
    m.to(candle.float64)
    assert m[0].weight is w and w.dtype is candle.float64 and w.requires_grad
    assert m[1].running_mean.dtype is candle.float64
    assert m[1].num_batches_tracked.dtype is candle.int64
    y = m(candle.randn(5, 3, dtype="float64"))
    assert y.dtype is candle.float64
    m.half()
    assert all(p.dtype is candle.float16 for p in m.parameters())
    m.float()
    assert all(p.dtype is candle.float32 for p in m.parameters())
    assert nn.Linear(2, 2, dtype=candle.float64).weight.dtype is candle.float64


def test_reprs_match_torch() -> None:
    for name, factory, _ in LAYERS:
        assert repr(factory(nn)) == repr(factory(torch.nn)), name
    for factory in (lambda m: m.GroupNorm(2, 4, bias=False), lambda m: m.BatchNorm2d(3, affine=False),
                    lambda m: m.LayerNorm(3, elementwise_affine=False), lambda m: m.Embedding(5, 3, padding_idx=1),
                    lambda m: m.Dropout(0.2), lambda m: m.Upsample(scale_factor=(2, 3))):
        assert repr(factory(nn)) == repr(factory(torch.nn))


# --- initialisation --------------------------------------------------------------------------------
def _uniform_ok(t: candle.Tensor, bound: float) -> None:
    a = t.numpy().astype(np.float64).ravel()
    assert np.abs(a).max() <= bound * (1 + 1e-6)
    assert np.abs(a).max() > bound * 0.9  # fills the range
    assert abs(a.mean()) < 0.05 * bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.03 * bound / math.sqrt(3)


def _normal_ok(t: candle.Tensor, std: float, mean: float = 0.0) -> None:
    a = t.numpy().astype(np.float64).ravel()
    assert abs(a.mean() - mean) < 0.05 * std
    assert abs(a.std() - std) < 0.03 * std


def test_default_init_matches_torch_distributions() -> None:
    lin = nn.Linear(300, 200)
    _uniform_ok(lin.weight, 1 / math.sqrt(300))  # kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    b = lin.bias.numpy()
    assert np.abs(b).max() <= 1 / math.sqrt(300) and b.std() > 0.3 / math.sqrt(300)
    conv = nn.Conv2d(16, 32, 5, groups=2)
    _uniform_ok(conv.weight, 1 / math.sqrt(8 * 25))
    assert np.abs(conv.bias.numpy()).max() <= 1 / math.sqrt(8 * 25)
    convt = nn.ConvTranspose2d(16, 32, 3)  # weight [16, 32, 3, 3]: fan_in = 32 * 9
    _uniform_ok(convt.weight, 1 / math.sqrt(32 * 9))
    _uniform_ok(nn.Conv1d(10, 40, 7).weight, 1 / math.sqrt(70))
    _normal_ok(nn.Embedding(1000, 64).weight, 1.0)
    bil = nn.Bilinear(20, 30, 40)
    _uniform_ok(bil.weight, 1 / math.sqrt(20))
    for mod in (nn.LayerNorm(7), nn.RMSNorm(7), nn.GroupNorm(1, 7), nn.BatchNorm1d(7), nn.BatchNorm2d(7)):
        assert mod.weight.tolist() == [1.0] * 7
        if getattr(mod, "bias", None) is not None:
            assert mod.bias.tolist() == [0.0] * 7
    bn = nn.BatchNorm2d(3)
    assert bn.running_mean.tolist() == [0.0] * 3 and bn.running_var.tolist() == [1.0] * 3
    assert bn.num_batches_tracked.item() == 0 and bn.num_batches_tracked.dtype is candle.int64


def test_init_functions_statistics() -> None:
    from candle.nn import init

    w = candle.empty(200, 300)
    fan_in, fan_out = 300, 200
    assert init.uniform_(w, -2.0, 3.0) is w
    a = w.numpy()
    assert a.min() >= -2.0 and a.max() < 3.0 and abs(a.mean() - 0.5) < 0.05
    _normal_ok(init.normal_(w, 1.5, 0.2), 0.2, 1.5)
    assert np.all(init.constant_(w, 0.3).numpy() == np.float32(0.3))
    assert not init.zeros_(w).numpy().any() and np.all(init.ones_(w).numpy() == 1)
    _uniform_ok(init.xavier_uniform_(w), math.sqrt(6 / (fan_in + fan_out)))
    _uniform_ok(init.xavier_uniform_(w, gain=2.0), 2 * math.sqrt(6 / (fan_in + fan_out)))
    _normal_ok(init.xavier_normal_(w), math.sqrt(2 / (fan_in + fan_out)))
    _uniform_ok(init.kaiming_uniform_(w), math.sqrt(3) * math.sqrt(2) / math.sqrt(fan_in))  # a=0: gain sqrt(2)
    _uniform_ok(init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"), math.sqrt(6 / fan_out))
    _normal_ok(init.kaiming_normal_(w, nonlinearity="relu"), math.sqrt(2 / fan_in))
    _normal_ok(init.kaiming_normal_(w, a=0.2, mode="fan_out"), math.sqrt(2 / (1 + 0.04)) / math.sqrt(fan_out))
    conv = candle.empty(64, 16, 3, 3)
    _normal_ok(init.kaiming_normal_(conv, mode="fan_out", nonlinearity="relu"), math.sqrt(2 / (64 * 9)))
    t = init.trunc_normal_(candle.empty(100, 100, dtype="float64"), mean=0.5, std=1.0, a=-0.5, b=1.0)
    a = t.numpy()
    assert a.min() >= -0.5 and a.max() <= 1.0 and a.std() > 0.3
    # torch's formulas for the same tensors
    tw = torch.empty(200, 300)
    assert init._calculate_fan_in_and_fan_out(conv) == torch.nn.init._calculate_fan_in_and_fan_out(
        torch.empty(64, 16, 3, 3))
    assert init._calculate_fan_in_and_fan_out(w) == torch.nn.init._calculate_fan_in_and_fan_out(tw)


def test_init_gain_generator_and_errors() -> None:
    from candle.nn import init

    for nl, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                      ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None), ("conv_transpose2d", None)]:
        assert init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        init.kaiming_uniform_(candle.empty(3, 3), mode="fan_avg")
    with pytest.raises(candle.ShapeError, match="fewer than 2 dims"):
        init.xavier_uniform_(candle.empty(5))
    a = init.normal_(candle.empty(4, 4), generator=candle.Generator(seed=7)).numpy()
    b = init.normal_(candle.empty(4, 4), generator=candle.Generator(seed=7)).numpy()
    c = init.normal_(candle.empty(4, 4), generator=candle.Generator(seed=8)).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    p = nn.Linear(3, 3).weight
    init.kaiming_uniform_(p, a=math.sqrt(5), generator=candle.Generator(seed=1))  # in place on a Parameter
    assert p.requires_grad and p.is_leaf
    assert init.uniform_(candle.empty(0, 3)).shape == (0, 3)
    half = init.xavier_normal_(candle.empty(50, 60, dtype="bfloat16"))
    assert half.dtype is candle.bfloat16
