// 8-wide vector kernels of the hot float ops (program `vector`, float dtypes only); the scalar
// helpers are shared with elementwise.cl.


#if IS_FLOAT
inline CT op_sign(CT x) { return x > C(0) ? C(1) : (x < C(0) ? C(-1) : x); }
inline CT op_relu(CT x) { return (x > C(0) || ISNAN(x)) ? x : C(0); }
inline CT op_gelu(CT x) { return C(0.5) * x * (C(1) + tanh(C(0.7978845608028654) * (x + C(0.044715) * x * x * x))); }
inline CT op_gelu_erf(CT x) { return C(0.5) * x * (C(1) + erf(x * C(0.7071067811865476))); }
inline CT op_max(CT a, CT b) { return (a > b || ISNAN(a)) ? a : b; }
inline CT op_min(CT a, CT b) { return (a < b || ISNAN(a)) ? a : b; }
// numpy's divmod (npy_divmod): the floor quotient and the remainder with the sign of b
inline CT op_floordiv(CT a, CT b) {
    if (b == C(0)) return a / b;
    CT mod = fmod(a, b);
    CT div = (a - mod) / b;
    if (mod != C(0) && ((b < C(0)) != (mod < C(0)))) div -= C(1);
    CT fl;
    if (div != C(0)) { fl = floor(div); if (div - fl > C(0.5)) fl += C(1); }
    else fl = copysign(C(0), a / b);
    return fl;
}
inline CT op_rem(CT a, CT b) {
    if (b == C(0)) return fmod(a, b);
    CT mod = fmod(a, b);
    if (mod != C(0)) { if ((b < C(0)) != (mod < C(0))) mod += b; }
    else mod = copysign(C(0), b);
    return mod;
}
inline CT op_pow(CT a, CT b) { return pow(a, b); }
#else
#if IS_SIGNED
inline CT op_sign(CT x) { return (CT)((x > 0) - (x < 0)); }
inline CT op_abs(CT x) { return x < 0 ? -x : x; }
#else
inline CT op_sign(CT x) { return (CT)(x > 0); }
inline CT op_abs(CT x) { return x; }
#endif
inline CT op_relu(CT x) { return x > 0 ? x : (CT)0; }
inline CT op_max(CT a, CT b) { return a > b ? a : b; }
inline CT op_min(CT a, CT b) { return a < b ? a : b; }
// integer division by zero gives 0 (a device cannot raise); -1 is special-cased (MIN / -1 traps on x86)
inline CT op_floordiv(CT a, CT b) {
    if (b == 0) return 0;
#if IS_SIGNED
    if (b == -1) return -a;
    CT q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
#else
    return a / b;
#endif
}
inline CT op_rem(CT a, CT b) {
    if (b == 0) return 0;
#if IS_SIGNED
    if (b == -1) return 0;
    CT r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
#else
    return a % b;
#endif
}
inline CT op_pow(CT a, CT b) {
#if IS_SIGNED
    if (b < 0) return (a == 1) ? 1 : ((a == -1) ? ((b & 1) ? -1 : 1) : 0);
#endif
    CT r = 1, base = a;
    while (b) { if (b & 1) r *= base; base *= base; b >>= 1; }
    return r;
}
#endif

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
