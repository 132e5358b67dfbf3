// Shared by every kernel source of candle-cuda. The loader (candle_cuda/kernels.py) puts a generated
// prelude in front of this file that defines, for one dtype:
//   SFX  the dtype suffix of kernel names (f32, f16, bf16, f64)
//   T    the storage type (16-bit floats are stored as raw `unsigned short` words)
//   CT   the compute type (float, or double for f64)
//   LD(v) / ST(v)  storage -> compute and compute -> storage conversions
// No #include: the same text compiles with NVRTC (cupy.RawModule) and with nvcc (the CI test).
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned char u8;
typedef long long i64;

#define CANDLE_CAT_(a, b) a##_##b
#define CANDLE_CAT(a, b) CANDLE_CAT_(a, b)
// one naming scheme: <op>_<dtype>, e.g. rms_norm_bf16, qmatvec_q4_k_f16
#define KERNEL(name) extern "C" __global__ void CANDLE_CAT(name, SFX)

#ifdef CANDLE_HOST_EMULATION  // tests/test_cuda_host_kernels.py compiles the kernels as C++ for the CPU
__device__ __forceinline__ float f16_to_f32(u16 h) { return host_f16_to_f32(h); }
__device__ __forceinline__ u16 f32_to_f16(float f) { return host_f32_to_f16(f); }
#else
__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}
#endif
__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }
// round to nearest even; NaN stays a (quiet) NaN
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

#define CT_NEG_INF ((CT)(-__int_as_float(0x7f800000)))
__device__ __forceinline__ float ct_exp(float x) { return expf(x); }
__device__ __forceinline__ double ct_exp(double x) { return exp(x); }
__device__ __forceinline__ float ct_log(float x) { return logf(x); }
__device__ __forceinline__ double ct_log(double x) { return log(x); }
__device__ __forceinline__ float ct_rsqrt(float x) { return rsqrtf(x); }
__device__ __forceinline__ double ct_rsqrt(double x) { return rsqrt(x); }
__device__ __forceinline__ float ct_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double ct_max(double a, double b) { return fmax(a, b); }

// Sum / max of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 values and may be reused right after the call.
__device__ __forceinline__ CT warp_sum(CT v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ CT warp_max(CT v) {
    for (int o = 16; o > 0; o >>= 1) v = ct_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ CT block_sum(CT v, CT* scratch) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : (CT)0;
    return warp_sum(v);
}
__device__ __forceinline__ CT block_max(CT v, CT* scratch) {
    v = warp_max(v);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[w] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : CT_NEG_INF;
    return warp_max(v);
}
