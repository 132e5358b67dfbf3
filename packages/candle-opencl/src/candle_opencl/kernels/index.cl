// Indexing kernels: index_select, gather, scatter, scatter_add, index_add (deterministic: each
// output element sums the sources that point at it, in index order; no atomics), and a stable
// merge sort. Out-of-range indices are clamped (a device kernel cannot raise).

inline long clampi(long i, long n) { return i < 0 ? (i + n < 0 ? 0 : i + n) : (i >= n ? n - 1 : i); }

// x dense [outer, D, inner] (at offset xo) -> out [outer, n, inner]
__kernel void KN(index_select, c)(long total, long D, long n, long inner, __global RT* out,
                                  __global const RT* x, long xo, __global const long* idx, long io) {
    long t = get_global_id(0);
    if (t >= total) return;
    long k = t % inner, r = t / inner;
    long j = r % n, o = r / n;
    long src = clampi(idx[io + j], D);
    out[t] = x[xo + (o * D + src) * inner + k];
}

// Shapes for gather/scatter: ndim dims, index shape `ishape`, x (dense) strides `xst`, the dim d.
typedef struct {
    long nd, d, total, xo, io, so, dsize;   // dsize: the size of x along d
    long ishape[MAXD], xst[MAXD], xshape[MAXD], sst[MAXD];
} gs_t;

// out (dense, index shape) = x[..., index[...], ...] along d; index and x dense
__kernel void KN(gather, c)(gs_t g, __global RT* out, __global const RT* x, __global const long* idx) {
    long t = get_global_id(0);
    if (t >= g.total) return;
    long r = t, px = g.xo;
    for (int k = (int)g.nd - 1; k >= 0; --k) {
        long c = r % g.ishape[k];
        r /= g.ishape[k];
        if (k != g.d) px += c * g.xst[k];
    }
    px += clampi(idx[g.io + t], g.dsize) * g.xst[g.d];
    out[t] = x[px];
}

// scatter (no reduce) into out (a dense copy of x): out[..., index[...], ...] = src[...]
// g.sst: the strides of src (any layout, e.g. an expanded scalar); g.xst: out's dense strides
__kernel void KN(scatter, c)(gs_t g, __global RT* out, __global const long* idx, __global const RT* src) {
    long t = get_global_id(0);
    if (t >= g.total) return;
    long r = t, po = 0, ps = g.so;
    for (int k = (int)g.nd - 1; k >= 0; --k) {
        long c = r % g.ishape[k];
        r /= g.ishape[k];
        ps += c * g.sst[k];
        if (k != g.d) po += c * g.xst[k];
    }
    po += clampi(idx[g.io + t], g.dsize) * g.xst[g.d];
    out[po] = src[ps];
}

// scatter_add: one work-item per element of x (dense, shape xshape): the sum of
// the sources whose index points at it, added in index order
__kernel void KN(scatter_add, c)(gs_t g, __global T* out, __global const T* x, __global const long* idx,
                                 __global const T* src) {
    long t = get_global_id(0);
    if (t >= g.total) return;
    long coord[MAXD];
    long r = t;
    for (int k = (int)g.nd - 1; k >= 0; --k) { coord[k] = r % g.xshape[k]; r /= g.xshape[k]; }
    CT acc = LD(x, g.xo + t);
    bool inside = true;
    long pi = g.io, ps = g.so;
    // dense index strides
    long ist_d[MAXD];
    long acc_s = 1;
    for (int k = (int)g.nd - 1; k >= 0; --k) { ist_d[k] = acc_s; acc_s *= g.ishape[k]; }
    for (int k = 0; k < g.nd; ++k) {
        if (k == g.d) continue;
        if (coord[k] >= g.ishape[k]) inside = false;
        pi += coord[k] * ist_d[k];
        ps += coord[k] * g.sst[k];
    }
    if (inside) {
        long D = g.dsize;
        for (long j = 0; j < g.ishape[g.d]; ++j) {
            if (clampi(idx[pi + j * ist_d[g.d]], D) == coord[g.d]) acc += LD(src, ps + j * g.sst[g.d]);
        }
    }
    ST(out, t, acc);
}

// index_add: x dense [outer, D, inner], src dense [outer, n, inner]; out = x + the src slices at idx
__kernel void KN(index_add, c)(long total, long D, long n, long inner, __global T* out, __global const T* x,
                               long xo, __global const long* idx, long io, __global const T* src, long so) {
    long t = get_global_id(0);
    if (t >= total) return;
    long k = t % inner, r = t / inner;
    long p = r % D, o = r / D;
    CT acc = LD(x, xo + t);
    for (long j = 0; j < n; ++j)
        if (clampi(idx[io + j], D) == p) acc += LD(src, so + (o * n + j) * inner + k);
    ST(out, t, acc);
}

// Stable merge sort of the lines of a dense [outer, n, inner] array (one work-item per line):
// bottom-up merges of index runs between two scratch arrays, then the values are gathered.
#if IS_FLOAT
#define SLESS(a, b) ((a) < (b) || (ISNAN(b) && !ISNAN(a)))
#else
#define SLESS(a, b) ((a) < (b))
#endif
__kernel void KN(sort, c)(long nlines, long n, long inner, __global const T* x, long xo, __global RT* vals,
                          __global long* out_idx, __global long* s1, __global long* s2, int descending) {
    long l = get_global_id(0);
    if (l >= nlines) return;
    long base = (l / inner) * n * inner + (l % inner);
    __global const T* xl = x + xo;
    __global long* a = s1 + l * n;
    __global long* b = s2 + l * n;
    for (long i = 0; i < n; ++i) a[i] = i;
    for (long w = 1; w < n; w *= 2) {
        for (long lo = 0; lo < n; lo += 2 * w) {
            long mid = min(lo + w, n), hi = min(lo + 2 * w, n);
            long i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                CT vi = LD(xl, base + a[i] * inner), vj = LD(xl, base + a[j] * inner);
                bool take_right = descending ? SLESS(vi, vj) : SLESS(vj, vi);
                b[o++] = take_right ? a[j++] : a[i++];
            }
            while (i < mid) b[o++] = a[i++];
            while (j < hi) b[o++] = a[j++];
        }
        __global long* t = a; a = b; b = t;
    }
    __global const RT* xr = (__global const RT*)(x) + xo;
    for (long i = 0; i < n; ++i) { vals[base + i * inner] = xr[base + a[i] * inner]; out_idx[base + i * inner] = a[i]; }
}
