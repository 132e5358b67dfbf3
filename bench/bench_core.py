"""candle-core on the CPU (numpy backend), side by side with PyTorch eager in the same run.

Sections: import time (fresh subprocesses), per-op overhead on tiny tensors, elementwise throughput,
matmul GFLOP/s, decode-shaped matrix-vector GB/s, softmax GB/s. Ratios are candle / torch.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import candle
from _harness import GATE, Config, Goal, Table, fmt_ms, fmt_rate, fmt_ratio, fmt_us, time_it

TITLE = "candle-core on the CPU"
_SETTLE_S = 0.2  # see time_it: lets the other library's thread pool stop spinning

# ---------------------------------------------------------------------------------------------
# import time
# ---------------------------------------------------------------------------------------------
_IMPORT_SNIPPETS: dict[str, str] = {
    "numpy": "import numpy",
    "candle": "import candle",
    "torch": "import torch",
}
# `import candle` loads no backend; the first op loads the numpy backend through the plugin registry.
_FIRST_OP = "x = candle.ones(4); y = (x + x).numpy()"


def _import_probe(module: str) -> str:
    """Source of a child process that prints `import` seconds (and, for candle, import + first op)."""
    src = ["import time", "t0 = time.perf_counter()", _IMPORT_SNIPPETS[module], "t1 = time.perf_counter()"]
    if module == "candle":
        src += [_FIRST_OP, "t2 = time.perf_counter()", "print(t1 - t0, t2 - t0)"]
    else:
        src += ["print(t1 - t0)"]
    return "\n".join(src)


def _child_env() -> dict[str, str]:
    """This environment without PYTHONDONTWRITEBYTECODE: users have .pyc caches, so should the bench."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run_probe(module: str, env: dict[str, str]) -> list[float]:
    GATE.wait(threaded=False)
    out = subprocess.run([sys.executable, "-c", _import_probe(module)], env=env, capture_output=True, text=True,
                         check=True)
    return [float(v) for v in out.stdout.split()]


def bench_import(cfg: Config) -> Table:
    """Median in-process import time of numpy, candle (and torch) over fresh interpreters."""
    modules = ["numpy", "candle"] + (["torch"] if cfg.torch is not None else [])
    env = _child_env()
    n = 5 if cfg.quick else 15
    n_torch = 3 if cfg.quick else 7
    samples: dict[str, list[float]] = {m: [] for m in modules}
    first_op: list[float] = []
    for m in modules:  # warm-up: writes the .pyc files a user's installation would have
        _run_probe(m, env)
    for i in range(n):  # interleaved so that machine noise spreads over all modules alike
        for m in modules:
            if m == "torch" and i >= n_torch:
                continue
            vals = _run_probe(m, env)
            samples[m].append(vals[0])
            if m == "candle":
                first_op.append(vals[1])
    med = {m: statistics.median(v) for m, v in samples.items()}
    t_first = statistics.median(first_op)
    np_t = med["numpy"]
    title = f"Import time (median of {n} fresh processes" + (f"; torch {n_torch})" if "torch" in modules else ")")
    table = Table(title,
                  ["what", "ms", "vs import numpy"])
    table.rows.append(["import numpy", fmt_ms(np_t), "1.00x"])
    table.rows.append(["import candle", fmt_ms(med["candle"]), fmt_ratio(med["candle"] / np_t)])
    table.rows.append(["import candle + first op", fmt_ms(t_first), fmt_ratio(t_first / np_t)])
    if "torch" in med:
        table.rows.append(["import torch (reference)", fmt_ms(med["torch"]), fmt_ratio(med["torch"] / np_t)])
    table.notes = [
        ("Measured with time.perf_counter around the import inside a fresh interpreter (interpreter start-up "
         "excluded), .pyc caches present (PYTHONDONTWRITEBYTECODE unset, one warm-up run first)."),
        (f"`import candle` loads no backend and not numpy; the first op (`{_FIRST_OP}`) loads the plugin "
         "registry (pluggy, entry points of every installed plugin), numpy and the numpy backend."),
    ]
    table.goals.append(Goal("import candle / import numpy", fmt_ratio(med["candle"] / np_t), "<= 1.5x",
                            med["candle"] / np_t <= 1.5))
    table.goals.append(Goal("(import candle + first op) / import numpy", fmt_ratio(t_first / np_t), "<= 1.5x",
                            t_first / np_t <= 1.5))
    return table


