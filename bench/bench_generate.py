"""Text generation with SmolLM2-135M-Instruct in float32 on the CPU: candle beside transformers + PyTorch and a
naive numpy decode loop, on the same GGUF file and prompt, against the memory-bandwidth roofline of this machine
measured in the same run.

    python bench/bench_generate.py [--quick] [--no-torch] [--tokens N] [--wait-quiet S]
    python bench/run.py --only generate

Every engine runs in fresh subprocesses (`python bench/bench_generate.py --worker ENGINE`, with
`PYTHONDONTWRITEBYTECODE` unset: users have .pyc caches), so that its time to first token counts the
interpreter's start, the imports, the tokenizer, loading the weights and the prompt's prefill, and its peak RSS
is its own. The model file is read from the OS file cache (its first read is not timed): "cold" is a cold
process, not a cold disk.

- candle: `candle_models.load_model(..., dequantize=True)` + `generate` (greedy), the path `candle generate
  --dequantize` runs (float32 weights; the quantized path has its own table).
- transformers + PyTorch: `AutoTokenizer` and `AutoModelForCausalLM.from_pretrained(folder, gguf_file=...,
  dtype=torch.float32)` (transformers dequantizes the GGUF to float32 itself), then a greedy loop calling the
  model with its KV cache under `torch.inference_mode()`: less per-token work than `model.generate()`.
- numpy: a hand-written decode loop in plain numpy on the same float32 weights (taken from candle's load, in
  candle's layout: fused QKV and gate/up, transposed, the down projection applied as `x @ W.T`), token by
  token, no framework: the floor for a Python loop over numpy.

Decode speed: greedy new tokens per second after the first one (end-of-sequence ignored), median over runs in
the process after its cold run. Roofline: a decode step reads every weight once, so tokens/s can be at most
read bandwidth / weight bytes per token. The bytes are summed over the model's actual tensors; the bandwidth is
the best of 7 sums (`np.add.reduce`) over a 512 MiB buffer split across as many Python threads as numpy's BLAS
uses in the decode (numpy releases the GIL in the reduction), measured here, in this run. The "matvec floor"
is the decode's matrix-vector products alone, run by numpy's BLAS back to back on the model's own weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if TYPE_CHECKING:
    from _harness import Config, Table

TITLE = "candle-models: SmolLM2-135M-Instruct generation (f32, CPU)"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
GOAL_VS_TORCH = 1.4  # decode tokens/s, candle / transformers
GOAL_ROOFLINE = 0.85  # decode tokens/s / roofline tokens/s
GOAL_TTFT = 0.1  # cold process to first token, candle / transformers
STRETCH_TTFT_S = 1.0
_BANDWIDTH_MIB = 512
_WORKER_TIMEOUT_S = 900


# --- helpers shared by the workers ------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def _blas_threads() -> int | None:
    """Threads of numpy's BLAS (threadpoolctl when installed, else the usual environment variables)."""
    try:
        from threadpoolctl import threadpool_info

        n = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        if n:
            return int(n[0])
    except ImportError:
        pass
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(k, "").isdigit():
            return int(os.environ[k])
    return os.cpu_count()


def _gate(budget: float) -> Any:
    from _harness import GATE

    GATE.budget_s = budget
    GATE.per_wait_s = max(10.0, budget / 20)
    return GATE


def _gate_stats(gate: Any) -> dict[str, float]:
    return {"waited_s": gate.waited_s, "measurements": gate.measurements, "busy_starts": gate.busy_starts,
            "unchecked": gate.unchecked}


def _decode_weights(model: Any) -> list[tuple[Any, bool]]:
    """The numpy arrays one decode step of candle's Llama reads, each with whether it is applied transposed
    (`x @ W.T`): per layer the two norms, the fused QKV, the output, the fused gate/up and the down projection,
    then the final norm and the output head (the tied embedding, read as the head; looking a token up reads
    one column of it)."""
    arrays = []
    for layer in model.layers:
        arrays += [(layer.attn_norm.numpy(), False), (layer.attn.qkv_t.numpy(), False), (layer.attn.o_t.numpy(), False),
                   (layer.mlp_norm.numpy(), False), (layer.mlp.gate_up_t.numpy(), False),
                   (layer.mlp.down.numpy(), True)]
    return arrays + [(model.norm.numpy(), False), (model.head_t.numpy(), False)]


