"""candle-cuda, the CuPy backend.

Without a GPU (CI): the plugin installs, registers and reports itself unavailable with its reason; every
CUDA C source compiles with nvcc for sm_80 and sm_90 and defines exactly the kernels the loader names;
the pure-Python parts (cuBLAS call planning, launch configurations, dtype mapping, the CuPy choice,
errors) are checked against numpy. tests/test_cuda_emulated.py, test_cuda_kernel_models.py and
test_cuda_host_kernels.py run the backend's Python layer on numpy in place of CuPy, check every kernel
launch against the kernel's C signature, and run the CUDA C compiled for the CPU (the conformance kit
on each).

With a GPU (`cuda` available; CANDLE_TEST_BACKENDS=cuda makes its absence fail the run): the
conformance kit in float32/float16/bfloat16, every fused kernel against core's composition on shapes
that take each kernel path, cuBLAS matmuls with transposed and broadcast operands, the quantized
kernels bit-exact against the numpy reference, DLPack with PyTorch without copies, out-of-memory errors,
kernels compiled once, and SmolLM2's greedy tokens equal to the CPU's. Those tests skip here with the
probe's reason; nothing GPU-side is verified by a run that skipped them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cuda_helpers import SDPA_MASKS, SDPA_SHAPES, fused_and_composed, sdpa_inputs
from model_helpers import greedy, installed_path, load_reference

import candle
import candle.testing
from conftest import available_devices, requested_backends

ROOT = Path(__file__).resolve().parents[1]
DEV = "cuda"


def _cuda_info() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {i.name: i for i in candle.backends()}.get("cuda")


CUDA_OK = "cuda" in available_devices()
_INFO = _cuda_info()
NO_GPU_REASON = "candle-cuda is not installed" if _INFO is None else f"cuda is {_INFO.state}: {_INFO.reason}"
gpu = pytest.mark.skipif(not CUDA_OK, reason=NO_GPU_REASON)


# --- the plugin, without a GPU -----------------------------------------------------------------------
def test_plugin_is_registered_and_import_is_light() -> None:
    import importlib.metadata as md

    eps = {ep.name: ep.value for ep in md.entry_points(group="candle.backends")}
    assert eps.get("cuda") == "candle_cuda.plugin"
    code = ("import sys, candle, candle_cuda, candle_cuda.plugin, candle_cuda.kernels, candle_cuda.launch, "
            "candle_cuda.blas, candle_cuda.dtypes; assert 'cupy' not in sys.modules, 'cupy imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_listed_with_state_and_reason() -> None:
    info = _cuda_info()
    assert info is not None, "candle-cuda is not registered"
    from candle_cuda.plugin import PRIORITY

    assert info.priority == PRIORITY > 10  # above opencl and cpu: CANDLE_DEVICE=auto picks a GPU
    if CUDA_OK:
        assert info.state == "available" and info.devices >= 1
        return
    assert info.state == "unavailable" and info.reason
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "cupy is not installed" in info.reason and "pip install" in info.reason
        assert "cupy-cuda12x" in info.reason or "cupy-cuda13x" in info.reason
    else:
        assert "CUDA is not usable here" in info.reason
    with pytest.raises(candle.BackendUnavailableError, match="cuda:0 is unavailable"):
        candle.zeros(2, device="cuda")


def test_probe_without_cupy_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from candle_cuda import plugin

    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(candle.BackendUnavailableError, match=r"cupy is not installed: pip install .*cupy-cuda1[23]x"):
        plugin._probe()


def test_cupy_package_choice() -> None:
    from candle_cuda.plugin import cupy_package, install_hint

    assert cupy_package(12040) == "cupy-cuda12x"
    assert cupy_package(12090) == "cupy-cuda12x"
    assert cupy_package(13000) == "cupy-cuda13x"
    assert cupy_package(13020) == "cupy-cuda13x"
    assert cupy_package(None) == "cupy-cuda12x"
    assert "candle-core[cuda]\" cupy-cuda13x" in install_hint(13000) and "CUDA 13.0" in install_hint(13000)
    assert "candle-cuda[cuda12]" in install_hint(12040) and "CUDA 12.4" in install_hint(12040)
    assert "cupy-cuda12x for CUDA 12.x" in install_hint(None)


# --- pure Python: dtypes, sources, launch math, cuBLAS planning, errors ---------------------------------
def test_dtype_mapping() -> None:
    from candle_cuda import dtypes

    assert {d.short for d in candle.dtype.ALL} == set(dtypes.STORAGE)
    for d in candle.dtype.ALL:
        st = np.dtype(dtypes.storage_dtype(d.short))
        assert st.itemsize == d.itemsize, d
        if d.short != "bf16":
            assert st == d.numpy
    assert dtypes.storage_dtype("bf16") == "uint16"
    assert dtypes.cuda_data_type("bf16") == 14 and dtypes.cuda_data_type("f16") == 2
    assert dtypes.compute_type("bf16") == dtypes.compute_type("f16") == dtypes.compute_type("f32") == 68
    assert dtypes.compute_type("f64") == 70
    p = dtypes.prelude("bf16")
    assert "#define SFX bf16" in p and "#define T unsigned short" in p and "f32_to_bf16(v)" in p


def test_sources_and_kernel_names() -> None:
    from candle_cuda import kernels

    kdir = Path(kernels.__file__).parent / "kernels"
    assert sorted(p.stem for p in kdir.glob("*.cu")) == sorted(kernels.FILES)
    want = {"norm": {"softmax", "rms_norm", "layer_norm"}, "act": {"silu_mul"}, "rope": {"rope"},
            "attention": {"sdpa_decode", "sdpa_flash"}, "pool": {"max_pool2d"}}
    for f, ops in want.items():
        assert set(kernels.ops(f)) == ops, f
    qops = set(kernels.ops("quant"))
    for qt in ("Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"):
        assert qt in kernels.QUANT_TYPES
    for qt in kernels.QUANT_TYPES:
        assert {f"qdequantize_{qt.lower()}", f"qmatvec_{qt.lower()}"} <= qops
    assert kernels.kernel_names("norm", "bf16") == ["softmax_bf16", "rms_norm_bf16", "layer_norm_bf16"]
    src = kernels.source("attention", "f16")
    assert src.startswith("#define SFX f16") and not re.search(r"^\s*#\s*include", src, re.M)  # no headers
    with pytest.raises(KeyError, match="no kernel file"):
        kernels.source("nope", "f32")
    with pytest.raises(KeyError, match="not built for i64"):
        kernels.source("norm", "i64")


def test_launch_constants_match_the_kernels() -> None:
    from candle_cuda import launch

    text = (Path(launch.__file__).parent / "kernels" / "attention.cu").read_text()
    assert int(re.search(r"#define FLASH_ACC (\d+)", text).group(1)) == launch.FLASH_ACC  # type: ignore[union-attr]
    qtext = (Path(launch.__file__).parent / "kernels" / "quant.cu").read_text()
    assert int(re.search(r"#define QMV_ROWS (\d+)", qtext).group(1)) == launch.QMV_ROWS  # type: ignore[union-attr]


def test_launch_math() -> None:
    from candle_cuda import launch

    for n in (1, 5, 256, 257, 10**9):
        (g,), (b,) = launch.grid_1d(n)
        assert 1 <= g <= launch.MAX_BLOCKS and b == launch.BLOCK
        assert g * b >= min(n, launch.MAX_BLOCKS * b)
    for d in (1, 31, 64, 576, 2048, 4096, 100_000):
        t = launch.row_threads(d)
        assert t % 32 == 0 and 32 <= t <= 1024 and (t == 32 or t * 4 < d * 2)
    assert launch.row_cache(576, 4) == 2304 and launch.row_cache(100_000, 4) == 0
    assert launch.row_cache(12_000, 4) == 0 or 12_000 * 4 + 32 * 4 <= launch.SMEM_DEFAULT
    for e, ev, cts in ((64, 64, 4), (128, 128, 4), (256, 256, 4), (64, 64, 8), (256, 256, 8), (96, 40, 4)):
        t = launch.flash_tiles(e, ev, cts)
        assert t is not None
        assert t.bq * ev <= launch.FLASH_ACC * launch.FLASH_THREADS
        assert t.smem == launch.flash_smem(t.bq, t.bk, e, ev, cts) <= launch.SMEM_DEFAULT
    assert launch.flash_tiles(4096, 4096, 4) is None
    assert launch.use_decode_kernel(1, 3, 2048, 64, 4) and not launch.use_decode_kernel(64, 3, 2048, 64, 4)
    assert not launch.use_decode_kernel(1, 3, 20_000, 64, 4)  # scores beyond shared memory: flash
    assert launch.decode_smem(64, 100, 4) == (64 + 100 + launch.DECODE_THREADS) * 4
    (gx, gy), (bx,) = launch.qmatvec_grid(3, 1000)
    assert gx * (bx // 32) >= 1000 and gy * launch.QMV_ROWS >= 3


def _cublas_reference(p: Any, a_mem: np.ndarray, b_mem: np.ndarray, a_off: int, b_off: int) -> np.ndarray:
    """What cublasGemmStridedBatchedEx computes for plan `p` (column-major, as the cuBLAS docs define it),
    with candle's b as the first operand and candle's a as the second; the result as row-major
    [batch, M, N]."""
    m, n, k = p.m, p.n, p.k
    i, l_ = np.arange(m)[:, None], np.arange(k)[None, :]
    ia = (i + l_ * p.lda) if p.transa == 0 else (l_ + i * p.lda)  # op(A)[i, l], [m, k]
    l2, j = np.arange(k)[:, None], np.arange(n)[None, :]
    ib = (l2 + j * p.ldb) if p.transb == 0 else (j + l2 * p.ldb)  # op(B)[l, j], [k, n]
    out = np.empty((p.batch, n, m))
    for bi in range(p.batch):
        c = b_mem[b_off + bi * p.stride_a + ia] @ a_mem[a_off + bi * p.stride_b + ib]  # [m, n]
        out[bi] = c.T  # C col-major [m, n] at i + j * ldc == row-major [j, i]
    return out


def _strided(mem: np.ndarray, off: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(mem[off:], shape, [s * mem.itemsize for s in strides])


@pytest.mark.parametrize("case", [
    # (shape_a, strides_a, shape_b, strides_b): row-major, transposed, sliced, batched, broadcast batch
    ((3, 4), (4, 1), (4, 5), (5, 1)),
    ((3, 4), (1, 3), (4, 5), (5, 1)),          # a transposed
    ((3, 4), (4, 1), (4, 5), (1, 4)),          # b transposed (x @ W.T)
    ((3, 4), (1, 3), (4, 5), (1, 4)),          # both
    ((3, 4), (9, 1), (4, 5), (7, 1)),          # row slices of wider buffers
    ((1, 4), (4, 1), (4, 6), (1, 4)),          # one row (decode)
    ((3, 1), (1, 1), (1, 5), (5, 1)),          # K = 1
    ((2, 3, 4), (12, 4, 1), (2, 4, 5), (20, 5, 1)),
    ((2, 3, 4), (12, 4, 1), (2, 4, 5), (0, 1, 4)),     # b broadcast over the batch, transposed
    ((2, 2, 3, 4), (24, 12, 4, 1), (2, 2, 4, 5), (40, 20, 5, 1)),  # two batch dims collapse
    ((2, 3, 3, 4), (0, 12, 4, 1), (2, 3, 4, 5), (60, 20, 5, 1)),   # a broadcast on one batch dim only: copy
    ((3, 4), (8, 2), (4, 5), (5, 1)),          # a with a step: copy
])
def test_gemm_plan_against_a_column_major_reference(case: Any) -> None:
    from candle_cuda import blas

    sa_shape, sa, sb_shape, sb = case
    rng = np.random.default_rng(7)
    a_mem, b_mem = rng.standard_normal(400), rng.standard_normal(400)
    a = _strided(a_mem, 3, sa_shape, sa)
    b = _strided(b_mem, 5, sb_shape, sb)
    want = np.matmul(a, b)
    p, copy_a, copy_b = blas.plan(sa_shape, sa, sb_shape, sb)
    a_off, b_off = 3, 5
    if p is None:
        assert copy_a or copy_b
        if copy_a:
            a_mem, a_off, sa = np.ascontiguousarray(a).ravel(), 0, blas.contiguous_strides(sa_shape)
        if copy_b:
            b_mem, b_off, sb = np.ascontiguousarray(b).ravel(), 0, blas.contiguous_strides(sb_shape)
        p, copy_a, copy_b = blas.plan(sa_shape, sa, sb_shape, sb)
        assert p is not None and not copy_a and not copy_b
    else:
        assert not copy_a and not copy_b
    assert p.lda >= max(1, p.m if p.transa == 0 else p.k) and p.ldb >= max(1, p.k if p.transb == 0 else p.n)
    got = _cublas_reference(p, a_mem, b_mem, a_off, b_off)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)


def test_gemm_plan_keeps_transposed_weights_as_views() -> None:
    from candle_cuda import blas

    p, ca, cb = blas.plan((1, 576), (576, 1), (576, 1536), (1, 576))  # x @ W.T, W stored [out, in]
    assert p is not None and not ca and not cb and p.transa == blas.OP_T
    p, ca, cb = blas.plan((7, 64), (64, 1), (64, 300), (1, 64))  # q @ k^T of a contiguous k
    assert p is not None and not cb


def test_out_of_memory_message() -> None:
    from candle_cuda.errors import CudaOutOfMemoryError, fmt_bytes, oom_error, requested_bytes

    e = RuntimeError("Out of memory allocating 2,147,483,648 bytes (allocated so far: 0 bytes).")
    assert requested_bytes(e) == 2**31 and requested_bytes(RuntimeError("other")) is None
    err = oom_error(e, "cuda:0", "matmul", 3 * 2**20)
    assert isinstance(err, CudaOutOfMemoryError) and isinstance(err, candle.CandleError)
    assert "cuda:0" in str(err) and "matmul" in str(err) and "2,147,483,648 bytes (2.00 GiB)" in str(err)
    assert "3.00 MiB" in str(err) and err.requested == 2**31
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.50 KiB"


def test_quant_argument_errors() -> None:
    from candle_cuda.quant import check_quant_args

    check_quant_args("qmatmul", "Q4_K", (3, 512), 288, "cuda:0")
    with pytest.raises(candle.UnsupportedError, match="IQ2_XXS has no CUDA kernel on cuda:0"):
        check_quant_args("qmatmul", "IQ2_XXS", (3, 256), 66, "cuda:0")
    with pytest.raises(candle.ShapeError, match="needs rows of 36 bytes"):
        check_quant_args("qdequantize", "Q4_0", (3, 64), 30, "cuda:0")


# --- every kernel source compiles with nvcc ------------------------------------------------------------
def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for p in sorted(Path("/usr/local").glob("cuda*/bin/nvcc"), reverse=True):
        return str(p)
    return None


def test_every_kernel_source_compiles_with_nvcc() -> None:
    """nvcc builds each (file, dtype) text the runtime gives NVRTC for sm_80 and sm_90, and the PTX holds
    exactly the kernel names the loader asks for."""
    from candle_cuda import kernels

    nvcc = _nvcc()
    if nvcc is None:
        if "cuda" in requested_backends():
            pytest.fail("nvcc was not found but CANDLE_TEST_BACKENDS requests cuda")
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the .cu sources were not compiled")
    jobs = [(f, d) for f, dts in kernels.FILES.items() for d in dts]

    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    cache = Path(tempfile.gettempdir()) / "candle-cuda-nvcc-checks"  # identical inputs were already compiled
    cache.mkdir(exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        def build(job: tuple[str, str]) -> str | None:
            f, d = job
            text = kernels.source(f, d)
            key = hashlib.sha256("\0".join([text, version, *kernels.NVRTC_OPTIONS]).encode()).hexdigest()
            if (cache / key).exists():
                return None
            src = Path(tmp) / f"{f}_{d}.cu"
            src.write_text(text)
            base = [nvcc, *kernels.NVRTC_OPTIONS, "-Xptxas", "-warn-spills"]
            fat = subprocess.run([*base, "-fatbin", "-gencode", "arch=compute_80,code=sm_80", "-gencode",
                                  "arch=compute_90,code=sm_90", "-o", str(src.with_suffix(".fatbin")), str(src)],
                                 capture_output=True, text=True, timeout=600)
            if fat.returncode:
                return f"{f}.cu [{d}] does not compile:\n{fat.stderr[-3000:]}"
            ptx = subprocess.run([*base[:2], "-ptx", "-arch=compute_80", "-o", str(src.with_suffix(".ptx")), str(src)],
                                 capture_output=True, text=True, timeout=600)
            if ptx.returncode:
                return f"{f}.cu [{d}] PTX failed:\n{ptx.stderr[-3000:]}"
            entries = set(re.findall(r"\.entry\s+([A-Za-z0-9_]+)", src.with_suffix(".ptx").read_text()))
            want = set(kernels.kernel_names(f, d))
            if entries != want:
                return f"{f}.cu [{d}]: kernels {sorted(entries)} != expected {sorted(want)}"
            (cache / key).write_text(f"{f} {d} ok\n")
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            errors = [e for e in pool.map(build, jobs) if e]
    assert not errors, "\n\n".join(errors)


def _nvrtc() -> Any:
    """libnvrtc (CUDA's runtime compiler, what cupy.RawModule uses) loaded with ctypes, or None."""
    import ctypes
    import glob
    import site

    dirs = [os.path.join(p, "nvidia", "*", "lib") for p in site.getsitepackages()]
    dirs += [os.path.join(p, "nvidia", "cuda_nvrtc", "lib") for p in site.getsitepackages()]
    dirs += ["/usr/local/cuda/lib64", "/usr/local/cuda*/lib64", "/usr/local/cuda*/targets/*/lib"]
    for d in dirs:
        for lib in sorted(glob.glob(os.path.join(d, "libnvrtc.so*")), reverse=True):
            if ".alt." in lib:
                continue
            for builtins in glob.glob(os.path.join(os.path.dirname(lib), "libnvrtc-builtins.so*")):
                if ".alt." not in builtins:
                    ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)  # NVRTC opens it by name at compile time
                    break
            try:
                return ctypes.CDLL(lib)
            except OSError:
                continue
    return None


