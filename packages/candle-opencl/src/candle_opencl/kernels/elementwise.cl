// Elementwise kernels of one dtype: unary, affine, powf, elu, clamp, binary, cmp, where, copy, fill.
// Each op has a contiguous variant (c: operands are dense, with an element offset each) and a
// strided one (s: a geom_t with broadcasting strides, slot 0 the output).

// @include scalar_ops.h.cl

// ---------------------------------------------------------------------------------------------
#define UNARY(name, expr)                                                                            \
__kernel void KNP(name##_c)(long n, __global T* out, long o0, __global const T* a, long o1) {          \
    out += o0; a += o1;                                                                              \
    CONTIG_LOOP(n) { CT x = LD(a, i); ST(out, i, (expr)); }                                          \
}                                                                                                    \
__kernel void KNP(name##_s)(geom_t g, __global T* out, __global const T* a) {                          \
    STRIDED_LOOP(g) { CT x = LD(a, p1); ST(out, p0, (expr)); }                                       \
}

UNARY(neg, -x)
UNARY(sqr, x * x)
UNARY(relu, op_relu(x))
UNARY(sign, op_sign(x))
#if IS_FLOAT
UNARY(abs, fabs(x))
UNARY(sqrt, sqrt(x))
UNARY(rsqrt, C(1) / sqrt(x))
UNARY(recip, C(1) / x)
UNARY(exp, exp(x))
UNARY(expm1, expm1(x))
UNARY(log, log(x))
UNARY(log1p, log1p(x))
UNARY(sin, sin(x))
UNARY(cos, cos(x))
UNARY(tan, tan(x))
UNARY(tanh, tanh(x))
UNARY(erf, erf(x))
UNARY(gelu, op_gelu(x))
UNARY(gelu_erf, op_gelu_erf(x))
UNARY(silu, x / (C(1) + exp(-x)))
UNARY(sigmoid, C(1) / (C(1) + exp(-x)))
UNARY(floor, floor(x))
UNARY(ceil, ceil(x))
UNARY(round, rint(x))
UNARY(trunc, trunc(x))
#else
UNARY(abs, op_abs(x))
#endif

// ---------------------------------------------------------------------------------------------
// x * mul + add (integers compute in long: the scalars may exceed the dtype), x ** e, elu, clamp
#if IS_FLOAT
#define AFFINE_EXPR ((CT)(x * mul + add))
#define ST_T CT
#else
#define AFFINE_EXPR ((CT)((long)x * mul + add))
#define ST_T long
#endif
__kernel void KN(affine, c)(long n, __global T* out, long o0, __global const T* a, long o1, ST_T mul, ST_T add) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { CT x = LD(a, i); ST(out, i, AFFINE_EXPR); }
}
__kernel void KN(affine, s)(geom_t g, __global T* out, __global const T* a, ST_T mul, ST_T add) {
    STRIDED_LOOP(g) { CT x = LD(a, p1); ST(out, p0, AFFINE_EXPR); }
}
// clamp: flags bit 0 = low given, bit 1 = high given (NaN stays NaN, like numpy's maximum/minimum)
#define CLAMP_EXPR(x) (((flags & 1) ? ((flags & 2) ? op_min(op_max(x, lo), hi) : op_max(x, lo)) : ((flags & 2) ? op_min(x, hi) : x)))
__kernel void KN(clamp, c)(long n, __global T* out, long o0, __global const T* a, long o1, CT lo, CT hi, int flags) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { CT x = LD(a, i); ST(out, i, CLAMP_EXPR(x)); }
}
__kernel void KN(clamp, s)(geom_t g, __global T* out, __global const T* a, CT lo, CT hi, int flags) {
    STRIDED_LOOP(g) { CT x = LD(a, p1); ST(out, p0, CLAMP_EXPR(x)); }
}
#if IS_FLOAT
__kernel void KN(powf, c)(long n, __global T* out, long o0, __global const T* a, long o1, CT e) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { CT x = LD(a, i); ST(out, i, pow(x, e)); }
}
__kernel void KN(powf, s)(geom_t g, __global T* out, __global const T* a, CT e) {
    STRIDED_LOOP(g) { CT x = LD(a, p1); ST(out, p0, pow(x, e)); }
}
__kernel void KN(elu, c)(long n, __global T* out, long o0, __global const T* a, long o1, CT alpha) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { CT x = LD(a, i); ST(out, i, x > C(0) ? x : expm1(x) * alpha); }
}
__kernel void KN(elu, s)(geom_t g, __global T* out, __global const T* a, CT alpha) {
    STRIDED_LOOP(g) { CT x = LD(a, p1); ST(out, p0, x > C(0) ? x : expm1(x) * alpha); }
}
// silu(a) * b: the SwiGLU gate (fused kernel silu_mul)
__kernel void KN(silu_mul, c)(long n, __global T* out, long o0, __global const T* a, long o1,
                              __global const T* b, long o2) {
    out += o0; a += o1; b += o2;
    CONTIG_LOOP(n) { CT x = LD(a, i); CT y = LD(b, i); ST(out, i, x / (C(1) + exp(-x)) * y); }
}
#endif

