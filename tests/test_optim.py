"""candle.optim and candle.nn.utils against torch.optim / torch.nn.utils: parameter trajectories
(f64, 1e-6 relative after every one of 20 steps), schedulers' lr sequences, gradient clipping,
and optimizer state_dict round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

import candle
from candle import optim
from candle.nn import Parameter
from candle.nn.utils import clip_grad_norm_, clip_grad_value_
from conftest import available_devices

torch = pytest.importorskip("torch")

STEPS = 20
RTOL = 1e-6


def _init(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 5)), rng.standard_normal(5) * 0.1, rng.standard_normal((5, 2))]


def _data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((8, 4)), rng.standard_normal((8, 2))


def _loss(params: list, x, y):  # noqa: ANN001
    """A small tanh MLP's mean squared error, written once for torch and candle."""
    w1, b1, w2 = params
    out = (x @ w1 + b1).tanh() @ w2
    d = out - y
    return (d * d).mean()


class Pair:
    """The same parameters and data in torch and candle (f64), stepped side by side."""

    def __init__(self, seed: int = 0) -> None:
        init = _init(seed)
        self.tp = [torch.tensor(a, requires_grad=True) for a in init]
        self.cp = [Parameter(candle.tensor(a)) for a in init]
        x, y = _data()
        self.tx, self.ty = torch.tensor(x), torch.tensor(y)
        self.cx, self.cy = candle.tensor(x), candle.tensor(y)

    def backward(self) -> None:
        for p in self.tp:
            p.grad = None
        for p in self.cp:
            p.grad = None
        _loss(self.tp, self.tx, self.ty).backward()
        _loss(self.cp, self.cx, self.cy).backward()

    def check(self, step: int) -> None:
        for i, (t, c) in enumerate(zip(self.tp, self.cp)):
            np.testing.assert_allclose(c.numpy(), t.detach().numpy(), rtol=RTOL, atol=1e-12,
                                       err_msg=f"param {i} after step {step}")


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.5},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True},
    {"lr": 0.01, "maximize": True},
    {"lr": 0.01, "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.01, "maximize": True},
]
ADAM_CASES = [
    {},
    {"lr": 1e-2},
    {"lr": 1e-2, "betas": (0.3, 0.9)},  # lerp weight >= 0.5 takes torch's other formula
    {"lr": 1e-2, "weight_decay": 0.1},
    {"lr": 1e-2, "amsgrad": True},
    {"lr": 1e-2, "eps": 1e-3},
    {"lr": 1e-2, "maximize": True},
    {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.05, "betas": (0.8, 0.99)},
]
ADAMW_CASES = [
    {},
    {"lr": 1e-2, "weight_decay": 0.1},
    {"lr": 1e-2, "weight_decay": 0.0},
    {"lr": 1e-2, "amsgrad": True},
    {"lr": 1e-2, "maximize": True, "weight_decay": 0.05},
]
RMSPROP_CASES = [
    {},
    {"lr": 1e-3, "alpha": 0.9},
    {"lr": 1e-3, "centered": True},
    {"lr": 1e-3, "alpha": 0.3, "centered": True},  # lerp weight 0.7
    {"lr": 1e-3, "momentum": 0.9},
    {"lr": 1e-3, "momentum": 0.9, "centered": True},
    {"lr": 1e-3, "weight_decay": 0.1},
    {"lr": 1e-3, "eps": 1e-2, "maximize": True},
    {"lr": 1e-3, "momentum": 0.5, "centered": True, "weight_decay": 0.01, "alpha": 0.95},
]
CASES = ([("SGD", c) for c in SGD_CASES] + [("Adam", c) for c in ADAM_CASES]
         + [("AdamW", c) for c in ADAMW_CASES] + [("RMSprop", c) for c in RMSPROP_CASES])


def _ids(case: tuple[str, dict]) -> str:
    name, opts = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in opts.items()) if opts else "-defaults")


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_matches_torch_every_step(case: tuple[str, dict]) -> None:
    name, opts = case
    pair = Pair()
    topt = getattr(torch.optim, name)(pair.tp, **opts)
    copt = getattr(optim, name)(pair.cp, **opts)
    for step in range(STEPS):
        pair.backward()
        topt.step()
        copt.step()
        pair.check(step)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_param_groups_with_own_options(name: str) -> None:
    pair = Pair()
    extra = {"SGD": {"momentum": 0.9}, "Adam": {"amsgrad": True}, "AdamW": {"weight_decay": 0.2},
             "RMSprop": {"centered": True}}[name]

    def groups(ps: list) -> list[dict]:
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.003, **extra}]

    topt = getattr(torch.optim, name)(groups(pair.tp), lr=0.02)
    copt = getattr(optim, name)(groups(pair.cp), lr=0.02)
    assert copt.param_groups[1]["lr"] == 0.003 and copt.param_groups[0]["lr"] == 0.02
    for step in range(STEPS):
        pair.backward()
        topt.step()
        copt.step()
        pair.check(step)


