"""candle-cuda's CUDA C kernels compiled as C++ for the CPU and run through the backend, without a GPU.

Each `kernels/<file>.cu` text (exactly what NVRTC gets) is compiled with g++ together with a small shim
that emulates the CUDA features the kernels use: threadIdx/blockIdx/blockDim/gridDim, one fiber (ucontext)
per CUDA thread of a block on one OS thread (blocks run one after another; a barrier some threads never
reach is reported as a deadlock), `__syncthreads()` as a block barrier,
`__shfl_xor_sync` through a per-warp exchange buffer and barrier, static and dynamic `__shared__` memory,
the bit-cast and rounding intrinsics, and f16 conversions through `_Float16` (the only `#ifdef` in the
sources). A trampoline per kernel takes the launch geometry and the arguments as the backend passes them.

Then the backend runs on numpy arrays with these kernels (cuBLAS modelled from its plan, see
tests/test_cuda_kernel_models.py): the conformance kit compares every fused kernel with core's
composition and PyTorch, the quantized kernels are checked bit for bit against the numpy reference, the
attention kernels on every path (decode, flash, GQA, masks, causal offsets). This executes the kernels'
arithmetic, indexing and barrier structure; it cannot show GPU-only behaviour (warp scheduling, the
memory model, shared-memory limits, NVRTC itself, speed), which only a GPU run checks (tests/test_cuda.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import math
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cuda_helpers import SDPA_MASKS, fused_and_composed, sdpa_inputs, stand_in_backend

import candle
import candle.testing

pytest.importorskip("candle_cuda")

from test_cuda_kernel_models import KernelModelRuntime  # noqa: E402

from candle_cuda import kernels, launch  # noqa: E402
from candle_cuda.backend import CudaBackend  # noqa: E402
from conftest import requested_backends  # noqa: E402

DEV = "cudahost"
CXX = shutil.which("g++") or shutil.which("clang++")
_REQ = set(requested_backends())
_TORCH = importlib.util.find_spec("torch") is not None
# it runs once per CI run, in the sessions that test the cpu (or cuda) backend with PyTorch installed, not
# again in the opencl ones
SKIP = ("no C++ compiler (g++/clang++) to build the kernels for the CPU" if CXX is None else
        "torch is not installed (the CPU-compiled kernel tests run in the sessions with PyTorch)" if not _TORCH else
        f"CANDLE_TEST_BACKENDS={','.join(sorted(_REQ))}: the CPU-compiled CUDA kernels run in the cpu/cuda sessions"
        if _REQ and not _REQ & {"cpu", "cuda"} else None)
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

SHIM = r"""
// CPU emulation of the CUDA features candle-cuda's kernels use (tests only). One OS thread: the CUDA
// threads of a block are fibers (ucontext) run round-robin by a scheduler until each reaches a barrier
// (__syncthreads, or a warp shuffle for the 32 lanes of its warp); blocks run one after another. A barrier
// that not every thread of its group reaches (divergent __syncthreads) is reported as a deadlock.
#include <ucontext.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#define CANDLE_HOST_EMULATION 1
struct candle_dim3 { unsigned x, y, z; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct CandleFiber { ucontext_t ctx; int state; unsigned tid; };  // state 0 runnable, 1 waiting, 2 done
struct CandleBarrier { int expected = 0, arrived = 0; std::vector<int> waiters; };
static std::vector<CandleFiber> g_fibers;
static std::vector<std::vector<char>> g_stacks;
static ucontext_t g_sched;
static int g_cur = 0;
static candle_dim3 g_blockIdx, g_blockDim, g_gridDim;
static CandleBarrier g_block_bar;
static std::vector<CandleBarrier> g_warp_bar;
static unsigned char g_warp_buf[32][32 * 8];
static unsigned char* g_dyn_smem = nullptr;
static const std::function<void()>* g_body = nullptr;
inline candle_dim3 candle_tid() { return {g_fibers[g_cur].tid, 0, 0}; }
#define threadIdx (candle_tid())
#define blockIdx g_blockIdx
#define blockDim g_blockDim
#define gridDim g_gridDim
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n)
inline void candle_arrive(CandleBarrier& b) {
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        for (int w : b.waiters) g_fibers[w].state = 0;
        b.waiters.clear();
        return;
    }
    b.waiters.push_back(g_cur);
    g_fibers[g_cur].state = 1;
    swapcontext(&g_fibers[g_cur].ctx, &g_sched);
}
inline void __syncthreads() { candle_arrive(g_block_bar); }
template <class V> inline V __shfl_xor_sync(unsigned, V v, int o) {
    int t = (int)g_fibers[g_cur].tid, lane = t & 31, w = t >> 5;
    V* buf = reinterpret_cast<V*>(g_warp_buf[w]);
    buf[lane] = v;
    candle_arrive(g_warp_bar[w]);
    V r = buf[lane ^ o];
    candle_arrive(g_warp_bar[w]);
    return r;
}
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
using std::exp; using std::log; using std::fmax; using std::sqrt;
inline float host_f16_to_f32(unsigned short h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
inline unsigned short host_f32_to_f16(float f) {
    _Float16 v = (_Float16)f;
    unsigned short h;
    std::memcpy(&h, &v, 2);
    return h;
}
struct AnyPtr { void* p; template <class U> operator U*() const { return static_cast<U*>(p); } };

static void candle_fiber_main() {
    (*g_body)();
    g_fibers[g_cur].state = 2;  // returning resumes the scheduler (uc_link)
}

// returns 0, or -1 when the threads of a block deadlocked on a barrier
static int candle_run_grid(unsigned gx, unsigned gy, unsigned bx, size_t smem, const std::function<void()>& body) {
    g_blockDim = {bx, 1, 1};
    g_gridDim = {gx, gy, 1};
    std::vector<unsigned char> dyn(smem + 16);
    g_dyn_smem = dyn.data();
    g_body = &body;
    g_fibers.assign(bx, CandleFiber{});
    if (g_stacks.size() < bx) g_stacks.resize(bx);
    for (auto& s : g_stacks) if (s.size() < (1u << 17)) s.resize(1u << 17);
    unsigned nw = (bx + 31) / 32;
    for (unsigned by = 0; by < gy; ++by)
        for (unsigned b = 0; b < gx; ++b) {
            g_blockIdx = {b, by, 0};
            g_block_bar = CandleBarrier{};
            g_block_bar.expected = (int)bx;
            g_warp_bar.assign(nw, CandleBarrier{});
            for (unsigned w = 0; w < nw; ++w) g_warp_bar[w].expected = (int)std::min(32u, bx - 32 * w);
            for (unsigned t = 0; t < bx; ++t) {
                CandleFiber& f = g_fibers[t];
                f.tid = t;
                f.state = 0;
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = g_stacks[t].data();
                f.ctx.uc_stack.ss_size = g_stacks[t].size();
                f.ctx.uc_link = &g_sched;
                makecontext(&f.ctx, candle_fiber_main, 0);
            }
            unsigned done = 0;
            while (done < bx) {
                bool progress = false;
                done = 0;
                for (unsigned t = 0; t < bx; ++t) {
                    if (g_fibers[t].state == 0) {
                        g_cur = (int)t;
                        swapcontext(&g_sched, &g_fibers[t].ctx);
                        progress = true;
                    }
                    done += g_fibers[t].state == 2;
                }
                if (!progress && done < bx) {
                    std::fprintf(stderr, "candle host emulation: block (%u, %u): %u of %u threads wait on a barrier "
                                 "the others never reach\n", b, by, bx - done, bx);
                    return -1;
                }
            }
        }
    return 0;
}
"""

_CACHE = Path(tempfile.gettempdir()) / "candle-cuda-host-kernels"
_LOCK = threading.Lock()
_LIBS: dict[tuple[str, str], Any] = {}
_CT = {"f64": ctypes.c_double}


def unit(file: str, dtype: str) -> str:
    """The C++ text of one kernel file for one dtype: shim + the NVRTC text + one trampoline per kernel."""
    src = kernels.source(file, dtype).replace("extern __shared__ __align__(16) unsigned char smem_raw[];",
                                              "unsigned char* smem_raw = g_dyn_smem;")
    assert "extern __shared__" not in src
    out = [SHIM, src]
    for op, kinds in kernels.signatures(file).items():
        ps, cs = [], []
        for i, k in enumerate(kinds):
            ps.append(f"{ {'i64': 'long long', 'int': 'int', 'CT': 'CT'}.get(k, 'void*') } a{i}")
            cs.append(f"AnyPtr{{a{i}}}" if k.startswith("ptr") else f"a{i}")
        call = f"{op}_{dtype}({', '.join(cs)});"
        out.append(f'extern "C" int launch_{op}(unsigned gx, unsigned gy, unsigned bx, unsigned long long smem, '
                   f'{", ".join(ps)}) {{ return candle_run_grid(gx, gy, bx, smem, [&] {{ {call} }}); }}')
    return "\n".join(out)


def library(file: str, dtype: str) -> Any:
    """The compiled kernels of (file, dtype), built once (and cached on disk by the text's hash)."""
    key = (file, dtype)
    with _LOCK:
        lib = _LIBS.get(key)
        if lib is None:
            text = unit(file, dtype)
            h = hashlib.sha256((text + str(CXX)).encode()).hexdigest()[:24]
            _CACHE.mkdir(exist_ok=True)
            so = _CACHE / f"{file}_{dtype}_{h}.so"
            if not so.exists():
                cpp = so.with_suffix(".cpp")
                cpp.write_text(text)
                tmp = so.with_suffix(".tmp.so")
                r = subprocess.run([str(CXX), "-std=c++20", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-pthread",
                                    "-Wno-unknown-pragmas", "-o", str(tmp), str(cpp)], capture_output=True, text=True,
                                   timeout=600)
                assert r.returncode == 0, f"kernels/{file}.cu [{dtype}] does not build for the CPU:\n{r.stderr[-4000:]}"
                tmp.replace(so)
            lib = _LIBS[key] = ctypes.CDLL(str(so))
    return lib


class HostKernelRuntime(KernelModelRuntime):
    """Launches are checked as in the kernel-model runtime, then run by the CPU-compiled CUDA C."""

    name = "candle-cuda's CUDA C compiled for the CPU"

    def launch(self, file: str, op: str, dtype: str, grid: tuple[int, ...], block: tuple[int, ...],
               args: tuple[Any, ...], smem: int = 0) -> None:
        self.check(file, op, dtype, grid, block, args, smem)
        fn = getattr(library(file, dtype), f"launch_{op}")
        ct = _CT.get(dtype, ctypes.c_float)
        conv: list[Any] = []
        types: list[Any] = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulonglong]
        for kind, a in zip(self.sigs[file][op], args):
            if kind.startswith("ptr"):
                types.append(ctypes.c_void_p)
                conv.append(ctypes.c_void_p(a.__array_interface__["data"][0]))
            else:
                t = {"i64": ctypes.c_longlong, "int": ctypes.c_int, "CT": ct}[kind]
                types.append(t)
                conv.append(t(a.item()))
        fn.argtypes, fn.restype = types, ctypes.c_int
        gy = grid[1] if len(grid) > 1 else 1
        rc = fn(grid[0], gy, math.prod(block), smem, *conv)
        assert rc == 0, f"{op}_{dtype}: threads of a block deadlocked on a barrier (divergent __syncthreads)"
        self.launched.append(f"{op}_{dtype}")
        self.last_args[op] = args


BACKEND = stand_in_backend(CudaBackend, HostKernelRuntime(), DEV)
RT: HostKernelRuntime = BACKEND.rt

#: the kit's cases that reach the CUDA C kernels (the rest run CuPy/numpy routines, checked on the
#: kernel-model device of tests/test_cuda_kernel_models.py in every dtype)
KERNEL_CASES = [c for c in candle.testing.all_cases()
                if c.name.startswith(("softmax", "log_softmax", "rms_norm", "layer_norm", "group_norm", "silu_mul",
                                      "rope", "sdpa", "max_pool2d"))]
if SKIP is None:
    # f32/f16/bf16: float64 (and its finite-difference checks, hundreds of launches per case) runs on the
    # kernel-model device; the f64 kernels are checked directly below
    TestConformanceHostKernels = candle.testing.conformance_suite(DEV, KERNEL_CASES, dtypes=("f32", "f16", "bf16"))


def _t(a: np.ndarray, **kw: Any) -> candle.Tensor:
    return candle.tensor(a, device=DEV, **kw)




TOL = {"f32": (2e-5, 2e-5), "f16": (2e-3, 2e-3), "bf16": (1.6e-2, 1.6e-2), "f64": (1e-12, 1e-12)}


def test_every_kernel_file_builds_for_the_cpu() -> None:
    for f, dts in kernels.FILES.items():
        for d in dts:
            lib = library(f, d)
            for op in kernels.ops(f):
                assert hasattr(lib, f"launch_{op}"), (f, d, op)


@pytest.mark.parametrize("dtype,d,rows", [(dt, d, 3) for dt in ("f32", "f16", "bf16", "f64") for d in (7, 300, 2000)]
                         + [("f32", 13_000, 1), ("bf16", 25_000, 1)])  # the last two: rows beyond shared memory
def test_row_kernels_against_composition(dtype: str, d: int, rows: int) -> None:
    rng = np.random.default_rng(d)
    x = _t(rng.standard_normal((1, rows, d)) * 3, dtype=dtype)
    w = _t(rng.standard_normal(d), dtype=dtype)
    b = _t(rng.standard_normal(d), dtype=dtype)
    r, a = TOL[dtype]
    F = candle.nn.functional
    RT.launched.clear()
    for name, fn in (("softmax", lambda: x.softmax(-1)), ("log_softmax", lambda: x.log_softmax(-1)),
                     ("rms_norm", lambda: F.rms_norm(x, (d,), w, eps=1e-6)),
                     ("layer_norm", lambda: F.layer_norm(x, (d,), w, b, eps=1e-5)),
                     ("silu_mul", lambda: candle.silu_mul(x, x * 0.5))):
        got, ref = fused_and_composed(fn)
        np.testing.assert_allclose(got, ref, rtol=r, atol=a, err_msg=f"{name} {dtype} d={d}")
    assert {f"softmax_{dtype}", f"rms_norm_{dtype}", f"layer_norm_{dtype}", f"silu_mul_{dtype}"} <= set(RT.launched)
    vec = int(RT.last_args["layer_norm"][-1])  # rows moved in 16-byte words: whole words, aligned arrays
    assert vec == 0 if d % (16 // x._data.itemsize) else vec == 1 or d != 2000  # numpy aligns 2000-element rows


_SHAPES = [(1, 77, 9, 3, 64), (3, 200, 4, 4, 128), (1, 13_000, 2, 1, 32), (40, 40, 6, 2, 64), (33, 90, 4, 2, 256),
           (5, 40, 2, 1, 40)]


@pytest.mark.parametrize("dtype,lq,s,hq,hk,e,masking",
                         [(dt, *sh, m) for dt in ("f32", "bf16") for sh in _SHAPES for m in SDPA_MASKS]
                         + [(dt, *sh, m) for dt in ("f16", "f64") for sh in (_SHAPES[0], _SHAPES[3])
                            for m in ("offset", "add")])
def test_sdpa_kernels_against_composition(dtype: str, lq: int, s: int, hq: int, hk: int, e: int,
                                          masking: str) -> None:
    F = candle.nn.functional
    q, k, v, kw = sdpa_inputs(DEV, 1, dtype, lq, s, hq, hk, e, masking)
    RT.launched.clear()
    got, ref = fused_and_composed(lambda: F.scaled_dot_product_attention(q, k, v, **kw))
    cts = 8 if dtype == "f64" else 4
    want = "sdpa_decode" if launch.use_decode_kernel(lq, hq // hk, s, e, cts) else "sdpa_flash"
    assert f"{want}_{dtype}" in RT.launched
    r, a = TOL[dtype]
    np.testing.assert_allclose(got, ref, rtol=r * 4, atol=a * 4)


def test_fully_masked_rows_give_zeros() -> None:
    F = candle.nn.functional
    rng = np.random.default_rng(0)
    for lq in (1, 9):  # decode and flash
        q = _t(rng.standard_normal((1, 2, lq, 16)).astype(np.float32))
        k = _t(rng.standard_normal((1, 2, 10, 16)).astype(np.float32))
        mask = np.ones((1, 1, lq, 10), bool)
        mask[..., 0, :] = False
        out = F.scaled_dot_product_attention(q, k, k, attn_mask=_t(mask)).numpy()
        assert np.all(out[:, :, 0] == 0) and np.all(np.isfinite(out))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_kernel_in_place_on_a_strided_view(dtype: str, interleaved: bool) -> None:
    from candle.ops.attention import rope

    rng = np.random.default_rng(3)
    x4 = _t(rng.standard_normal((2, 11, 3, 64)), dtype=dtype).transpose(1, 2)
    cos = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    sin = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    got, ref = fused_and_composed(lambda: rope(x4, cos, sin, interleaved=interleaved))
    tol = 1e-6 if dtype == "f32" else 3e-2
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    rope(x4, cos, sin, interleaved=interleaved, out=x4)  # in place on the strided view itself
    np.testing.assert_array_equal(x4.to(dtype="f64").numpy(), got)


@pytest.mark.parametrize("qt", kernels.QUANT_TYPES)
def test_quantized_kernels_bit_exact(qt: str) -> None:
    from candle.io.ggml_quants import GGML_BLOCK_SIZES, dequantize, ggml_type

    rng = np.random.default_rng(len(qt))
    bs, ts = GGML_BLOCK_SIZES[ggml_type(qt)]
    n, k = 6, 2 * max(bs, 256)
    raw = rng.integers(0, 256, (n, k // bs * ts), dtype=np.uint8)
    blocks = raw.reshape(-1, ts)
    for at in {"Q6_K": (208,)}.get(qt, (0,) if qt in ("Q4_0", "Q5_0", "Q8_0") else (0, 2)):
        scales = rng.uniform(-0.05, 0.05, len(blocks)).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    want = dequantize(raw, qt)
    qn = BACKEND.from_numpy(raw, candle.uint8)
    got = BACKEND.qdequantize(qn, qt, (n, k), candle.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    for dt in (candle.float16, candle.bfloat16):  # other dtypes: the float32 value rounded once
        g = BACKEND.qdequantize(qn, qt, (n, k), dt)
        np.testing.assert_array_equal(BACKEND.to_numpy(g, (n, k), dt), want.astype(dt.numpy))
    for m in (1, 5):
        xs = rng.standard_normal((m, k)).astype(np.float32)
        RT.launched.clear()
        out = BACKEND.qmatmul(BACKEND.from_numpy(xs, candle.float32), qn, qt, (m, k), (n, k), candle.float32)
        assert RT.launched == [f"qmatvec_{qt.lower()}_f32"]
        np.testing.assert_allclose(out, xs.astype(np.float64) @ want.T, rtol=1e-4, atol=1e-4)


def test_max_pool_kernel_nan_and_padding_rules() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0, 2, 3] = np.nan
    x[1, 2, :3, :3] = -np.inf
    vals, idx = candle.nn.functional.max_pool2d(_t(x), 3, stride=2, padding=1, return_indices=True)
    tv, ti = torch.nn.functional.max_pool2d(torch.tensor(x), 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(vals.numpy(), tv.numpy())
    np.testing.assert_array_equal(idx.numpy(), ti.numpy())
