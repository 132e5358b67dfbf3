// GGML quantized weights (the bit-exact numpy reference is candle.io.ggml_quants.dequantize).
//
// A quantized matrix W [N, K] is N rows of row_bytes bytes, each K/QB blocks of TS bytes. Every
// block is read as groups of 32 elements: qg_<type>(block, g) gives the integer values of elements
// 32g..32g+31 as two float16 vectors plus their scales (and mins), from which DQ makes the values
// with the float operations of the reference in the same order (a product and a sum are two
// roundings: no contraction into FMA) and QDOT the dot product with 32 elements of x.
//   qdeq_<type>_f32: W (or the rows `ids` of W) dequantized into a dense float32 [rows, K]
//   qmv<MR>_<type>_f32: out[m, n] = x[m, :] . dequantize(W)[n, :] for MR (1 or 2) rows m of x per
//                       work-item and `nr` consecutive rows n (decode steps, short prompts)
// Built once, as the float32 program (other dtypes cast the float32 result: rounded once). Kernel
// names: qdeq_q4_0_f32, qmv1_q4_k_f32, ... (the type's name in lower case).

// --- unaligned loads (blocks are 18, 20, 22... bytes: fields are only byte- or half-aligned) ----------
#if defined(__clang__)
typedef uchar uchar16_u1 __attribute__((ext_vector_type(16), aligned(1)));
typedef char char16_u1 __attribute__((ext_vector_type(16), aligned(1)));
typedef float float16_u4 __attribute__((ext_vector_type(16), aligned(4)));
typedef uint uint_u1 __attribute__((aligned(1)));
#define LDU16(p) (*(__global const uchar16_u1*)(p))
#define LDC16(p) (*(__global const char16_u1*)(p))
#define LDF16(p) (*(__global const float16_u4*)(p))
#define LDU32(p) (*(__global const uint_u1*)(p))
#define CVT(v, t) __builtin_convertvector((v), t)
#else
#define LDU16(p) vload16(0, (__global const uchar*)(p))
#define LDC16(p) vload16(0, (__global const char*)(p))
#define LDF16(p) vload16(0, (__global const float*)(p))
#define LDU32(p) ((uint)(p)[0] | ((uint)(p)[1] << 8) | ((uint)(p)[2] << 16) | ((uint)(p)[3] << 24))
#define CVT(v, t) convert_##t(v)
#endif

#define QP __global const uchar*
#define U16(v) ((uchar16)(v))
#define SHIFTS16 ((uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))