def test_params_without_grad_are_skipped_and_closure_is_returned() -> None:
    a, b = Parameter(candle.tensor([1.0, 2.0])), Parameter(candle.tensor([3.0]))
    opt = optim.Adam([a, b], lr=0.1)

    def closure() -> candle.Tensor:
        opt.zero_grad()
        loss = (a * a).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.item()) == 5.0
    assert b.tolist() == [3.0] and b not in opt.state
    assert a.tolist() != [1.0, 2.0] and opt.state[a]["step"] == 1


def test_zero_grad() -> None:
    p = Parameter(candle.tensor([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.1)
    (p * p).sum().backward()
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and g.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None


def test_constructor_errors() -> None:
    p = Parameter(candle.tensor([1.0]))
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        optim.RMSprop([p], lr=-1.0)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD(p, lr=0.1)


# --- state dicts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,opts", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 1e-2, "amsgrad": True}),
                                       ("AdamW", {"lr": 1e-2}), ("RMSprop", {"momentum": 0.5, "centered": True})])
def test_state_dict_round_trip_continues_exactly(name: str, opts: dict) -> None:
    full = Pair()
    ref_opt = getattr(optim, name)(full.cp, **opts)
    for _ in range(STEPS):
        full.backward()
        ref_opt.step()

    first = Pair()
    opt = getattr(optim, name)(first.cp, **opts)
    for _ in range(STEPS // 2):
        first.backward()
        opt.step()
    sd = opt.state_dict()
    resumed = Pair()
    for p, q in zip(resumed.cp, first.cp):
        with candle.no_grad():
            p.copy_(q)
    opt2 = getattr(optim, name)(resumed.cp, lr=123.0)  # options come back from the state dict
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == opts.get("lr", ref_opt.defaults["lr"])
    for k, v in sd["state"][0].items():  # the loaded state is a copy
        assert not isinstance(v, candle.Tensor) or opt2.state[resumed.cp[0]][k] is not v
    for _ in range(STEPS - STEPS // 2):
        resumed.backward()
        opt2.step()
    for p, q in zip(resumed.cp, full.cp):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


@pytest.mark.parametrize("name,opts", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"amsgrad": True}),
                                       ("RMSprop", {"momentum": 0.5, "centered": True})])
def test_state_dict_layout_matches_torch(name: str, opts: dict) -> None:
    pair = Pair()
    groups_t = [{"params": pair.tp[:1]}, {"params": pair.tp[1:], "lr": 0.5}]
    groups_c = [{"params": pair.cp[:1]}, {"params": pair.cp[1:], "lr": 0.5}]
    topt = getattr(torch.optim, name)(groups_t, **opts)
    copt = getattr(optim, name)(groups_c, **opts)
    for _ in range(3):
        pair.backward()
        topt.step()
        copt.step()
    tsd, csd = topt.state_dict(), copt.state_dict()
    assert [g["params"] for g in csd["param_groups"]] == [g["params"] for g in tsd["param_groups"]] == [[0], [1, 2]]
    for cg, tg in zip(csd["param_groups"], tsd["param_groups"]):
        assert set(cg) <= set(tg)
        for k in cg:
            if k != "params":
                assert cg[k] == tg[k], k
    assert set(csd["state"]) == set(tsd["state"])
    for i in tsd["state"]:
        assert set(csd["state"][i]) == set(tsd["state"][i])
        for k, tv in tsd["state"][i].items():
            cv = csd["state"][i][k]
            if k == "step":
                assert cv == int(tv.item())
            else:
                np.testing.assert_allclose(cv.numpy(), tv.numpy(), rtol=RTOL, atol=1e-12)


def test_load_state_dict_errors() -> None:
    a, b = Parameter(candle.tensor([1.0])), Parameter(candle.tensor([2.0]))
    sd = optim.SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="parameter group 0 has 2 parameters"):
        optim.SGD([a], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="has 3 parameter groups, the optimizer has 2"):
        optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(
            {"state": {}, "param_groups": [{"params": [0]}, {"params": [1]}, {"params": []}]})


# --- schedulers ----------------------------------------------------------------------------------------
def _sched_pair(make: object, n: int = 40, lrs: tuple[float, ...] = (0.1, 0.02)) -> tuple[list, list]:
    tps = [torch.zeros(1, requires_grad=True) for _ in lrs]
    cps = [Parameter(candle.zeros(1)) for _ in lrs]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tps, lrs)], lr=1.0)
    copt = optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(cps, lrs)], lr=1.0)
    ts, cs = make(torch.optim.lr_scheduler, topt), make(optim.lr_scheduler, copt)  # type: ignore[operator]
    tseq, cseq = [ts.get_last_lr()], [cs.get_last_lr()]
    for _ in range(n):
        topt.step()
        copt.step()
        ts.step()
        cs.step()
        tseq.append(ts.get_last_lr())
        cseq.append(cs.get_last_lr())
        assert [g["lr"] for g in copt.param_groups] == cseq[-1]
    return tseq, cseq


