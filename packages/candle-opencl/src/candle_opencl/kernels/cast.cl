// Casts between two dtypes: built with the destination as the program's dtype (T, CT, ST, SFX =
// <src>_<dst>) and the source as S_T, S_CT, S_LD, S_IS_FLOAT. Floats to integers truncate toward
// zero; to unsigned integers through int64 (PyTorch wraps negatives modulo 2**bits).

#if S_IS_FLOAT && !IS_FLOAT
#define CONV(x) ((CT)(long)(x))
#else
#define CONV(x) ((CT)(x))
#endif

__kernel void KN(cast, c)(long n, __global T* out, long o0, __global const S_T* a, long o1) {
    out += o0; a += o1;
    CONTIG_LOOP(n) { S_CT x = S_LD(a, i); ST(out, i, CONV(x)); }
}
__kernel void KN(cast, s)(geom_t g, __global T* out, __global const S_T* a) {
    STRIDED_LOOP(g) { S_CT x = S_LD(a, p1); ST(out, p0, CONV(x)); }
}
