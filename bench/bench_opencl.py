"""candle-opencl (on PoCL, OpenCL on the CPU, in CI) beside candle's CPU backend in the same run.

Sections: elementwise GB/s, matmul GFLOP/s (256..2048), softmax and rms_norm GB/s, SmolLM2-135M decode
tokens/s, quantized matmul (one row) against the float32 matmul. Ratios are opencl / cpu backend (numpy).
OpenCL work is queued asynchronously: every timed statement ends with a queue `finish()`, so the times
include the device's work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

import candle
from _harness import GATE, Config, Goal, Table, fmt_rate, fmt_ratio, time_it

TITLE = "candle-opencl (PoCL) beside the CPU backend"
_SETTLE_S = 0.2
_DEV = "opencl"
_REPS = 4  # ops per timed statement (one queue sync per statement)


def _available() -> str | None:
    """None when the opencl backend runs here, else why not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infos = {i.name: i for i in candle.backends()}
    info = infos.get("opencl")
    if info is None:
        return "candle-opencl is not installed (pip install packages/candle-opencl pyopencl pocl-binary-distribution)"
    if info.state != "available":
        return f"opencl is {info.state}: {info.reason}"
    return None


def _sync() -> None:
    candle.Device(_DEV).backend.synchronize()


def _timed(fn: Callable[[], Any], cfg: Config, device: bool, settle: bool = True) -> float:
    """Seconds per call of fn (on opencl: _REPS calls then one queue sync)."""
    kw = {"target_s": cfg.target_s, "repeat": cfg.repeat, "settle_s": _SETTLE_S if settle else 0.0}
    if not device:
        return time_it(fn, **kw)

    def stmt() -> None:
        for _ in range(_REPS):
            fn()
        _sync()

    return time_it(stmt, **kw) / _REPS


def _tensors(arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    cpu = {k: candle.from_numpy(v) for k, v in arrays.items()}
    ocl = {k: candle.from_numpy(v).to(_DEV) for k, v in arrays.items()}
    return cpu, ocl


def _silu(x: Any) -> Any:
    return candle.silu(x)


_ELEMENTWISE: list[tuple[str, int, Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], Any]]] = [
    ("x + y", 2, lambda t: t["x"] + t["y"], lambda a: np.add(a["x"], a["y"])),
    ("x * 2.0", 1, lambda t: t["x"] * 2.0, lambda a: np.multiply(a["x"], np.float32(2.0))),
    ("exp(x)", 1, lambda t: t["x"].exp(), lambda a: np.exp(a["x"])),
    ("silu(x)", 1, lambda t: _silu(t["x"]), lambda a: a["x"] / (1 + np.exp(-a["x"]))),
    ("x[:, ::2] + 1", 1, lambda t: t["m"][:, ::2] + 1.0, lambda a: a["m"][:, ::2] + np.float32(1.0)),
]