SCHEDULERS = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.93),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingLR-eta_min": lambda m, o: m.CosineAnnealingLR(o, T_max=13, eta_min=0.001),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=8),
    "LinearLR-decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=30),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 0.95**e),
    "LambdaLR-per-group": lambda m, o: m.LambdaLR(o, [lambda e: 1 / (e + 1), lambda e: min(1.0, (e + 1) / 5)]),
    "SequentialLR-warmup-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(o, T_max=30)], milestones=[5]),
    "SequentialLR-three": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, 0.9), m.StepLR(o, 4), m.LinearLR(o, 0.5, total_iters=3)], milestones=[6, 20]),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_lrs_equal_torch(name: str) -> None:
    tseq, cseq = _sched_pair(SCHEDULERS[name])
    for i, (t, c) in enumerate(zip(tseq, cseq)):
        assert c == t, f"epoch {i}: {c} != {t}"


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "LinearLR", "SequentialLR-warmup-cosine"])
def test_scheduler_state_dict_resumes(name: str) -> None:
    make = SCHEDULERS[name]
    p = Parameter(candle.zeros(1))
    opt = optim.SGD([p], lr=0.1)
    s = make(optim.lr_scheduler, opt)
    for _ in range(12):
        opt.step()
        s.step()
    sd, osd = s.state_dict(), opt.state_dict()
    expected = []
    for _ in range(10):
        opt.step()
        s.step()
        expected.append(s.get_last_lr())
    q = Parameter(candle.zeros(1))
    opt2 = optim.SGD([q], lr=0.1)
    s2 = make(optim.lr_scheduler, opt2)
    opt2.load_state_dict(osd)
    s2.load_state_dict(sd)
    got = []
    for _ in range(10):
        opt2.step()
        s2.step()
        got.append(s2.get_last_lr())
    assert got == expected


# --- gradient clipping ---------------------------------------------------------------------------------
def _grad_pair(seed: int = 3, scale: float = 1.0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    tps, cps = [], []
    for s in shapes:
        g = rng.standard_normal(s) * scale
        t = torch.zeros(s, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g)
        c = Parameter(candle.zeros(s, dtype="f64"))
        c.grad = candle.tensor(g)
        tps.append(t)
        cps.append(c)
    return tps, cps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.5])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type: float, max_norm: float) -> None:
    tps, cps = _grad_pair()
    tn = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
    cn = clip_grad_norm_(cps, max_norm, norm_type=norm_type)
    assert cn.shape == () and cn.dtype is candle.float64
    np.testing.assert_allclose(cn.item(), tn.item(), rtol=1e-12)
    for t, c in zip(tps, cps):
        np.testing.assert_allclose(c.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_edge_cases() -> None:
    p = Parameter(candle.tensor([1.0, 2.0]))
    assert clip_grad_norm_([p], 1.0).item() == 0.0  # no gradients
    p.grad = candle.tensor([3.0, 4.0])
    assert clip_grad_norm_(p, 10.0).item() == 5.0  # a single tensor
    p.grad = candle.tensor([float("nan"), 1.0])
    with pytest.raises(candle.GradError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert math.isnan(clip_grad_norm_([p], 1.0).item())


def test_clip_grad_value_matches_torch() -> None:
    tps, cps = _grad_pair(scale=2.0)
    torch.nn.utils.clip_grad_value_(tps, 1.5)
    clip_grad_value_(cps, 1.5)
    for t, c in zip(tps, cps):
        np.testing.assert_array_equal(c.grad.numpy(), t.grad.numpy())


# --- other backends ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", [d for d in available_devices() if d != "cpu"])
@pytest.mark.parametrize("case", [("SGD", SGD_CASES[5]), ("Adam", ADAM_CASES[7]), ("AdamW", ADAMW_CASES[1]),
                                  ("RMSprop", RMSPROP_CASES[8])], ids=_ids)
def test_optimizers_run_on_every_backend(device: str, case: tuple[str, dict]) -> None:
    name, opts = case
    results = []
    for dev in ("cpu", device):
        ps = [Parameter(candle.tensor(a, dtype="float32", device=dev)) for a in _init()]
        x, y = (candle.tensor(a, dtype="float32", device=dev) for a in _data())
        opt = getattr(optim, name)(ps, **opts)
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        for _ in range(5):
            opt.zero_grad()
            _loss(ps, x, y).backward()
            clip_grad_norm_(ps, 1.0)
            opt.step()
            sched.step()
        assert all(p.device == candle.Device(dev) for p in ps)
        assert all(v.device == candle.Device(dev) for s in opt.state.values() for v in s.values()
                   if isinstance(v, candle.Tensor))
        results.append([p.numpy() for p in ps])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