def _matvec_floor(arrays: list[tuple[Any, bool]], reps: int = 7) -> float:
    """Median seconds of every matrix-vector product of one decode step (numpy's BLAS on the model's weights,
    in the model's layout)."""
    import numpy as np

    mats = [a.T if t else a for a, t in arrays if a.ndim == 2]
    xs = {k: np.ones((1, k), dtype=mats[0].dtype) for k in {m.shape[0] for m in mats}}
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        for m in mats:
            xs[m.shape[0]] @ m
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


# --- workers: each prints one line `RESULT {json}` ----------------------------------------------------------
def worker_candle(a: argparse.Namespace) -> dict[str, Any]:
    """candle: imports, load, the cold run (time to first token), then `runs` timed decode runs."""
    t_proc = time.time()
    import candle
    from candle_models.generation import generate
    from candle_models.loading import load_model
    from candle_models.sampling import GenerationConfig

    t_import = time.time()
    lm = load_model(a.model, progress=False, dequantize=True)
    t_load = time.time()
    cfg = GenerationConfig(max_new_tokens=a.tokens, ignore_eos=True)
    t_call = time.time()
    res = generate(lm.model, lm.tokenizer, PROMPT, cfg, chat=True)
    out: dict[str, Any] = {"import_s": t_import - t_proc, "load_s": t_load - t_import,
                           "first_token_at": t_call + res.time_to_first_token_s, "prefill_s": res.prefill_s,
                           "prompt_tokens": res.prompt_tokens, "tokens": res.token_ids[:a.tokens],
                           "cold_decode_tps": res.decode_tokens_per_s, "version": candle.__version__}
    if a.runs:
        gate = _gate(a.gate)
        tps, chosen = [], []
        for _ in range(a.runs):
            gate.wait(threaded=True)
            r = generate(lm.model, lm.tokenizer, PROMPT, cfg, chat=True)
            tps.append(r.decode_tokens_per_s)
            chosen.append(getattr(r, "blas_threads", None))
        arrays = _decode_weights(lm.model)
        gate.wait(threaded=True)
        out.update(decode_tps=tps, tuned_threads=chosen, weight_bytes=sum(x.nbytes for x, _ in arrays),
                   matvec_floor_s=_matvec_floor(arrays), blas_threads=_blas_threads(), gate=_gate_stats(gate))
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _numpy_generate(lm: Any, ids: list[int], n: int) -> tuple[list[int], float]:
    """Greedy decoding in plain numpy: the prompt token by token, then `n` new tokens; returns them and the
    seconds of the steps after the first new token."""
    import numpy as np

    c, m = lm.config, lm.model
    if c.rope_scaling or c.rope_freq_factors is not None or c.attention_bias or c.mlp_bias or m.embed is not None:
        raise NotImplementedError("the numpy loop covers tied-head Llama models without biases or rope scaling")
    hq, hk, hd, inter, eps = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size, \
        c.rms_norm_eps
    g, h2, scale = hq // hk, hd // 2, hd ** -0.5
    layers = [(ly.attn_norm.numpy(), ly.attn.qkv_t.numpy(), ly.attn.o_t.numpy(), ly.mlp_norm.numpy(),
               ly.mlp.gate_up_t.numpy(), ly.mlp.down.numpy().T) for ly in m.layers]
    head, final_norm = m.head_t.numpy(), m.norm.numpy()
    inv_freq = 1.0 / (c.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    total = len(ids) + n
    kc = np.zeros((len(layers), hk, total, hd), dtype=np.float32)
    vc = np.zeros_like(kc)

    def rms(x: Any, w: Any) -> Any:
        return x * (1.0 / np.sqrt(np.mean(x * x) + eps)) * w

    def rope(x: Any, cos: Any, sin: Any) -> Any:
        x1, x2 = x[:, :h2], x[:, h2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=1)

    tokens = list(ids)
    t_first = 0.0
    for pos in range(total - 1):
        ang = pos * inv_freq
        cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        x = head[:, tokens[pos]].copy()  # the tied embedding, stored transposed
        for i, (n1, qkv_t, o_t, n2, gu_t, down_t) in enumerate(layers):
            qkv = rms(x, n1) @ qkv_t
            q = rope(qkv[:hq * hd].reshape(hq, hd), cos, sin)
            kc[i, :, pos] = rope(qkv[hq * hd:(hq + hk) * hd].reshape(hk, hd), cos, sin)
            vc[i, :, pos] = qkv[(hq + hk) * hd:].reshape(hk, hd)
            s = np.matmul(q.reshape(hk, g, hd), kc[i, :, :pos + 1].transpose(0, 2, 1)) * scale
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            x = x + np.matmul(p, vc[i, :, :pos + 1]).reshape(hq * hd) @ o_t
            gu = rms(x, n2) @ gu_t
            a, b = gu[:inter], gu[inter:]
            x = x + (a / (1.0 + np.exp(-a)) * b) @ down_t
        if pos >= len(ids) - 1:
            tokens.append(int(np.argmax(rms(x, final_norm) @ head)))
            if pos == len(ids) - 1:
                t_first = time.perf_counter()
    return tokens[len(ids):], time.perf_counter() - t_first


def worker_numpy(a: argparse.Namespace) -> dict[str, Any]:
    """The naive numpy loop on candle's float32 weights (loaded by candle)."""
    from candle_models.loading import load_model

    lm = load_model(a.model, progress=False, dequantize=True)
    rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    ids = list(lm.tokenizer.encode(rendered, add_special_tokens=False))
    tokens, _ = _numpy_generate(lm, ids, a.tokens)  # the first run warms up
    gate = _gate(a.gate)
    tps = []
    for _ in range(max(1, a.runs)):
        gate.wait(threaded=True)
        _, dt = _numpy_generate(lm, ids, a.tokens)
        tps.append((a.tokens - 1) / dt)
    return {"tokens": tokens, "decode_tps": tps, "peak_rss_mb": _peak_rss_mb(), "gate": _gate_stats(gate)}


def worker_torch(a: argparse.Namespace) -> dict[str, Any]:
    """transformers + PyTorch: imports, tokenizer and model load from the GGUF, cold greedy run, timed runs."""
    t_proc = time.time()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t_import = time.time()
    folder, name = os.path.split(os.path.abspath(a.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    t_load = time.time()

    def greedy(n: int) -> tuple[list[int], float, float, float]:
        """(new tokens, wall time of the first token, prefill seconds, seconds of the steps after it)."""
        rendered = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True)
        ids = torch.tensor([tok(rendered, add_special_tokens=False).input_ids])
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            toks = [int(nxt)]
            t_first_wall, t1 = time.time(), time.perf_counter()
            past = out.past_key_values
            for _ in range(n - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                toks.append(int(nxt))
        return toks, t_first_wall, t1 - t0, time.perf_counter() - t1

    toks, first_at, prefill, dt = greedy(a.tokens)
    out: dict[str, Any] = {"import_s": t_import - t_proc, "load_s": t_load - t_import, "first_token_at": first_at,
                           "prefill_s": prefill, "tokens": toks, "cold_decode_tps": (a.tokens - 1) / dt,
                           "version": f"transformers {transformers.__version__}, torch {torch.__version__} "
                                      f"({torch.get_num_threads()} threads)"}
    if a.runs:
        gate = _gate(a.gate)
        tps = []
        for _ in range(a.runs):
            gate.wait(threaded=True)
            tps.append((a.tokens - 1) / greedy(a.tokens)[3])
        out.update(decode_tps=tps, gate=_gate_stats(gate))
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _resident_weight_bytes(model: Any) -> int:
    """Bytes of a model's weights as held: float parameters plus the quantized blocks' resident forms (the tied
    embedding and head share one QTensor, counted once)."""
    from candle.quantized import QTensor
    from candle_models.quantized_weights import QMat

    seen: dict[int, int] = {}
    for m in model.modules():
        for v in vars(m).values():
            for q in (v.parts if isinstance(v, QMat) else [v] if isinstance(v, QTensor) else []):
                seen[id(q)] = q.resident_nbytes
    return sum(seen.values()) + sum(p.numpy().nbytes for p in model.parameters())


def worker_candle_q(a: argparse.Namespace) -> dict[str, Any]:
    """candle with the GGUF weights kept quantized (`load_model(..., dequantize=False)`): timed decode runs and
    the resident weight bytes."""
    from candle_models.generation import generate
    from candle_models.loading import load_model
    from candle_models.sampling import GenerationConfig

    t0 = time.time()
    lm = load_model(a.model, progress=False, dequantize=False)
    load_s = time.time() - t0
    cfg = GenerationConfig(max_new_tokens=a.tokens, ignore_eos=True)
    res = generate(lm.model, lm.tokenizer, PROMPT, cfg, chat=True)
    gate = _gate(a.gate)
    tps = []
    for _ in range(max(1, a.runs)):
        gate.wait(threaded=True)
        tps.append(generate(lm.model, lm.tokenizer, PROMPT, cfg, chat=True).decode_tokens_per_s)
    return {"load_s": load_s, "tokens": res.token_ids[:a.tokens], "decode_tps": tps,
            "resident_bytes": _resident_weight_bytes(lm.model), "peak_rss_mb": _peak_rss_mb(),
            "gate": _gate_stats(gate)}


def worker_llamacpp(a: argparse.Namespace) -> dict[str, Any]:
    """llama.cpp (llama-cpp-python) on the same GGUF file: greedy decode tokens/s from its own timings."""
    from llama_cpp import Llama

    llm = Llama(model_path=a.model, n_ctx=512, verbose=False, seed=0)
    msgs = [{"role": "user", "content": PROMPT}]
    gate = _gate(a.gate)
    tps = []
    for _ in range(max(1, a.runs) + 1):  # the first run warms up
        gate.wait(threaded=True)
        llm.reset()
        first = None
        n = 0
        for _chunk in llm.create_chat_completion(msgs, max_tokens=a.tokens, temperature=0.0, stream=True):
            n += 1
            if first is None:
                first = time.perf_counter()
        if first is not None and n > 2:
            tps.append((n - 2) / (time.perf_counter() - first))
    return {"decode_tps": tps[1:] or tps, "peak_rss_mb": _peak_rss_mb(), "gate": _gate_stats(gate)}


WORKERS = {"candle": worker_candle, "candle_q": worker_candle_q, "llamacpp": worker_llamacpp, "numpy": worker_numpy,
           "torch": worker_torch}


# --- the parent -----------------------------------------------------------------------------------------
def read_bandwidth(threads: int, mib: int = _BANDWIDTH_MIB, reps: int = 7) -> float:
    """Best read bandwidth (bytes/s) of `np.add.reduce` over a float32 buffer of `mib` MiB split across
    `threads` Python threads (numpy releases the GIL while it reduces)."""
    import numpy as np

    buf = np.ones(mib * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(buf, threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(np.add.reduce, parts))  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            list(pool.map(np.add.reduce, parts))
            best = min(best, time.perf_counter() - t0)
    return buf.nbytes / best


def spawn(engine: str, model: str, tokens: int, runs: int, gate_s: float,
          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its result, with `ttft_s` = process start to first token."""
    e = dict(os.environ)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e.update(env or {})
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--model", model, "--tokens", str(tokens),
           "--runs", str(runs), "--wait-quiet", f"{gate_s:.1f}"]
    t0 = time.time()
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=_WORKER_TIMEOUT_S)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
        raise RuntimeError(f"{engine} worker failed (exit {p.returncode}): " + " | ".join(tail))
    r: dict[str, Any] = json.loads(line[len("RESULT "):])
    if "first_token_at" in r:
        r["ttft_s"] = r["first_token_at"] - t0
    return r


def _torch_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "gguf"))


def _llamacpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _same_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def measure(cfg: Config, tokens: int | None = None) -> dict[str, Any]:
    """Run the workers and the bandwidth measurement; every number the tables need."""
    from _harness import GATE
    from candle_models.model_files import smollm2_gguf_path

    model = str(smollm2_gguf_path())
    n = tokens or (32 if cfg.quick else 128)
    runs = 1 if cfg.quick else 3
    cold = 1 if cfg.quick else 3
    with open(model, "rb") as f:  # the first read of the file stays out of every timing
        while f.read(1 << 24):
            pass
    res: dict[str, Any] = {"model": model, "tokens": n, "runs": runs, "errors": {}}

    def budget() -> float:
        return max(0.0, GATE.budget_s - GATE.waited_s)

    def absorb(r: dict[str, Any]) -> None:
        g = r.get("gate") or {}
        GATE.waited_s += g.get("waited_s", 0.0)
        GATE.measurements += g.get("measurements", 0)
        GATE.busy_starts += g.get("busy_starts", 0)
        GATE.unchecked += g.get("unchecked", 0)

    def go(key: str, engine: str, r_runs: int, env: dict[str, str] | None = None) -> dict[str, Any] | None:
        GATE.wait(threaded=True)
        try:
            r = spawn(engine, model, n, r_runs, budget(), env)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            res["errors"][key] = str(e)
            return None
        absorb(r)
        return r

    try:
        spawn("candle", model, 2, 0, 0.0)  # warm-up: .pyc files, the file cache
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        res["errors"]["candle warm-up"] = str(e)
    res["candle"] = go("candle", "candle", runs)
    res["candle_cold"] = [r["ttft_s"] for r in [res["candle"]] + [go("candle", "candle", 0) for _ in range(cold - 1)]
                          if r is not None]
    threads = (res["candle"] or {}).get("blas_threads") or os.cpu_count() or 1
    if not cfg.quick and threads > 1:  # the thread tuner against each count pinned
        res["candle_pinned"] = go("candle_pinned", "candle", runs, {"CANDLE_TUNE_THREADS": "0"})
        res["candle_1t"] = go("candle_1t", "candle", runs, {"OPENBLAS_NUM_THREADS": "1"})
    res["candle_q"] = go("candle_q", "candle_q", runs)
    if _llamacpp_available():
        res["llamacpp"] = go("llamacpp", "llamacpp", runs)
    res["numpy"] = go("numpy", "numpy", runs)
    if cfg.torch is not None and _torch_available():
        res["torch"] = go("torch", "torch", runs)
        res["torch_cold"] = [r["ttft_s"] for r in [res["torch"]] if r is not None]
    GATE.wait(threaded=True)
    res["bandwidth"] = {1: read_bandwidth(1), threads: read_bandwidth(threads)}
    res["threads"] = threads
    return res


def _med(r: dict[str, Any] | None, key: str = "decode_tps") -> float | None:
    return statistics.median(r[key]) if r and r.get(key) else None


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def tables(res: dict[str, Any], cfg: Config) -> Iterator[Table]:
    """The result tables: cold start, decode against the roofline."""
    from _harness import Goal, Table

    c, t, npy = res.get("candle"), res.get("torch"), res.get("numpy")
    threads = res["threads"]
    bw = res["bandwidth"][threads]
    wbytes = (c or {}).get("weight_bytes")
    roof = bw / wbytes if wbytes else None
    c_tps, t_tps, n_tps, c1_tps = _med(c), _med(t), _med(npy), _med(res.get("candle_1t"))
    cp_tps = _med(res.get("candle_pinned"))
    c_ttft = statistics.median(res["candle_cold"]) if res.get("candle_cold") else None
    t_ttft = statistics.median(res["torch_cold"]) if res.get("torch_cold") else None

    if cfg.wants("ttft") or cfg.wants("cold"):
        tb = Table("Cold start: a fresh process to its first generated token (s; peak RSS in MB)",
                   ["engine", "imports", "load (tokenizer + weights)", "prefill", "process start -> first token",
                    "peak RSS"])
        for name, r, cold in (("candle", c, res.get("candle_cold")), ("transformers + PyTorch", t,
                                                                      res.get("torch_cold"))):
            if r is None:
                continue
            tb.rows.append([name, _f(r["import_s"], "{:.2f}"), _f(r["load_s"], "{:.2f}"), _f(r["prefill_s"], "{:.3f}"),
                            f"{statistics.median(cold):.2f}" + (f" (median of {len(cold)})" if len(cold) > 1 else ""),
                            _f(r["peak_rss_mb"], "{:.0f}")])
        prompt_tokens = (c or {}).get("prompt_tokens")
        tb.notes.append(f"The chat-formatted prompt ({prompt_tokens} tokens), greedy, {res['tokens']} new tokens. "
                        "Imports and load are the worker's own clocks; the last column runs from just before the "
                        "parent starts the interpreter. The GGUF file is in the OS file cache. Peak RSS covers "
                        "the whole worker (its decode runs included).")
        if t_ttft and c_ttft:
            ratio = c_ttft / t_ttft
            tb.goals.append(Goal("cold start to first token, candle / transformers", f"{ratio:.3f}",
                                 f"<= {GOAL_TTFT:g}", ratio <= GOAL_TTFT))
        if c_ttft:
            tb.goals.append(Goal("cold start to first token, candle (stretch)", f"{c_ttft:.2f} s",
                                 f"< {STRETCH_TTFT_S:g} s", c_ttft < STRETCH_TTFT_S))
        yield tb

    if cfg.wants("decode") or cfg.wants("roofline"):
        td = Table(f"Decode: greedy tokens/s after the first token ({res['tokens']} new tokens, median of "
                   f"{res['runs']} runs; higher is better)",
                   ["engine", "tokens/s", "ms/token", "vs transformers", "% of roofline"])

        def row(name: str, tps: float | None) -> None:
            if tps is None:
                return
            td.rows.append([name, f"{tps:.1f}", f"{1e3 / tps:.1f}", _f(tps / t_tps if t_tps else None, "{:.2f}x"),
                            _f(100 * tps / roof if roof else None, "{:.0f}%")])

        tuned = ", ".join(str(x) for x in (c or {}).get("tuned_threads") or [] if x is not None)
        row(f"candle (thread tuner: chose {tuned})" if tuned else "candle", c_tps)
        row(f"candle, {threads} BLAS threads pinned", cp_tps)
        row("candle, 1 BLAS thread pinned", c1_tps)
        row(f"naive numpy loop ({threads} BLAS threads)", n_tps)
        row("transformers + PyTorch", t_tps)
        floor = (c or {}).get("matvec_floor_s")
        if floor:
            row(f"matvec floor (BLAS alone, {threads} threads)", 1 / floor)
        floor1 = (res.get("candle_1t") or {}).get("matvec_floor_s")
        if floor1:
            row("matvec floor (BLAS alone, 1 thread)", 1 / floor1)
        if roof:
            row("roofline (bandwidth / bytes)", roof)
        td.notes.append(
            f"Roofline: {wbytes / 1e6:.0f} MB of weights read per token (the model's tensors) / {bw / 1e9:.1f} GB/s "
            f"read bandwidth = {roof:.1f} tokens/s; the bandwidth is the best of 7 `np.add.reduce` over a "
            f"{_BANDWIDTH_MIB} MiB buffer split across {threads} threads ({res['bandwidth'][1] / 1e9:.1f} GB/s with "
            f"one thread). The matvec floor runs the step's matrix-vector products alone (numpy's BLAS, "
            f"{threads} threads, the model's own weights): {1e3 * floor:.1f} ms = "
            f"{wbytes / floor / 1e9:.1f} GB/s." if roof and floor else "Roofline not measured.")
        for name, r in (("numpy", npy), ("transformers", t)):
            if r is not None and c is not None:
                same = _same_prefix(c["tokens"], r["tokens"])
                td.notes.append(f"Greedy tokens, candle vs {name}: the first {same} of {len(c['tokens'])} identical.")
        if c and t:
            td.notes.append(f"Versions: candle {c['version']}; {t['version']}.")
        if c_tps and t_tps:
            td.goals.append(Goal("decode tokens/s, candle / transformers", f"{c_tps / t_tps:.2f}x",
                                 f">= {GOAL_VS_TORCH:g}x", c_tps / t_tps >= GOAL_VS_TORCH))
        if c_tps and roof:
            td.goals.append(Goal("decode tokens/s, candle / roofline", f"{100 * c_tps / roof:.0f}%",
                                 f">= {100 * GOAL_ROOFLINE:.0f}%", c_tps / roof >= GOAL_ROOFLINE))
        if c_tps and n_tps:
            td.goals.append(Goal("decode tokens/s, candle / naive numpy loop", f"{c_tps / n_tps:.2f}x", "> 1x",
                                 c_tps > n_tps))
        yield td

    q = res.get("candle_q")
    if (cfg.wants("decode") or cfg.wants("quantized")) and q is not None:
        q_tps, l_tps = _med(q), _med(res.get("llamacpp"))
        tq = Table("Quantized weights: the GGUF blocks kept resident (Q4_1) beside the float32 path (CPU)",
                   ["engine", "weights resident (MB)", "vs f32", "decode tokens/s", "vs f32", "peak RSS (MB)"])
        f32_bytes = (c or {}).get("weight_bytes")
        if c is not None:
            tq.rows.append(["candle f32 (dequantized at load)", _f(f32_bytes / 1e6 if f32_bytes else None, "{:.0f}"),
                            "1.00x", _f(c_tps), "1.00x", _f(c.get("peak_rss_mb"), "{:.0f}")])
        ratio = q["resident_bytes"] / f32_bytes if f32_bytes else None
        tq.rows.append(["candle quantized (qmatmul)", f"{q['resident_bytes'] / 1e6:.0f}", _f(ratio, "{:.2f}x"),
                        _f(q_tps), _f(q_tps / c_tps if q_tps and c_tps else None, "{:.2f}x"),
                        _f(q.get("peak_rss_mb"), "{:.0f}")])
        if l_tps is not None:
            tq.rows.append(["llama.cpp (llama-cpp-python)", "-", "-", _f(l_tps),
                            _f(l_tps / c_tps if c_tps else None, "{:.2f}x"),
                            _f(res["llamacpp"].get("peak_rss_mb"), "{:.0f}")])
        else:
            tq.notes.append("llama.cpp: not measured (llama-cpp-python is not installed).")
        if c is not None:
            same = _same_prefix(c["tokens"], q["tokens"])
            tq.notes.append(f"Greedy tokens, quantized vs f32: the first {same} of {len(c['tokens'])} identical "
                            "(the same weight values; only the summation order differs).")
        tq.notes.append("Resident weights: float parameters plus the CPU backend's resident form of the blocks "
                        "(levels, per-group scales/offsets, block headers); f32 is the bytes one decode step reads.")
        if ratio is not None:
            tq.goals.append(Goal("quantized resident weights / f32", f"{ratio:.2f}", "<= 0.33", ratio <= 1 / 3))
        if q_tps and c_tps:
            tq.goals.append(Goal("quantized decode tokens/s / f32", f"{q_tps / c_tps:.2f}x", ">= 1x",
                                 q_tps >= c_tps))
        yield tq

    for k, e in res["errors"].items():
        yield Table(f"{k}: failed", ["error"], [[e[:500]]])


def run(cfg: Config, tokens: int | None = None) -> Iterator[Table]:
    """bench/run.py's entry point (`tokens`: new tokens per run, default 128, quick 32)."""
    from _harness import Table

    if not any(cfg.wants(s) for s in ("ttft", "cold", "decode", "roofline", "quantized")):
        return
    from candle_models.model_files import ModelNotFoundError, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except ModelNotFoundError as e:
        yield Table("SmolLM2 generation: skipped", ["reason"], [[str(e)]])
        return
    yield from tables(measure(cfg, tokens), cfg)


def main(argv: list[str] | None = None) -> int:
    """Print the machine and the tables (Markdown); `--worker` runs one engine in this process instead."""
    p = argparse.ArgumentParser(description=TITLE)
    p.add_argument("--quick", action="store_true", help="32 tokens, one timed run, one cold start each")
    p.add_argument("--no-torch", action="store_true", help="candle and numpy only")
    p.add_argument("--tokens", type=int, default=None, help="new tokens per run (default 128, quick 32)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="seconds the run may wait in all for other processes to leave the CPUs idle (default 0)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.gate = args.wait_quiet
        print("RESULT " + json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0

    from _harness import GATE, Config, machine_info

    GATE.budget_s = args.wait_quiet
    GATE.per_wait_s = max(10.0, args.wait_quiet / 20)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    cfg = Config(quick=args.quick, torch=torch)
    print(f"## {TITLE}\n\n| | |\n|:--|:--|")
    for k, v in machine_info(cfg.torch):
        print(f"| {k} | {v} |")
    print()
    for t in run(cfg, args.tokens):
        print(t.render())
    if args.wait_quiet:
        print(f"_{GATE.summary()}_")
    return 0


if __name__ == "__main__":
    sys.exit(main())