# ---------------------------------------------------------------------------------------------
# per-op overhead
# ---------------------------------------------------------------------------------------------
# (label, statement, numpy statement): the statement runs with `lib` = candle or torch and the tensors of
# `_tiny_ns`; the numpy statement (None: no equivalent) is the floor of candle's numpy backend.
_TINY_OPS: list[tuple[str, str, str | None]] = [
    ("add (4,)+(4,)", "x + y", "x + y"),
    ("mul by scalar", "x * 2.0", "x * 2.0"),
    ("exp", "x.exp()", "np.exp(x)"),
    ("sum (all)", "x.sum()", "x.sum()"),
    ("sum(dim=-1)", "m.sum(-1)", "m.sum(-1)"),
    ("matmul 2x2", "m @ m", "m @ m"),
    ("reshape (4,)->(2,2)", "x.reshape(2, 2)", "x.reshape(2, 2)"),
    ("view (4,)->(2,2)", "x.view(2, 2)", "x.reshape(2, 2)"),
    ("transpose(0, 1)", "m.transpose(0, 1)", "m.transpose(1, 0)"),
    ("getitem x[1:3]", "x[1:3]", "x[1:3]"),
    ("getitem m[0]", "m[0]", "m[0]"),
    ("cat 2 x (4,)", "lib.cat([x, y])", "np.concatenate([x, y])"),
    ("softmax(-1)", "m.softmax(-1)", "softmax(m)"),
    ("where", "lib.where(c, x, y)", "np.where(c, x, y)"),
    ("to(float64)", "x.to(lib.float64)", "x.astype(np.float64)"),
    ("x > 0", "x > 0", "x > 0"),
    ("backward: (a*b).exp().sum()", "a.grad = None; b.grad = None; (a * b).exp().sum().backward()", None),
]


