// Fused kernels: softmax / log_softmax over the last dim, rms_norm, layer_norm, rope, and the
// masked softmax of attention. One work-group of 64 work-items per row (local-memory reductions).

#define WG 64
#if IS_FLOAT
#define FMAX(a, b) ((b) > (a) || ISNAN(b) ? (b) : (a))

inline CT wg_sum(__local CT* red, CT v) {
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = WG / 2; w > 0; w >>= 1) {
        if (lid < w) red[lid] += red[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    CT r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

inline CT wg_max(__local CT* red, CT v) {
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = WG / 2; w > 0; w >>= 1) {
        if (lid < w) red[lid] = FMAX(red[lid], red[lid + w]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    CT r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// dense rows of D elements; log_ selects log_softmax
__kernel void KN(softmax, wg)(long D, __global T* out, __global const T* x, long xo, int log_) {
    __local CT red[WG];
    long row = get_group_id(0);
    int lid = get_local_id(0);
    __global const T* xr = x + xo + row * D;
    __global T* o = out + row * D;
    CT m = -INFINITY;
    for (long i = lid; i < D; i += WG) m = FMAX(m, LD(xr, i));
    m = wg_max(red, m);
    CT s = C(0);
    for (long i = lid; i < D; i += WG) s += exp(LD(xr, i) - m);
    s = wg_sum(red, s);
    if (log_) {
        CT ls = log(s);
        for (long i = lid; i < D; i += WG) ST(o, i, LD(xr, i) - m - ls);
    } else {
        CT inv = C(1) / s;
        for (long i = lid; i < D; i += WG) ST(o, i, exp(LD(xr, i) - m) * inv);
    }
}

// x * rsqrt(mean(x^2) + eps) * w (has_w) over dense rows of D
__kernel void KN(rms_norm, wg)(long D, __global T* out, __global const T* x, long xo, __global const T* w,
                               long wo, int has_w, CT eps) {
    __local CT red[WG];
    long row = get_group_id(0);
    int lid = get_local_id(0);
    __global const T* xr = x + xo + row * D;
    __global T* o = out + row * D;
    CT s = C(0);
    for (long i = lid; i < D; i += WG) { CT v = LD(xr, i); s += v * v; }
    s = wg_sum(red, s);
    CT r = C(1) / sqrt(s / (CT)D + eps);
    for (long i = lid; i < D; i += WG) {
        CT v = LD(xr, i) * r;
        if (has_w) v *= LD(w, wo + i);
        ST(o, i, v);
    }
}

// (x - mean) * rsqrt(var + eps) * w + b over dense rows of D (biased variance, two passes)
__kernel void KN(layer_norm, wg)(long D, __global T* out, __global const T* x, long xo, __global const T* w,
                                 long wo, __global const T* b, long bo, int flags, CT eps) {
    __local CT red[WG];
    long row = get_group_id(0);
    int lid = get_local_id(0);
    __global const T* xr = x + xo + row * D;
    __global T* o = out + row * D;
    CT s = C(0);
    for (long i = lid; i < D; i += WG) s += LD(xr, i);
    CT mean = wg_sum(red, s) / (CT)D;
    CT q = C(0);
    for (long i = lid; i < D; i += WG) { CT v = LD(xr, i) - mean; q += v * v; }
    CT r = C(1) / sqrt(wg_sum(red, q) / (CT)D + eps);
    for (long i = lid; i < D; i += WG) {
        CT v = (LD(xr, i) - mean) * r;
        if (flags & 1) v *= LD(w, wo + i);
        if (flags & 2) v += LD(b, bo + i);
        ST(o, i, v);
    }
}

// --- one work-item per dense row (CPU devices: no barriers), 8-wide with a scalar tail -------------
#if IS_F64  // scalar (see runtime.type_defines)
#define VW 1
#define VT CT
#define VLD(p, o) LD(p, o)
#define VST(p, o, v) ST(p, o, v)
#define VSEL(a, b, c) ((c) ? (b) : (a))
inline CT hsum8(CT v) { return v; }
inline CT hmax8(CT v) { return v; }
#else
#define VW 8
#define VSEL(a, b, c) ((c) ? (b) : (a))
inline CT hsum8(VT v) {
    VT x = v;
    CT s = C(0);
    s = ((x.s0 + x.s1) + (x.s2 + x.s3)) + ((x.s4 + x.s5) + (x.s6 + x.s7));
    return s;
}
inline CT hmax8(VT v) {
    CT m = v.s0;
    m = FMAX(m, v.s1); m = FMAX(m, v.s2); m = FMAX(m, v.s3);
    m = FMAX(m, v.s4); m = FMAX(m, v.s5); m = FMAX(m, v.s6); m = FMAX(m, v.s7);
    return m;
}
#endif

__kernel void KN(softmax, wi)(long rows, long D, __global T* out, __global const T* x, long xo, int log_) {
    long row = get_global_id(0);
    if (row >= rows) return;
    __global const T* xr = x + xo + row * D;
    __global T* o = out + row * D;
    long D8 = D - D % VW;
    VT mv = (VT)(-INFINITY);
    for (long i = 0; i < D8; i += VW) { VT v = VLD(xr, i); mv = VSEL(mv, v, (v > mv) | (v != v)); }
    CT m = hmax8(mv);
    for (long i = D8; i < D; ++i) m = FMAX(m, LD(xr, i));
    // float32/float64 softmax: the exponentials go to out once, then are scaled in place (one exp per
    // element); half types recompute them (a stored half would round twice)
#if DT_F32 || IS_F64
    const int keep = !log_;
#else
    const int keep = 0;
#endif
    VT sv = (VT)C(0);
    for (long i = 0; i < D8; i += VW) { VT e = exp(VLD(xr, i) - m); if (keep) VST(o, i, e); sv += e; }
    CT s = hsum8(sv);
    for (long i = D8; i < D; ++i) { CT e = exp(LD(xr, i) - m); if (keep) ST(o, i, e); s += e; }
    if (log_) {
        CT ls = log(s) + m;
        for (long i = 0; i < D8; i += VW) VST(o, i, VLD(xr, i) - ls);
        for (long i = D8; i < D; ++i) ST(o, i, LD(xr, i) - ls);
    } else if (keep) {
        CT inv = C(1) / s;
        for (long i = 0; i < D8; i += VW) VST(o, i, VLD(o, i) * inv);
        for (long i = D8; i < D; ++i) ST(o, i, LD(o, i) * inv);
    } else {
        CT inv = C(1) / s;
        for (long i = 0; i < D8; i += VW) VST(o, i, exp(VLD(xr, i) - m) * inv);
        for (long i = D8; i < D; ++i) ST(o, i, exp(LD(xr, i) - m) * inv);
    }
}

__kernel void KN(rms_norm, wi)(long rows, long D, __global T* out, __global const T* x, long xo,
                               __global const T* w, long wo, int has_w, CT eps) {
    long row = get_global_id(0);
    if (row >= rows) return;
    __global const T* xr = x + xo + row * D;
    __global const T* wr = w + wo;
    __global T* o = out + row * D;
    long D8 = D - D % VW;
    VT sv = (VT)C(0);
    for (long i = 0; i < D8; i += VW) { VT v = VLD(xr, i); sv += v * v; }
    CT s = hsum8(sv);
    for (long i = D8; i < D; ++i) { CT v = LD(xr, i); s += v * v; }
    CT r = C(1) / sqrt(s / (CT)D + eps);
    if (has_w) {
        for (long i = 0; i < D8; i += VW) VST(o, i, VLD(xr, i) * r * VLD(wr, i));
        for (long i = D8; i < D; ++i) ST(o, i, LD(xr, i) * r * LD(wr, i));
    } else {
        for (long i = 0; i < D8; i += VW) VST(o, i, VLD(xr, i) * r);
        for (long i = D8; i < D; ++i) ST(o, i, LD(xr, i) * r);
    }
}

__kernel void KN(layer_norm, wi)(long rows, long D, __global T* out, __global const T* x, long xo,
                                 __global const T* w, long wo, __global const T* b, long bo, int flags, CT eps) {
    long row = get_global_id(0);
    if (row >= rows) return;
    __global const T* xr = x + xo + row * D;
    __global T* o = out + row * D;
    CT s = C(0);
    for (long i = 0; i < D; ++i) s += LD(xr, i);
    CT mean = s / (CT)D;
    CT q = C(0);
    for (long i = 0; i < D; ++i) { CT v = LD(xr, i) - mean; q += v * v; }
    CT r = C(1) / sqrt(q / (CT)D + eps);
    for (long i = 0; i < D; ++i) {
        CT v = (LD(xr, i) - mean) * r;
        if (flags & 1) v *= LD(w, wo + i);
        if (flags & 2) v += LD(b, bo + i);
        ST(o, i, v);
    }
}

// rope: x [B, H, S, D] with strides xs (any), cos/sin dense [Bc, S, D/2]; out [B, H, S, D] with strides
// os (any, possibly x itself: each work-item reads its pair before writing it)
typedef struct { long B, H, S, D2, bc, xo, co, so, oo; long xs[4]; long os[4]; } rope_t;
__kernel void KN(rope, c)(rope_t g, int interleaved, __global T* out, __global const T* x,
                          __global const T* cs, __global const T* sn) {
    long t = get_global_id(0);
    long total = g.B * g.H * g.S * g.D2;
    if (t >= total) return;
    long i = t % g.D2, r = t / g.D2;
    long s = r % g.S; r /= g.S;
    long h = r % g.H, b = r / g.H;
    long px = g.xo + b * g.xs[0] + h * g.xs[1] + s * g.xs[2];
    long ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + g.D2;
    CT x1 = LD(x, px + ia * g.xs[3]), x2 = LD(x, px + ib * g.xs[3]);
    long pc = ((g.bc == 1 ? 0 : b) * g.S + s) * g.D2 + i;
    CT c = LD(cs, g.co + pc), sv = LD(sn, g.so + pc);
    long po = g.oo + b * g.os[0] + h * g.os[1] + s * g.os[2];
    ST(out, po + ia * g.os[3], x1 * c - x2 * sv);
    ST(out, po + ib * g.os[3], x2 * c + x1 * sv);
}

// The softmax of attention, in place on dense scores [B, Hk, G*L, S] (already scaled): the mask
// (kind 1: uint8 keep-mask, 2: additive, in this dtype) is read through broadcasting strides over
// [B, Hq, L, S]; causal: key j is hidden from query i when j > i + offset. Rows that see no key
// become zeros.
typedef struct { long Hk, G, L, S, kind, causal, offset, mo; long ms[4]; } attn_t;
__kernel void KN(attn_softmax, wg)(attn_t g, __global T* sc, __global const uchar* mbool, __global const T* madd) {
    __local CT red[WG];
    long row = get_group_id(0);
    int lid = get_local_id(0);
    long l = row % g.L, r = row / g.L;
    long gg = r % g.G; r /= g.G;
    long hk = r % g.Hk, b = r / g.Hk;
    long hq = hk * g.G + gg;
    long mrow = g.mo + b * g.ms[0] + hq * g.ms[1] + l * g.ms[2];
    long S = g.S;
    __global T* s = sc + row * S;
    long lim = g.causal ? l + g.offset : S;  // keys j <= lim are visible
    CT m = -INFINITY;
    for (long j = lid; j < S; j += WG) {
        CT v = LD(s, j);
        if (j > lim) v = -INFINITY;
        else if (g.kind == 1) { if (!mbool[mrow + j * g.ms[3]]) v = -INFINITY; }
        else if (g.kind == 2) v += LD(madd, mrow + j * g.ms[3]);
        ST(s, j, v);
        m = FMAX(m, v);
    }
    m = wg_max(red, m);
    if (m == -INFINITY) {
        for (long j = lid; j < S; j += WG) ST(s, j, C(0));
        return;
    }
    CT sum = C(0);
    for (long j = lid; j < S; j += WG) { CT e = exp(LD(s, j) - m); ST(s, j, e); sum += e; }
    sum = wg_sum(red, sum);
    CT inv = C(1) / sum;
    for (long j = lid; j < S; j += WG) ST(s, j, LD(s, j) * inv);
}

__kernel void KN(attn_softmax, wi)(long rows, attn_t g, __global T* sc, __global const uchar* mbool,
                                   __global const T* madd) {
    long row = get_global_id(0);
    if (row >= rows) return;
    long l = row % g.L, r = row / g.L;
    long gg = r % g.G; r /= g.G;
    long hk = r % g.Hk, b = r / g.Hk;
    long hq = hk * g.G + gg;
    long mrow = g.mo + b * g.ms[0] + hq * g.ms[1] + l * g.ms[2];
    long S = g.S;
    __global T* s = sc + row * S;
    long lim = g.causal ? l + g.offset : S;
    CT m = -INFINITY;
    for (long j = 0; j < S; ++j) {
        CT v = LD(s, j);
        if (j > lim) v = -INFINITY;
        else if (g.kind == 1) { if (!mbool[mrow + j * g.ms[3]]) v = -INFINITY; }
        else if (g.kind == 2) v += LD(madd, mrow + j * g.ms[3]);
        ST(s, j, v);
        m = FMAX(m, v);
    }
    if (m == -INFINITY) {
        for (long j = 0; j < S; ++j) ST(s, j, C(0));
        return;
    }
    CT sum = C(0);
    for (long j = 0; j < S; ++j) { CT e = exp(LD(s, j) - m); ST(s, j, e); sum += e; }
    CT inv = C(1) / sum;
    for (long j = 0; j < S; ++j) ST(s, j, LD(s, j) * inv);
}
#endif
