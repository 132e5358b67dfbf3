// GGML quantized weights W [N, K] (raw blocks, N rows of row_bytes bytes; blocks along K) - see
// notes/QUANT_INTERFACE.md and candle/io/ggml_quants.py, the bit-exact numpy reference. deq_<type>(row, k)
// decodes element k of a row with the same float32 roundings as the reference (explicit __fmul_rn /
// __fadd_rn / __fsub_rn: no fused multiply-add may change a bit). Blocks are byte-aligned only, so every
// multi-byte field is read byte by byte.

__device__ __forceinline__ float q_f16(const u8* p) { return f16_to_f32((u16)(p[0] | (p[1] << 8))); }
__device__ __forceinline__ u32 q_u32(const u8* p) {
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// Q4_0: 18 bytes per 32: d (f16), 16 bytes of nibbles (low nibbles: elements 0-15, high: 16-31)
__device__ __forceinline__ float deq_q4_0(const u8* row, i64 k) {
    const u8* blk = row + (k >> 5) * 18;
    int j = (int)(k & 31);
    int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
    return __fmul_rn((float)(q - 8), q_f16(blk));
}
// Q4_1: 20 bytes per 32: d, m (f16), nibbles; q * d + m (two roundings)
__device__ __forceinline__ float deq_q4_1(const u8* row, i64 k) {
    const u8* blk = row + (k >> 5) * 20;
    int j = (int)(k & 31);
    int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
    return __fadd_rn(__fmul_rn((float)q, q_f16(blk)), q_f16(blk + 2));
}
// Q5_0: 22 bytes per 32: d, qh (u32: bit j is the 5th bit of element j), nibbles; (q - 16) * d
__device__ __forceinline__ float deq_q5_0(const u8* row, i64 k) {
    const u8* blk = row + (k >> 5) * 22;
    int j = (int)(k & 31);
    int lo = j < 16 ? (blk[6 + j] & 15) : (blk[6 + j - 16] >> 4);
    int q = lo | (int)(((q_u32(blk + 2) >> j) & 1u) << 4);
    return __fmul_rn((float)(q - 16), q_f16(blk));
}
// Q5_1: 24 bytes per 32: d, m, qh, nibbles; q * d + m
__device__ __forceinline__ float deq_q5_1(const u8* row, i64 k) {
    const u8* blk = row + (k >> 5) * 24;
    int j = (int)(k & 31);
    int lo = j < 16 ? (blk[8 + j] & 15) : (blk[8 + j - 16] >> 4);
    int q = lo | (int)(((q_u32(blk + 4) >> j) & 1u) << 4);
    return __fadd_rn(__fmul_rn((float)q, q_f16(blk)), q_f16(blk + 2));
}
// Q8_0: 34 bytes per 32: d, 32 int8
__device__ __forceinline__ float deq_q8_0(const u8* row, i64 k) {
    const u8* blk = row + (k >> 5) * 34;
    return __fmul_rn((float)(signed char)blk[2 + (k & 31)], q_f16(blk));
}
// the 6-bit scale and min of sub-block s (0-7) packed in the 12 bytes of Q4_K/Q5_K blocks
__device__ __forceinline__ void k_scale_min(const u8* sc, int s, int* scale, int* mn) {
    if (s < 4) {
        *scale = sc[s] & 63;
        *mn = sc[s + 4] & 63;
    } else {
        *scale = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
        *mn = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}
// Q4_K: 144 bytes per 256: d, dmin (f16), 12 scale bytes, 128 nibble bytes; element 64c + 32h + j is
// nibble h of byte 32c + j, sub-block s = 2c + h; q * (d * scale_s) - dmin * min_s
__device__ __forceinline__ float deq_q4_k(const u8* row, i64 k) {
    const u8* blk = row + (k >> 8) * 144;
    int i = (int)(k & 255), s = i >> 5, j = i & 31, c = s >> 1;
    int byte = blk[16 + 32 * c + j];
    int q = (s & 1) ? (byte >> 4) : (byte & 15);
    int sc, mn;
    k_scale_min(blk + 4, s, &sc, &mn);
    float dsc = __fmul_rn(q_f16(blk), (float)sc), dm = __fmul_rn(q_f16(blk + 2), (float)mn);
    return __fsub_rn(__fmul_rn((float)q, dsc), dm);
}
// Q5_K: 176 bytes per 256: d, dmin, 12 scale bytes, 32 high-bit bytes (bit s of byte j: element 32s + j),
// 128 nibble bytes as in Q4_K
__device__ __forceinline__ float deq_q5_k(const u8* row, i64 k) {
    const u8* blk = row + (k >> 8) * 176;
    int i = (int)(k & 255), s = i >> 5, j = i & 31, c = s >> 1;
    int byte = blk[48 + 32 * c + j];
    int q = ((s & 1) ? (byte >> 4) : (byte & 15)) | (((blk[16 + j] >> s) & 1) << 4);
    int sc, mn;
    k_scale_min(blk + 4, s, &sc, &mn);
    float dsc = __fmul_rn(q_f16(blk), (float)sc), dm = __fmul_rn(q_f16(blk + 2), (float)mn);
    return __fsub_rn(__fmul_rn((float)q, dsc), dm);
}
// Q6_K: 210 bytes per 256: ql[128], qh[64], int8 scales[16], d (f16). Element 128h + 64s + 32c + j: low
// 4 bits = nibble s of ql[64h + 32c + j], high 2 bits = bits 2(2s + c) of qh[32h + j];
// (q - 32) * (d * scale[element / 16])
__device__ __forceinline__ float deq_q6_k(const u8* row, i64 k) {
    const u8* blk = row + (k >> 8) * 210;
    int i = (int)(k & 255), h = i >> 7, s = (i >> 6) & 1, c = (i >> 5) & 1, j = i & 31;
    int lb = blk[64 * h + 32 * c + j];
    int lo = s ? (lb >> 4) : (lb & 15);
    int hi = (blk[128 + 32 * h + j] >> (2 * (2 * s + c))) & 3;
    float dl = __fmul_rn(q_f16(blk + 208), (float)(signed char)blk[192 + (i >> 4)]);
    return __fmul_rn((float)((lo | (hi << 4)) - 32), dl);
}

// qdequantize_<type>: W -> y [N, K] of dtype T (float32 bits equal the reference; other dtypes round once)
// qmatvec_<type>: y [M, N] = x [M, K] @ W^T for few rows M: one warp per output column n and up to
// QMV_ROWS rows of x (blockIdx.y picks the group of rows); lanes split K, the dot products accumulate in
// float32 (double for f64) and are reduced with warp shuffles.
#define QMV_ROWS 8
#define QKERNELS(QT)                                                                                       \
    KERNEL(qdequantize_##QT)(const u8* __restrict__ w, T* __restrict__ y, i64 N, i64 K, i64 row_bytes) {  \
        i64 total = N * K;                                                                                 \
        for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total;                                \
             t += (i64)gridDim.x * blockDim.x) {                                                           \
            i64 n = t / K, kk = t % K;                                                                     \
            y[t] = ST((CT)deq_##QT(w + n * row_bytes, kk));                                                \
        }                                                                                                  \
    }                                                                                                      \
    KERNEL(qmatvec_##QT)(const T* __restrict__ x, const u8* __restrict__ w, T* __restrict__ y, i64 M,      \
                         i64 N, i64 K, i64 row_bytes) {                                                    \
        const int lane = threadIdx.x & 31;                                                                 \
        const i64 n = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                            \
        const i64 m0 = (i64)blockIdx.y * QMV_ROWS;                                                         \
        if (n >= N) return;                                                                                \
        const u8* row = w + n * row_bytes;                                                                 \
        CT acc[QMV_ROWS];                                                                                  \
        _Pragma("unroll") for (int r = 0; r < QMV_ROWS; ++r) acc[r] = (CT)0;                               \
        for (i64 kk = lane; kk < K; kk += 32) {                                                            \
            CT wv = (CT)deq_##QT(row, kk);                                                                 \
            _Pragma("unroll") for (int r = 0; r < QMV_ROWS; ++r) {                                         \
                if (m0 + r < M) acc[r] += LD(x[(m0 + r) * K + kk]) * wv;                                  \
            }                                                                                              \
        }                                                                                                  \
        _Pragma("unroll") for (int r = 0; r < QMV_ROWS; ++r) {                                             \
            CT s = warp_sum(acc[r]);                                                                       \
            if (lane == 0 && m0 + r < M) y[(m0 + r) * N + n] = ST(s);                                      \
        }                                                                                                  \
    }

QKERNELS(q4_0)
QKERNELS(q4_1)
QKERNELS(q5_0)
QKERNELS(q5_1)
QKERNELS(q8_0)
QKERNELS(q4_k)
QKERNELS(q5_k)
QKERNELS(q6_k)
