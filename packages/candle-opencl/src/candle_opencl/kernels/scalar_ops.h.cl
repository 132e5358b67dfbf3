// Scalar helpers of the elementwise ops (op_sign, op_relu, op_gelu...), shared by elementwise.cl and
// vector.cl through `// @include scalar_ops.h.cl` (runtime._with_includes).

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