def _tiny_ns(lib: Any, from_numpy: Callable[[np.ndarray], Any]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = from_numpy(rng.standard_normal(4).astype(np.float32))
    y = from_numpy(rng.standard_normal(4).astype(np.float32))
    m = from_numpy(rng.standard_normal((2, 2)).astype(np.float32))
    ns = {"lib": lib, "x": x, "y": y, "m": m, "c": x > 0}
    if lib is not np:  # leaves of the backward row
        for k in ("a", "b"):
            ns[k] = from_numpy(rng.standard_normal(4).astype(np.float32)).requires_grad_(True)
    return ns


def bench_overhead(cfg: Config) -> Table:
    """Median µs per op on tiny tensors: the Python/dispatch overhead, candle vs torch eager."""
    torch = cfg.torch
    cns = _tiny_ns(candle, candle.from_numpy)
    tns = _tiny_ns(torch, torch.from_numpy) if torch is not None else None
    nps = {**_tiny_ns(np, lambda a: a), "np": np, "softmax": _np_softmax}
    cols = ["op", "statement", "candle µs", "numpy µs"] + (["torch µs", "candle/torch"] if torch else [])
    table = Table("Per-op overhead on tiny tensors (f32, shape (4,) or (2, 2); lower is better)", cols)
    ratios: list[tuple[str, float]] = []
    for label, stmt, np_stmt in _TINY_OPS:
        tc = time_it(stmt, cns, target_s=cfg.target_s, repeat=cfg.repeat)
        tn = time_it(np_stmt, nps, target_s=cfg.target_s, repeat=cfg.repeat) if np_stmt else None
        row = [label, f"`{stmt}`" if len(stmt) < 40 else "`" + stmt.split("; ")[-1] + "`", fmt_us(tc),
               fmt_us(tn) if tn is not None else "-"]
        if tns is not None:
            tt = time_it(stmt, tns, target_s=cfg.target_s, repeat=cfg.repeat)
            ratios.append((label, tc / tt))
            row += [fmt_us(tt), fmt_ratio(tc / tt)]
        table.rows.append(row)
    table.notes = [("Each statement is timed in a `timeit` loop (loop cost included for every library), gc on. "
                    "The numpy column runs the equivalent numpy expression on numpy arrays: the floor under "
                    "candle's numpy backend. The backward row also clears `.grad` of both leaves each iteration.")]
    if ratios:
        worst = max(ratios, key=lambda r: r[1])
        gm = statistics.geometric_mean([r for _, r in ratios])
        n_ok = sum(r <= 3.0 for _, r in ratios)
        table.notes.append(f"Geometric mean candle/torch: {gm:.2f}x; {n_ok}/{len(ratios)} ops within 3x; "
                           f"worst: {worst[0]} at {worst[1]:.2f}x.")
        table.goals.append(Goal("per-op overhead vs torch (every op)", f"{n_ok}/{len(ratios)} ops, worst "
                                f"{worst[1]:.2f}x ({worst[0]})", "<= 3x", n_ok == len(ratios)))
    return table


# ---------------------------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------------------------
def _np_silu(x: np.ndarray) -> np.ndarray:
    return x * (1.0 / (1.0 + np.exp(-x)))  # the formula candle's numpy backend runs


# (name, arrays read, statement); one array is written. `exp`/`silu` come from each library's namespace.
_ELEMENTWISE: list[tuple[str, int, str]] = [
    ("add", 2, "x + y"),
    ("mul", 2, "x * y"),
    ("exp", 1, "exp(x)"),
    ("silu", 1, "silu(x)"),
]


def bench_elementwise(cfg: Config) -> Table:
    """Elementwise GB/s (bytes read + written) at several sizes; numpy shows the backend's floor."""
    torch = cfg.torch
    sizes = [10_000, 1_000_000] + ([] if cfg.quick else [10_000_000])
    cols = ["op", "elements", "candle GB/s", "numpy GB/s"] + (["torch GB/s", "candle/torch"] if torch else [])
    table = Table("Elementwise throughput (f32, contiguous; higher is better)", cols)
    rng = np.random.default_rng(0)
    for n in sizes:
        xn = rng.standard_normal(n).astype(np.float32)
        yn = rng.standard_normal(n).astype(np.float32)
        nps = {"x": xn, "y": yn, "exp": np.exp, "silu": _np_silu}
        cns = {"x": candle.from_numpy(xn), "y": candle.from_numpy(yn), "exp": candle.exp, "silu": candle.silu}
        tns = None
        if torch is not None:
            tns = {"x": torch.from_numpy(xn), "y": torch.from_numpy(yn), "exp": torch.exp,
                   "silu": torch.nn.functional.silu}
        kw = {"target_s": cfg.target_s, "repeat": cfg.repeat, "settle_s": _SETTLE_S if n >= 100_000 else 0.0}
        for name, reads, stmt in _ELEMENTWISE:
            nbytes = (reads + 1) * 4 * n
            tc = time_it(stmt, cns, **kw)
            tn = time_it(stmt, nps, **kw)
            row = [name, f"{n:.0e}", fmt_rate(nbytes / tc / 1e9), fmt_rate(nbytes / tn / 1e9)]
            if tns is not None:
                tt = time_it(stmt, tns, **kw)
                row += [fmt_rate(nbytes / tt / 1e9), fmt_ratio(tt / tc)]
            table.rows.append(row)
    table.notes = [("GB/s counts each input read once and the output written once (4 bytes per element). "
                   "numpy runs the same formula as candle's backend (silu: x * (1 / (1 + exp(-x)))) and is "
                   "single-threaded; torch uses its intra-op thread pool.")]
    return table


def _namespaces(cfg: Config, arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any],
                                                                    dict[str, Any] | None]:
    """The same named arrays as numpy arrays, candle tensors and (when available) torch tensors."""
    nps: dict[str, Any] = dict(arrays)
    cns: dict[str, Any] = {k: candle.from_numpy(v) for k, v in arrays.items()}
    tns = {k: cfg.torch.from_numpy(v) for k, v in arrays.items()} if cfg.torch is not None else None
    return nps, cns, tns


def bench_matmul(cfg: Config) -> Table:
    """Square f32 matmul GFLOP/s (2 n^3 flops) candle vs numpy vs torch."""
    torch = cfg.torch
    sizes = [256, 512, 1024] + ([] if cfg.quick else [2048]) + ([4096] if cfg.full else [])
    cols = ["n", "candle GFLOP/s", "numpy GFLOP/s"] + (["torch GFLOP/s", "candle/torch"] if torch else [])
    table = Table("matmul (n x n) @ (n x n), f32 (higher is better)", cols)
    rng = np.random.default_rng(0)
    large: list[float] = []
    for n in sizes:
        nps, cns, tns = _namespaces(cfg, {"a": rng.standard_normal((n, n)).astype(np.float32),
                                          "b": rng.standard_normal((n, n)).astype(np.float32)})
        flops = 2.0 * n**3
        kw = {"target_s": cfg.target_s * (2 if n >= 1024 else 1), "repeat": 3 if n >= 2048 else cfg.repeat,
              "settle_s": _SETTLE_S}
        tc = time_it("a @ b", cns, **kw)
        tn = time_it("a @ b", nps, **kw)
        row = [str(n), fmt_rate(flops / tc / 1e9), fmt_rate(flops / tn / 1e9)]
        if tns is not None:
            tt = time_it("a @ b", tns, **kw)
            row += [fmt_rate(flops / tt / 1e9), fmt_ratio(tt / tc)]
            if n >= 1024:
                large.append(tt / tc)
        table.rows.append(row)
    table.notes = [("candle's numpy backend calls numpy.matmul (OpenBLAS, its own thread pool); torch uses its "
                   "own GEMM with its intra-op threads.")]
    if large:
        worst = min(large)
        table.goals.append(Goal("matmul f32 n >= 1024, candle/torch", f"worst {worst:.2f}x", ">= 0.9x",
                                worst >= 0.9))
    return table


