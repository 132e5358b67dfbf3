"""`load_model`: a model, its tokenizer and config from a GGUF file, a Hugging Face folder or a cached
repo id, ready to run on a device.

    lm = load_model()                                            # the default SmolLM2-135M-Instruct
    lm = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", device="cuda", dtype="bf16")
    logits = lm.model(candle.tensor([lm.tokenizer.encode("Hi")]))

Weights are memory-mapped (safetensors, GGUF) and read tensor by tensor; GGUF tensors are dequantized
straight to the chosen dtype. A progress bar (tqdm, on stderr) appears when a load takes over a second.
Errors are clear: `ModelNotFoundError` (no such file, not in the local cache), `UnknownArchitectureError`
(lists the known ones), `ShapeError` naming the tensor, its file and the expected shape,
`MissingTensorError` naming the missing tensor.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from candle import CandleError, FileFormatError
from candle.dtype import DType, as_dtype

from .hub import ModelSource, resolve_model
from .registry import get_architecture

__all__ = ["LoadedModel", "load_model"]

_DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "f16": "float16", "fp16": "float16", "half": "float16",
                  "bf16": "bfloat16", "f64": "float64"}


@dataclass
class LoadedModel:
    """What `load_model` returns: the model (a `candle.nn.Module`), its tokenizer (None when not asked
    for), its config, the architecture name, where it came from and how long loading took."""

    model: Any
    tokenizer: Any
    config: Any
    arch: str
    source: ModelSource
    load_seconds: float


def parse_dtype(dtype: DType | str) -> DType:
    """A candle dtype from a name or short name (`f32`, `f16`, `bf16`, `float32`...)."""
    if isinstance(dtype, DType):
        return dtype
    return as_dtype(_DTYPE_ALIASES.get(dtype.lower(), dtype.lower()))


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    """A tqdm bar on stderr that shows itself only after a second (None when tqdm is missing or disabled)."""
    if enabled is False:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr, delay=1.0, leave=False,
                disable=None if enabled is None else not enabled, dynamic_ncols=True)


def _read_config_json(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise FileFormatError(f"'{path}': not valid JSON ({str(e)[:120]})") from None
    if not isinstance(d, dict):
        raise FileFormatError(f"'{path}': expected a JSON object")
    return d


def _folder_arch(d: dict[str, Any], folder: str) -> str:
    arch = d.get("model_type")
    if not arch:
        raise CandleError(f"'{os.path.join(folder, 'config.json')}' has no 'model_type', so the architecture is "
                          f"unknown")
    return str(arch)


def _weight_files(folder: str) -> str:
    """What `WeightStore` should open for a folder; a clear error when it holds no safetensors."""
    names = os.listdir(folder)
    if "model.safetensors.index.json" in names or any(n.endswith(".safetensors") for n in names):
        return folder
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names):
        raise FileFormatError(f"'{folder}' holds only PyTorch pickle weights (.bin/.pt); candle reads safetensors "
                              f"(no pickle): convert them first")
    raise FileNotFoundError(f"'{folder}' has config.json but no model.safetensors (or sharded safetensors with "
                            f"model.safetensors.index.json)")


def _accepts_quantized(cls: Any) -> bool:
    import inspect

    return "quantized" in inspect.signature(cls.from_weights).parameters


def load_model(path_or_id: str | os.PathLike[str] | None = None, device: Any = "cpu",
               dtype: DType | str = "float32", *, tokenizer: bool = True, progress: bool | None = None,
               dequantize: bool | None = None) -> LoadedModel:
    """Load a model (see the module docs for what `path_or_id` may be; None = the default model).

    `device` is any candle device (`cpu`, `cuda`, `opencl:0`...); `dtype` the compute and storage dtype
    of the weights. `tokenizer=False` skips the tokenizer. `progress`: None shows a bar for slow loads,
    False never, True always (after a second). `dequantize`: for GGUF files, True dequantizes the weights to
    `dtype` at load (the float path), False keeps them in their GGML blocks (`dtype` is then the activation
    dtype; the default, None, means the same: weights stay quantized on every device). On the numpy CPU
    backend the float path decodes faster (~1.6x with two BLAS threads) but needs ~3x the memory (see
    docs/quantized.md). Other sources always load as float.
    """
    t0 = time.perf_counter()
    src = resolve_model(path_or_id)
    dt = parse_dtype(dtype)
    tok = None
    if src.kind == "gguf":
        from candle.io import GGUFReader

        reader = GGUFReader(src.path)
        arch = reader.metadata.get("general.architecture")
        if not arch:
            raise FileFormatError(f"'{src.path}': the GGUF metadata has no 'general.architecture'")
        cls = get_architecture(str(arch))
        if not hasattr(cls, "gguf_weights"):
            raise CandleError(f"architecture {arch!r} ({cls.__name__}) cannot load GGUF files")
        config = cls.config_from_gguf(reader)
        weights = cls.gguf_weights(reader, config)
        if tokenizer:
            from .tokenizer import Tokenizer

            tok = Tokenizer.from_gguf(reader)
    else:
        from candle.nn import WeightStore

        cfg_json = _read_config_json(src.path)
        arch = _folder_arch(cfg_json, src.path)
        cls = get_architecture(arch)
        config = cls.config_from_hf(cfg_json)
        weights = WeightStore(_weight_files(src.path))
        if tokenizer:
            from .tokenizer import Tokenizer

            tok = Tokenizer.from_folder(src.path)
    bar = _progress(cls.weight_count(config), f"loading {os.path.basename(src.path)}", progress)
    tick: Callable[[int], Any] | None = bar.update if bar is not None else None
    extra: dict[str, Any] = {}
    if src.kind == "gguf" and not dequantize and _accepts_quantized(cls):
        extra["quantized"] = True
    try:
        model = cls.from_weights(config, weights, device=device, dtype=dt, progress=tick, **extra)
    finally:
        if bar is not None:
            bar.close()
    attach = getattr(model, "attach", None)
    if tok is not None and callable(attach):  # e.g. encoders: `encode(texts)` needs the tokenizer
        attach(tok, src)
    return LoadedModel(model=model, tokenizer=tok, config=config, arch=str(arch), source=src,
                       load_seconds=time.perf_counter() - t0)
