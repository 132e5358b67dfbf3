// Reductions over any dims (sum, max, min, prod) and argmax/argmin along one dim.
//
// red_t: the kept dims (collapsed, the output is dense in their order) and the reduced dims
// (collapsed) with the input's strides. Two variants: one work-item per output (many outputs),
// or one work-group per output when the reduced dims collapse to one (few, long rows).

typedef struct {
    long nk, nr;
    long off;
    long nout;
    long R;
    long kshape[MAXD], kst[MAXD];
    long rshape[MAXD], rst[MAXD];
} red_t;

#if IS_FLOAT
#define RMAX(a, b) ((b) > (a) || ISNAN(b) ? (b) : (a))
#define RMIN(a, b) ((b) < (a) || ISNAN(b) ? (b) : (a))
#else
#define RMAX(a, b) ((b) > (a) ? (b) : (a))
#define RMIN(a, b) ((b) < (a) ? (b) : (a))
#endif
#define RSUM(a, b) ((a) + (b))
#define RPROD(a, b) ((a) * (b))

inline long red_base(const red_t* g, long o) {
    long p = g->off;
    for (int d = (int)g->nk - 1; d >= 0; --d) {
        long c = o % g->kshape[d];
        o /= g->kshape[d];
        p += c * g->kst[d];
    }
    return p;
}

#define REDUCE(name, COMB, INIT)                                                                     \
__kernel void KNP(name##_wi)(red_t g, __global T* out, __global const T* x) {                         \
    long o = get_global_id(0);                                                                       \
    if (o >= g.nout) return;                                                                         \
    long base = red_base(&g, o);                                                                     \
    long idx[MAXD];                                                                                  \
    for (int d = 0; d < MAXD; ++d) idx[d] = 0;                                                       \
    int nr = (int)g.nr;                                                                              \
    long last_n = g.rshape[nr - 1], last_s = g.rst[nr - 1];                                          \
    CT acc = INIT;                                                                                   \
    long p = base;                                                                                   \
    for (long r = 0; r < g.R; r += last_n) {                                                         \
        for (long i = 0; i < last_n; ++i) { CT v = LD(x, p + i * last_s); acc = COMB(acc, v); }      \
        for (int d = nr - 2; d >= 0; --d) {                                                          \
            idx[d]++; p += g.rst[d];                                                                 \
            if (idx[d] < g.rshape[d]) break;                                                         \
            p -= idx[d] * g.rst[d]; idx[d] = 0;                                                      \
        }                                                                                            \
    }                                                                                                \
    ST(out, o, acc);                                                                                 \
}                                                                                                    \
__kernel void KNP(name##_wg)(red_t g, __global T* out, __global const T* x) {                         \
    __local CT part[64];                                                                             \
    long o = get_group_id(0);                                                                        \
    int lid = get_local_id(0);                                                                       \
    long base = red_base(&g, o);                                                                     \
    long st = g.rst[0];                                                                              \
    CT acc = INIT;                                                                                   \
    for (long i = lid; i < g.R; i += 64) { CT v = LD(x, base + i * st); acc = COMB(acc, v); }        \
    part[lid] = acc;                                                                                 \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                    \
    for (int w = 32; w > 0; w >>= 1) {                                                               \
        if (lid < w) part[lid] = COMB(part[lid], part[lid + w]);                                     \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                \
    }                                                                                                \
    if (lid == 0) ST(out, o, part[0]);                                                               \
}

// max/min start from the first element (core never reduces an empty dim with them)
#if IS_FLOAT
#define LOWEST (-INFINITY)
#define HIGHEST (INFINITY)
#elif IS_SIGNED
#define LOWEST ((CT)LONG_MIN)
#define HIGHEST ((CT)LONG_MAX)
#else
#define LOWEST ((CT)0)
#define HIGHEST ((CT)-1)
#endif
REDUCE(sum, RSUM, C(0))
REDUCE(prod, RPROD, C(1))
REDUCE(max, RMAX, LOWEST)
REDUCE(min, RMIN, HIGHEST)

// argmax/argmin along one dim: the input as [outer (collapsed kept dims, in red_t), R] with the
// reduced dim's stride in rst[0]; the first index wins ties, the first NaN wins
#if IS_FLOAT
#define BETTER_MAX(v, b) ((v) > (b) || (ISNAN(v) && !ISNAN(b)))
#define BETTER_MIN(v, b) ((v) < (b) || (ISNAN(v) && !ISNAN(b)))
#else
#define BETTER_MAX(v, b) ((v) > (b))
#define BETTER_MIN(v, b) ((v) < (b))
#endif
#define ARGRED(name, BETTER)                                                                         \
__kernel void KNP(name##_wi)(red_t g, __global long* out, __global const T* x) {                      \
    long o = get_global_id(0);                                                                       \
    if (o >= g.nout) return;                                                                         \
    long p = red_base(&g, o), st = g.rst[0];                                                         \
    CT best = LD(x, p);                                                                              \
    long bi = 0;                                                                                     \
    for (long i = 1; i < g.R; ++i) { CT v = LD(x, p + i * st); if (BETTER(v, best)) { best = v; bi = i; } } \
    out[o] = bi;                                                                                     \
}                                                                                                    \
__kernel void KNP(name##_wg)(red_t g, __global long* out, __global const T* x) {                      \
    __local CT pv[64];                                                                               \
    __local long pi[64];                                                                             \
    long o = get_group_id(0);                                                                        \
    int lid = get_local_id(0);                                                                       \
    long p = red_base(&g, o), st = g.rst[0];                                                         \
    long bi = -1;                                                                                    \
    CT best = C(0);                                                                                  \
    for (long i = lid; i < g.R; i += 64) {                                                           \
        CT v = LD(x, p + i * st);                                                                    \
        if (bi < 0 || BETTER(v, best)) { best = v; bi = i; }                                         \
    }                                                                                                \
    pv[lid] = best; pi[lid] = bi;                                                                    \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                    \
    for (int w = 32; w > 0; w >>= 1) {                                                               \
        if (lid < w) {                                                                               \
            long j = pi[lid + w];                                                                    \
            if (j >= 0) {                                                                            \
                CT v = pv[lid + w]; CT b = pv[lid]; long i = pi[lid];                                \
                if (i < 0 || BETTER(v, b) || (!BETTER(b, v) && j < i)) {                              \
                    pv[lid] = v; pi[lid] = j; }                                                      \
            }                                                                                        \
        }                                                                                            \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                \
    }                                                                                                \
    if (lid == 0) out[o] = pi[0];                                                                    \
}

ARGRED(argmax, BETTER_MAX)
ARGRED(argmin, BETTER_MIN)

// inclusive cumulative sum along one dim (fused kernel cumsum) of a dense [outer, R, inner] array
__kernel void KN(cumsum, wi)(long nlines, long R, long inner, __global T* out, __global const T* x, long off) {
    long o = get_global_id(0);
    if (o >= nlines) return;
    long q = (o / inner) * R * inner + (o % inner);
    x += off;
    CT acc = C(0);
    for (long i = 0; i < R; ++i) { acc += LD(x, q + i * inner); ST(out, q + i * inner, acc); }
}
