"""candle-cuda beside PyTorch on the same GPU, in one run.

Sections: matmul TFLOP/s (cuBLAS through CuPy vs torch.matmul; bf16, f16, f32; a transposed right
operand), softmax / rms_norm GB/s (candle's CUDA kernels vs torch's), decode tokens/s of SmolLM2-135M
(candle on its GGUF blocks vs transformers eager in bf16) and of a ~1.2B Llama shape with random bf16
weights (candle vs transformers eager), with the fraction of the HBM roofline (weight bytes read per
token / the copy bandwidth measured in the same run). Skips with a note when cuda is unavailable.
Every timed statement ends with a device synchronisation, so times include the GPU's work.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import candle
from _harness import Config, Goal, Table, fmt_rate, fmt_ratio, time_it

TITLE = "candle-cuda beside PyTorch on the same GPU"
_DEV = "cuda"
_REPS = 5  # calls per timed statement (one synchronisation each)
MATMUL_SIZES = (2048, 4096)  # square sizes; --full adds 8192; a transposed-operand 4096 product is added
NORM_SHAPES = [(4096, 4096), (32768, 1024), (256, 32000), (1, 2048)]


def _available() -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = {i.name: i for i in candle.backends()}.get("cuda")
    if info is None:
        return "candle-cuda is not installed (pip install packages/candle-cuda cupy-cuda12x or cupy-cuda13x)"
    if info.state != "available":
        return f"cuda is {info.state}: {info.reason}"
    return None


def _torch_cuda(cfg: Config) -> Any:
    t = cfg.torch
    return t if t is not None and t.cuda.is_available() else None


def _timed(fn: Callable[[], Any], sync: Callable[[], None], cfg: Config, reps: int = _REPS) -> float:
    def stmt() -> None:
        for _ in range(reps):
            fn()
        sync()

    return time_it(stmt, target_s=cfg.target_s * 2, repeat=cfg.repeat) / reps


def _csync() -> None:
    candle.Device(_DEV).backend.synchronize()


def _copy_bandwidth(torch: Any) -> float | None:
    """Device-to-device copy GB/s (bytes read + written) of 1 GiB, the practical HBM ceiling."""
    if torch is None:
        return None
    a = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 4 * 10 / (time.perf_counter() - t0) / 1e9


# --- matmul ----------------------------------------------------------------------------------------------
def bench_matmul(cfg: Config) -> Table:
    torch = _torch_cuda(cfg)
    table = Table("matmul, TFLOP/s (higher is better)", ["product", "dtype", "candle TFLOP/s", "torch TFLOP/s",
                                                          "candle/torch"])
    sizes = list(MATMUL_SIZES) + ([8192] if cfg.full else [])
    ratios: list[float] = []
    for dt in ("bf16", "f16", "f32"):
        tdt = getattr(torch, {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dt]) if torch else None
        for n in sizes + [-sizes[-1]]:
            trans = n < 0
            n = abs(n)
            a = candle.randn(n, n, dtype=dt, device=_DEV)
            b = candle.randn(n, n, dtype=dt, device=_DEV)
            bb = b.t() if trans else b
            flops = 2.0 * n ** 3
            t_c = _timed(lambda: a @ bb, _csync, cfg)  # noqa: B023
            row = [f"({n} x {n}) @ ({n} x {n}){'^T' if trans else ''}", dt, fmt_rate(flops / t_c / 1e12)]
            if torch is not None:
                ta = torch.randn(n, n, dtype=tdt, device="cuda")
                tb = torch.randn(n, n, dtype=tdt, device="cuda")
                tbb = tb.t() if trans else tb
                t_t = _timed(lambda: ta @ tbb, torch.cuda.synchronize, cfg)  # noqa: B023
                row += [fmt_rate(flops / t_t / 1e12), fmt_ratio(t_t / t_c)]
                if dt != "f32" and n >= 4096:
                    ratios.append(t_t / t_c)
            else:
                row += ["-", "-"]
            table.rows.append(row)
    if ratios:
        worst = min(ratios)
        table.goals.append(Goal("cuda matmul / torch (bf16+f16, n >= 4096, worst)", fmt_ratio(worst), ">= 0.95x",
                                worst >= 0.95))
    table.notes = ["candle: cublasGemmStridedBatchedEx (float32 accumulation; bf16 as CUDA_R_16BF words), the "
                   "transposed operand passed as OP_T without a copy; torch: torch.matmul (cuBLAS/cuBLASLt). "
                   "f32 is full float32 on both (no TF32)."]
    return table


# --- softmax / rms_norm ------------------------------------------------------------------------------------
def bench_norms(cfg: Config) -> Table:
    torch = _torch_cuda(cfg)
    F = candle.nn.functional
    table = Table("softmax / rms_norm, GB/s (higher is better)", ["op", "shape", "dtype", "candle GB/s",
                                                                   "torch GB/s", "candle/torch"])
    ratios: list[float] = []
    shapes = NORM_SHAPES
    for op in ("softmax", "rms_norm"):
        for dt in ("f32", "bf16"):
            for shape in shapes:
                x = candle.randn(*shape, dtype=dt, device=_DEV)
                w = candle.randn(shape[-1], dtype=dt, device=_DEV)
                fc = (lambda: x.softmax(-1)) if op == "softmax" else \
                    (lambda: F.rms_norm(x, (shape[-1],), w, 1e-5))  # noqa: B023
                nbytes = 2 * int(np.prod(shape)) * (4 if dt == "f32" else 2)
                t_c = _timed(fc, _csync, cfg)
                row = [op, str(shape), dt, fmt_rate(nbytes / t_c / 1e9)]
                if torch is not None:
                    tdt = torch.float32 if dt == "f32" else torch.bfloat16
                    tx = torch.randn(*shape, dtype=tdt, device="cuda")
                    tw = torch.randn(shape[-1], dtype=tdt, device="cuda")
                    ft = (lambda: torch.softmax(tx, -1)) if op == "softmax" else \
                        (lambda: torch.nn.functional.rms_norm(tx, (shape[-1],), tw, 1e-5))  # noqa: B023
                    t_t = _timed(ft, torch.cuda.synchronize, cfg)
                    row += [fmt_rate(nbytes / t_t / 1e9), fmt_ratio(t_t / t_c)]
                    if shape[0] > 1:
                        ratios.append(t_t / t_c)
                else:
                    row += ["-", "-"]
                table.rows.append(row)
    if ratios:
        med = float(np.median(ratios))
        table.goals.append(Goal("cuda softmax+rms_norm / torch (median, multi-row shapes)", fmt_ratio(med),
                                ">= 0.9x", med >= 0.9))
    table.notes = ["GB/s counts the input read once and the output written once; (1, 2048) is a decode step's "
                   "norm, where the launch cost dominates (left out of the goal)."]
    return table


# --- decode ---------------------------------------------------------------------------------------------------
def _candle_decode(model: Any, steps: int, prompt: list[int]) -> float:
    cache = model.new_cache(1, len(prompt) + steps + 4)
    logits = model(candle.tensor([prompt], device=_DEV), cache, last_only=True)
    tok = int(logits[0, -1].argmax().item())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logits = model(candle.tensor([[tok]], device=_DEV), cache, last_only=True)
        tok = int(logits[0, -1].argmax().item())  # the step's one transfer (and its synchronisation)
        times.append(time.perf_counter() - t0)
    return 1.0 / float(np.median(times))


def _torch_decode(torch: Any, model: Any, steps: int, prompt: list[int]) -> float:
    from transformers import DynamicCache

    with torch.no_grad():
        cache = DynamicCache()
        out = model(input_ids=torch.tensor([prompt], device="cuda"), past_key_values=cache, use_cache=True)
        tok = int(out.logits[0, -1].argmax().item())
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([[tok]], device="cuda"), past_key_values=out.past_key_values,
                        use_cache=True)
            tok = int(out.logits[0, -1].argmax().item())
            times.append(time.perf_counter() - t0)
    return 1.0 / float(np.median(times))


_PROMPT = [1, 504, 2988, 314, 42, 216, 34, 32]


def bench_decode_smollm2(cfg: Config) -> Table:
    torch = _torch_cuda(cfg)
    table = Table("SmolLM2-135M decode, tokens/s (higher is better)", ["engine", "weights", "tokens/s",
                                                                        "vs transformers"])
    try:
        from candle_models import model_files
        from candle_models.loading import load_model

        path = os.fspath(model_files.smollm2_gguf_path())
    except Exception as e:  # noqa: BLE001 - the model package is optional
        table.notes = [f"skipped: SmolLM2 is not installed ({type(e).__name__}: {e})"]
        return table
    steps = 20 if cfg.quick else 60
    rows: list[tuple[str, str, float]] = []
    lm = load_model(path, device=_DEV, dtype="bf16", tokenizer=False, progress=False)
    rows.append(("candle cuda", "GGUF Q4_1/Q8_0 blocks, bf16 activations" if lm.model.quantized else "bf16",
                 _candle_decode(lm.model, steps, _PROMPT)))
    del lm
    lm = load_model(path, device=_DEV, dtype="bf16", tokenizer=False, progress=False, dequantize=True)
    rows.append(("candle cuda", "bf16 (dequantized at load)", _candle_decode(lm.model, steps, _PROMPT)))
    del lm
    ref = None
    if torch is not None:
        try:
            from transformers import AutoModelForCausalLM

            tm = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                      torch_dtype=torch.bfloat16, attn_implementation="eager")
            tm = tm.to("cuda").eval()
            ref = _torch_decode(torch, tm, steps, _PROMPT)
            rows.append(("transformers eager", "bf16 (dequantized at load)", ref))
            del tm
        except Exception as e:  # noqa: BLE001 - transformers/gguf missing: candle's numbers alone
            table.notes.append(f"transformers reference skipped: {type(e).__name__}: {e}")
    for eng, w, tps in rows:
        table.rows.append([eng, w, f"{tps:.1f}", fmt_ratio(tps / ref) if ref else "-"])
    if ref:
        best = max(tps for eng, _, tps in rows if eng.startswith("candle"))
        table.goals.append(Goal("cuda SmolLM2 decode / transformers eager", fmt_ratio(best / ref), ">= 1.2x",
                                best / ref >= 1.2))
    table.notes.append(f"median of {steps} greedy steps after an 8-token prefill; each step is one forward, argmax "
                       "and `.item()` (the one host transfer).")
    return table


def _llama_1b_config() -> Any:
    from candle_models.config import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
                       max_position_embeddings=4096, tie_word_embeddings=True)


def _candle_random_llama(c: Any) -> Any:
    from candle_models.llama import LlamaAttention, LlamaBlock, LlamaForCausalLM, LlamaMLP

    hd = c.head_dim

    def r(*shape: int) -> candle.Tensor:
        return candle.randn(*shape, dtype="bf16", device=_DEV) * 0.02

    def ones(n: int) -> candle.Tensor:
        return candle.ones(n, dtype="bf16", device=_DEV)

    layers = []
    for _ in range(c.num_hidden_layers):
        attn = LlamaAttention(c, r(c.hidden_size, (c.num_attention_heads + 2 * c.num_key_value_heads) * hd),
                              r(c.num_attention_heads * hd, c.hidden_size))
        mlp = LlamaMLP(r(c.hidden_size, 2 * c.intermediate_size), r(c.hidden_size, c.intermediate_size))
        layers.append(LlamaBlock(c, attn, mlp, ones(c.hidden_size), ones(c.hidden_size)))
    return LlamaForCausalLM(c, layers, ones(c.hidden_size), r(c.hidden_size, c.vocab_size), None)


def bench_decode_llama_1b(cfg: Config) -> Table:
    torch = _torch_cuda(cfg)
    c = _llama_1b_config()
    table = Table("Llama ~1.2B shape, random bf16 weights, decode tokens/s (higher is better)",
                  ["engine", "tokens/s", "ms/token", "vs transformers", "HBM roofline fraction"])
    n_params = (c.num_hidden_layers * (c.hidden_size * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
                                       + c.num_attention_heads * c.head_dim * c.hidden_size
                                       + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size)
                + c.vocab_size * c.hidden_size + c.hidden_size)
    weight_bytes = 2 * n_params
    bw = _copy_bandwidth(torch)
    steps = 20 if cfg.quick else 60
    prompt = [int(i) for i in np.random.default_rng(0).integers(0, c.vocab_size, 16)]
    model = _candle_random_llama(c)
    rows = [("candle cuda", _candle_decode(model, steps, prompt))]
    del model
    ref = None
    if torch is not None:
        try:
            from transformers import LlamaConfig as HFConfig
            from transformers import LlamaForCausalLM as HFLlama

            hc = HFConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps,
                          rope_theta=c.rope_theta, max_position_embeddings=c.max_position_embeddings,
                          tie_word_embeddings=True, attn_implementation="eager")
            with torch.device("cuda"):
                tm = HFLlama(hc).to(torch.bfloat16).eval()
            ref = _torch_decode(torch, tm, steps, prompt)
            rows.append(("transformers eager", ref))
            del tm
        except Exception as e:  # noqa: BLE001
            table.notes.append(f"transformers reference skipped: {type(e).__name__}: {e}")
    for eng, tps in rows:
        frac = f"{tps * weight_bytes / (bw * 1e9):.2f}" if bw else "-"
        table.rows.append([eng, f"{tps:.1f}", f"{1000 / tps:.2f}", fmt_ratio(tps / ref) if ref else "-", frac])
    if ref:
        table.goals.append(Goal("cuda Llama-1B bf16 decode / transformers eager", fmt_ratio(rows[0][1] / ref),
                                ">= 1.2x", rows[0][1] / ref >= 1.2))
    table.notes.append(f"{n_params / 1e9:.2f}B parameters ({weight_bytes / 1e9:.2f} GB of bf16 weights read per "
                       f"token); roofline = copy bandwidth {bw:.0f} GB/s measured in this run (read + write)"
                       if bw else "no torch: the roofline fraction needs its copy bandwidth")
    return table


_SECTIONS: list[tuple[str, Callable[[Config], Table]]] = [
    ("cuda-matmul", bench_matmul),
    ("cuda-softmax-rms_norm", bench_norms),
    ("cuda-decode-smollm2", bench_decode_smollm2),
    ("cuda-decode-llama1b", bench_decode_llama_1b),
]


def run(cfg: Config) -> Iterator[Table]:
    """Every cuda table (or those `-k` selects); one note table when cuda cannot run here."""
    why = _available()
    if why is not None:
        yield Table("candle-cuda", ["status"], [["skipped"]], notes=[why])
        return
    rt = candle.Device(_DEV).backend.rt
    for name, fn in _SECTIONS:
        if cfg.wants(name):
            table = fn(cfg)
            ref = "on the same GPU" if _torch_cuda(cfg) is not None else "without CUDA: no reference"
            table.notes.append(f"GPU: {rt.name} (compute capability {rt.cc // 10}.{rt.cc % 10}); torch {ref}.")
            yield table


if __name__ == "__main__":  # python bench/bench_cuda.py [--quick]
    import sys

    cfg = Config(quick="--quick" in sys.argv)
    try:
        import torch as _torch

        cfg.torch = _torch
    except ImportError:
        pass
    for t in run(cfg):
        print(t.render())
        for g in t.goals:
            print(f"goal: {g.name}: {g.value} (target {g.target}, met: {g.met})")
