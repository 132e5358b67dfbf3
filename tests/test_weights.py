"""candle.nn.weights.WeightStore over safetensors (single and sharded), npz and GGUF: prefixes, dtype
and device, shape checks, missing-tensor errors, and loading into a module."""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import candle
from candle.nn import Module, Parameter
from candle.nn.weights import MissingTensorError, WeightStore
from candle.optim import SGD
from conftest import available_devices

RNG = np.random.default_rng(0)
ARRAYS = {
    "model.embed.weight": RNG.standard_normal((10, 4)).astype(np.float32),
    "model.layers.0.attn.q.weight": RNG.standard_normal((4, 4)).astype(np.float32),
    "model.layers.0.attn.q.bias": RNG.standard_normal(4).astype(np.float32),
    "model.layers.0.norm.weight": RNG.standard_normal(4).astype(np.float32),
    "model.layers.1.attn.q.weight": RNG.standard_normal((4, 4)).astype(np.float32),
    "model.layers.1.attn.q.bias": RNG.standard_normal(4).astype(np.float32),
    "model.layers.1.norm.weight": RNG.standard_normal(4).astype(np.float32),
    "model.positions": np.arange(6, dtype=np.int64),
}


def _tensors() -> dict[str, candle.Tensor]:
    return {k: candle.from_numpy(v) for k, v in ARRAYS.items()}


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    candle.save_safetensors(_tensors(), path)
    return path


def _write_shards(tmp_path: Path) -> Path:
    names = sorted(ARRAYS)
    shards = {"model-00001-of-00002.safetensors": names[:4], "model-00002-of-00002.safetensors": names[4:]}
    weight_map = {}
    for shard, keys in shards.items():
        candle.save_safetensors({k: candle.from_numpy(ARRAYS[k]) for k in keys}, tmp_path / shard)
        weight_map.update({k: shard for k in keys})
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    return _write_shards(tmp_path)


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.npz"
    candle.save_npz(_tensors(), path, compress=True)
    return path


def _check_all(store: WeightStore) -> None:
    assert store.keys() == sorted(ARRAYS)
    for name, arr in ARRAYS.items():
        t = store.get(name)
        assert t.dtype.name == {"float32": "float32", "int64": "int64"}[str(arr.dtype)]
        np.testing.assert_array_equal(t.numpy(), arr)
        assert store.shape(name) == arr.shape


@pytest.mark.parametrize("kind", ["single", "sharded", "folder", "npz"])
def test_every_source_reads_every_tensor(kind: str, st_file: Path, npz_file: Path, tmp_path: Path) -> None:
    if kind == "single":
        store = WeightStore(st_file)
    elif kind == "npz":
        store = WeightStore(npz_file)
    else:
        shard_dir = tmp_path / "sharded"
        shard_dir.mkdir()
        index = _write_shards(shard_dir)
        store = WeightStore(index if kind == "sharded" else shard_dir)
    _check_all(store)
    assert store.contains("model.positions") and "model.embed.weight" in store
    assert not store.contains("model.nothing")


def test_prefixes(st_file: Path) -> None:
    store = WeightStore(st_file)
    layer = store.pp("model").pp("layers.1")
    assert layer.prefix == "model.layers.1"
    assert store.pp("model.layers").pp(1).prefix == "model.layers.1"
    assert layer.keys() == ["attn.q.bias", "attn.q.weight", "norm.weight"]
    assert layer.contains("norm.weight") and not layer.contains("model.layers.1.norm.weight")
    np.testing.assert_array_equal(layer.get("attn.q.weight").numpy(), ARRAYS["model.layers.1.attn.q.weight"])
    np.testing.assert_array_equal(layer.pp("attn")["q.bias"].numpy(), ARRAYS["model.layers.1.attn.q.bias"])
    assert store.pp("model.layers").keys()[:3] == ["0.attn.q.bias", "0.attn.q.weight", "0.norm.weight"]
    assert store.pp("nothing").keys() == []


