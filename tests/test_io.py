"""candle.io: safetensors (own parser, memory-mapped), .npy / .npz, hostile files, atomic saves."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import candle
from candle.errors import CandleError, DTypeError, FileFormatError
from candle.io import load_npy, load_npz, load_safetensors, safe_open, save_npy, save_npz, save_safetensors

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # broken test plugins warn on discovery

DTYPES = [candle.uint8, candle.uint32, candle.int64, candle.float16, candle.bfloat16, candle.float32, candle.float64]
SHAPES = [(), (0,), (2, 0, 3), (1,), (5,), (3, 4), (2, 3, 4)]
BF16 = np.dtype(ml_dtypes.bfloat16)


# --- helpers ----------------------------------------------------------------------------------
def rand_array(dtype: candle.DType, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.is_floating_point:
        return rng.standard_normal(shape).astype(dtype.numpy)
    hi = {"uint8": 256, "uint32": 2**32, "int64": 2**62}[dtype.name]
    lo = -(2**62) if dtype is candle.int64 else 0
    return rng.integers(lo, hi, shape, dtype=np.int64 if dtype is not candle.uint32 else np.uint64).astype(dtype.numpy)


def rand_tensor(dtype: candle.DType, shape: tuple[int, ...], seed: int = 0) -> candle.Tensor:
    return candle.from_numpy(rand_array(dtype, shape, seed))


def host(t: candle.Tensor) -> np.ndarray:
    return np.asarray(t.numpy()).reshape(t.shape)


def assert_same(a: candle.Tensor, b: candle.Tensor) -> None:
    assert a.dtype is b.dtype and a.shape == b.shape
    x, y = host(a), host(b)
    assert np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()


def st_file(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    """Write a (possibly hostile) safetensors file: `header` is a dict (JSON-encoded) or raw bytes."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(raw) if length is None else length).to_bytes(8, "little") + raw + data)
    return path


def mmap_base(arr: np.ndarray) -> Any:
    """The object at the end of an array's `.base` chain (through memoryviews)."""
    obj: Any = arr
    while True:
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return obj


def load_peak(fn: Any, *args: Any) -> tuple[Any, int]:
    """(result or exception, peak bytes traced while running fn)."""
    tracemalloc.start()
    try:
        try:
            out: Any = fn(*args)
        except Exception as e:  # noqa: BLE001
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- safetensors: round trips ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.short)
def test_safetensors_roundtrip(tmp_path: Path, dtype: candle.DType, shape: tuple[int, ...]) -> None:
    t = rand_tensor(dtype, shape)
    save_safetensors({"t": t, "other": rand_tensor(candle.uint8, (3,))}, tmp_path / "a.safetensors")
    out = load_safetensors(tmp_path / "a.safetensors")
    assert sorted(out) == ["other", "t"]
    assert_same(out["t"], t)
    assert out["t"].device == candle.Device("cpu")


def test_safetensors_roundtrip_scalar_from_python(tmp_path: Path) -> None:
    t = candle.tensor(3.5)
    save_safetensors({"s": t}, tmp_path / "s.safetensors")
    out = load_safetensors(tmp_path / "s.safetensors")["s"]
    assert out.shape == () and out.item() == 3.5


@pytest.mark.parametrize("view", ["t", "step", "narrow", "expand", "permute"])
def test_safetensors_non_contiguous(tmp_path: Path, view: str) -> None:
    base = rand_tensor(candle.float32, (4, 6))
    t = {"t": base.t(), "step": base[:, ::2], "narrow": base.narrow(1, 2, 3),
         "expand": rand_tensor(candle.bfloat16, (1, 5)).expand(3, 5),
         "permute": base.reshape(2, 2, 6).permute(2, 0, 1)}[view]
    save_safetensors({"x": t}, tmp_path / "nc.safetensors")
    out = load_safetensors(tmp_path / "nc.safetensors")["x"]
    assert out.is_contiguous()
    assert out.shape == t.shape and np.array_equal(host(out), host(t))


def test_safetensors_layout_matches_reference(tmp_path: Path) -> None:
    tensors = {"b": rand_tensor(candle.uint8, (3,)), "a": rand_tensor(candle.float64, (2,)),
               "c": rand_tensor(candle.float16, (5,)), "d": rand_tensor(candle.int64, ())}
    p = tmp_path / "l.safetensors"
    save_safetensors(tensors, p, metadata={"k": "v"})
    raw = p.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8 + n - 1:8 + n] in (b" ", b"}")
    header = json.loads(raw[8:8 + n])
    assert list(header) == ["__metadata__", "a", "b", "c", "d"]  # names sorted
    for name, t in tensors.items():
        start, end = header[name]["data_offsets"]
        assert start % t.dtype.itemsize == 0  # aligned: larger dtypes first
        assert end - start == t.numel() * t.dtype.itemsize
    assert max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__") == len(raw) - 8 - n


