"""The OpenCL backend (candle-opencl) on a real OpenCL device: PoCL on the CPU in CI.

The conformance kit runs on `opencl` from tests/test_conformance.py (forward, backward and finite
differences for every dtype the device supports). This module checks what the kit does not see:
zero-copy views, transfers only on request, programs built once, the naming scheme, clear errors,
device selection, the matmul paths on larger shapes, deterministic scatter_add/index_add, random
numbers, SmolLM2 greedy tokens equal to cpu's (and no transfer during a forward), and the digits
example reaching the cpu accuracy. Skipped when no OpenCL device is available (with
CANDLE_TEST_BACKENDS=opencl, conftest fails the run instead).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from model_helpers import greedy, installed_path, load_reference

import candle
from conftest import available_devices

pytestmark = pytest.mark.skipif("opencl" not in available_devices(), reason="no OpenCL device (candle-opencl)")

ROOT = Path(__file__).resolve().parents[1]
DEV = "opencl"


def _t(a: np.ndarray, **kw: Any) -> candle.Tensor:
    return candle.tensor(a, device=DEV, **kw)


@pytest.fixture()
def ocl() -> ModuleType:
    import candle_opencl

    return candle_opencl


# --- plugin --------------------------------------------------------------------------------------
def test_import_is_light() -> None:
    code = ("import sys, candle, candle_opencl, candle_opencl.plugin; "
            "assert 'pyopencl' not in sys.modules, 'pyopencl imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_backend_listed_with_priority_above_cpu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infos = {i.name: i for i in candle.backends()}
    assert infos["opencl"].state == "available"
    from candle_opencl.plugin import PRIORITY

    assert PRIORITY > 0
    assert "opencl" in repr(candle.Device(DEV).backend)


def test_device_selection_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from candle_opencl import plugin

    found = plugin.devices()
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", found[0].name.strip()[:6])
    assert plugin.devices()[0].name == found[0].name
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", "0")
    assert len(plugin.devices()) == 1
    monkeypatch.setenv("CANDLE_OPENCL_DEVICE", "no-such-device-xyz")
    with pytest.raises(candle.BackendUnavailableError, match="CANDLE_OPENCL_DEVICE"):
        plugin.devices()
    monkeypatch.delenv("CANDLE_OPENCL_DEVICE")
    monkeypatch.setenv("CANDLE_OPENCL_PLATFORM", "no-such-platform-xyz")
    with pytest.raises(candle.BackendUnavailableError, match="CANDLE_OPENCL_PLATFORM"):
        plugin.devices()
    monkeypatch.setenv("CANDLE_OPENCL_PLATFORM", "0")
    assert plugin.devices()
    with pytest.raises(candle.BackendUnavailableError, match="does not exist"):
        plugin.select_device(len(found) + 5)


def test_unsupported_dtype_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    be = candle.Device(DEV).backend
    monkeypatch.setattr(be.rt, "fp64", False)
    assert not be.supports_dtype(candle.float64)
    with pytest.raises(candle.DTypeError, match="float64 is not supported on device opencl"):
        candle.zeros(3, dtype=candle.float64, device=DEV)
    with pytest.raises(candle.DTypeError, match="float64"):
        _t(np.ones(3, dtype=np.float32)).to(dtype=candle.float64)


# --- storage, transfers, programs --------------------------------------------------------------------
def test_views_share_the_buffer() -> None:
    a = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    x = _t(a)
    views = {
        "transpose": (x.transpose(1, 3), a.transpose(0, 3, 2, 1)),
        "permute": (x.permute(3, 0, 2, 1), a.transpose(3, 0, 2, 1)),
        "narrow": (x.narrow(2, 1, 2), a[:, :, 1:3]),
        "slice_step": (x[:, ::2, 1:, ::3], a[:, ::2, 1:, ::3]),
        "expand": (x[:, :1].expand(2, 6, 4, 5), np.broadcast_to(a[:, :1], (2, 6, 4, 5))),
        "flip": (x.flip((1, 3)), a[:, ::-1, :, ::-1]),
        "reshape": (x.reshape(6, 20), a.reshape(6, 20)),
        "view_of_transpose": (x.transpose(0, 1).reshape(3, 2, 20), a.transpose(1, 0, 2, 3).reshape(3, 2, 20)),
    }
    for name, (v, ref) in views.items():
        assert v._data.buf is x._data.buf, name
        np.testing.assert_array_equal(v.numpy(), ref, err_msg=name)
    assert x.transpose(1, 3).stride() == (60, 1, 5, 20)
    assert not x.transpose(1, 3).is_contiguous() and x.transpose(1, 3).contiguous().is_contiguous()


def test_writes_through_views() -> None:
    x = candle.zeros(4, 5, device=DEV)
    x[1:3, ::2] = 7.0
    x.t()[4] = _t(np.arange(4, dtype=np.float32))
    ref = np.zeros((4, 5), np.float32)
    ref[1:3, ::2] = 7
    ref[:, 4] = np.arange(4)
    np.testing.assert_array_equal(x.numpy(), ref)
    with pytest.raises(candle.UnsupportedError, match="broadcast"):
        candle.zeros(1, 3, device=DEV).expand(4, 3).copy_(candle.ones(4, 3, device=DEV))


def test_transfers_only_on_request(ocl: ModuleType) -> None:
    a = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    ocl.reset_stats()
    x = _t(a)
    y = ((x @ x.t()).softmax(-1) * 3 + x.sum() - x.mean(0).max()).relu()
    s = ocl.stats()
    assert s.get("from_numpy") == 1 and "to_numpy" not in s, s
    y.numpy()
    assert ocl.stats()["to_numpy"] == 1


def test_programs_built_once_and_kernel_names(ocl: ModuleType) -> None:
    x = _t(np.ones((5, 7), np.float32))
    (x * x + 1).exp().sum(0)
    ocl.reset_stats()
    (x * x + 1).exp().sum(0)
    assert "build" not in ocl.stats()
    rt = candle.Device(DEV).backend.rt
    names = {k.function_name for k in rt._kernels.values()}
    assert {"mul_v_f32", "affine_v_f32", "exp_v_f32"} <= names
    dtypes = ("f32", "f64", "f16", "bf16", "i64", "u32", "u8")
    for n in names:  # <op>_<variant>_<dtype> (casts: <op>_<variant>_<src>_<dst>)
        assert n.split("_")[-1] in dtypes and len(n.split("_")) >= 3, n
    kernels_dir = Path(ocl.__file__).parent / "kernels"
    assert sorted(p.name for p in kernels_dir.glob("*.cl"))  # OpenCL C lives in package data files


# --- numerics beyond the kit's small shapes --------------------------------------------------------
@pytest.mark.parametrize("m,k,n", [(1, 100, 130), (3, 37, 9), (7, 33, 50), (13, 64, 70), (1, 576, 1536), (64, 48, 17)])
def test_matmul_paths(m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = a.astype(np.float64) @ b
    x, w = _t(a), _t(b)
    np.testing.assert_allclose((x @ w).numpy(), ref, rtol=1e-4, atol=1e-3)  # nn / gemv
    np.testing.assert_allclose((_t(a.T.copy()).t() @ w).numpy(), ref, rtol=1e-4, atol=1e-3)  # A transposed
    np.testing.assert_allclose((x @ _t(b.T.copy()).t()).numpy(), ref, rtol=1e-4, atol=1e-3)  # B transposed (nt)
    np.testing.assert_allclose((_t(a.T.copy()).t() @ _t(b.T.copy()).t()).numpy(), ref, rtol=1e-4, atol=1e-3)
    bb = rng.standard_normal((3, k, n)).astype(np.float32)  # batched, broadcast lhs
    np.testing.assert_allclose((x @ _t(bb)).numpy(), a.astype(np.float64) @ bb, rtol=1e-4, atol=1e-3)


def test_matmul_other_dtypes() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(-5, 5, (9, 11)), rng.integers(-5, 5, (11, 8))
    np.testing.assert_array_equal((_t(a) @ _t(b)).numpy(), a @ b)
    af, bf = rng.standard_normal((9, 11)), rng.standard_normal((11, 8))
    np.testing.assert_allclose((_t(af) @ _t(bf)).numpy(), af @ bf, rtol=1e-12)
    got = (_t(af, dtype="bf16") @ _t(bf, dtype="bf16")).to(dtype="f32").numpy()
    np.testing.assert_allclose(got, af @ bf, rtol=5e-2, atol=1e-1)


def test_reductions_large_and_strided() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 5000)).astype(np.float32)
    x = _t(a)
    np.testing.assert_allclose(x.sum(1).numpy(), a.sum(1), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(x.argmax(1).numpy(), a.argmax(1))
    np.testing.assert_array_equal(x.max(1).values.numpy(), a.max(1))
    b = rng.standard_normal((4, 6, 5, 3)).astype(np.float32)
    y = _t(b).permute(2, 0, 3, 1)
    np.testing.assert_allclose(y.sum((1, 3)).numpy(), b.transpose(2, 0, 3, 1).sum((1, 3)), rtol=1e-5, atol=1e-5)
    big = rng.standard_normal(200_000).astype(np.float32)
    np.testing.assert_allclose(_t(big).sum().item(), big.astype(np.float64).sum(), rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(_t(big).argmin().item(), big.argmin())


@pytest.mark.parametrize("case", ["decode_gqa_cache", "causal_offset", "bool_mask", "add_mask_empty_rows",
                                  "head256", "head_not_mult8", "long_prompt"])
def test_attention_paths_match_cpu(case: str) -> None:
    """sdpa on opencl (attn_rows for few query rows on CPU devices, else matmul + masked softmax + matmul)
    against the cpu backend, on cache-like strided keys and every mask kind."""
    F = candle.nn.functional
    rng = np.random.default_rng(len(case))
    b, hq, hk, lq, s, e = 2, 6, 2, 1, 37, 64
    kw: dict[str, Any] = {}
    mask = None
    if case == "causal_offset":
        lq, kw = 5, {"causal_offset": 30}
    elif case == "bool_mask":
        lq = 3
        mask = (rng.random((b, 1, lq, s)) > 0.3).astype(np.uint8)
    elif case == "add_mask_empty_rows":
        lq = 4
        mask = rng.standard_normal((1, hq, lq, s)).astype(np.float32)
        mask[0, 1, 2, :] = -np.inf  # a row that sees no key: zeros
    elif case == "head256":
        e = 256
    elif case == "head_not_mult8":
        e = 20
    elif case == "long_prompt":
        lq, s, kw = 40, 40, {"is_causal": True}
    q = rng.standard_normal((b, hq, lq, e)).astype(np.float32)
    kc = rng.standard_normal((b, hk, s + 11, e)).astype(np.float32)  # a cache: keys [:s] of a longer buffer
    vc = rng.standard_normal((b, hk, s + 11, e)).astype(np.float32)
    outs = []
    for dev in ("cpu", DEV):
        k = candle.tensor(kc, device=dev)[:, :, :s]
        v = candle.tensor(vc, device=dev)[:, :, :s]
        m = candle.tensor(mask, device=dev) if mask is not None else None
        out = F.scaled_dot_product_attention(candle.tensor(q, device=dev), k, v, attn_mask=m, enable_gqa=True, **kw)
        outs.append(out.numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    if case == "add_mask_empty_rows":
        assert not outs[1][0, 1, 2].any()


def test_scatter_add_and_index_add_are_deterministic() -> None:
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 4, (6, 50))
    src = rng.standard_normal((6, 50)).astype(np.float32)
    x = candle.zeros(6, 4, device=DEV)
    ref = np.zeros((6, 4))
    np.add.at(ref, (np.arange(6)[:, None], idx), src)
    outs = [x.scatter_add(1, _t(idx), _t(src)).numpy() for _ in range(3)]
    np.testing.assert_allclose(outs[0], ref, rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    i2 = rng.integers(0, 3, 40)
    s2 = rng.standard_normal((40, 5)).astype(np.float32)
    ref2 = np.zeros((3, 5))
    np.add.at(ref2, i2, s2)
    np.testing.assert_allclose(candle.zeros(3, 5, device=DEV).index_add(0, _t(i2), _t(s2)).numpy(), ref2,
                               rtol=1e-5, atol=1e-5)


def test_sort_long_rows_is_stable() -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 50, (3, 3000)).astype(np.float32)
    v, i = _t(a).sort(-1, descending=True)
    ref_i = np.argsort(-a, axis=-1, kind="stable")
    np.testing.assert_array_equal(i.numpy(), ref_i)
    np.testing.assert_array_equal(v.numpy(), np.take_along_axis(a, ref_i, -1))


def test_random_numbers_are_reproducible_and_distributed() -> None:
    g1, g2 = candle.Generator(123), candle.Generator(123)
    a = candle.rand(100_000, device=DEV, generator=g1).numpy()
    b = candle.rand(100_000, device=DEV, generator=g2).numpy()
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= a.min() and a.max() < 1.0 and abs(a.mean() - 0.5) < 0.01
    n = candle.randn(100_000, device=DEV, generator=g1).numpy()
    assert abs(n.mean()) < 0.02 and abs(n.std() - 1.0) < 0.02
    h = candle.rand(10_000, dtype="bf16", device=DEV).to(dtype="f32").numpy()
    assert 0.0 <= h.min() and h.max() < 1.0
    d = candle.randn(10_000, dtype="f64", device=DEV).numpy()
    assert d.dtype == np.float64 and abs(d.std() - 1.0) < 0.05


def test_half_storage_round_trips() -> None:
    a = np.array([0.1, -2.5, 65504.0, 1e-5, np.inf, np.nan], dtype=np.float16)
    np.testing.assert_array_equal(_t(a).numpy(), a)
    b = candle.tensor([1.0, -3.25, 1e30], dtype="bf16", device=DEV)
    want = np.array([1.0, -3.25, 1e30]).astype(candle.bfloat16.numpy).astype(np.float32)
    np.testing.assert_array_equal(b.numpy().astype(np.float32), want)


def test_integer_division_by_zero_does_not_crash() -> None:
    a = _t(np.array([5, -7, 3], dtype=np.int64))
    b = _t(np.array([0, 2, -1], dtype=np.int64))
    assert (a // b).numpy().tolist()[1:] == [-4, -3]
    assert (a % b).numpy().tolist()[1:] == [1, 0]


# --- SmolLM2 ---------------------------------------------------------------------------------------
FIXTURE = ROOT / "tests" / "fixtures" / "smollm2_reference.npz"


@pytest.fixture(scope="module", params=["quantized", "float32"])
def smollm2_opencl(request: pytest.FixtureRequest) -> Any:
    """SmolLM2 on opencl with its GGUF blocks kept (`qmatmul`, the loader's default) and with weights
    dequantized to float32 at load."""
    from candle_models import model_files
    from candle_models.loading import load_model

    path = installed_path(model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL, "SmolLM2")
    data = load_reference(FIXTURE, path, "SmolLM2")
    lm = load_model(path, device=DEV, tokenizer=False, progress=False, dequantize=request.param == "float32")
    return lm, data


def test_smollm2_greedy_tokens_equal_cpu(smollm2_opencl: Any) -> None:
    lm, ref = smollm2_opencl
    assert all(p.device == candle.Device(DEV) for p in lm.model.parameters())
    prompts = sorted(k for k in ref if k.startswith("ids_"))
    assert prompts
    for key in prompts:
        i = key.split("_")[1]
        want = ref[f"greedy_{i}"].tolist()  # transformers' tokens, which the cpu backend reproduces
        assert greedy(lm.model, ref[key].tolist(), len(want), device=DEV) == want, key


def test_smollm2_forward_stays_on_the_device(smollm2_opencl: Any, ocl: ModuleType) -> None:
    lm, ref = smollm2_opencl
    ids = ref["ids_0"].tolist()
    cache = lm.model.new_cache(1, 64)
    lm.model(candle.tensor([ids], device=DEV), cache, last_only=True)
    x = candle.tensor([[42]], device=DEV)
    for what, inp in (("decode", x), ("prefill", candle.tensor([ids[:5]], device=DEV))):
        ocl.reset_stats()
        logits = lm.model(inp, cache, last_only=True)
        s = ocl.stats()
        assert s.get("from_numpy", 0) == 0 and s.get("to_numpy", 0) == 0, (what, s)  # no hidden transfer
        assert s.get("build", 0) == 0, (what, s)  # every program was built before
        assert 0 < s["kernel"] <= 20 * lm.config.num_hidden_layers + 8, (what, s)  # ~13 ops per layer
        assert logits.device == candle.Device(DEV)


def test_cli_generate_on_opencl_matches_cpu() -> None:
    """`candle generate --device opencl` prints the same greedy text as `--device cpu`."""
    from candle_models import model_files

    path = installed_path(model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL, "SmolLM2")
    texts = []
    for dev in ("cpu", DEV):
        cmd = [sys.executable, "-m", "candle_models", "generate", "--model", path, "-p", "The capital of France is",
               "-n", "12", "--device", dev, "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        texts.append(out.stdout)
    assert texts[0].strip() and texts[1] == texts[0], texts


# --- the digits example ----------------------------------------------------------------------------
def test_digits_training_reaches_cpu_accuracy() -> None:
    pytest.importorskip("sklearn", reason="scikit-learn (an example/test-only dependency) is not installed")
    spec = importlib.util.spec_from_file_location("train_digits_ocl", ROOT / "examples" / "train_digits.py")
    assert spec is not None and spec.loader is not None
    td = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = td
    spec.loader.exec_module(td)
    args = ["--model", "both", "--epochs", "2", "--max-batches", "20", "--no-progress", "--seed", "0"]
    cpu = td.main([*args, "--device", "cpu"])
    ocl = td.main([*args, "--device", DEV])
    for kind in ("mlp", "cnn"):
        assert ocl[kind]["final_acc"] > 0.80, ocl[kind]
        assert ocl[kind]["final_acc"] >= cpu[kind]["final_acc"] - 0.03, (kind, ocl[kind], cpu[kind])
