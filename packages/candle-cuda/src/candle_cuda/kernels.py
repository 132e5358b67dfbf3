"""The CUDA C sources in `kernels/`, made into one text per (file, dtype), and their kernel names.

Each `.cu` file is compiled once per dtype it is used with: the text is `dtypes.prelude(dtype)` (the
`#define`s of SFX, T, CT, LD, ST) + `kernels/common.cuh` + the file. Kernels are declared with
`KERNEL(op)`, which names them `<op>_<dtype>` (one naming scheme for the whole backend: `rms_norm_bf16`,
`qmatvec_q4_k_f16`). Nothing here imports CuPy: `runtime.Runtime.module` compiles the text with
`cupy.RawModule` (NVRTC) once per process; tests/test_cuda.py compiles the same text with nvcc.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from .dtypes import KERNEL_DTYPES, prelude

#: kernel source file -> the dtypes it is compiled for
FILES: dict[str, tuple[str, ...]] = {
    "norm": KERNEL_DTYPES,
    "act": KERNEL_DTYPES,
    "rope": KERNEL_DTYPES,
    "attention": KERNEL_DTYPES,
    "pool": KERNEL_DTYPES,
    "quant": ("f32", "f16", "bf16", "f64"),
}

#: GGML types with CUDA kernels (`qdequantize_<t>`, `qmatvec_<t>` in quant.cu), by their upper-case name
QUANT_TYPES: tuple[str, ...] = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")

#: NVRTC options: C++17, fast math off (the roundings of the references must hold)
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)


@cache
def _read(name: str) -> str:
    return resources.files("candle_cuda").joinpath("kernels", name).read_text(encoding="utf-8")


def source(file: str, dtype: str) -> str:
    """The complete CUDA C text of `kernels/<file>.cu` for `dtype`."""
    if file not in FILES:
        raise KeyError(f"candle-cuda has no kernel file {file!r} (files: {', '.join(sorted(FILES))})")
    if dtype not in FILES[file]:
        raise KeyError(f"kernels/{file}.cu is not built for {dtype} (dtypes: {', '.join(FILES[file])})")
    return prelude(dtype) + _read("common.cuh") + "\n" + _read(f"{file}.cu")


_KERNEL_RE = re.compile(r"\bKERNEL\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
_QK_RE = re.compile(r"^QKERNELS\(\s*([a-z0-9_]+)\s*\)", re.M)


def ops(file: str) -> list[str]:
    """The op names declared in `kernels/<file>.cu` (the `KERNEL(op)` lines, quant's per-type ops)."""
    text = _read(f"{file}.cu")
    names = [n for n in _KERNEL_RE.findall(text) if "##" not in n]
    for qt in _QK_RE.findall(text):
        names += [f"qdequantize_{qt}", f"qmatvec_{qt}"]
    return [n for n in names if not n.endswith("_")]


def kernel_name(op: str, dtype: str) -> str:
    """The symbol of `op` compiled for `dtype`: `<op>_<dtype>`."""
    return f"{op}_{dtype}"


def kernel_names(file: str, dtype: str) -> list[str]:
    """Every kernel symbol `kernels/<file>.cu` defines when compiled for `dtype`."""
    return [kernel_name(op, dtype) for op in ops(file)]


_SIG_RE = re.compile(r"KERNEL\(\s*([A-Za-z0-9_#]+)\s*\)\s*\(([^)]*)\)", re.S)


def signatures(file: str) -> dict[str, list[str]]:
    """op -> the kinds of its parameters in order (for checking launches): `ptr:T`, `ptr:u8`, `ptr:i64`
    (pointers to storage-type, byte or int64 elements), `i64`, `int` or `CT`."""
    text = _read(f"{file}.cu").replace("\\\n", "\n")
    out: dict[str, list[str]] = {}
    qtypes = _QK_RE.findall(text)
    for name, params in _SIG_RE.findall(text):
        kinds = []
        for p in params.split(","):
            p = p.strip()
            if "*" in p:
                base = p.replace("const", "").split("*")[0].strip()
                if base not in ("T", "u8", "i64"):
                    raise ValueError(f"kernels/{file}.cu: pointer parameter {p!r} of {name} has an unknown type")
                kinds.append(f"ptr:{base}")
            elif p.startswith("i64"):
                kinds.append("i64")
            elif p.startswith("int"):
                kinds.append("int")
            elif p.startswith("CT"):
                kinds.append("CT")
            else:
                raise ValueError(f"kernels/{file}.cu: parameter {p!r} of {name} has a type the loader does not know")
        if "##" in name:
            for qt in qtypes:
                out[name.replace("##QT", qt)] = kinds
        else:
            out[name] = kinds
    return out