def test_safetensors_metadata(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    meta = {"format": "pt", "ünïcode": "✓", "empty": ""}
    save_safetensors({"x": rand_tensor(candle.float32, (2,))}, p, metadata=meta)
    with safe_open(p) as f:
        assert f.metadata() == meta
    save_safetensors({"x": rand_tensor(candle.float32, (2,))}, p)
    with safe_open(p) as f:
        assert f.metadata() is None
    with pytest.raises(FileFormatError, match="metadata"):
        save_safetensors({"x": rand_tensor(candle.float32, (2,))}, p, metadata={"n": 1})  # type: ignore[dict-item]


def test_safetensors_empty_dict(tmp_path: Path) -> None:
    save_safetensors({}, tmp_path / "e.safetensors")
    assert load_safetensors(tmp_path / "e.safetensors") == {}


def test_save_rejects_bad_names_and_values(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="__metadata__"):
        save_safetensors({"__metadata__": rand_tensor(candle.uint8, (1,))}, tmp_path / "x")
    with pytest.raises(DTypeError, match="expected a candle.Tensor"):
        save_safetensors({"a": np.zeros(3)}, tmp_path / "x")  # type: ignore[dict-item]
    assert not (tmp_path / "x").exists()


# --- safe_open ------------------------------------------------------------------------------------
def test_safe_open_api(tmp_path: Path) -> None:
    p = tmp_path / "o.safetensors"
    w = rand_tensor(candle.bfloat16, (4, 6))
    save_safetensors({"w": w, "b": rand_tensor(candle.int64, (6,))}, p, metadata={"a": "b"})
    with safe_open(p, framework="pt") as f:
        assert f.keys() == ["b", "w"] and list(f) == ["b", "w"] and len(f) == 2 and "w" in f and "z" not in f
        assert f.shape("w") == (4, 6) and f.dtype("w") is candle.bfloat16 and f.info("w").dtype == "BF16"
        assert f.metadata() == {"a": "b"}
        assert_same(f.get_tensor("w"), w)
        as32 = f.get_tensor("w", dtype="float32")
        assert as32.dtype is candle.float32 and np.array_equal(host(as32), host(w).astype(np.float32))
        sl = f.get_slice("w")
        assert sl.get_shape() == [4, 6] and sl.get_dtype() == "BF16" and sl.shape == (4, 6)
        assert np.array_equal(host(sl[1:3, ::2]).astype(np.float32), host(w)[1:3, ::2].astype(np.float32))
        assert sl[2].shape == (6,) and sl[2, 3].shape == () and sl[None].shape == (1, 4, 6)
        with pytest.raises(KeyError, match="nope"):
            f.get_tensor("nope")
    kept = f  # tensors loaded before close stay valid; the reader refuses afterwards
    with pytest.raises(CandleError, match="closed"):
        kept.get_tensor("w")


def test_safe_open_on_device(tmp_path: Path) -> None:
    pytest.importorskip("candle_countdev")
    p = tmp_path / "d.safetensors"
    x = candle.from_numpy(rand_array(candle.float32, (3, 2)), device="countdev")
    save_safetensors({"x": x.t()}, p)  # a non-contiguous tensor on another device
    out = load_safetensors(p, device="countdev")["x"]
    assert out.device == candle.Device("countdev") and np.array_equal(host(out), host(x).T)
    with safe_open(p, device="countdev") as f:
        assert f.get_tensor("x").device == candle.Device("countdev")
        assert f.get_tensor("x", device="cpu").device == candle.Device("cpu")


# --- memory mapping -------------------------------------------------------------------------------
def test_load_is_memory_mapped_and_zero_copy(tmp_path: Path) -> None:
    p = tmp_path / "z.safetensors"
    save_safetensors({"a": rand_tensor(candle.float32, (64, 64)), "b": rand_tensor(candle.bfloat16, (8,))}, p)
    out = load_safetensors(p)
    bases = [mmap_base(host(out[k])) for k in ("a", "b")]
    assert all(isinstance(b, mmap.mmap) for b in bases) and bases[0] is bases[1]


def test_big_sparse_file_is_not_read(tmp_path: Path) -> None:
    n = 64 * 1024 * 1024  # 256 MB of float32 zeros, a sparse file: nothing is written to disk
    header = {"big": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + 4 * n)
    out, peak = load_peak(load_safetensors, p)
    assert isinstance(out, dict), out
    big = out["big"]
    assert big.shape == (n,) and isinstance(mmap_base(big.numpy()), mmap.mmap)
    assert peak < 4 * 1024 * 1024  # nothing near 256 MB was allocated
    assert big[12345].item() == 0.0


def test_writes_to_loaded_tensor_never_reach_the_file(tmp_path: Path) -> None:
    p = tmp_path / "w.safetensors"
    save_safetensors({"a": candle.from_numpy(np.arange(4, dtype=np.float32))}, p)
    before = p.read_bytes()
    t = load_safetensors(p)["a"]
    t.numpy()[0] = 42.0  # copy-on-write mapping: the tensor is writable
    assert t[0].item() == 42.0 and p.read_bytes() == before


def test_overwrite_a_mapped_file(tmp_path: Path) -> None:
    p = tmp_path / "r.safetensors"
    save_safetensors({"a": candle.from_numpy(np.arange(4, dtype=np.float32))}, p)
    old = load_safetensors(p)["a"]
    save_safetensors({"a": candle.from_numpy(np.full(4, 7, dtype=np.float32))}, p)
    assert host(old).tolist() == [0, 1, 2, 3]  # the atomic replace left the mapped inode alone
    assert host(load_safetensors(p)["a"]).tolist() == [7] * 4


def test_misaligned_tensor_is_copied(tmp_path: Path) -> None:
    data = b"\x07" + np.arange(3, dtype="<f4").tobytes()
    p = st_file(tmp_path / "mis.safetensors", {"b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                                               "f": {"dtype": "F32", "shape": [3], "data_offsets": [1, 13]}}, data)
    out = load_safetensors(p)
    assert host(out["f"]).tolist() == [0, 1, 2] and out["f"].numpy().flags.aligned
    assert host(out["b"]).tolist() == [7]


def test_gaps_and_trailing_bytes_are_tolerated(tmp_path: Path) -> None:
    data = np.arange(2, dtype="<f4").tobytes() + b"\0" * 8 + np.arange(2, dtype="<f4").tobytes() + b"junk"
    p = st_file(tmp_path / "g.safetensors", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}, data)
    out = load_safetensors(p)
    assert host(out["b"]).tolist() == [0, 1]


# --- interop with the official safetensors package ------------------------------------------------
TORCH_DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "uint8", "uint32", "int32", "int16", "int8",
                "uint16", "bool"]
LOADS_AS = {"int32": "int64", "int16": "int64", "int8": "int64", "uint16": "uint32", "bool": "uint8"}


def _torch_tensor(torch: Any, name: str, shape: tuple[int, ...]) -> Any:
    dt = getattr(torch, name)
    g = torch.Generator().manual_seed(1)
    if dt.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float32).to(dt)
    if dt == torch.bool:
        return torch.randint(0, 2, shape, generator=g) > 0
    info = torch.iinfo(dt)
    return torch.randint(max(info.min, -(2**62)), min(info.max, 2**62), shape, generator=g, dtype=torch.int64).to(dt)


