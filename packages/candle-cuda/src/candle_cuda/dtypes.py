"""How candle's dtypes live on the GPU: storage dtypes of the CuPy arrays, C types of the kernels, and
cuBLAS data types. Pure Python (no CuPy import).

CuPy has no bfloat16: bfloat16 tensors are CuPy `uint16` arrays of the raw bits (candle has no uint16
dtype, so a uint16 array is always bfloat16). float16 is CuPy's own `float16`. Kernels see both 16-bit
types as `unsigned short` words and convert to float32 themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

#: candle short name -> numpy/CuPy dtype name of the storage array
STORAGE: dict[str, str] = {
    "f32": "float32", "f64": "float64", "f16": "float16", "bf16": "uint16",
    "i64": "int64", "u32": "uint32", "u8": "uint8",
}

#: the dtypes the fused kernels are compiled for
KERNEL_DTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "f64")

#: cudaDataType_t of the float dtypes (library_types.h)
CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF = 0, 1, 2, 14
CUDA_DATA_TYPE: dict[str, int] = {"f32": CUDA_R_32F, "f64": CUDA_R_64F, "f16": CUDA_R_16F, "bf16": CUDA_R_16BF}

#: cublasComputeType_t (cublas_api.h): float32 accumulation for f32/f16/bf16, float64 for f64
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_64F = 68, 70
CUBLAS_GEMM_DEFAULT = -1


@dataclass(frozen=True)
class KernelType:
    """The C side of one dtype: storage type, compute type, and the conversions between them."""

    sfx: str
    T: str
    CT: str
    LD: str
    ST: str
    ct_numpy: str  # numpy dtype name of scalar kernel arguments of type CT


KERNEL_TYPES: dict[str, KernelType] = {
    "f32": KernelType("f32", "float", "float", "(v)", "(v)", "float32"),
    "f64": KernelType("f64", "double", "double", "(v)", "(v)", "float64"),
    "f16": KernelType("f16", "unsigned short", "float", "f16_to_f32(v)", "f32_to_f16(v)", "float32"),
    "bf16": KernelType("bf16", "unsigned short", "float", "bf16_to_f32(v)", "f32_to_bf16(v)", "float32"),
}


def storage_dtype(short: str) -> str:
    """The CuPy dtype name storing candle dtype `short` (e.g. `bf16` -> `uint16`)."""
    return STORAGE[short]


def kernel_type(short: str) -> KernelType:
    """The `KernelType` of a float dtype; KeyError for dtypes the fused kernels are not built for."""
    return KERNEL_TYPES[short]


def prelude(short: str) -> str:
    """The `#define` block that makes a kernel source (kernels/common.cuh and a .cu file) one dtype."""
    k = KERNEL_TYPES[short]
    return (f"#define SFX {k.sfx}\n#define T {k.T}\n#define CT {k.CT}\n"
            f"#define LD(v) {k.LD}\n#define ST(v) {k.ST}\n")


def cuda_data_type(short: str) -> int:
    """cudaDataType_t of a float dtype (for cublasGemmStridedBatchedEx)."""
    return CUDA_DATA_TYPE[short]


def compute_type(short: str) -> int:
    """cublasComputeType_t for a GEMM in dtype `short`: float32 accumulation except float64."""
    return CUBLAS_COMPUTE_64F if short == "f64" else CUBLAS_COMPUTE_32F