// IEEE half bits -> float, exact, in integer operations plus one exact product for subnormals (so
// it holds where the device flushes float denormals); inline: PoCL calls vload_half out of line,
// spilling the accumulators around every call. Two at a time: blocks keep d and m side by side.
inline float2 h2f2(uint2 h) {
    uint2 s = (h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 0x3ffu;
    uint2 normal = s | (((h & 0x7fffu) << 13) + (112u << 23));
    uint2 sub = s | as_uint2(CVT(m, float2) * 0x1p-24f);
    uint2 special = s | 0x7f800000u | (m << 13);
    uint2 z = as_uint2(e == 0u), x = as_uint2(e == 31u);  // all ones where true (select() is a call)
    uint2 r = (normal & ~z) | (sub & z);
    return as_float2((r & ~x) | (special & x));
}
#if defined(__clang__) && defined(__F16C__) && !defined(CANDLE_PORTABLE_HALF)
// x86 with F16C (PoCL on a CPU): one vcvtph2ps, exact (denormal halves included)
typedef short v8hi_ __attribute__((vector_size(16)));
typedef float v4sf_ __attribute__((vector_size(16)));
inline float2 h2f_pair(QP p) {
    uint v = LDU32(p);
    v8hi_ h = {(short)(v & 0xffffu), (short)(v >> 16), 0, 0, 0, 0, 0, 0};
    v4sf_ f = __builtin_ia32_vcvtph2ps(h);
    return (float2)(f[0], f[1]);
}
inline float h2f(QP p) {
    v8hi_ h = {*(__global const short*)p, 0, 0, 0, 0, 0, 0, 0};
    return __builtin_ia32_vcvtph2ps(h)[0];
}
#else
inline float2 h2f_pair(QP p) { uint v = LDU32(p); return h2f2((uint2)(v & 0xffffu, v >> 16)); }
inline float h2f(QP p) { return h2f2((uint2)(*(__global const ushort*)p)).x; }
#endif
inline float16 f16v(uchar16 q) { return CVT(q, float16); }

// --- decoders ------------------------------------------------------------------------------------
// qg_<type>(block, g) gives group g (32 elements) of a block as integer values q (exact in float)
// and scales: element j of the group is q[j] * d + m, where d, m are (dl, ml) for j < 16 and (dh, mh)
// for j >= 16 (one product and one sum, rounded separately, as the reference; m only for the types
// with a min, MIN_<type>). SAME_<type>: the two halves share one scale and min.
typedef struct { float16 lo, hi; float dl, dh, ml, mh; } qg_t;

#define MIN_q4_0 0
#define MIN_q4_1 1
#define MIN_q5_0 0
#define MIN_q5_1 1
#define MIN_q8_0 0
#define MIN_q2_k 1
#define MIN_q3_k 0
#define MIN_q4_k 1
#define MIN_q5_k 1
#define MIN_q6_k 0
#define MIN_q8_k 0
#define SAME_q2_k 0
#define SAME_q3_k 0
#define SAME_q6_k 0
#define SAME_q4_0 1
#define SAME_q4_1 1
#define SAME_q5_0 1
#define SAME_q5_1 1
#define SAME_q8_0 1
#define SAME_q4_k 1
#define SAME_q5_k 1
#define SAME_q8_k 1

inline qg_t qg_one(float16 lo, float16 hi, float d, float m) {
    qg_t r;
    r.lo = lo; r.hi = hi; r.dl = d; r.dh = d; r.ml = m; r.mh = m;
    return r;
}

// Q4_0: d, qs[16]: element j < 16 = low nibble of qs[j] - 8, j >= 16 = high nibble of qs[j - 16] - 8
inline qg_t qg_q4_0(QP b, int g) {
    uchar16 q = LDU16(b + 2);
    return qg_one(f16v(q & U16(15)) - 8.0f, f16v(q >> U16(4)) - 8.0f, h2f(b), 0.0f);
}

// Q4_1: d, m, qs[16] (nibbles as Q4_0, unsigned)
inline qg_t qg_q4_1(QP b, int g) {
    uchar16 q = LDU16(b + 4);
    float2 dm = h2f_pair(b);
    return qg_one(f16v(q & U16(15)), f16v(q >> U16(4)), dm.x, dm.y);
}

// the 5-bit values of Q5_0/Q5_1: nibbles plus bit j of the little-endian u32 qh for element j
inline void q5_vals(QP qh_at, QP qs_at, float16* lo, float16* hi) {
    uint qh = LDU32(qh_at);
    uchar16 q = LDU16(qs_at);
    uint16 l = CVT(q & U16(15), uint16) | ((((uint16)qh >> SHIFTS16) & 1u) << 4);
    uint16 h = CVT(q >> U16(4), uint16) | ((((uint16)qh >> (SHIFTS16 + 16u)) & 1u) << 4);
    *lo = CVT(l, float16);
    *hi = CVT(h, float16);
}

// Q5_0: d, qh[4], qs[16]: 5-bit values - 16
inline qg_t qg_q5_0(QP b, int g) {
    float16 l, h;
    q5_vals(b + 2, b + 6, &l, &h);
    return qg_one(l - 16.0f, h - 16.0f, h2f(b), 0.0f);
}

// Q5_1: d, m, qh[4], qs[16]
inline qg_t qg_q5_1(QP b, int g) {
    float16 l, h;
    q5_vals(b + 4, b + 8, &l, &h);
    float2 dm = h2f_pair(b);
    return qg_one(l, h, dm.x, dm.y);
}

// Q8_0: d, qs[32] (int8)
inline qg_t qg_q8_0(QP b, int g) {
    return qg_one(CVT(LDC16(b + 2), float16), CVT(LDC16(b + 18), float16), h2f(b), 0.0f);
}

// --- k-quants: 256-element super-blocks, 8 groups of 32 -------------------------------------------
// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin. Element 128h + 32s + j is
// bits 2s..2s+1 of qs[32h + j]; group g = 4h + s; sub-block (16 elements) i uses scales[i];
// value = q * (d * scale) - dmin * min.
inline qg_t qg_q2_k(QP b, int g) {
    int h = g >> 2, s = g & 3;
    float2 dd = h2f_pair(b + 80);
    uchar s0 = b[2 * g], s1 = b[2 * g + 1];
    uchar sh = (uchar)(2 * s);
    qg_t r;
    r.lo = f16v((LDU16(b + 16 + 32 * h) >> sh) & U16(3));
    r.hi = f16v((LDU16(b + 32 + 32 * h) >> sh) & U16(3));
    r.dl = dd.x * (float)(s0 & 15); r.ml = -(dd.y * (float)(s0 >> 4));
    r.dh = dd.x * (float)(s1 & 15); r.mh = -(dd.y * (float)(s1 >> 4));
    return r;
}

// Q3_K: hmask[32], qs[64], scales[12] (16 6-bit signed scales), d. Element 32g + j (g = 4h + s):
// bits 2s.. of qs[32h + j] + 4 * bit g of hmask[j] - 4.
inline int q3_scale(QP sc, int i) {
    int lo4 = i < 8 ? (sc[i] & 15) : (sc[i - 8] >> 4);
    int hi2 = (sc[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    return (lo4 | (hi2 << 4)) - 32;
}

inline qg_t qg_q3_k(QP b, int g) {
    int h = g >> 2, s = g & 3;
    float d = h2f(b + 108);
    uchar sh = (uchar)(2 * s), hb = (uchar)g;
    uchar16 q0 = ((LDU16(b + 32 + 32 * h) >> sh) & U16(3)) | (((LDU16(b) >> hb) & U16(1)) << U16(2));
    uchar16 q1 = ((LDU16(b + 48 + 32 * h) >> sh) & U16(3)) | (((LDU16(b + 16) >> hb) & U16(1)) << U16(2));
    qg_t r;
    r.lo = f16v(q0) - 4.0f;
    r.hi = f16v(q1) - 4.0f;
    r.dl = d * (float)q3_scale(b + 96, 2 * g);
    r.dh = d * (float)q3_scale(b + 96, 2 * g + 1);
    r.ml = r.mh = 0.0f;
    return r;
}

// Q4_K/Q5_K: d * scale and dmin * min of group g (6-bit scales and mins packed in 12 bytes at p)
inline float2 k4_scale_min(QP p, QP dd_at, int g) {
    int sc, mn;
    if (g < 4) {
        sc = p[g] & 63;
        mn = p[g + 4] & 63;
    } else {
        sc = (p[g + 4] & 15) | ((p[g - 4] >> 6) << 4);
        mn = (p[g + 4] >> 4) | ((p[g] >> 6) << 4);
    }
    float2 dd = h2f_pair(dd_at);
    return (float2)(dd.x * (float)sc, dd.y * (float)mn);
}

// Q4_K: d, dmin, scales[12], qs[128]. Group g = 2c + half: nibble `half` of qs[32c + j];
// value = q * (d * scale) - dmin * min.
inline qg_t qg_q4_k(QP b, int g) {
    float2 sm = k4_scale_min(b + 4, b, g);
    QP q = b + 16 + 32 * (g >> 1);
    uchar sh = (uchar)(4 * (g & 1));
    return qg_one(f16v((LDU16(q) >> sh) & U16(15)), f16v((LDU16(q + 16) >> sh) & U16(15)), sm.x, -sm.y);
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128]. As Q4_K plus bit g of qh[j] as the 5th bit.
inline qg_t qg_q5_k(QP b, int g) {
    float2 sm = k4_scale_min(b + 4, b, g);
    QP q = b + 48 + 32 * (g >> 1);
    uchar sh = (uchar)(4 * (g & 1)), hb = (uchar)g;
    uchar16 l = ((LDU16(q) >> sh) & U16(15)) | (((LDU16(b + 16) >> hb) & U16(1)) << U16(4));
    uchar16 h = ((LDU16(q + 16) >> sh) & U16(15)) | (((LDU16(b + 32) >> hb) & U16(1)) << U16(4));
    return qg_one(f16v(l), f16v(h), sm.x, -sm.y);
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d. Element 128h + 64s + 32c + j (g = 4h + 2s + c): low
// 4 bits = nibble s of ql[64h + 32c + j], high 2 bits = bits 2(2s + c) of qh[32h + j]; minus 32.
inline qg_t qg_q6_k(QP b, int g) {
    int h = g >> 2, s = (g >> 1) & 1, c = g & 1;
    float d = h2f(b + 208);
    QP ql = b + 64 * h + 32 * c;
    QP qh = b + 128 + 32 * h;
    uchar sl = (uchar)(4 * s), shh = (uchar)(2 * (2 * s + c));
    uchar16 l = ((LDU16(ql) >> sl) & U16(15)) | (((LDU16(qh) >> shh) & U16(3)) << U16(4));
    uchar16 u = ((LDU16(ql + 16) >> sl) & U16(15)) | (((LDU16(qh + 16) >> shh) & U16(3)) << U16(4));
    qg_t r;
    r.lo = f16v(l) - 32.0f;
    r.hi = f16v(u) - 32.0f;
    r.dl = d * (float)((char)b[192 + 2 * g]);
    r.dh = d * (float)((char)b[193 + 2 * g]);
    r.ml = r.mh = 0.0f;
    return r;
}

// Q8_K: d (float32), qs[256] (int8), bsums (unused here)
inline qg_t qg_q8_k(QP b, int g) {
    return qg_one(CVT(LDC16(b + 4 + 32 * g), float16), CVT(LDC16(b + 20 + 32 * g), float16),
                  *(__global const float*)b, 0.0f);
}

// the dequantized values of a group, with the reference's roundings (no contraction into FMA)
#define DQ(TY, r, lo, hi) {                                                                          \
    _Pragma("OPENCL FP_CONTRACT OFF")                                                                \
    lo = r.lo * r.dl; hi = r.hi * r.dh;                                                              \
    if (MIN_##TY) { lo = lo + r.ml; hi = hi + r.mh; }                                                \
}

// acc (+ accm) += the group's dot product with xl (elements 0..15), xh (16..31): the scales are
// applied to the sums of q * x (and the min to the sum of x), so accumulation order differs from
// dequantize-then-multiply (within float32 matmul tolerance)
#define QDOT(TY, r, xl, xh, acc, accm) {                                                             \
    if (SAME_##TY) {                                                                                 \
        acc = (r.lo * (xl) + r.hi * (xh)) * r.dl + acc;                                              \
        if (MIN_##TY) accm = ((xl) + (xh)) * r.ml + accm;                                            \
    } else {                                                                                         \
        acc = (r.lo * (xl)) * r.dl + acc;                                                            \
        acc = (r.hi * (xh)) * r.dh + acc;                                                            \
        if (MIN_##TY) { accm = (xl) * r.ml + accm; accm = (xh) * r.mh + accm; }                      \
    }                                                                                                \
}

// --- kernels ----------------------------------------------------------------------------------------
// work-item t: group t of the output [rows, K] (gpr = K / 32 groups per row). Source row r is row
// ids[r] of W when use_ids (out-of-range ids clamped: a kernel cannot raise), else r.
#define QDEQ(TY, QB, TS)                                                                             \
__kernel void qdeq_##TY##_f32(long total, long gpr, long rowbytes, long nsrc, __global float* out,  \
                             __global const uchar* W, long woff, __global const long* ids, long ioff, \
                             int use_ids) {                                                          \
    long t = get_global_id(0);                                                                       \
    if (t >= total) return;                                                                          \
    long r = t / gpr, gi = t % gpr;                                                                  \
    long src = use_ids ? clamp(ids[ioff + r], 0L, nsrc - 1) : r;                                     \
    const int ng = QB / 32;                                                                          \
    QP b = W + woff + src * rowbytes + (gi / ng) * TS;                                               \
    qg_t q_ = qg_##TY(b, (int)(gi % ng));                                                            \
    float16 lo, hi;                                                                                  \
    DQ(TY, q_, lo, hi)                                                                               \
    VS8(lo.lo, 0, out + t * 32); VS8(lo.hi, 1, out + t * 32);                                        \
    VS8(hi.lo, 2, out + t * 32); VS8(hi.hi, 3, out + t * 32);                                        \
}

inline float hsum16(float16 v) {
    float8 s8 = v.lo + v.hi;
    float4 s4 = s8.lo + s8.hi;
    return (s4.x + s4.y) + (s4.z + s4.w);
}

// qmv1: one row of x; work-item i: rows n in [i*nr, i*nr + nr) of W
#define QMV1(TY, QB, TS)                                                                             \
__kernel void qmv1_##TY##_f32(long N, long K, long rowbytes, long nr, __global float* out,           \
                              __global const float* x, long xoff, __global const uchar* W, long woff) { \
    long n0 = get_global_id(0) * nr, n1 = n0 + nr < N ? n0 + nr : N;                                 \
    __global const float* xp = x + xoff;                                                             \
    const int ng = QB / 32;                                                                          \
    long nb = K / QB;                                                                                \
    for (long n = n0; n < n1; ++n) {                                                                 \
        QP row = W + woff + n * rowbytes;                                                            \
        float16 acc = 0.0f, accm = 0.0f;                                                             \
        for (long ib = 0; ib < nb; ++ib) {                                                           \
            QP b = row + ib * TS;                                                                    \
            __global const float* xb = xp + ib * QB;                                                 \
            _Pragma("unroll") for (int g = 0; g < ng; ++g) {                                         \
                qg_t r = qg_##TY(b, g);                                                              \
                QDOT(TY, r, LDF16(xb + 32 * g), LDF16(xb + 32 * g + 16), acc, accm)                  \
            }                                                                                        \
        }                                                                                            \
        out[n] = hsum16(MIN_##TY ? acc + accm : acc);                                                \
    }                                                                                                \
}

// qmv2: two rows of x (rows m0, m0 + 1; a missing second row repeats the first) per work-item: W is
// read once per two rows of x (more rows per work-item spill the accumulators to the stack)
#define QMV2(TY, QB, TS)                                                                             \
__kernel void qmv2_##TY##_f32(long N, long K, long M, long rowbytes, long nr, __global float* out,   \
                              __global const float* x, long xoff, __global const uchar* W, long woff) { \
    long n0 = get_global_id(0) * nr, n1 = n0 + nr < N ? n0 + nr : N, m0 = get_global_id(1) * 2;      \
    if (m0 >= M) return;                                                                             \
    __global const float* x0 = x + xoff + m0 * K;                                                    \
    __global const float* x1 = x + xoff + (m0 + 1 < M ? m0 + 1 : m0) * K;                            \
    const int ng = QB / 32;                                                                          \
    long nb = K / QB;                                                                                \
    for (long n = n0; n < n1; ++n) {                                                                 \
        QP row = W + woff + n * rowbytes;                                                            \
        float16 a0 = 0.0f, a1 = 0.0f, c0 = 0.0f, c1 = 0.0f;                                          \
        for (long ib = 0; ib < nb; ++ib) {                                                           \
            QP b = row + ib * TS;                                                                    \
            _Pragma("unroll") for (int g = 0; g < ng; ++g) {                                         \
                qg_t r = qg_##TY(b, g);                                                              \
                long k = ib * QB + 32 * g;                                                           \
                QDOT(TY, r, LDF16(x0 + k), LDF16(x0 + k + 16), a0, c0)                               \
                QDOT(TY, r, LDF16(x1 + k), LDF16(x1 + k + 16), a1, c1)                               \
            }                                                                                        \
        }                                                                                            \
        __global float* o = out + m0 * N + n;                                                        \
        o[0] = hsum16(MIN_##TY ? a0 + c0 : a0);                                                      \
        if (m0 + 1 < M) o[N] = hsum16(MIN_##TY ? a1 + c1 : a1);                                      \
    }                                                                                                \
}

#define QTYPE(TY, QB, TS) QDEQ(TY, QB, TS) QMV1(TY, QB, TS) QMV2(TY, QB, TS)

QTYPE(q4_0, 32, 18)
QTYPE(q4_1, 32, 20)
QTYPE(q5_0, 32, 22)
QTYPE(q5_1, 32, 24)
QTYPE(q8_0, 32, 34)
QTYPE(q2_k, 256, 84)
QTYPE(q3_k, 256, 110)
QTYPE(q4_k, 256, 144)
QTYPE(q5_k, 256, 176)
QTYPE(q6_k, 256, 210)
QTYPE(q8_k, 256, 292)