def _torch_host(torch: Any, t: Any) -> np.ndarray:
    if t.dtype.is_floating_point:
        return t.to(torch.float64).numpy()
    return t.to(torch.int64).numpy()


@pytest.mark.parametrize("shape", [(), (0,), (3, 5)], ids=str)
def test_interop_torch_to_candle(tmp_path: Path, shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    tensors = {name: _torch_tensor(torch, name, shape) for name in TORCH_DTYPES}
    safetensors_torch.save_file(tensors, tmp_path / "t.safetensors", metadata={"format": "pt"})
    out = load_safetensors(tmp_path / "t.safetensors")
    assert sorted(out) == sorted(TORCH_DTYPES)
    for name, t in tensors.items():
        c = out[name]
        assert c.dtype.name == LOADS_AS.get(name, name) and c.shape == shape
        assert np.array_equal(host(c).astype(np.float64 if c.dtype.is_floating_point else np.int64),
                              _torch_host(torch, t)), name
    with safe_open(tmp_path / "t.safetensors") as f:
        assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize("shape", [(), (0, 2), (4, 3)], ids=str)
def test_interop_candle_to_torch(tmp_path: Path, shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open as official_open

    tensors = {d.name: rand_tensor(d, shape) for d in DTYPES}
    tensors["noncontig"] = rand_tensor(candle.float32, (3, 4)).t()
    p = tmp_path / "c.safetensors"
    save_safetensors(tensors, p, metadata={"source": "candle"})
    out = safetensors_torch.load_file(p)
    assert sorted(out) == sorted(tensors)
    for name, t in tensors.items():
        tt = out[name]
        assert tt.dtype == getattr(torch, t.dtype.name) and tuple(tt.shape) == t.shape
        assert np.array_equal(_torch_host(torch, tt),
                              host(t).astype(np.float64 if t.dtype.is_floating_point else np.int64)), name
    with official_open(p, framework="pt") as f:
        assert f.metadata() == {"source": "candle"}


def test_interop_numpy_files(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {"f16": np.arange(6, dtype=np.float16).reshape(2, 3), "i32": np.array([-5, 7], dtype=np.int32),
              "u16": np.array([65535, 1], dtype=np.uint16), "f64": np.array(2.5), "b": np.array([True, False])}
    safetensors_numpy.save_file(arrays, tmp_path / "n.safetensors")
    out = load_safetensors(tmp_path / "n.safetensors")
    for name, a in arrays.items():
        assert np.array_equal(host(out[name]), a), name
    assert out["i32"].dtype is candle.int64 and out["u16"].dtype is candle.uint32 and out["b"].dtype is candle.uint8
    mine = {d.name: rand_tensor(d, (2, 3)) for d in DTYPES if d is not candle.bfloat16}
    save_safetensors(mine, tmp_path / "m.safetensors")
    back = safetensors_numpy.load_file(tmp_path / "m.safetensors")
    for name, t in mine.items():
        assert np.array_equal(back[name], host(t)), name


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "complex64", "uint64"])
def test_unloadable_dtypes_name_tensor_and_dtype(tmp_path: Path, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    if not hasattr(torch, dtype):
        pytest.skip(f"torch has no {dtype}")
    p = tmp_path / "u.safetensors"
    safetensors_torch.save_file({"odd": torch.zeros(3).to(getattr(torch, dtype)), "ok": torch.ones(2)}, p)
    with pytest.raises(FileFormatError, match=r"'odd'.*(F8_|C64|U64)"):
        load_safetensors(p)
    with safe_open(p) as f:  # the rest of the file stays readable
        assert f.keys() == ["odd", "ok"] and f.shape("odd") == (3,)
        assert host(f.get_tensor("ok")).tolist() == [1, 1]
        with pytest.raises(FileFormatError, match="odd"):
            f.dtype("odd")


def test_import_candle_does_not_import_safetensors(tmp_path: Path) -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('ignore'); import candle, candle.io, numpy as np\n"
        f"p = {str(tmp_path / 'x.safetensors')!r}\n"
        "candle.save_safetensors({'a': candle.from_numpy(np.ones(2, np.float32))}, p)\n"
        "candle.load_safetensors(p); candle.save_npz({}, p + '.npz'); candle.load_npz(p + '.npz')\n"
        "bad = [m for m in ('safetensors', 'torch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hostile safetensors files --------------------------------------------------------------------
def _entry(dtype: str = "F32", shape: Any = None, offsets: Any = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [2] if shape is None else shape, "data_offsets": [0, 8] if offsets is None
            else offsets}


HOSTILE: dict[str, tuple[Any, bytes, int | None, str]] = {
    # name: (header, data, forced header length, expected message fragment)
    "header_len_past_eof": ({"a": _entry()}, b"\0" * 8, 10_000, "runs past the end of the file"),
    "header_len_over_limit": ({"a": _entry()}, b"\0" * 8, 2**40, "exceeds the limit"),
    "header_len_u64_max": (b"{}", b"", 2**64 - 1, "exceeds the limit"),
    "not_utf8": (b'{"a\xff": 1}', b"", None, "not valid UTF-8"),
    "not_json": (b"{nope", b"", None, "not valid JSON"),
    "truncated_json": (b'{"a": {"dtype": "F3', b"", None, "not valid JSON"),
    "json_array": (b"[1, 2]", b"", None, "not a JSON object"),
    "json_string": (b'"hi"', b"", None, "not a JSON object"),
    "deeply_nested": (b"[" * 100_000 + b"]" * 100_000, b"", None, "not valid JSON"),
    "duplicate_keys": (b'{"a": {}, "a": {}}', b"", None, "duplicate key"),
    "nan_constant": (b'{"a": NaN}', b"", None, "not valid JSON"),
    "entry_not_object": ({"a": [1, 2]}, b"", None, "not a JSON object"),
    "missing_dtype": ({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "lacks dtype"),
    "missing_shape": ({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, b"\0" * 8, None, "lacks shape"),
    "missing_offsets": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "lacks data_offsets"),
    "unknown_dtype": ({"a": _entry(dtype="F33")}, b"\0" * 8, None, "unknown dtype"),
    "dtype_not_string": ({"a": _entry(dtype=5)}, b"\0" * 8, None, "unknown dtype"),
    "negative_shape": ({"a": _entry(shape=[-2])}, b"\0" * 8, None, "non-negative integers"),
    "float_shape": ({"a": _entry(shape=[2.0])}, b"\0" * 8, None, "non-negative integers"),
    "bool_shape": ({"a": _entry(shape=[True, True])}, b"\0" * 8, None, "non-negative integers"),
    "string_shape": ({"a": _entry(shape=["2"])}, b"\0" * 8, None, "non-negative integers"),
    "shape_not_list": ({"a": _entry(shape=2)}, b"\0" * 8, None, "shape must be a list"),
    "too_many_dims": ({"a": _entry(shape=[1] * 65)}, b"\0" * 8, None, "at most 64"),
    "offsets_float": ({"a": _entry(offsets=[0.0, 8.0])}, b"\0" * 8, None, "data_offsets must be two"),
    "offsets_three": ({"a": _entry(offsets=[0, 4, 8])}, b"\0" * 8, None, "data_offsets must be two"),
    "offsets_negative": ({"a": _entry(offsets=[-8, 0])}, b"\0" * 8, None, "data_offsets must be two"),
    "offsets_not_list": ({"a": _entry(offsets="0,8")}, b"\0" * 8, None, "data_offsets must be two"),
    "end_before_start": ({"a": _entry(offsets=[8, 0])}, b"\0" * 8, None, "before start"),
    "end_past_data": ({"a": _entry(offsets=[0, 8])}, b"\0" * 4, None, "beyond the data section"),
    "huge_end": ({"a": _entry(offsets=[0, 2**63])}, b"\0" * 8, None, "beyond the data section"),
    "length_mismatch": ({"a": _entry(shape=[3])}, b"\0" * 8, None, "needs 12"),
    "huge_shape": ({"a": _entry(shape=[2**30, 2**20])}, b"\0" * 8, None, "needs 4503599627370496"),
    "unaddressable_shape": ({"a": _entry(shape=[2**40, 2**40])}, b"\0" * 8, None, "too large"),
    "zero_dim_overflow": ({"a": _entry(shape=[0, 2**62, 2**62], offsets=[0, 0])}, b"", None, "too large"),
    "zero_dim_huge_int": ({"a": _entry(shape=[0, 2**70], offsets=[0, 0])}, b"", None, "too large"),
    "overlap": ({"a": _entry(offsets=[0, 8]), "b": _entry(offsets=[4, 12])}, b"\0" * 12, None, "overlap"),
    "same_range": ({"a": _entry(offsets=[0, 8]), "b": _entry(offsets=[0, 8])}, b"\0" * 8, None, "overlap"),
    "metadata_not_dict": ({"__metadata__": ["x"]}, b"", None, "__metadata__"),
    "metadata_int_value": ({"__metadata__": {"k": 1}}, b"", None, "__metadata__"),
    "metadata_nested": ({"__metadata__": {"k": {"x": "y"}}}, b"", None, "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_safetensors(tmp_path: Path, case: str) -> None:
    header, data, length, fragment = HOSTILE[case]
    p = st_file(tmp_path / f"{case}.safetensors", header, data, length)
    out, peak = load_peak(load_safetensors, p)
    assert isinstance(out, FileFormatError), out
    assert fragment in str(out) and str(p) in str(out)
    assert peak < 64 * 1024 * 1024


@pytest.mark.parametrize("content", [b"", b"\x01", b"1234567"])
def test_file_shorter_than_8_bytes(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "short.safetensors"
    p.write_bytes(content)
    with pytest.raises(FileFormatError, match="shorter than the 8-byte header length"):
        load_safetensors(p)
    with pytest.raises(FileFormatError, match="short.safetensors"):
        safe_open(p)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "absent.safetensors")


def _valid_file(path: Path) -> bytes:
    save_safetensors({"a": rand_tensor(candle.float32, (2, 3)), "b": rand_tensor(candle.bfloat16, (4,)),
                      "c": rand_tensor(candle.uint8, (3,)), "d": rand_tensor(candle.int64, ()),
                      "e": rand_tensor(candle.float16, (0, 2))}, path, metadata={"k": "v"})
    return path.read_bytes()


def _check_loads_or_rejects(path: Path, raw: bytes) -> None:
    path.write_bytes(raw)
    out, peak = load_peak(load_safetensors, path)
    assert isinstance(out, (dict, FileFormatError)), repr(out)
    assert peak < 32 * 1024 * 1024
    if isinstance(out, dict):
        for t in out.values():  # every accepted tensor can be read in full
            host(t).tobytes()


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.data())
def test_fuzz_header_bytes(tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(_valid_file(tmp_path / "valid.safetensors"))
    n = int.from_bytes(raw[:8], "little")
    json_ish = st.sampled_from(list(b'0123456789[]{},:"-. '))
    byte = st.one_of(json_ish, json_ish, json_ish, st.integers(0, 255))  # mostly JSON-ish edits
    edits = data.draw(st.lists(st.tuples(st.integers(0, 8 + n - 1), byte), min_size=1, max_size=6))
    for pos, byte in edits:
        raw[pos] = byte
    _check_loads_or_rejects(tmp_path / "fuzz.safetensors", bytes(raw))


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=8) | st.sampled_from(["F32", "BF16", "U8", "F8_E4M3", "shape", "dtype"]),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
                     max_leaves=20)
_ENTRY = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "BF16", "U8", "I32", "BOOL", "F64", "C64"]) | _JSON,
                                "shape": st.lists(st.integers(-2, 5), max_size=3) | _JSON,
                                "data_offsets": st.lists(st.integers(-4, 40), min_size=2, max_size=2) | _JSON})


