"""Reading and writing tensors: safetensors (memory-mapped, parsed by candle itself), numpy's
.npy / .npz (never with pickle), and GGUF (memory-mapped, with vectorised dequantization). Every
loader validates a file before allocating from it and raises `candle.FileFormatError` naming the
file and the problem; every saver writes atomically."""

from __future__ import annotations

from .gguf import GGUFReader
from .gguf_writer import GGUFWriter, write_gguf
from .numpy_io import load_npy, load_npz, save_npy, save_npz
from .safetensors import SafetensorsFile, TensorSlice, load_safetensors, safe_open, save_safetensors

__all__ = ["GGUFReader", "GGUFWriter", "SafetensorsFile", "TensorSlice", "load_npy", "load_npz", "load_safetensors",
           "safe_open", "save_npy", "save_npz", "save_safetensors", "write_gguf"]