def test_dtype_and_device(st_file: Path) -> None:
    store = WeightStore(st_file, dtype="float64", device="cpu")
    w = store.get("model.embed.weight")
    assert w.dtype is candle.float64 and w.device == candle.Device("cpu")
    np.testing.assert_array_equal(w.numpy(), ARRAYS["model.embed.weight"].astype(np.float64))
    assert store.get("model.positions").dtype is candle.int64  # integers keep their dtype
    assert store.get("model.positions", dtype="float32").dtype is candle.float32  # unless asked
    assert store.get("model.embed.weight", dtype=candle.bfloat16).dtype is candle.bfloat16
    assert store.pp("model").get("embed.weight").dtype is candle.float64  # views keep the defaults
    half = store.to(dtype="float16")
    assert half.get("model.embed.weight").dtype is candle.float16 and store.dtype is candle.float64
    assert WeightStore(st_file).get("model.embed.weight").dtype is candle.float32


def test_shape_check_names_the_tensor_and_both_shapes(st_file: Path) -> None:
    layer = WeightStore(st_file).pp("model.layers.0")
    assert layer.get("attn.q.weight", shape=(4, 4)).shape == (4, 4)
    with pytest.raises(candle.ShapeError) as e:
        layer.get("attn.q.weight", shape=(4, 5))
    msg = str(e.value)
    assert "'model.layers.0.attn.q.weight'" in msg and "[4, 4]" in msg and "[4, 5]" in msg and str(st_file) in msg


def test_missing_tensor_names_files_and_close_names(st_file: Path, npz_file: Path) -> None:
    store = WeightStore([st_file, npz_file])
    with pytest.raises(MissingTensorError) as e:
        store.pp("model.layers.0").get("attn.q.weigth")
    msg = str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, candle.CandleError)
    assert "'model.layers.0.attn.q.weigth'" in msg
    assert str(st_file) in msg and str(npz_file) in msg
    assert "close names: 'model.layers.0.attn.q.weight'" in msg
    with pytest.raises(KeyError, match="no tensor named 'zzz'"):
        store.get("zzz")


def test_several_files_first_wins(tmp_path: Path, st_file: Path) -> None:
    other = tmp_path / "extra.safetensors"
    candle.save_safetensors({"lm_head.weight": candle.ones(2, 2), "model.positions": candle.zeros(6)}, other)
    store = WeightStore([st_file, other])
    assert store.get("lm_head.weight").tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert store.get("model.positions").dtype is candle.int64
    assert len(store.keys()) == len(ARRAYS) + 1


