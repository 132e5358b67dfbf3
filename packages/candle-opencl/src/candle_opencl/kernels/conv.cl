// Convolutions (direct: one output element per work-item, accumulating in the compute type),
// pooling and nearest upsampling on dense NCHW arrays.

typedef struct {
    long N, C, H, W;        // input
    long O, cg, kh, kw;     // output channels, input channels per group, kernel
    long Ho, Wo;
    long sh, sw, ph, pw, dh, dw;
    long og;                // output channels per group
    long xo, wo;            // element offsets of x and w
} conv_t;

__kernel void KN(conv2d, c)(conv_t g, __global T* out, __global const T* x, __global const T* w) {
    long t = get_global_id(0);
    if (t >= g.N * g.O * g.Ho * g.Wo) return;
    long xq = t % g.Wo, r = t / g.Wo;
    long y = r % g.Ho; r /= g.Ho;
    long o = r % g.O, n = r / g.O;
    long grp = o / g.og;
    CT acc = C(0);
    for (long c = 0; c < g.cg; ++c) {
        long xc = g.xo + ((n * g.C) + grp * g.cg + c) * g.H * g.W;
        long wc = g.wo + (o * g.cg + c) * g.kh * g.kw;
        for (long i = 0; i < g.kh; ++i) {
            long h = y * g.sh - g.ph + i * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (long j = 0; j < g.kw; ++j) {
                long q = xq * g.sw - g.pw + j * g.dw;
                if (q < 0 || q >= g.W) continue;
                acc += LD(x, xc + h * g.W + q) * LD(w, wc + i * g.kw + j);
            }
        }
    }
    ST(out, t, acc);
}

// the adjoint of conv2d: w [C, O/groups, kh, kw]; out[n, o, y, x] sums x[n, c, h, q] * w[c, o', i, j] over
// the (h, i) with h*sh + i*dh = y + ph (and likewise for the columns)
__kernel void KN(conv_transpose2d, c)(conv_t g, __global T* out, __global const T* x, __global const T* w) {
    long t = get_global_id(0);
    if (t >= g.N * g.O * g.Ho * g.Wo) return;
    long xq = t % g.Wo, r = t / g.Wo;
    long y = r % g.Ho; r /= g.Ho;
    long o = r % g.O, n = r / g.O;
    long grp = o / g.og, oo = o % g.og;
    CT acc = C(0);
    for (long c = 0; c < g.cg; ++c) {
        long ci = grp * g.cg + c;
        long xc = g.xo + (n * g.C + ci) * g.H * g.W;
        long wc = g.wo + (ci * g.og + oo) * g.kh * g.kw;
        for (long i = 0; i < g.kh; ++i) {
            long hn = y + g.ph - i * g.dh;
            if (hn < 0 || hn % g.sh) continue;
            long h = hn / g.sh;
            if (h >= g.H) continue;
            for (long j = 0; j < g.kw; ++j) {
                long qn = xq + g.pw - j * g.dw;
                if (qn < 0 || qn % g.sw) continue;
                long q = qn / g.sw;
                if (q >= g.W) continue;
                acc += LD(x, xc + h * g.W + q) * LD(w, wc + i * g.kw + j);
            }
        }
    }
    ST(out, t, acc);
}

// max pooling with PyTorch's scan: a strictly larger value or a NaN takes over (the last NaN wins),
// padding never does; a window of only the lowest value points at its first in-range element
#if IS_FLOAT
#define PLOW (-INFINITY)
#define PBETTER(v, b) ((v) > (b) || ISNAN(v))
#else
#if IS_SIGNED
#define PLOW ((CT)LONG_MIN)
#else
#define PLOW ((CT)0)
#endif
#define PBETTER(v, b) ((v) > (b))
#endif
__kernel void KN(max_pool2d, c)(conv_t g, __global T* out, __global long* idx, __global const T* x) {
    long t = get_global_id(0);
    if (t >= g.N * g.C * g.Ho * g.Wo) return;
    long xq = t % g.Wo, r = t / g.Wo;
    long y = r % g.Ho, nc = r / g.Ho;
    long base = g.xo + nc * g.H * g.W;
    CT best = PLOW;
    long bi = -1, first = -1;
    for (long i = 0; i < g.kh; ++i) {
        long h = y * g.sh - g.ph + i * g.dh;
        if (h < 0 || h >= g.H) continue;
        for (long j = 0; j < g.kw; ++j) {
            long q = xq * g.sw - g.pw + j * g.dw;
            if (q < 0 || q >= g.W) continue;
            if (first < 0) first = h * g.W + q;
            CT v = LD(x, base + h * g.W + q);
            if (PBETTER(v, best)) { best = v; bi = h * g.W + q; }
        }
    }
    if (bi < 0) { bi = first; if (first >= 0) best = LD(x, base + first); }
    ST(out, t, best);
    idx[t] = bi;
}

// average pooling: window sums over the zero-padded input / (kh*kw, or the in-range count)
__kernel void KN(avg_pool2d, c)(conv_t g, int include_pad, __global T* out, __global const T* x) {
    long t = get_global_id(0);
    if (t >= g.N * g.C * g.Ho * g.Wo) return;
    long xq = t % g.Wo, r = t / g.Wo;
    long y = r % g.Ho, nc = r / g.Ho;
    long base = g.xo + nc * g.H * g.W;
    CT acc = C(0);
    long cnt = 0;
    for (long i = 0; i < g.kh; ++i) {
        long h = y * g.sh - g.ph + i;
        if (h < 0 || h >= g.H) continue;
        for (long j = 0; j < g.kw; ++j) {
            long q = xq * g.sw - g.pw + j;
            if (q < 0 || q >= g.W) continue;
            acc += LD(x, base + h * g.W + q);
            cnt++;
        }
    }
    CT div = include_pad ? (CT)(g.kh * g.kw) : (CT)cnt;
    ST(out, t, acc / div);
}

// nearest upsampling with PyTorch's rule src = min(floor(dst * float(in / out)), in - 1)
__kernel void KN(upsample_nearest2d, c)(conv_t g, float scale_h, float scale_w, __global RT* out,
                                        __global const RT* x) {
    long t = get_global_id(0);
    if (t >= g.N * g.C * g.Ho * g.Wo) return;
    long xq = t % g.Wo, r = t / g.Wo;
    long y = r % g.Ho, nc = r / g.Ho;
    long h = min((long)floor((float)y * scale_h), g.H - 1);
    long q = min((long)floor((float)xq * scale_w), g.W - 1);
    out[t] = x[g.xo + (nc * g.H + h) * g.W + q];
}