@_FUZZ
@given(header=st.dictionaries(st.text(max_size=5), _ENTRY | _JSON, max_size=4), data=st.binary(max_size=48))
def test_fuzz_random_headers(tmp_path: Path, header: dict[str, Any], data: bytes) -> None:
    raw = json.dumps(header).encode()
    _check_loads_or_rejects(tmp_path / "rand.safetensors", len(raw).to_bytes(8, "little") + raw + data)


# --- atomic saves ---------------------------------------------------------------------------------
def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_atomic_save_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import candle.io.safetensors as st_mod

    p = tmp_path / "model.safetensors"
    save_safetensors({"a": rand_tensor(candle.float32, (4,))}, p)
    os.chmod(p, 0o640)
    before = p.read_bytes()
    real, calls = st_mod._tensor_bytes, []

    def failing(t: candle.Tensor) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(t)

    monkeypatch.setattr(st_mod, "_tensor_bytes", failing)
    with pytest.raises(OSError, match="simulated"):
        save_safetensors({"x": rand_tensor(candle.float32, (100,)), "y": rand_tensor(candle.float32, (100,))}, p)
    assert p.read_bytes() == before and _no_temp_files(tmp_path)
    monkeypatch.undo()
    save_safetensors({"x": rand_tensor(candle.float32, (100,))}, p)
    assert sorted(load_safetensors(p)) == ["x"] and _no_temp_files(tmp_path)
    assert (p.stat().st_mode & 0o777) == 0o640  # the replaced file keeps its mode


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_atomic_save_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    p = tmp_path / f"a.{kind}"
    t = rand_tensor(candle.float32, (4,))
    save = (lambda x: save_npy(x, p)) if kind == "npy" else (lambda x: save_npz({"a": x, "b": x}, p))
    save(t)
    before = p.read_bytes()
    real = np.lib.format.write_array
    calls: list[int] = []

    def failing(fp: Any, arr: np.ndarray, **kw: Any) -> None:
        calls.append(1)
        fp.write(b"partial")
        if len(calls) == (1 if kind == "npy" else 2):
            raise OSError("simulated crash")
        real(fp, arr, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="simulated"):
        save(rand_tensor(candle.float32, (50,), seed=3))
    assert p.read_bytes() == before and _no_temp_files(tmp_path)


