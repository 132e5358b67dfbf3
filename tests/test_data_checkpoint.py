"""candle.utils.data (datasets, DataLoader) and candle.checkpoint (save/load/resume, atomicity)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import candle
import candle.io.safetensors as st
from candle import optim
from candle.checkpoint import load_checkpoint, save_checkpoint
from candle.nn import Module, Parameter
from candle.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate, random_split
from conftest import available_devices


# --- data --------------------------------------------------------------------------------------------
def _ds(n: int = 10) -> TensorDataset:
    x = candle.arange(n * 3, dtype="float64").reshape(n, 3)
    return TensorDataset(x, candle.arange(n))


def _ids(loader: DataLoader) -> list[list[int]]:
    return [b[1].tolist() for b in loader]


def test_tensor_dataset_items_and_errors() -> None:
    ds = _ds()
    assert len(ds) == 10
    x, y = ds[4]
    assert x.tolist() == [12.0, 13.0, 14.0] and y.item() == 4
    with pytest.raises(candle.ShapeError, match="first dimension"):
        TensorDataset(candle.zeros(3, 2), candle.zeros(4))
    with pytest.raises(candle.ShapeError):
        TensorDataset()


def test_batches_in_order_with_and_without_drop_last() -> None:
    ds = _ds(10)
    loader = DataLoader(ds, batch_size=4)
    assert len(loader) == 3
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][0].shape == (4, 3) and batches[2][0].shape == (2, 3)
    np.testing.assert_array_equal(batches[1][0].numpy(), np.arange(12, 24).reshape(4, 3))
    dropped = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and _ids(dropped) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(ds, batch_size=5, drop_last=True)) == 2


def test_shuffle_is_a_permutation_reproducible_with_a_seed() -> None:
    ds = _ds(23)
    a = DataLoader(ds, batch_size=5, shuffle=True, seed=7)
    first, second = _ids(a), _ids(a)
    assert sorted(sum(first, [])) == list(range(23))
    assert first != second  # a new permutation each epoch
    assert [len(b) for b in first] == [5, 5, 5, 5, 3]
    b = DataLoader(ds, batch_size=5, shuffle=True, seed=7)
    assert _ids(b) == first and _ids(b) == second  # same seed, same epochs
    assert _ids(DataLoader(ds, batch_size=5, shuffle=True, seed=8)) != first
    g1, g2 = candle.Generator(seed=3), candle.Generator(seed=3)
    assert _ids(DataLoader(ds, batch_size=4, shuffle=True, generator=g1)) == \
        _ids(DataLoader(ds, batch_size=4, shuffle=True, generator=g2))
    candle.manual_seed(11)
    c = _ids(DataLoader(ds, batch_size=4, shuffle=True))
    candle.manual_seed(11)
    assert _ids(DataLoader(ds, batch_size=4, shuffle=True)) == c
    # the batched samples are the right rows
    x, y = next(iter(DataLoader(ds, batch_size=6, shuffle=True, seed=1)))
    np.testing.assert_array_equal(x.numpy(), np.stack([ds[i][0].numpy() for i in y.tolist()]))


def test_shuffled_drop_last_and_batch_size_none() -> None:
    ds = _ds(10)
    ids = _ids(DataLoader(ds, batch_size=3, shuffle=True, drop_last=True, seed=0))
    assert [len(b) for b in ids] == [3, 3, 3] and len(set(sum(ids, []))) == 9
    single = list(DataLoader(ds, batch_size=None))
    assert len(single) == 10 and single[3][1].item() == 3 and single[3][0].shape == (3,)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="either seed or generator"):
        DataLoader(ds, seed=1, generator=candle.Generator(1))


class _Squares(Dataset):
    def __len__(self) -> int:
        return 7

    def __getitem__(self, i: int) -> dict:
        return {"x": candle.full((2,), float(i)), "i": i, "f": i / 2, "name": f"s{i}"}


def test_generic_dataset_with_default_and_custom_collate() -> None:
    batches = list(DataLoader(_Squares(), batch_size=3))
    assert len(batches) == 3
    b = batches[0]
    assert b["x"].shape == (3, 2) and b["x"][:, 0].tolist() == [0.0, 1.0, 2.0]
    assert b["i"].dtype is candle.int64 and b["i"].tolist() == [0, 1, 2]
    assert b["f"].dtype is candle.float64 and b["name"] == ["s0", "s1", "s2"]
    sizes = list(DataLoader(_Squares(), batch_size=4, collate_fn=len))
    assert sizes == [4, 3]
    # a TensorDataset through default_collate gives what the fast path gives
    ds = _ds(6)
    fast = list(DataLoader(ds, batch_size=4, shuffle=True, seed=2))
    slow = list(DataLoader(ds, batch_size=4, shuffle=True, seed=2, collate_fn=default_collate))
    for f, s in zip(fast, slow):
        assert f[0].tolist() == s[0].tolist() and f[1].tolist() == s[1].tolist()
    assert default_collate([np.ones(2), np.zeros(2)]).shape == (2, 2)


def test_random_split() -> None:
    ds = _ds(10)
    a, b = random_split(ds, [7, 3], seed=0)
    assert isinstance(a, Subset) and len(a) == 7 and len(b) == 3
    assert sorted(a.indices + b.indices) == list(range(10))
    assert random_split(ds, [7, 3], seed=0)[0].indices == a.indices
    parts = random_split(ds, [0.5, 0.3, 0.2], seed=1)
    assert [len(p) for p in parts] == [5, 3, 2]
    assert a[0][1].item() == a.indices[0]
    with pytest.raises(ValueError, match="sum to 9"):
        random_split(ds, [5, 4])
    # a Subset of a TensorDataset batches through the fast path, with the right rows
    x, y = next(iter(DataLoader(a, batch_size=7)))
    assert y.tolist() == a.indices
    np.testing.assert_array_equal(x.numpy(), ds.tensors[0].numpy()[a.indices])


def test_batches_are_copies() -> None:
    ds = _ds(4)
    x, _ = next(iter(DataLoader(ds, batch_size=2)))
    with candle.no_grad():
        x.mul_(0)
    assert ds[0][0].tolist() == [0.0, 1.0, 2.0] and ds[1][0].tolist() == [3.0, 4.0, 5.0]


# --- checkpoints ---------------------------------------------------------------------------------------
class _Net(Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = candle.Generator(seed)
        self.w1 = Parameter(candle.randn(3, 8, dtype="float64", generator=g) * 0.5)
        self.b1 = Parameter(candle.zeros(8, dtype="float64"))
        self.w2 = Parameter(candle.randn(8, 1, dtype="float64", generator=g) * 0.5)
        self.register_buffer("steps", candle.zeros((), dtype="int64"))

    def forward(self, x: candle.Tensor) -> candle.Tensor:
        return (x @ self.w1 + self.b1).tanh() @ self.w2


def _train(net: _Net, opt: optim.Optimizer, loader: DataLoader, epochs: range) -> None:
    for _ in epochs:
        for x, y in loader:
            opt.zero_grad()
            d = net(x) - y
            (d * d).mean().backward()
            opt.step()
            with candle.no_grad():
                net.steps.add_(1)


def _setup(seed: int = 0) -> tuple[_Net, optim.AdamW, DataLoader]:
    g = candle.Generator(100)
    x = candle.randn(40, 3, dtype="float64", generator=g)
    y = (x * candle.tensor([1.0, -2.0, 0.5], dtype="float64")).sum(1, keepdim=True).sin()
    net = _Net(seed)
    opt = optim.AdamW([{"params": [net.w1, net.b1]}, {"params": [net.w2], "lr": 3e-3}], lr=1e-2, amsgrad=True)
    return net, opt, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, seed=5)


def test_checkpoint_layout(tmp_path: os.PathLike) -> None:
    net, opt, loader = _setup()
    _train(net, opt, loader, range(1))
    path = os.path.join(tmp_path, "ckpt.safetensors")
    save_checkpoint(path, net, opt, extra={"epoch": 1, "note": "hi", "mask": candle.ones(2)})
    with candle.safe_open(path) as f:
        names = set(f.keys())
        meta = f.metadata()
    assert {"model.w1", "model.b1", "model.w2", "model.steps", "extra.mask"} <= names
    assert {"optim.state.0.exp_avg", "optim.state.2.max_exp_avg_sq"} <= names
    assert "optim.state.0.step" not in names
    o = json.loads(meta["optimizer"])
    assert o["class"] == "AdamW" and o["state"]["0"]["step"] == 5
    assert [g["params"] for g in o["param_groups"]] == [[0, 1], [2]] and o["param_groups"][1]["lr"] == 3e-3
    assert json.loads(meta["extra"]) == {"epoch": 1, "note": "hi"}


def test_checkpoint_resume_is_exact(tmp_path: os.PathLike) -> None:
    ref, ref_opt, ref_loader = _setup()
    _train(ref, ref_opt, ref_loader, range(4))

    net, opt, loader = _setup()
    _train(net, opt, loader, range(2))
    path = os.path.join(tmp_path, "ckpt.safetensors")
    sched = optim.lr_scheduler.StepLR(opt, 3)
    extra = {"epoch": 2, "sched": sched.state_dict(), "loader": loader.generator.get_state()}
    save_checkpoint(path, net, opt, extra=extra)

    net2, opt2, loader2 = _setup(seed=1)  # different initial weights: all of them must come from the file
    extra = load_checkpoint(path, net2, opt2)
    assert extra["epoch"] == 2 and extra["sched"]["step_size"] == 3
    loader2.generator.set_state(extra["loader"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    _train(net2, opt2, loader2, range(2, 4))
    for (k, a), (_, b) in zip(ref.state_dict().items(), net2.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert net2.steps.item() == 20


def test_checkpoint_without_optimizer_and_errors(tmp_path: os.PathLike) -> None:
    net, opt, _ = _setup()
    path = os.path.join(tmp_path, "model.safetensors")
    save_checkpoint(path, net)
    net2 = _Net(seed=3)
    assert load_checkpoint(path, net2) == {}
    assert net2.w1.tolist() == net.w1.tolist()
    with pytest.raises(candle.CandleError, match="no optimizer state"):
        load_checkpoint(path, _Net(), opt)
    save_checkpoint(path, net, opt)
    with pytest.raises(candle.CandleError, match="holds AdamW state, the optimizer is a SGD"):
        load_checkpoint(path, _Net(), optim.SGD(_Net().parameters(), lr=0.1))
    with pytest.raises(candle.CandleError, match="has 2 parameter groups, the optimizer 1"):
        load_checkpoint(path, _Net(), optim.AdamW(_Net().parameters()))
    with pytest.raises(candle.CandleError, match="JSON"):
        save_checkpoint(path, net, extra={"bad": object()})
    plain = os.path.join(tmp_path, "plain.safetensors")
    candle.save_safetensors({"w1": net.w1}, plain)
    with pytest.raises(candle.FileFormatError, match="not a candle checkpoint"):
        load_checkpoint(plain, _Net())


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path: os.PathLike, monkeypatch: pytest.MonkeyPatch) -> None:
    net, opt, loader = _setup()
    _train(net, opt, loader, range(1))
    path = os.path.join(tmp_path, "ckpt.safetensors")
    save_checkpoint(path, net, opt, extra={"epoch": 1})
    saved = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    _train(net, opt, loader, range(1))  # the model moves on

    real = st._tensor_bytes
    calls = {"n": 0}

    def failing(t: candle.Tensor) -> memoryview:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(t)

    monkeypatch.setattr(st, "_tensor_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net, opt, extra={"epoch": 2})
    monkeypatch.setattr(st, "_tensor_bytes", real)
    assert calls["n"] == 3
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temporary file is gone

    fresh, fresh_opt, _ = _setup(seed=2)
    assert load_checkpoint(path, fresh, fresh_opt) == {"epoch": 1}
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k], err_msg=k)


@pytest.mark.parametrize("device", [d for d in available_devices() if d != "cpu"])
def test_loader_and_checkpoint_on_another_backend(device: str, tmp_path: os.PathLike) -> None:
    x = candle.arange(12, dtype="float32", device=device).reshape(6, 2)
    ds = TensorDataset(x, candle.arange(6, device=device))
    for bx, by in DataLoader(ds, batch_size=4, shuffle=True, seed=0):
        assert bx.device == candle.Device(device) and by.device == candle.Device(device)
        np.testing.assert_array_equal(bx.numpy()[:, 0], by.numpy() * 2.0)
    net, opt, loader = _setup()
    net.to(device)
    _train(net, opt, DataLoader(TensorDataset(*(t.to(device) for t in loader.dataset.tensors)), batch_size=8),
           range(1))
    path = os.path.join(tmp_path, "ckpt.safetensors")
    save_checkpoint(path, net, opt)
    net2 = _Net(seed=4).to(device)
    opt2 = optim.AdamW([{"params": [net2.w1, net2.b1]}, {"params": [net2.w2]}], amsgrad=True)
    load_checkpoint(path, net2, opt2)
    assert net2.w1.device == candle.Device(device)
    assert opt2.state[net2.w1]["exp_avg"].device == candle.Device(device)
    np.testing.assert_array_equal(net2.w2.numpy(), net.w2.numpy())
