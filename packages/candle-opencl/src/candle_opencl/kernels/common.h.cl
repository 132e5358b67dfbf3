// candle-opencl: definitions every program starts with (prepended by runtime.py).
//
// A program is built for one dtype (or a pair, for casts) from defines on the build line:
//   T        storage type (float, double, half, ushort for bfloat16, long, uint, uchar)
//   CT       compute type (float for half/bfloat16, else T)
//   LD(p, i) load element i of a T pointer as CT;  ST(p, i, v) store a CT value
//   SFX      the dtype's short name (f32, f64, f16, bf16, i64, u32, u8): kernel names end with it
//   IS_FLOAT, IS_SIGNED, IS_F64
// Kernel naming scheme: <op>_<variant>_<dtype>, variant c = contiguous operands, s = strided
// (a geometry struct), or a descriptive word (mm_nn, reduce_wg...).

#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define MAXD 6
#define CH 16
#define SCH 64  // strided kernels: elements of the innermost dim per work-item (fewer index divisions)

// kernel name: op_variant_dtype. The op is pasted before any expansion (the OpenCL headers define
// builtins such as exp or max as macros); inside another macro, paste there: KNP(name##_c).
#define KN(op, var) KNP(op##_##var)
#define KNP(x) KNP_(x, SFX)
#define KNP_(x, s) KNP__(x, s)
#define KNP__(x, s) x##_##s

inline float bf16_to_f(ushort v) { return as_float(((uint)v) << 16); }
inline ushort f_to_bf16(float f) {
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (ushort)(u >> 16);
}

#define LD_plain(p, i) ((p)[i])
#define ST_plain(p, i, v) ((p)[i] = (v))
#define LD_half(p, i) vload_half((i), (p))
#define ST_half(p, i, v) vstore_half_rte((v), (i), (p))
#define LD_bf16(p, i) bf16_to_f((p)[i])
#define ST_bf16(p, i, v) ((p)[i] = f_to_bf16(v))

#define C(v) ((CT)(v))
// NaN test and vector selection written as operators: PoCL calls the isnan/select builtins out of
// line, spilling the caller's registers around every call (a per-element call in hot loops)
#define ISNAN(x) ((x) != (x))

// Unaligned vector loads/stores of global memory. PoCL calls its vloadn/vstoren builtins out of
// line (spilling the caller's registers around every call); with clang, a vector type of element
// alignment is a plain (unaligned) SIMD load/store instead.
#if defined(__clang__)
typedef float float8_u __attribute__((ext_vector_type(8), aligned(4)));
typedef float float4_u __attribute__((ext_vector_type(4), aligned(4)));
typedef float float2_u __attribute__((ext_vector_type(2), aligned(4)));
typedef ushort ushort8_u __attribute__((ext_vector_type(8), aligned(2)));
#define VL8(i, p) (*(__global const float8_u*)((p) + 8 * (i)))
#define VS8(v, i, p) (*(__global float8_u*)((p) + 8 * (i)) = (v))
#define VL4(i, p) (*(__global const float4_u*)((p) + 4 * (i)))
#define VL2(i, p) (*(__global const float2_u*)((p) + 2 * (i)))
#define VL8US(p) (*(__global const ushort8_u*)(p))
#define VS8US(v, p) (*(__global ushort8_u*)(p) = (v))
#else
#define VL8(i, p) vload8((i), (p))
#define VS8(v, i, p) vstore8((v), (i), (p))
#define VL4(i, p) vload4((i), (p))
#define VL2(i, p) vload2((i), (p))
#define VL8US(p) vload8(0, (p))
#define VS8US(v, p) vstore8((v), 0, (p))
#endif

// 8-wide vector access for float dtypes (VT = float8 or double8; VLD/VST given on the build line):
// load or store the 8 elements at p + o
#define VLD_plain(p, o) VL8(0, (p) + (o))
#define VST_plain(p, o, v) VS8((v), 0, (p) + (o))
#define VLD_half(p, o) vload_half8(0, (p) + (o))
#define VST_half(p, o, v) vstore_half8_rte((v), 0, (p) + (o))
#define VLD_bf16(p, o) as_float8(convert_uint8(VL8US((p) + (o))) << 16)
inline ushort8 f8_to_bf16(float8 v) {
    uint8 u = as_uint8(v);
    uint8 r = (u + (uint8)0x7fffu + ((u >> 16) & (uint8)1u)) >> 16;
    uint8 q = (u >> 16) | (uint8)0x40u;
    return convert_ushort8(((u & (uint8)0x7fffffffu) > (uint8)0x7f800000u) ? q : r);
}
#define VST_bf16(p, o, v) VS8US(f8_to_bf16(v), (p) + (o))

// Geometry of a strided map over up to 4 operands (slot 0 is the output): the shape is collapsed
// (size-1 dims dropped, mergeable dims merged) by the host; each work-item handles SCH consecutive
// elements of the innermost dim. All fields are longs, so the host packs it as an int64 array.
typedef struct {
    long nd;
    long nch;
    long outer;
    long off[4];
    long shape[MAXD];
    long st[4][MAXD];
} geom_t;

#define STRIDED_LOOP(g)                                                                              \
    long gid = get_global_id(0);                                                                     \
    if (gid >= (g).outer * (g).nch) return;                                                          \
    long chunk = gid % (g).nch, r_ = gid / (g).nch;                                                   \
    long p0 = (g).off[0], p1 = (g).off[1], p2 = (g).off[2], p3 = (g).off[3];                           \
    for (int d = (int)(g).nd - 2; d >= 0; --d) {                                                     \
        long c_ = r_ % (g).shape[d];                                                                 \
        r_ /= (g).shape[d];                                                                          \
        p0 += c_ * (g).st[0][d]; p1 += c_ * (g).st[1][d]; p2 += c_ * (g).st[2][d]; p3 += c_ * (g).st[3][d]; \
    }                                                                                                \
    int last_ = (int)(g).nd - 1;                                                                     \
    long i0 = chunk * SCH, i1 = min(i0 + SCH, (g).shape[last_]);                                      \
    long s0 = (g).st[0][last_], s1 = (g).st[1][last_], s2 = (g).st[2][last_], s3 = (g).st[3][last_];  \
    p0 += i0 * s0; p1 += i0 * s1; p2 += i0 * s2; p3 += i0 * s3;                                       \
    for (long i = i0; i < i1; ++i, p0 += s0, p1 += s1, p2 += s2, p3 += s3)

#define CONTIG_LOOP(n)                                                                               \
    long i0 = get_global_id(0) * CH, i1 = min(i0 + CH, (n));                                         \
    for (long i = i0; i < i1; ++i)