# --- npy / npz ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.short)
def test_npy_npz_roundtrip(tmp_path: Path, dtype: candle.DType, shape: tuple[int, ...]) -> None:
    t = rand_tensor(dtype, shape)
    save_npy(t, tmp_path / "a.npy")
    assert_same(load_npy(tmp_path / "a.npy"), t)
    for compress in (False, True):
        save_npz({"t": t, "u": rand_tensor(candle.uint8, (2,))}, tmp_path / "a.npz", compress=compress)
        out = load_npz(tmp_path / "a.npz")
        assert sorted(out) == ["t", "u"]
        assert_same(out["t"], t)


def test_npy_npz_non_contiguous(tmp_path: Path) -> None:
    base = rand_tensor(candle.bfloat16, (4, 6))
    for t in (base.t(), base[:, ::2], rand_tensor(candle.int64, (1, 3)).expand(4, 3)):
        save_npy(t, tmp_path / "n.npy")
        assert np.array_equal(host(load_npy(tmp_path / "n.npy")), host(t))
        save_npz({"t": t}, tmp_path / "n.npz")
        assert np.array_equal(host(load_npz(tmp_path / "n.npz")["t"]), host(t))


def test_bf16_marker_is_plain_numpy(tmp_path: Path) -> None:
    t = rand_tensor(candle.bfloat16, (3,))
    save_npy(t, tmp_path / "b.npy")
    save_npz({"w": t}, tmp_path / "b.npz")
    for a in (np.load(tmp_path / "b.npy", allow_pickle=False), np.load(tmp_path / "b.npz", allow_pickle=False)["w"]):
        assert a.dtype.names == ("bfloat16",)
        assert np.array_equal(a["bfloat16"], host(t).view(np.uint16))


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    save_npy(rand_tensor(candle.float32, (32, 32)), tmp_path / "m.npy")
    t = load_npy(tmp_path / "m.npy")
    assert isinstance(mmap_base(t.numpy()), mmap.mmap)


