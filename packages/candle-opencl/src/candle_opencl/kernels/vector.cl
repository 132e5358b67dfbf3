// 8-wide vector kernels of the hot float ops (program `vector`, float dtypes only); the scalar
// helpers are shared with elementwise.cl.


// @include scalar_ops.h.cl

// 8-wide variants (v) of the hot float ops on dense operands: each work-item handles VCH elements
// as VCH/8 vectors (the compiler maps them to SIMD; the builtins have vector forms), the last
// work-item a scalar tail.
#define VCH 64  // elements per work-item (runtime.VCH)
#if IS_FLOAT && !IS_F64  // (PoCL 3.0 fails to build double8 programs of this size; float64 uses the c kernels)
#define VUNARY(name, expr, vexpr)                                                                    \
__kernel void KNP(name##_v)(long n, __global T* out, long o0, __global const T* a, long o1) {       \
    out += o0; a += o1;                                                                              \
    long i0 = get_global_id(0) * VCH;                                                                 \
    if (i0 + VCH <= n) {                                                                              \
        for (int u = 0; u < VCH; u += 8) { VT x = VLD(a, i0 + u); VST(out, i0 + u, (vexpr)); }        \
    } else {                                                                                         \
        for (long i = i0; i < n; ++i) { CT x = LD(a, i); ST(out, i, (expr)); }                       \
    }                                                                                                \
}

VUNARY(neg, -x, -x)
VUNARY(sqr, x * x, x * x)
VUNARY(abs, fabs(x), fabs(x))
VUNARY(sqrt, sqrt(x), sqrt(x))
VUNARY(rsqrt, C(1) / sqrt(x), C(1) / sqrt(x))
VUNARY(recip, C(1) / x, C(1) / x)
VUNARY(exp, exp(x), exp(x))
VUNARY(expm1, expm1(x), expm1(x))
VUNARY(log, log(x), log(x))
VUNARY(log1p, log1p(x), log1p(x))
VUNARY(sin, sin(x), sin(x))
VUNARY(cos, cos(x), cos(x))
VUNARY(tanh, tanh(x), tanh(x))
VUNARY(erf, erf(x), erf(x))
VUNARY(gelu, C(0.5) * x * (C(1) + tanh(C(0.7978845608028654) * (x + C(0.044715) * x * x * x))), C(0.5) * x * (C(1) + tanh(C(0.7978845608028654) * (x + C(0.044715) * x * x * x))))
VUNARY(gelu_erf, C(0.5) * x * (C(1) + erf(x * C(0.7071067811865476))), C(0.5) * x * (C(1) + erf(x * C(0.7071067811865476))))
VUNARY(silu, x / (C(1) + exp(-x)), x / (C(1) + exp(-x)))
VUNARY(sigmoid, C(1) / (C(1) + exp(-x)), C(1) / (C(1) + exp(-x)))
VUNARY(floor, floor(x), floor(x))
VUNARY(ceil, ceil(x), ceil(x))
VUNARY(trunc, trunc(x), trunc(x))
VUNARY(relu, op_relu(x), (ISNAN(x) | (x > C(0))) ? x : (VT)C(0))

__kernel void KN(affine, v)(long n, __global T* out, long o0, __global const T* a, long o1, CT mul, CT add) {
    out += o0; a += o1;
    long i0 = get_global_id(0) * VCH;
    if (i0 + VCH <= n) {
        for (int u = 0; u < VCH; u += 8) { VT x = VLD(a, i0 + u); VST(out, i0 + u, x * mul + add); }
    } else {
        for (long i = i0; i < n; ++i) { CT x = LD(a, i); ST(out, i, x * mul + add); }
    }
}

#define VBINARY(name, expr, vexpr)                                                                   \
__kernel void KNP(name##_v)(long n, __global T* out, long o0, __global const T* a, long o1,          \
                            __global const T* b, long o2) {                                          \
    out += o0; a += o1; b += o2;                                                                     \
    long i0 = get_global_id(0) * VCH;                                                                 \
    if (i0 + VCH <= n) {                                                                              \
        for (int u = 0; u < VCH; u += 8) {                                                            \
            VT x = VLD(a, i0 + u); VT y = VLD(b, i0 + u); VST(out, i0 + u, (vexpr)); }                \
    } else {                                                                                         \
        for (long i = i0; i < n; ++i) { CT x = LD(a, i); CT y = LD(b, i); ST(out, i, (expr)); }      \
    }                                                                                                \
}

VBINARY(add, x + y, x + y)
VBINARY(sub, x - y, x - y)
VBINARY(mul, x * y, x * y)
VBINARY(div, x / y, x / y)
VBINARY(maximum, op_max(x, y), ((x > y) | ISNAN(x)) ? x : y)
VBINARY(minimum, op_min(x, y), ((x < y) | ISNAN(x)) ? x : y)
VBINARY(silu_mul, x / (C(1) + exp(-x)) * y, x / (C(1) + exp(-x)) * y)
#endif