def bench_matvec(cfg: Config) -> Table:
    """Decode-shaped (1, k) @ (k, n) f32: bytes of the weight read per second (the LLM decode roofline)."""
    shapes = [(4096, 4096)] + ([] if cfg.quick else [(4096, 11008)])
    cols = ["shape", "candle GB/s", "numpy GB/s"] + (["torch GB/s", "candle/torch"] if cfg.torch else [])
    table = Table("Matrix-vector (1, k) @ (k, n), f32 weights (higher is better)", cols)
    rng = np.random.default_rng(0)
    for k, n in shapes:
        nps, cns, tns = _namespaces(cfg, {"x": rng.standard_normal((1, k)).astype(np.float32),
                                          "w": rng.standard_normal((k, n)).astype(np.float32)})
        nbytes = nps["w"].nbytes
        kw = {"target_s": cfg.target_s, "repeat": cfg.repeat, "settle_s": _SETTLE_S}
        tc = time_it("x @ w", cns, **kw)
        tn = time_it("x @ w", nps, **kw)
        row = [f"(1, {k}) @ ({k}, {n})", fmt_rate(nbytes / tc / 1e9), fmt_rate(nbytes / tn / 1e9)]
        if tns is not None:
            tt = time_it("x @ w", tns, **kw)
            row += [fmt_rate(nbytes / tt / 1e9), fmt_ratio(tt / tc)]
        table.rows.append(row)
    table.notes = [("GB/s = weight bytes / time: a decode step reads every weight once, so this is the "
                   "memory-bandwidth roofline a CPU LLM runs against.")]
    return table


def bench_softmax(cfg: Config) -> Table:
    """Softmax over the last dim, GB/s (read once + write once)."""
    shapes = [(4096, 1024), (64, 32000)]
    cols = ["shape", "candle GB/s", "numpy GB/s"] + (["torch GB/s", "candle/torch"] if cfg.torch else [])
    table = Table("softmax(dim=-1), f32 (higher is better)", cols)
    rng = np.random.default_rng(0)
    for shape in shapes:
        nps, cns, tns = _namespaces(cfg, {"x": rng.standard_normal(shape).astype(np.float32)})
        nps["softmax"] = _np_softmax
        nbytes = 2 * nps["x"].nbytes
        kw = {"target_s": cfg.target_s, "repeat": cfg.repeat, "settle_s": _SETTLE_S}
        tc = time_it("x.softmax(-1)", cns, **kw)
        tn = time_it("softmax(x)", nps, **kw)
        row = [str(shape), fmt_rate(nbytes / tc / 1e9), fmt_rate(nbytes / tn / 1e9)]
        if tns is not None:
            tt = time_it("x.softmax(-1)", tns, **kw)
            row += [fmt_rate(nbytes / tt / 1e9), fmt_ratio(tt / tc)]
        table.rows.append(row)
    table.notes = [("candle runs its backend's fused `softmax_last_dim`; the numpy column runs the same four "
                    "passes (max, subtract + exp, sum, divide) directly.")]
    return table


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


_SECTIONS: list[tuple[str, Callable[[Config], Table]]] = [
    ("import", bench_import),
    ("overhead", bench_overhead),
    ("elementwise", bench_elementwise),
    ("matmul", bench_matmul),
    ("matvec", bench_matvec),
    ("softmax", bench_softmax),
]


def run(cfg: Config) -> Iterator[Table]:
    """Every core table (or those `-k` selects), in report order."""
    for name, fn in _SECTIONS:
        if cfg.wants(name):
            yield fn(cfg)