@pytest.mark.parametrize("array, dtype", [
    (np.array([True, False]), candle.uint8), (np.array([-3, 4], np.int8), candle.int64),
    (np.array([-3, 4], np.int16), candle.int64), (np.array([-3, 4], np.int32), candle.int64),
    (np.array([65535], np.uint16), candle.uint32), (np.arange(6, dtype=">f4").reshape(2, 3), candle.float32),
    (np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)), candle.float64),
    (np.array(7, np.int64), candle.int64), (np.zeros((0, 4), np.float16), candle.float16),
], ids=["bool", "i8", "i16", "i32", "u16", "big_endian", "fortran", "0d", "empty"])
def test_load_plain_numpy_files(tmp_path: Path, array: np.ndarray, dtype: candle.DType) -> None:
    np.save(tmp_path / "p.npy", array)
    np.savez(tmp_path / "p.npz", x=array, arr=array)
    for t in (load_npy(tmp_path / "p.npy"), load_npz(tmp_path / "p.npz")["x"]):
        assert t.dtype is dtype and t.shape == array.shape
        assert np.array_equal(host(t), array.astype(dtype.numpy))


@pytest.mark.parametrize("array", [np.array([1, 2], np.uint64), np.array([1j]), np.array(["a"]),
                                   np.zeros(2, [("x", "<f4"), ("y", "<i4")]), np.zeros(2, "V3")],
                         ids=["u64", "complex", "str", "struct", "void"])
