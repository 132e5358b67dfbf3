"""candle.io.gguf_writer: files read back identically by gguf-py's GGUFReader and candle's; real files round-trip."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pytest

import candle
from candle.io import GGUFReader, GGUFWriter, write_gguf
from candle.io._gguf_parse import GGUFValueType as V
from candle.quantized import QTensor, dequantize, quantize

gguf = pytest.importorskip("gguf")


def _meta() -> tuple[dict, dict]:
    meta = {
        "general.architecture": "llama", "general.name": "tiny ü", "t.u8": 200, "t.i8": -5, "t.u16": 60000,
        "t.i16": -300, "t.u32": 4_000_000_000, "t.i32": -7, "t.f32": 0.5, "t.bool": True, "t.u64": 2**63 + 5,
        "t.i64": -(2**40), "t.f64": 1e-300, "t.arr_i32": np.array([1, -2, 3], np.int32),
        "t.arr_f32": np.array([0.25, 1.5], np.float32), "t.arr_str": ["a", "bc", ""],
        "t.arr_bool": np.array([True, False]), "t.nested": [["x", "y"], ["z"]], "t.empty": np.array([], np.uint8),
    }
    types = {"t.u8": (V.UINT8,), "t.i8": (V.INT8,), "t.u16": (V.UINT16,), "t.i16": (V.INT16,), "t.u32": (V.UINT32,),
             "t.u64": (V.UINT64,), "t.i64": (V.INT64,), "t.f64": (V.FLOAT64,),
             "t.nested": (V.ARRAY, V.ARRAY, V.STRING)}
    return meta, types


def test_write_and_read_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 256)).astype(np.float32)
    tensors = {"q4k": QTensor.quantize(w, "q4_k"), "q8": QTensor.quantize(w, "q8_0"), "f32": w[:, :7].copy(),
               "f16": w.astype(np.float16), "i32": np.arange(6, dtype=np.int32).reshape(2, 3),
               "t3": candle.tensor(w.reshape(2, 4, 256)), "raw": (quantize(w, "q5_1"), "Q5_1", (8, 256))}
    meta, types = _meta()
    path = tmp_path / "t.gguf"
    write_gguf(path, meta, tensors, types, alignment=64)
    ours = GGUFReader(path)
    ref = gguf.GGUFReader(path)
    assert ours.alignment == 64 and ref.alignment == 64
    for k, v in meta.items():
        got = ours.metadata[k]
        if isinstance(v, np.ndarray):
            assert np.array_equal(got, v) and got.dtype == v.dtype
        else:
            assert got == v, k
        f = ref.fields[k]
        if k in types:
            assert tuple(int(t) for t in f.types) == tuple(int(t) for t in types[k])
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            assert f.contents() == pytest.approx(v) if isinstance(v, float) else f.contents() == v
    assert ours.metadata["t.nested"] == [["x", "y"], ["z"]]
    for name in tensors:
        rt = next(t for t in ref.tensors if t.name == name)
        ri = ours.tensor_info(name)
        assert tuple(int(d) for d in rt.shape) == ri.dims
        assert int(rt.tensor_type) == ri.type_id
        assert np.array_equal(np.asarray(rt.data).view(np.uint8).reshape(-1), ours.raw(name))
    np.testing.assert_array_equal(ours.numpy("q4k"), dequantize(quantize(w, "q4_k"), "q4_k"))
    np.testing.assert_array_equal(ours.numpy("t3"), w.reshape(2, 4, 256))
    assert ours.numpy("i32").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_writer_errors(tmp_path: Path) -> None:
    w = GGUFWriter(tmp_path / "e.gguf")
    with pytest.raises(candle.DTypeError):
        w.add("k", 300, (V.UINT8,))
    with pytest.raises(candle.DTypeError):
        w.add("k", object())
    with pytest.raises(candle.DTypeError):
        w.add_tensor("c", np.zeros(3, np.complex64))
    with pytest.raises(candle.ShapeError):
        w.add_tensor("q", (np.zeros(5, np.uint8), "Q4_0", (1, 32)))
    w.add_tensor("a", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="duplicate"):
        w.add_tensor("a", np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        GGUFWriter(tmp_path / "x.gguf", alignment=24)


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.gguf"
    write_gguf(path, {"a": 1}, {"t": np.ones(4, np.float32)})
    before = path.read_bytes()
    w = GGUFWriter(path)
    w.add("a", 2)
    w.add_tensor("t", np.ones(4, np.float32))
    w._tensors["t"].data = lambda: np.zeros(3, np.uint8)  # a source that gives the wrong size when written
    with pytest.raises(candle.ShapeError):
        w.write()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gguf"]


def test_real_smollm2_round_trip(tmp_path: Path) -> None:
    from candle_models import model_files

    try:
        src = os.fspath(model_files.smollm2_gguf_path())
    except model_files.ModelNotFoundError:
        pytest.skip("SmolLM2 is not installed")
    r = GGUFReader(src)
    out = tmp_path / "copy.gguf"
    write_gguf(out, r.metadata, {n: QTensor.from_gguf(r, n) for n in r.tensor_names}, r.field_types,
               alignment=r.alignment)
    assert filecmp.cmp(src, out, shallow=False)  # byte-identical, through the CPU's resident form