def bench_elementwise(cfg: Config) -> Table:
    """Elementwise GB/s (bytes read + written) of opencl, the cpu backend and numpy itself."""
    sizes = [1_000_000] + ([] if cfg.quick else [10_000_000])
    table = Table("Elementwise throughput, f32 (higher is better)",
                  ["op", "elements", "opencl GB/s", "cpu GB/s", "numpy GB/s", "opencl/numpy"])
    rng = np.random.default_rng(0)
    ratios: list[float] = []
    for n in sizes:
        arrays = {"x": rng.standard_normal(n).astype(np.float32), "y": rng.standard_normal(n).astype(np.float32),
                  "m": rng.standard_normal((n // 1000, 2000)).astype(np.float32)}
        cpu, ocl = _tensors(arrays)
        for name, reads, fc, fn in _ELEMENTWISE:
            nbytes = (reads + 1) * 4 * n
            t_np = _timed(partial(fn, arrays), cfg, False)
            t_cpu = _timed(partial(fc, cpu), cfg, False)
            t_ocl = _timed(partial(fc, ocl), cfg, True)
            ratios.append(t_np / t_ocl)
            table.rows.append([name, f"{n:.0e}", fmt_rate(nbytes / t_ocl / 1e9), fmt_rate(nbytes / t_cpu / 1e9),
                               fmt_rate(nbytes / t_np / 1e9), fmt_ratio(t_np / t_ocl)])
    med = float(np.median(ratios))
    table.goals.append(Goal("opencl elementwise / numpy (median over ops and sizes)", fmt_ratio(med), ">= 0.8x",
                            med >= 0.8))
    table.notes = ["GB/s counts each input read once and the output written once (4 bytes per element); "
                   "`x[:, ::2] + 1` reads a strided view (the strided kernel)."]
    return table


def bench_matmul(cfg: Config) -> Table:
    """Square f32 matmul GFLOP/s; plus the transposed-operand and decode-shaped products."""
    sizes = [256, 512, 1024] + ([] if cfg.quick else [2048])
    table = Table("matmul f32, GFLOP/s (higher is better)", ["product", "opencl GFLOP/s", "cpu GFLOP/s",
                                                             "opencl/cpu"])
    rng = np.random.default_rng(0)
    ratios: list[float] = []
    cases: list[tuple[str, tuple[int, int, int], Callable[[dict[str, Any]], Any]]] = [
        (f"({n} x {n}) @ ({n} x {n})", (n, n, n), lambda t: t["a"] @ t["b"]) for n in sizes]
    cases += [("(1024 x 1024) @ (1024 x 1024)^T", (1024, 1024, 1024), lambda t: t["a"] @ t["b"].t()),
              ("(1 x 576) @ (576 x 1536)", (1, 576, 1536), lambda t: t["a"] @ t["b"])]
    for name, (m, k, n), f in cases:
        cpu, ocl = _tensors({"a": rng.standard_normal((m, k)).astype(np.float32),
                             "b": rng.standard_normal((k, n) if "^T" not in name else (n, k)).astype(np.float32)})
        flops = 2.0 * m * k * n
        t_cpu = _timed(partial(f, cpu), cfg, False)
        t_ocl = _timed(partial(f, ocl), cfg, True)
        if m == k == n and "^T" not in name:
            ratios.append(t_cpu / t_ocl)
        table.rows.append([name, fmt_rate(flops / t_ocl / 1e9), fmt_rate(flops / t_cpu / 1e9),
                           fmt_ratio(t_cpu / t_ocl)])
    worst = min(ratios)
    table.goals.append(Goal("opencl matmul / numpy-OpenBLAS, square 256..2048", f"worst {worst:.2f}x", ">= 0.25x",
                            worst >= 0.25))
    table.notes = ["cpu is candle's numpy backend (OpenBLAS); opencl runs candle's register-tiled kernels "
                   "(mm_nn6/mm_nn1, mm_nt for a transposed right operand, mm_gemv for one row)."]
    return table


def _softmax(t: dict[str, Any]) -> Any:
    return t["x"].softmax(-1)


def _rms_norm(t: dict[str, Any]) -> Any:
    return candle.nn.functional.rms_norm(t["x"], tuple(t["x"].shape[-1:]), t["w"], 1e-5)


def bench_norms(cfg: Config) -> Table:
    """softmax and rms_norm over the last dim, GB/s (read once + write once)."""
    table = Table("softmax / rms_norm, f32 (higher is better)", ["op", "shape", "opencl GB/s", "cpu GB/s",
                                                                 "opencl/cpu"])
    rng = np.random.default_rng(0)
    for op, shape in [("softmax", (4096, 1024)), ("softmax", (64, 32000)), ("rms_norm", (4096, 1024)),
                      ("rms_norm", (1, 576))]:
        cpu, ocl = _tensors({"x": rng.standard_normal(shape).astype(np.float32),
                             "w": rng.standard_normal(shape[-1:]).astype(np.float32)})
        f = _softmax if op == "softmax" else _rms_norm
        nbytes = 2 * 4 * int(np.prod(shape))
        t_cpu = _timed(partial(f, cpu), cfg, False)
        t_ocl = _timed(partial(f, ocl), cfg, True)
        table.rows.append([op, str(shape), fmt_rate(nbytes / t_ocl / 1e9), fmt_rate(nbytes / t_cpu / 1e9),
                           fmt_ratio(t_cpu / t_ocl)])
    table.notes = ["Both run their backend's fused kernel (`softmax_last_dim`, `rms_norm`); (1, 576) is a "
                   "decode step's norm, where the launch cost dominates."]
    return table


_DECODE_CHILD = """
import sys, time
import numpy as np
import candle
from candle_models.loading import load_model

path, device, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
m = load_model(path, device=device, tokenizer=False, progress=False, dequantize=mode == "float").model
cache = m.new_cache(1, 16 + steps + 4)
logits = m(candle.tensor([[1, 504, 2988, 314, 42, 216, 34, 32]], device=device), cache, last_only=True)
tok = int(logits[0, -1].argmax().item())
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    logits = m(candle.tensor([[tok]], device=device), cache, last_only=True)
    tok = int(logits[0, -1].argmax().item())  # the sampled id is the step's one transfer
    times.append(time.perf_counter() - t0)
print(1.0 / float(np.median(times)), "quantized" if getattr(m, "quantized", False) else "float32")
"""


def _decode_tps(path: str, device: str, steps: int, mode: str) -> tuple[float, str]:
    """(decode tokens/s, weight kind) in a fresh process: PoCL's worker threads and OpenBLAS's would
    otherwise share (and fight over) the same two cores in one process. `mode`: float (dequantized
    to float32 at load) or quantized (the GGML blocks, the loader's default)."""
    GATE.wait(threaded=True)
    out = subprocess.run([sys.executable, "-c", _DECODE_CHILD, path, device, str(steps), mode], capture_output=True,
                         text=True, check=True)
    tps, kind = out.stdout.split()[-2:]
    return float(tps), kind


def bench_decode(cfg: Config) -> Table:
    """SmolLM2-135M-Instruct greedy decode tokens/s: opencl (quantized and float32 weights) beside cpu."""
    table = Table("SmolLM2-135M decode (higher is better)", ["device", "weights", "tokens/s", "vs cpu"])
    try:
        from candle_models import model_files

        path = os.fspath(model_files.smollm2_gguf_path())
    except Exception as e:  # noqa: BLE001 - the model package is optional
        table.notes = [f"skipped: SmolLM2 is not installed ({type(e).__name__}: {e})"]
        table.goals.append(Goal("opencl decode / cpu decode", "-", ">= 0.5x", None))
        return table
    steps = 10 if cfg.quick else 30
    cpu, cpu_kind = _decode_tps(path, "cpu", steps, "float")
    table.rows.append(["cpu", cpu_kind, f"{cpu:.1f}", "1.00x"])
    cpu_q, cpu_q_kind = _decode_tps(path, "cpu", steps, "quantized")
    table.rows.append(["cpu", cpu_q_kind, f"{cpu_q:.1f}", fmt_ratio(cpu_q / cpu)])
    ocl, kind = _decode_tps(path, _DEV, steps, "quantized")
    table.rows.append(["opencl", kind, f"{ocl:.1f}", fmt_ratio(ocl / cpu)])
    ocl_f, kind_f = _decode_tps(path, _DEV, steps, "float")
    table.rows.append(["opencl", kind_f, f"{ocl_f:.1f}", fmt_ratio(ocl_f / cpu)])
    best = max(ocl, ocl_f)
    table.goals.append(Goal("opencl decode / cpu float32 decode (SmolLM2-135M, faster weights of each)",
                            fmt_ratio(best / max(cpu, cpu_q)), ">= 0.5x", best / max(cpu, cpu_q) >= 0.5))
    table.notes = [f"median of {steps} decode steps after an 8-token prefill, each step one forward + argmax + "
                   "`.item()`; weights dequantized to float32 at load (~540 MB read per token) or kept in the GGUF's "
                   "Q4_1/Q8_0 blocks (~115 MB, `qmatmul`; the default of `load_model`); ratios against the cpu on "
                   "float32; each run in its own process."]
    return table


def _model_weights(path: str, names: Callable[[str], bool]) -> list[tuple[str, str, np.ndarray, tuple[int, int]]]:
    """(name, qtype, raw bytes [N, row_bytes], (N, K)) of the 2-d quantized tensors of a GGUF file."""
    from candle.io.gguf import GGUFReader

    out = []
    with GGUFReader(path) as r:
        for info in r.tensors:
            qtype = str(getattr(info.ggml_type, "name", info.ggml_type))
            if len(info.shape) == 2 and qtype not in ("F32", "F16", "BF16") and names(info.name):
                n, k = info.shape
                out.append((info.name, qtype, np.array(r.raw(info.name)).reshape(n, -1), (n, k)))
    return out


def _qmm_pair(be: Any, qtype: str, raw: np.ndarray, shape: tuple[int, int]) -> tuple[Any, Any, Any]:
    """(x [1, K], the quantized weight, its dequantized transpose [K, N] dense: the f32 decode layout)."""
    from candle.dtype import float32, uint8
    from candle.io.ggml_quants import dequantize

    n, k = shape
    x = be.from_numpy(np.random.default_rng(n + k).standard_normal((1, k)).astype(np.float32), float32)
    return x, be.from_numpy(raw, uint8), be.from_numpy(np.ascontiguousarray(dequantize(raw, qtype).T), float32)


def bench_qmatmul(cfg: Config) -> Table:
    """Quantized matmul of one row (a decode step's x @ W^T) against the float32 matmul of the same shape."""
    table = Table("quantized matmul, one row (decode), opencl (lower is better)",
                  ["weight", "type", "N x K", "qmatmul us", "f32 matmul us", "qmatmul speed-up"])
    try:
        from candle_models import model_files
    except ImportError as e:
        table.notes = [f"skipped: candle-models is not installed ({e})"]
        return table
    from candle.dtype import float32

    be = candle.Device(_DEV).backend
    picks: list[tuple[str, str, np.ndarray, tuple[int, int]]] = []
    sources = [(model_files.smollm2_gguf_path, ("blk.0.ffn_up.", "blk.0.ffn_down.", "token_embd."))]
    if not cfg.quick:
        sources.append((model_files.gemma3_gguf_path, ("blk.0.attn_q.", "blk.0.attn_output.", "blk.0.ffn_down.")))
    for locate, wanted in sources:
        try:
            path = os.fspath(locate())
        except Exception:  # noqa: BLE001 - a model that is not installed is left out
            continue
        tag = "SmolLM2" if "smol" in path.lower() else "Gemma-3"
        found = _model_weights(path, lambda n, w=wanted: n.startswith(w))  # type: ignore[misc]
        picks += [(f"{tag} {n}", q, r, sh) for n, q, r, sh in found]
    speedups: list[float] = []
    for name, qtype, raw, (n, k) in picks:
        x, q, wt = _qmm_pair(be, qtype, raw, (n, k))
        t_q = _timed(lambda: be.qmatmul(x, q, qtype, (1, k), (n, k), float32), cfg, True)  # noqa: B023
        t_f = _timed(lambda: be.matmul(x, wt, (1, k), (k, n), float32), cfg, True)  # noqa: B023
        speedups.append(t_f / t_q)
        table.rows.append([name, qtype, f"{n} x {k}", f"{t_q * 1e6:.0f}", f"{t_f * 1e6:.0f}", fmt_ratio(t_f / t_q)])
    try:
        path = os.fspath(model_files.smollm2_gguf_path())
    except Exception:  # noqa: BLE001
        path = ""
    if path:  # every linear weight of SmolLM2 once, as in a decode step (85 MB Q4_1/Q8_0 vs 540 MB f32)
        ws = [(q, *_qmm_pair(be, q, r, sh), sh) for _, q, r, sh in _model_weights(path, lambda n: True)]

        def quant() -> None:
            for qt, x, q, _, (n, k) in ws:
                be.qmatmul(x, q, qt, (1, k), (n, k), float32)

        def dense() -> None:
            for _, x, _, wt, (n, k) in ws:
                be.matmul(x, wt, (1, k), (k, n), float32)

        one = Config(quick=True, torch=cfg.torch)
        t_q, t_f = _timed(quant, one, True, settle=False), _timed(dense, one, True, settle=False)
        speedups.append(t_f / t_q)
        table.rows.append([f"SmolLM2, all {len(ws)} matrices", "Q4_1/Q8_0", "135M weights", f"{t_q * 1e6:.0f}",
                           f"{t_f * 1e6:.0f}", fmt_ratio(t_f / t_q)])
        del ws
    if speedups:
        table.goals.append(Goal("opencl qmatmul (1 row) / f32 matmul, SmolLM2 decode matrices",
                                fmt_ratio(speedups[-1]), ">= 1x", speedups[-1] >= 1.0))
    table.notes = ["x is one row; the f32 matmul multiplies by the dequantized weight stored transposed [K, N] "
                   "(the layout the model uses for decode, the `mm_gemv` kernel). One weight at a time stays in "
                   "the caches (compute-bound); the whole model streams from memory, where reading 4.5-8.5 bits "
                   "instead of 32 per weight pays."]
    return table


_SECTIONS: list[tuple[str, Callable[[Config], Table]]] = [
    ("opencl-elementwise", bench_elementwise),
    ("opencl-matmul", bench_matmul),
    ("opencl-softmax-rms_norm", bench_norms),
    ("opencl-decode", bench_decode),
    ("opencl-qmatmul", bench_qmatmul),
]


def run(cfg: Config) -> Iterator[Table]:
    """Every opencl table (or those `-k` selects); one note table when opencl cannot run here."""
    why = _available()
    if why is not None:
        yield Table("candle-opencl", ["status"], [["skipped"]], notes=[why])
        return
    import candle_opencl.runtime as rt

    device = rt.runtime(0).name
    for name, fn in _SECTIONS:
        if cfg.wants(name):
            table = fn(cfg)
            table.notes.append(f"OpenCL device: {device}.")
            yield table


if __name__ == "__main__":  # python bench/bench_opencl.py [--quick]
    import sys

    from _harness import machine_info

    cfg = Config(quick="--quick" in sys.argv)
    for k, v in machine_info(None):
        print(f"{k}: {v}")
    for t in run(cfg):
        print(t.render())
        for g in t.goals:
            print(f"goal: {g.name}: {g.value} (target {g.target}, met: {g.met})")