def test_unsupported_numpy_dtypes(tmp_path: Path, array: np.ndarray) -> None:
    np.save(tmp_path / "u.npy", array)
    np.savez(tmp_path / "u.npz", x=array)
    with pytest.raises(FileFormatError, match="u.npy"):
        load_npy(tmp_path / "u.npy")
    with pytest.raises(FileFormatError, match="u.npz"):
        load_npz(tmp_path / "u.npz")


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    obj = np.array([{"a": 1}, None], dtype=object)
    np.save(tmp_path / "o.npy", obj, allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=obj)
    with pytest.raises(FileFormatError, match="pickle"):
        load_npy(tmp_path / "o.npy")
    with pytest.raises(FileFormatError, match="pickle"):
        load_npz(tmp_path / "o.npz")
    (tmp_path / "p.npy").write_bytes(b"\x80\x04\x95" + b"\0" * 20)  # a bare pickle stream
    with pytest.raises(FileFormatError, match="magic"):
        load_npy(tmp_path / "p.npy")


def _npy_bytes(header: str, data: bytes = b"", version: int = 1) -> bytes:
    h = header.encode("latin1")
    size = len(h).to_bytes(2 if version == 1 else 4, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + size + h + data


NPY_HOSTILE = {
    "empty": (b"", "bad magic"),
    "bad_magic": (b"\x93NUMPX\x01\x00" + b"\0" * 20, "bad magic"),
    "version_9": (_npy_bytes("{}").replace(b"\x01\x00", b"\x09\x00", 1), "version 9.0"),
    "version_3": (_npy_bytes("{}").replace(b"\x01\x00", b"\x03\x00", 1), "version 3.0"),
    "header_len_huge": (b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little"), "over 65536"),
    "header_truncated": (b"\x93NUMPY\x01\x00" + (100).to_bytes(2, "little") + b"{'descr'", "truncated"),
    "header_not_dict": (_npy_bytes("[1, 2]\n"), "malformed"),
    "header_code": (_npy_bytes("__import__('os').system('true')\n"), "malformed"),
    "header_bad_keys": (_npy_bytes("{'descr': '<f4', 'shape': (2,)}\n"), "malformed"),
    "bad_descr": (_npy_bytes("{'descr': 'zz9', 'fortran_order': False, 'shape': (2,)}\n"), "malformed"),
    "negative_shape": (_npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}\n"), "invalid shape"),
    "object_descr": (_npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}\n", b"\0" * 8), "pickle"),
    "zero_size_dtype": (_npy_bytes("{'descr': '|S0', 'fortran_order': False, 'shape': (1099511627776,)}\n"),
                        "zero-size dtype"),
    "zero_dim_overflow": (_npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': (0, {2**62}, {2**62})}}\n"),
                          "too large"),
    "truncated_data": (_npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}\n", b"\0" * 8),
                       "truncated"),
    "huge_shape": (_npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1024)}\n",
                              b"\0" * 8), "truncated"),
}