def test_sharded_index_errors(tmp_path: Path, sharded: Path) -> None:
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(candle.FileFormatError, match="'model-00002-of-00002.safetensors'.*does not exist"):
        WeightStore(sharded)
    bad = tmp_path / "bad.index.json"
    bad.write_text(json.dumps({"weights": {}}))
    with pytest.raises(candle.FileFormatError, match="weight_map"):
        WeightStore(bad)
    bad.write_text("{not json")
    with pytest.raises(candle.FileFormatError, match="not a valid JSON index"):
        WeightStore(bad)
    bad.write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    with pytest.raises(candle.FileFormatError, match="relative"):
        WeightStore(bad)
    wrong = tmp_path / "wrong.index.json"
    wrong.write_text(json.dumps({"weight_map": {"model.positions": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(candle.FileFormatError, match="does not hold it"):
        WeightStore(wrong).get("model.positions")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        WeightStore("/nonexistent/nope.safetensors")


# --- load_into -----------------------------------------------------------------------------------------
class _Attn(Module):
    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.weight = Parameter(candle.zeros(4, 4, dtype=dtype))
        self.bias = Parameter(candle.zeros(4, dtype=dtype))


class _Layer(Module):
    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.attn = Module()
        self.attn.q = _Attn(dtype)
        self.norm = Module()
        self.norm.weight = Parameter(candle.ones(4, dtype=dtype), requires_grad=False)


class _Model(Module):
    def __init__(self, dtype: str = "float32") -> None:
        super().__init__()
        self.embed = Module()
        self.embed.weight = Parameter(candle.zeros(10, 4, dtype=dtype))
        self.layers = Module()
        for i in range(2):
            self.layers.add_module(str(i), _Layer(dtype))
        self.register_buffer("positions", candle.zeros(6, dtype="int64"))


def test_load_into_fills_the_module(st_file: Path) -> None:
    model = _Model("float64")
    q = model.layers._modules["0"].attn.q.weight
    missing, unexpected = WeightStore(st_file).pp("model").load_into(model)
    assert missing == [] and unexpected == []
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ARRAYS["model." + k], err_msg=k)
        assert v.dtype is (candle.int64 if k == "positions" else candle.float64)
    assert model.layers._modules["0"].attn.q.weight is q and q.requires_grad  # identity and flags kept
    assert not model.layers._modules["1"].norm.weight.requires_grad
    assert list(model.parameters())[0] is model.embed.weight


def test_load_into_a_submodule_by_prefix(sharded: Path) -> None:
    layer = _Layer("float32")
    WeightStore(sharded).pp("model.layers.1").load_into(layer)
    np.testing.assert_array_equal(layer.attn.q.bias.numpy(), ARRAYS["model.layers.1.attn.q.bias"])


def test_load_into_strict_errors_and_non_strict(st_file: Path) -> None:
    layer = _Layer("float32")
    layer.extra = Parameter(candle.zeros(2))
    store = WeightStore(st_file).pp("model.layers.0")
    with pytest.raises(candle.CandleError, match="missing: extra") as e:
        store.load_into(layer)
    assert "prefix 'model.layers.0'" in str(e.value)
    assert layer.attn.q.weight.tolist()[0] == [0.0] * 4  # untouched
    with pytest.raises(candle.CandleError, match="unexpected: .*embed.weight"):
        WeightStore(st_file).load_into(_Layer("float32"))
    missing, unexpected = store.load_into(layer, strict=False)
    assert missing == ["extra"] and unexpected == []
    np.testing.assert_array_equal(layer.attn.q.weight.numpy(), ARRAYS["model.layers.0.attn.q.weight"])

    wide = _Layer("float32")
    wide.attn.q.weight = Parameter(candle.zeros(4, 5))
    with pytest.raises(candle.ShapeError, match=r"'model.layers.0.attn.q.weight' has shape \[4, 4\].*\[4, 5\]"):
        store.load_into(wide)
    assert wide.attn.q.bias.tolist() == [0.0] * 4  # nothing was loaded


def test_loaded_weights_train(st_file: Path) -> None:
    layer = _Layer("float32")
    WeightStore(st_file).pp("model.layers.0").load_into(layer)
    w = layer.attn.q.weight
    (w * w).sum().backward()
    SGD(layer.parameters(), lr=0.1).step()
    np.testing.assert_allclose(w.numpy(), ARRAYS["model.layers.0.attn.q.weight"] * 0.8, rtol=1e-6)
    np.testing.assert_array_equal(WeightStore(st_file).get("model.layers.0.attn.q.weight").numpy(),
                                  ARRAYS["model.layers.0.attn.q.weight"])  # the file is untouched


# --- GGUF ------------------------------------------------------------------------------------------------
class _FakeGGUFReader:
    """The parts of candle.io.gguf.GGUFReader's API the store relies on: tensor_names,
    tensor_info(name).shape (row-major), load(name, dtype) (dtype None: natural/float32), metadata."""

    files: dict[str, dict[str, np.ndarray]] = {}

    def __init__(self, path: os.PathLike) -> None:
        self._arrays = self.files[os.fspath(path)]
        self.metadata = {"general.architecture": "test"}
        self.loads: list[tuple[str, object]] = []

    @property
    def tensor_names(self) -> list[str]:
        return list(self._arrays)

    def tensor_info(self, name: str) -> types.SimpleNamespace:
        a = self._arrays[name]
        return types.SimpleNamespace(shape=a.shape, ggml_type="Q8_0" if name.endswith("weight") else "F32")

    def load(self, name: str, dtype: object = "float32") -> candle.Tensor:
        self.loads.append((name, dtype))
        return candle.from_numpy(self._arrays[name]).to(dtype=dtype or "float32")


def test_gguf_through_the_reader_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    arrays = {"blk.0.attn_q.weight": RNG.standard_normal((4, 3)).astype(np.float32),
              "blk.0.attn_norm.bias": RNG.standard_normal(3).astype(np.float32)}
    _FakeGGUFReader.files = {os.fspath(path): arrays}
    monkeypatch.setitem(sys.modules, "candle.io.gguf", types.SimpleNamespace(GGUFReader=_FakeGGUFReader))
    store = WeightStore(path, dtype="float16")
    assert store.keys() == sorted(arrays)
    blk = store.pp("blk.0")
    q = blk.get("attn_q.weight", shape=(4, 3))
    assert q.dtype is candle.float16
    np.testing.assert_allclose(q.numpy(), arrays["blk.0.attn_q.weight"].astype(np.float16))
    with pytest.raises(candle.ShapeError, match=r"'blk.0.attn_q.weight' has shape \[4, 3\]"):
        blk.get("attn_q.weight", shape=(3, 4))
    reader = store._files.sources[0]._reader  # type: ignore[attr-defined]
    assert reader.loads == [("blk.0.attn_q.weight", candle.float16)]  # dequantized straight to the dtype
    assert WeightStore(path).get("blk.0.attn_q.weight").dtype is candle.float32  # quantized -> f32


def test_gguf_real_file(tmp_path: Path) -> None:
    try:
        importlib.import_module("candle.io.gguf").GGUFReader  # noqa: B018
    except (ImportError, AttributeError) as e:
        pytest.skip(f"candle.io.gguf.GGUFReader is not available yet ({e})")
    gguf = pytest.importorskip("gguf", reason="the gguf package writes the test file")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(os.fspath(path), "llama")
    a = RNG.standard_normal((3, 5)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float16)
    writer.add_tensor("blk.0.ffn_up.weight", a)
    writer.add_tensor("blk.0.ffn_norm.weight", b)
    q8 = gguf.GGMLQuantizationType.Q8_0
    c = gguf.quants.quantize(RNG.standard_normal((2, 64)).astype(np.float32), q8)
    writer.add_tensor("blk.0.ffn_down.weight", c, raw_dtype=q8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    store = WeightStore(path)
    assert store.keys() == ["blk.0.ffn_down.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_up.weight"]
    up = store.pp("blk.0").get("ffn_up.weight", shape=(3, 5))
    np.testing.assert_array_equal(up.numpy(), a)
    np.testing.assert_array_equal(store.get("blk.0.ffn_norm.weight", dtype="float32").numpy(), b.astype(np.float32))
    assert store.get("blk.0.ffn_norm.weight").dtype is candle.float16  # plain types keep their dtype
    down = store.to(dtype="float16").get("blk.0.ffn_down.weight", shape=(2, 64))  # Q8_0 dequantized
    assert down.dtype is candle.float16
    np.testing.assert_array_equal(down.numpy(), gguf.quants.dequantize(c, q8).astype(np.float16))
    with pytest.raises(candle.ShapeError, match=r"'blk.0.ffn_down.weight' has shape \[2, 64\]"):
        store.get("blk.0.ffn_down.weight", shape=(64, 2))


@pytest.mark.parametrize("device", [d for d in available_devices() if d != "cpu"])
def test_store_on_another_backend(device: str, st_file: Path) -> None:
    store = WeightStore(st_file, dtype="float64", device=device)
    w = store.pp("model").get("embed.weight")
    assert w.device == candle.Device(device) and w.dtype is candle.float64
    np.testing.assert_array_equal(w.numpy(), ARRAYS["model.embed.weight"])
    model = _Model().to(device)
    WeightStore(st_file).pp("model").load_into(model)
    assert model.layers._modules["1"].norm.weight.device == candle.Device(device)
    assert model.positions.device == candle.Device(device)
    assert WeightStore(st_file).get("model.positions", device=device).device == candle.Device(device)