def test_every_kernel_source_compiles_with_nvrtc() -> None:
    """NVRTC, the compiler cupy.RawModule uses at run time, accepts each (file, dtype) text with the loader's
    options for compute_80 and compute_90, and emits exactly the expected kernels."""
    import ctypes

    from candle_cuda import kernels

    lib = _nvrtc()
    if lib is None:
        if "cuda" in requested_backends():
            pytest.fail("libnvrtc was not found but CANDLE_TEST_BACKENDS requests cuda")
        pytest.skip("libnvrtc is not installed (pip install nvidia-cuda-nvrtc, or a CUDA toolkit)")

    def compile_ptx(src: str, opts: list[str]) -> tuple[int, str, str]:
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"kernels.cu", 0, None, None) == 0
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        n = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = b""
        if rc == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
            buf = ctypes.create_string_buffer(n.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        return rc, log.value.decode(errors="replace"), ptx.decode(errors="replace")

    errors = []
    for f, dts in kernels.FILES.items():
        for d in dts:
            for arch in ("compute_80", "compute_90"):
                rc, log, ptx = compile_ptx(kernels.source(f, d), [*kernels.NVRTC_OPTIONS, f"--gpu-architecture={arch}"])
                entries = set(re.findall(r"\.entry\s+([A-Za-z0-9_]+)", ptx))
                if rc or entries != set(kernels.kernel_names(f, d)):
                    errors.append(f"{f}.cu [{d}, {arch}]: NVRTC status {rc}, kernels {sorted(entries)}\n{log[-2000:]}")
    assert not errors, "\n\n".join(errors)


# --- on a GPU ------------------------------------------------------------------------------------------
if CUDA_OK:
    TestConformanceCuda = candle.testing.conformance_suite(DEV, dtypes=("f32", "f16", "bf16"))


def _t(a: np.ndarray, **kw: Any) -> candle.Tensor:
    return candle.tensor(a, device=DEV, **kw)




TOL = {"f32": (2e-5, 2e-5), "f16": (2e-3, 2e-3), "bf16": (1.6e-2, 1.6e-2), "f64": (1e-12, 1e-12)}


@gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("d", [7, 576, 4096, 20_000])
def test_row_kernels_against_composition(dtype: str, d: int) -> None:
    rng = np.random.default_rng(d)
    x = _t(rng.standard_normal((3, 5, d)) * 3, dtype=dtype)
    w = _t(rng.standard_normal(d), dtype=dtype)
    b = _t(rng.standard_normal(d), dtype=dtype)
    r, a = TOL[dtype]
    for name, fn in (("softmax", lambda: x.softmax(-1)), ("log_softmax", lambda: x.log_softmax(-1)),
                     ("rms_norm", lambda: candle.nn.functional.rms_norm(x, (d,), w, eps=1e-6)),
                     ("layer_norm", lambda: candle.nn.functional.layer_norm(x, (d,), w, b, eps=1e-5)),
                     ("silu_mul", lambda: candle.silu_mul(x, x * 0.5))):
        got, ref = fused_and_composed(fn, via="f32")
        np.testing.assert_allclose(got, ref, rtol=r, atol=a, err_msg=f"{name} {dtype} d={d}")


@gpu
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_against_composition_and_in_place(dtype: str, interleaved: bool) -> None:
    from candle.ops.attention import rope

    rng = np.random.default_rng(3)
    x4 = _t(rng.standard_normal((2, 11, 9, 64)), dtype=dtype).transpose(1, 2)  # strided [2, 9, 11, 64]
    cos = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    sin = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    got, ref = fused_and_composed(lambda: rope(x4, cos, sin, interleaved=interleaved), via="f32")
    tol = 2e-5 if dtype == "f32" else 3e-2  # the composition rounds each bf16 product, the kernel once
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    rope(x4, cos, sin, interleaved=interleaved, out=x4)  # in place on the strided view itself
    np.testing.assert_array_equal(x4.to(dtype="f32").numpy().astype(np.float64), got)


@gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("lq,s,hq,hk,e", SDPA_SHAPES)
@pytest.mark.parametrize("masking", SDPA_MASKS)
def test_sdpa_kernels_against_composition(dtype: str, lq: int, s: int, hq: int, hk: int, e: int,
                                          masking: str) -> None:
    F = candle.nn.functional
    q, k, v, kw = sdpa_inputs(DEV, 2, dtype, lq, s, hq, hk, e, masking)
    got, ref = fused_and_composed(lambda: F.scaled_dot_product_attention(q, k, v, **kw), via="f32")
    r, a = TOL[dtype]
    np.testing.assert_allclose(got, ref, rtol=r * 4, atol=a * 4)


@gpu
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16", "f64"])
def test_cublas_matmul_with_views(dtype: str) -> None:
    rng = np.random.default_rng(11)
    a = rng.standard_normal((4, 37, 65))
    b = rng.standard_normal((65, 130))
    want = a @ b
    r, tol = {"f32": (1e-4, 1e-3), "f16": (1e-2, 5e-2), "bf16": (3e-2, 3e-1), "f64": (1e-12, 1e-11)}[dtype]
    x, w = _t(a, dtype=dtype), _t(b, dtype=dtype)
    wt = _t(b.T.copy(), dtype=dtype).t()  # transposed view: no copy
    at = _t(a.transpose(0, 2, 1).copy(), dtype=dtype).transpose(1, 2)
    for name, got in (("nn", x @ w), ("nt", x @ wt), ("tn", at @ w), ("decode", x[:, :1] @ wt)):
        ref = want[:, :1] if name == "decode" else want
        np.testing.assert_allclose(got.to(dtype="f64").numpy(), ref, rtol=r, atol=tol, err_msg=name)
    bb = rng.standard_normal((4, 65, 9))
    np.testing.assert_allclose((x @ _t(bb, dtype=dtype)).to(dtype="f64").numpy(), a @ bb, rtol=r, atol=tol)


@gpu
def test_quantized_kernels_bit_exact_and_qmatmul() -> None:
    from candle.io.ggml_quants import GGML_BLOCK_SIZES, dequantize, ggml_type
    from candle_cuda.kernels import QUANT_TYPES

    be = candle.Device(DEV).backend
    rng = np.random.default_rng(5)
    for qt in QUANT_TYPES:
        bs, ts = GGML_BLOCK_SIZES[ggml_type(qt)]
        n, k = 48, 2 * max(bs, 256)
        raw = rng.integers(0, 256, (n, k // bs * ts), dtype=np.uint8)
        blocks = raw.reshape(-1, ts)
        scale_at = {"Q6_K": (208,)}.get(qt, (0,) if qt in ("Q4_0", "Q5_0", "Q8_0") else (0, 2))
        for at in scale_at:  # finite, moderate f16 scales
            scales = rng.uniform(-0.05, 0.05, len(blocks)).astype(np.float16)
            blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
        want = dequantize(raw, qt)
        qn = be.from_numpy(raw, candle.uint8)
        got = be.to_numpy(be.qdequantize(qn, qt, (n, k), candle.float32), (n, k), candle.float32)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{qt} bits")
        for m in (1, 3, 40):
            xs = rng.standard_normal((m, k)).astype(np.float32)
            out = be.qmatmul(be.from_numpy(xs, candle.float32), qn, qt, (m, k), (n, k), candle.float32)
            np.testing.assert_allclose(be.to_numpy(out, (m, n), candle.float32), xs.astype(np.float64) @ want.T,
                                       rtol=1e-4, atol=1e-3, err_msg=f"{qt} qmatmul m={m}")
    with pytest.raises(candle.UnsupportedError, match="IQ4_NL"):
        be.qdequantize(be.from_numpy(np.zeros((1, 18), np.uint8), candle.uint8), "IQ4_NL", (1, 32), candle.float32)


@gpu
def test_dlpack_with_torch_without_copies() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    x = candle.arange(12, dtype="f32", device=DEV).reshape(3, 4)
    t = torch.from_dlpack(x)
    assert t.device.type == "cuda" and t.data_ptr() == x._data.data.ptr
    t.mul_(2)  # shared memory: candle sees the change
    np.testing.assert_array_equal(x.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4) * 2)
    tb = torch.randn(5, 6, device="cuda", dtype=torch.bfloat16)
    y = candle.from_dlpack(tb)
    assert y.dtype is candle.bfloat16 and y._data.data.ptr == tb.data_ptr()
    np.testing.assert_array_equal(y.to(dtype="f32").numpy(), tb.float().cpu().numpy())


@gpu
def test_out_of_memory_is_a_candle_error() -> None:
    from candle_cuda.errors import CudaOutOfMemoryError

    with pytest.raises(CudaOutOfMemoryError, match=r"could not allocate 4,503,599,627,370,496 bytes"):
        candle.zeros(2**50, dtype="f32", device=DEV)


@gpu
def test_kernels_compile_once() -> None:
    be = candle.Device(DEV).backend
    x = _t(np.ones((4, 100), np.float32))
    x.softmax(-1)
    mods = dict(be.rt._modules)
    x.softmax(-1)
    _t(np.ones((2, 3), np.float32)).softmax(-1)
    assert be.rt._modules == mods
    assert ("norm", "f32") in mods
    for (file, op, dt), fn in be.rt._functions.items():
        assert fn is be.rt.function(file, op, dt)


# --- SmolLM2 -------------------------------------------------------------------------------------------
FIXTURE = ROOT / "tests" / "fixtures" / "smollm2_reference.npz"


@pytest.fixture(scope="module")
def smollm2_cuda() -> Any:
    from candle_models import model_files
    from candle_models.loading import load_model

    path = installed_path(model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL, "SmolLM2")
    data = load_reference(FIXTURE, path, "SmolLM2")
    return load_model(path, device=DEV, tokenizer=False, progress=False), data


@gpu
def test_smollm2_greedy_tokens_equal_cpu(smollm2_cuda: Any) -> None:
    lm, ref = smollm2_cuda
    prompts = sorted(k for k in ref if k.startswith("ids_"))
    assert prompts
    for key in prompts:
        i = key.split("_")[1]
        want = ref[f"greedy_{i}"].tolist()  # transformers' tokens, which the cpu backend reproduces
        assert greedy(lm.model, ref[key].tolist(), len(want), device=DEV) == want, key