@pytest.mark.parametrize("case", sorted(NPY_HOSTILE))
def test_hostile_npy(tmp_path: Path, case: str) -> None:
    raw, fragment = NPY_HOSTILE[case]
    p = tmp_path / f"{case}.npy"
    p.write_bytes(raw)
    out, peak = load_peak(load_npy, p)
    assert isinstance(out, FileFormatError), out
    assert fragment in str(out) and str(p) in str(out)
    assert peak < 16 * 1024 * 1024


def _zip_with(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy_of(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _patch_central(raw: bytes, index: int, field_offset: int, value: int) -> bytes:
    """Overwrite a 4-byte field of the `index`-th central directory entry."""
    pos = -1
    for _ in range(index + 1):
        pos = raw.index(b"PK\x01\x02", pos + 1)
    b = bytearray(raw)
    b[pos + field_offset:pos + field_offset + 4] = value.to_bytes(4, "little")
    return bytes(b)


def _npz_hostile() -> dict[str, tuple[bytes, str]]:
    good = _npy_of(np.arange(4, dtype=np.float32))
    zeros = _zip_with({"z.npy": _npy_of(np.zeros(1 << 20, np.uint8))}, zipfile.ZIP_DEFLATED)
    two = _zip_with({"a.npy": good, "b.npy": good})
    stored = _zip_with({"a.npy": good})
    corrupt = bytearray(stored)
    corrupt[stored.index(good) + len(good) - 1] ^= 0xFF  # flip a data byte: bad CRC
    return {
        "not_zip": (b"hello world, not a zip" * 10, "not a valid .npz"),
        "empty_file": (b"", "not a valid .npz"),
        "truncated": (stored[: len(stored) // 2], "not a valid .npz"),
        "bad_crc": (bytes(corrupt), "corrupt member"),
        "zip_bomb_size": (_patch_central(zeros, 0, 24, 2**32 - 2), "zip bomb"),
        "overlapping": (_patch_central(two, 1, 42, 0), "overlap"),
        "not_npy_member": (_zip_with({"a.npy": good, "readme.txt": b"hi"}), "not a .npy member"),
        "duplicate_members": (_dup_zip(good), "duplicate"),
        "size_mismatch": (_zip_with({"a.npy": good[:-4]}), "needs 16 data bytes"),
        "trailing_bytes": (_zip_with({"a.npy": good + b"xx"}), "needs 16 data bytes"),
        "bad_member_header": (_zip_with({"a.npy": b"\x93NUMPY\x01\x00\x04\x00[1]\n"}), "malformed"),
        "pickled_member": (_zip_with({"a.npy": _npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}\n",
                                                          b"\x80\x04N.")}), "pickle"),
        "bzip2": (_zip_with({"a.npy": good}, zipfile.ZIP_BZIP2), "compression method"),
    }


def _dup_zip(member: bytes) -> bytes:
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.npy", member)
            zf.writestr("a.npy", member)
    return buf.getvalue()


NPZ_HOSTILE = _npz_hostile()


@pytest.mark.parametrize("case", sorted(NPZ_HOSTILE))
def test_hostile_npz(tmp_path: Path, case: str) -> None:
    raw, fragment = NPZ_HOSTILE[case]
    p = tmp_path / f"{case}.npz"
    p.write_bytes(raw)
    out, peak = load_peak(load_npz, p)
    assert isinstance(out, FileFormatError), out
    assert fragment in str(out) and str(p) in str(out)
    assert peak < 16 * 1024 * 1024


def test_legit_highly_compressed_npz_loads(tmp_path: Path) -> None:
    save_npz({"z": candle.zeros(1 << 20, dtype=candle.uint8)}, tmp_path / "z.npz", compress=True)
    assert (tmp_path / "z.npz").stat().st_size < 1 << 16
    assert load_npz(tmp_path / "z.npz")["z"].shape == (1 << 20,)


@_FUZZ
@given(data=st.data())
def test_fuzz_npy_and_npz_bytes(tmp_path: Path, data: st.DataObject) -> None:
    t = rand_tensor(candle.bfloat16, (3, 2))
    kind = data.draw(st.sampled_from(["npy", "npz", "npz_deflated"]))
    p = tmp_path / f"f.{kind[:3]}"
    if kind == "npy":
        save_npy(t, p)
    else:
        save_npz({"a": t, "b": rand_tensor(candle.int64, (2,))}, p, compress=kind == "npz_deflated")
    raw = bytearray(p.read_bytes())
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=4))
    for pos, byte in edits:
        raw[pos] = byte
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    p.write_bytes(bytes(raw))
    out, peak = load_peak(load_npy if kind == "npy" else load_npz, p)
    assert isinstance(out, (candle.Tensor, dict, FileFormatError)), repr(out)
    assert peak < 32 * 1024 * 1024
