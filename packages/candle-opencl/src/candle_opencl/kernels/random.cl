// Counter-based random numbers: Philox4x32-10 keyed by the 64-bit seed core draws per op, counter =
// the work-item's id. Uniform floats from the top bits; normals by Box-Muller.

inline uint4 philox(uint4 c, uint2 k) {
    for (int r = 0; r < 10; ++r) {
        uint lo0 = c.x * 0xD2511F53u, hi0 = mul_hi(c.x, 0xD2511F53u);
        uint lo1 = c.z * 0xCD9E8D57u, hi1 = mul_hi(c.z, 0xCD9E8D57u);
        c = (uint4)(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += (uint2)(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

#if IS_FLOAT
#if IS_F64
#define PER 2
inline double u53(uint a, uint b) { return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) * (1.0 / 9007199254740992.0); }
#else
#define PER 4
#endif

// the value rounded to the dtype, with `high` itself mapped back to `low` (the range is half-open)
inline void store_uniform(__global T* out, long i, CT v, CT low, CT high) {
    ST(out, i, v);
    if (LD(out, i) >= high) ST(out, i, low);
}

__kernel void KN(rand_uniform, c)(long n, __global T* out, uint k0, uint k1, CT low, CT high) {
    long t = get_global_id(0);
    long i = t * PER;
    if (i >= n) return;
    uint4 r = philox((uint4)((uint)t, (uint)(t >> 32), 0u, 0u), (uint2)(k0, k1));
#if IS_F64
    CT u[2] = {u53(r.x, r.y), u53(r.z, r.w)};
#else
    CT u[4] = {(CT)(r.x >> 8) * C(5.9604644775390625e-08), (CT)(r.y >> 8) * C(5.9604644775390625e-08),
               (CT)(r.z >> 8) * C(5.9604644775390625e-08), (CT)(r.w >> 8) * C(5.9604644775390625e-08)};
#endif
    for (int j = 0; j < PER && i + j < n; ++j) store_uniform(out, i + j, low + u[j] * (high - low), low, high);
}

__kernel void KN(rand_normal, c)(long n, __global T* out, uint k0, uint k1, CT mean, CT std) {
    long t = get_global_id(0);
    long i = t * PER;
    if (i >= n) return;
    uint4 r = philox((uint4)((uint)t, (uint)(t >> 32), 0u, 0u), (uint2)(k0, k1));
    CT z[4];
#if IS_F64
    CT u1 = C(1) - u53(r.x, r.y), u2 = u53(r.z, r.w);  // u1 in (0, 1]
    CT rad = sqrt(C(-2) * log(u1));
    z[0] = rad * cos(C(6.283185307179586) * u2);
    z[1] = rad * sin(C(6.283185307179586) * u2);
#else
    CT k = C(5.9604644775390625e-08);
    CT u1 = C(1) - (CT)(r.x >> 8) * k, u2 = (CT)(r.y >> 8) * k;
    CT u3 = C(1) - (CT)(r.z >> 8) * k, u4 = (CT)(r.w >> 8) * k;
    CT ra = sqrt(C(-2) * log(u1)), rb = sqrt(C(-2) * log(u3));
    z[0] = ra * cos(C(6.283185307179586) * u2);
    z[1] = ra * sin(C(6.283185307179586) * u2);
    z[2] = rb * cos(C(6.283185307179586) * u4);
    z[3] = rb * sin(C(6.283185307179586) * u4);
#endif
    for (int j = 0; j < PER && i + j < n; ++j) ST(out, i + j, z[j] * std + mean);
}
#endif