// ---------------------------------------------------------------------------------------------
#define BINARY(name, expr)                                                                           \
__kernel void KNP(name##_c)(long n, __global T* out, long o0, __global const T* a, long o1,           \
                          __global const T* b, long o2) {                                            \
    out += o0; a += o1; b += o2;                                                                     \
    CONTIG_LOOP(n) { CT x = LD(a, i); CT y = LD(b, i); ST(out, i, (CT)(expr)); }                     \
}                                                                                                    \
__kernel void KNP(name##_s)(geom_t g, __global T* out, __global const T* a, __global const T* b) {    \
    STRIDED_LOOP(g) { CT x = LD(a, p1); CT y = LD(b, p2); ST(out, p0, (CT)(expr)); }                 \
}

BINARY(add, x + y)
BINARY(sub, x - y)
BINARY(mul, x * y)
BINARY(div, x / y)
BINARY(pow, op_pow(x, y))
BINARY(maximum, op_max(x, y))
BINARY(minimum, op_min(x, y))
BINARY(floor_divide, op_floordiv(x, y))
BINARY(remainder, op_rem(x, y))

// comparisons write uint8
#define CMP(name, expr)                                                                              \
__kernel void KNP(name##_c)(long n, __global uchar* out, long o0, __global const T* a, long o1,       \
                          __global const T* b, long o2) {                                            \
    out += o0; a += o1; b += o2;                                                                     \
    CONTIG_LOOP(n) { CT x = LD(a, i); CT y = LD(b, i); out[i] = (uchar)(expr); }                     \
}                                                                                                    \
__kernel void KNP(name##_s)(geom_t g, __global uchar* out, __global const T* a, __global const T* b) { \
    STRIDED_LOOP(g) { CT x = LD(a, p1); CT y = LD(b, p2); out[p0] = (uchar)(expr); }                 \
}

CMP(eq, x == y)
CMP(ne, x != y)
CMP(lt, x < y)
CMP(le, x <= y)
CMP(gt, x > y)
CMP(ge, x >= y)

// raw copies (RT: the storage bits, ushort for float16/bfloat16): strided copy, contiguous copy
__kernel void KN(copy, c)(long n, __global RT* out, long o0, __global const RT* a, long o1) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { out[i] = a[i]; }
}
__kernel void KN(copy, s)(geom_t g, __global RT* out, __global const RT* a) {
    STRIDED_LOOP(g) { out[p0] = a[p1]; }
}

// where(cond, a, b): cond is uint8 (slot 1), a and b slots 2 and 3
__kernel void KN(where, s)(geom_t g, __global RT* out, __global const uchar* cond, __global const RT* a,
                           __global const RT* b) {
    STRIDED_LOOP(g) { out[p0] = cond[p1] ? a[p2] : b[p3]; }
}

// fill a dense range with one value
__kernel void KN(fill, c)(long n, __global T* out, long o0, CT v) {
    out += o0;
    CONTIG_LOOP(n) { ST(out, i, v); }
}

// start + i * step (floats compute in double where the device has it, like numpy's arange)
#if IS_F64 || !IS_FLOAT || !defined(cl_khr_fp64)
#define AR_T CT
#else
#define AR_T double
#endif
#if IS_FLOAT
__kernel void KN(arange, c)(long n, __global T* out, AR_T start, AR_T step) {
    CONTIG_LOOP(n) { ST(out, i, (CT)((AR_T)i * step + start)); }
}
#else
__kernel void KN(arange, c)(long n, __global T* out, long start, long step) {
    CONTIG_LOOP(n) { ST(out, i, (CT)(start + i * step)); }
}
#endif

