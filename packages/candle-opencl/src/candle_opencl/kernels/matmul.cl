// Batched matrix products C[b] = alpha * A[b] @ B[b] with any strides (transposed operands are
// read in place, never copied). C is dense [batch, M, N].
// (PoCL calls its mad/fma builtins out of line: products are written a * b + c, which the
// compiler contracts into FMA instructions.)
//   mm_nn: float32, B dense along N (sbn == 1): each work-item a 6x16 (or 1x16) register tile,
//          B rows as two float8 loads, A as broadcast scalars
//   mm_nt: float32, A and B dense along K (sak == sbk == 1): a 4x4 tile of float4 dot products
//          (mm_nt1: fewer than 4 rows, one row and 4 columns of float8 dot products per work-item)
//   mm_gen: any dtype, any strides: one output per work-item

typedef struct {
    long nb;               // collapsed batch dims
    long r0;               // first row (mm_nn1 finishes the rows mm_nn6 leaves)
    long M, N, K;
    long oa, ob;
    long sam, sak, sbk, sbn;
    long bshape[MAXD], bsa[MAXD], bsb[MAXD];
} mm_t;

inline void mm_batch(const mm_t* g, long b, long* pa, long* pb) {
    long a = g->oa, bb = g->ob;
    for (int d = (int)g->nb - 1; d >= 0; --d) {
        long c = b % g->bshape[d];
        b /= g->bshape[d];
        a += c * g->bsa[d];
        bb += c * g->bsb[d];
    }
    *pa = a; *pb = bb;
}

__kernel void KN(mm, gen)(mm_t g, CT alpha, __global T* out, __global const T* A, __global const T* B) {
    long j = get_global_id(0), i = get_global_id(1), b = get_global_id(2);
    if (i >= g.M || j >= g.N) return;
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    pa += i * g.sam;
    pb += j * g.sbn;
    CT acc = C(0);
    for (long k = 0; k < g.K; ++k) acc += LD(A, pa + k * g.sak) * LD(B, pb + k * g.sbk);
    ST(out, (b * g.M + i) * g.N + j, acc * alpha);
}

#if DT_F32
// an edge tile (rows i0.., columns j0..) the fast path does not cover, one scalar dot at a time
inline void mm_edge(const mm_t* g, float alpha, __global float* out, __global const float* A,
                    __global const float* B, long pa, long pb, long b, long i0, long j0, int rm, int rn) {
    for (int r = 0; r < rm && i0 + r < g->M; ++r)
        for (int c = 0; c < rn && j0 + c < g->N; ++c) {
            float acc = 0.0f;
            long qa = pa + (i0 + r) * g->sam, qb = pb + (j0 + c) * g->sbn;
            for (long k = 0; k < g->K; ++k) acc = ((A[qa + k * g->sak]) * (B[qb + k * g->sbk]) + (acc));
            out[(b * g->M + i0 + r) * g->N + j0 + c] = acc * alpha;
        }
}

#define ACC_ROW(r) float8 c##r##l = 0.0f, c##r##h = 0.0f;
#define UPD_ROW(r) { float a_ = ap[(r) * sam + k * sak]; c##r##l = (((float8)a_) * (bl) + (c##r##l)); c##r##h = (((float8)a_) * (bh) + (c##r##h)); }
#define ST_ROW(r) VS8(c##r##l * alpha, 0, cp); VS8(c##r##h * alpha, 1, cp); cp += g.N;

__kernel void mm_nn6_f32(mm_t g, float alpha, __global float* out, __global const float* A,
                         __global const float* B) {
    long j0 = get_global_id(0) * 16, i0 = get_global_id(1) * 6, b = get_global_id(2);
    if (i0 >= g.M || j0 >= g.N) return;
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    if (i0 + 6 > g.M || j0 + 16 > g.N) { mm_edge(&g, alpha, out, A, B, pa, pb, b, i0, j0, 6, 16); return; }
    long sam = g.sam, sak = g.sak, sbk = g.sbk;
    __global const float* ap = A + pa + i0 * sam;
    __global const float* bp = B + pb + j0;
    ACC_ROW(0) ACC_ROW(1) ACC_ROW(2) ACC_ROW(3) ACC_ROW(4) ACC_ROW(5)
    for (long k = 0; k < g.K; ++k) {
        float8 bl = VL8(0, bp + k * sbk), bh = VL8(1, bp + k * sbk);
        UPD_ROW(0) UPD_ROW(1) UPD_ROW(2) UPD_ROW(3) UPD_ROW(4) UPD_ROW(5)
    }
    __global float* cp = out + (b * g.M + i0) * g.N + j0;
    ST_ROW(0) ST_ROW(1) ST_ROW(2) ST_ROW(3) ST_ROW(4) ST_ROW(5)
}

// few rows (M < 6: the decode step's vector-matrix products): a 1x16 tile per work-item
__kernel void mm_nn1_f32(mm_t g, float alpha, __global float* out, __global const float* A,
                         __global const float* B) {
    long j0 = get_global_id(0) * 16, i0 = get_global_id(1) + g.r0, b = get_global_id(2);
    if (i0 >= g.M || j0 >= g.N) return;
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    if (j0 + 16 > g.N) { mm_edge(&g, alpha, out, A, B, pa, pb, b, i0, j0, 1, 16); return; }
    long sam = g.sam, sak = g.sak, sbk = g.sbk;
    __global const float* ap = A + pa + i0 * sam;
    __global const float* bp = B + pb + j0;
    ACC_ROW(0)
    long k = 0;
    float8 c1l = 0.0f, c1h = 0.0f;
    for (; k + 2 <= g.K; k += 2) {
        float8 bl = VL8(0, bp + k * sbk), bh = VL8(1, bp + k * sbk);
        float8 bl2 = VL8(0, bp + (k + 1) * sbk), bh2 = VL8(1, bp + (k + 1) * sbk);
        float a0 = ap[k * sak], a1 = ap[(k + 1) * sak];
        c0l = (((float8)a0) * (bl) + (c0l)); c0h = (((float8)a0) * (bh) + (c0h));
        c1l = (((float8)a1) * (bl2) + (c1l)); c1h = (((float8)a1) * (bh2) + (c1h));
    }
    for (; k < g.K; ++k) {
        float8 bl = VL8(0, bp + k * sbk), bh = VL8(1, bp + k * sbk);
        UPD_ROW(0)
    }
    c0l += c1l; c0h += c1h;
    __global float* cp = out + (b * g.M + i0) * g.N + j0;
    ST_ROW(0)
}

// one row (the decode step's x @ W, W [K, N] dense along N): work-item (c, p) sums rows
// [p*kc, p*kc + kc) of a 64-column block into part[p] (partials over K make more, shorter streams
// than whole columns; mm_gemv_sum adds them up)
#define GV(i) a##i = ((av) * (VL8(i, bp)) + (a##i));
__kernel void mm_gemv_f32(mm_t g, long kc, __global float* part, __global const float* A, __global const float* B) {
    long j0 = get_global_id(0) * 64, p = get_global_id(1);
    long N = g.N;
    if (j0 >= N) return;
    long k0 = p * kc, k1 = min(g.K, k0 + kc);
    __global const float* ap = A + g.oa;
    __global float* o = part + p * N + j0;
    if (j0 + 64 > N) {
        for (long j = j0; j < N; ++j) {
            float s = 0.0f;
            for (long k = k0; k < k1; ++k) s = ((ap[k * g.sak]) * (B[g.ob + k * g.sbk + j]) + (s));
            part[p * N + j] = s;
        }
        return;
    }
    float8 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
    for (long k = k0; k < k1; ++k) {
        float8 av = (float8)ap[k * g.sak];
        __global const float* bp = B + g.ob + k * g.sbk + j0;
        GV(0) GV(1) GV(2) GV(3) GV(4) GV(5) GV(6) GV(7)
    }
    VS8(a0, 0, o); VS8(a1, 1, o); VS8(a2, 2, o); VS8(a3, 3, o);
    VS8(a4, 4, o); VS8(a5, 5, o); VS8(a6, 6, o); VS8(a7, 7, o);
}

__kernel void mm_gemv_sum_f32(long N, long P, float alpha, __global const float* part, __global float* out) {
    long j = get_global_id(0);
    if (j >= N) return;
    float s = 0.0f;
    for (long p = 0; p < P; ++p) s += part[p * N + j];
    out[j] = s * alpha;
}

// Packed products (larger f32 matrices): pack_a copies A (any strides) into [batch, M/6, K, 6]
// panels and pack_b copies B into [batch, N/16, K, 16] panels (zero-padded), so that the 6x16
// register tile of mm_pk streams both operands contiguously whatever their layout (transposed
// operands are read through their strides once, never made contiguous first).
__kernel void pack_a_f32(mm_t g, long mp, __global float* out, __global const float* A) {
    long t = get_global_id(0), b = get_global_id(1);
    long K = g.K;
    if (t >= mp * K) return;
    long k = t % K, ib = t / K;  // out [b][ib][k][0..6)
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    __global float* o = out + ((b * mp + ib) * K + k) * 6;
    for (int r = 0; r < 6; ++r) {
        long i = ib * 6 + r;
        o[r] = i < g.M ? A[pa + i * g.sam + k * g.sak] : 0.0f;
    }
}

__kernel void pack_b_f32(mm_t g, long np_, __global float* out, __global const float* B) {
    long t = get_global_id(0), b = get_global_id(1);
    long K = g.K;
    if (t >= np_ * K) return;
    long k = t % K, jb = t / K;  // out [b][jb][k][0..16)
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    __global float* o = out + ((b * np_ + jb) * K + k) * 16;
    long j0 = jb * 16;
    if (j0 + 16 <= g.N && g.sbn == 1) {
        __global const float* src = B + pb + k * g.sbk + j0;
        VS8(VL8(0, src), 0, o); VS8(VL8(1, src), 1, o);
    } else {
        for (int c = 0; c < 16; ++c) {
            long j = j0 + c;
            o[c] = j < g.N ? B[pb + k * g.sbk + j * g.sbn] : 0.0f;
        }
    }
}

#define PK_UPD(r, a) c##r##l = (((float8)(a)) * (bl) + (c##r##l)); c##r##h = (((float8)(a)) * (bh) + (c##r##h));
#define PK_ST(r)                                                                                     \
    if (i0 + r < M) {                                                                                \
        __global float* cp = out + (b * M + i0 + r) * N + j0;                                        \
        if (full) { VS8(c##r##l * alpha, 0, cp); VS8(c##r##h * alpha, 1, cp); }              \
        else { float t_[16]; vstore8(c##r##l * alpha, 0, t_); vstore8(c##r##h * alpha, 1, t_);       \
               for (int c = 0; c < 16 && j0 + c < N; ++c) cp[c] = t_[c]; }                           \
    }
// work-item (ib, jb, batch): the 6x16 tile of C at rows 6*ib, columns 16*jb
__kernel void mm_pk_f32(long M, long N, long K, long mp, long np_, float alpha, __global float* out,
                        __global const float* Ap, __global const float* Bp) {
    long ib = get_global_id(0), jb = get_global_id(1), b = get_global_id(2);
    if (ib >= mp || jb >= np_) return;
    __global const float* ap = Ap + (b * mp + ib) * K * 6;
    __global const float* bp = Bp + (b * np_ + jb) * K * 16;
    ACC_ROW(0) ACC_ROW(1) ACC_ROW(2) ACC_ROW(3) ACC_ROW(4) ACC_ROW(5)
    for (long k = 0; k < K; ++k) {
        float8 bl = VL8(0, bp + k * 16), bh = VL8(1, bp + k * 16);
        float4 a4 = VL4(0, ap + k * 6);
        float2 a2 = VL2(0, ap + k * 6 + 4);
        PK_UPD(0, a4.s0) PK_UPD(1, a4.s1) PK_UPD(2, a4.s2) PK_UPD(3, a4.s3) PK_UPD(4, a2.s0) PK_UPD(5, a2.s1)
    }
    long i0 = ib * 6, j0 = jb * 16;
    bool full = j0 + 16 <= N;
    PK_ST(0) PK_ST(1) PK_ST(2) PK_ST(3) PK_ST(4) PK_ST(5)
}

// few rows (M < 4: x @ W^T of a Linear on one token) with A and B dense along K: work-item (c, i)
// the dot products of row i with 4 columns, float8 loads along K (the 4x4 tile of mm_nt would leave
// such rows to the scalar edge code)
__kernel void mm_nt1_f32(mm_t g, float alpha, __global float* out, __global const float* A,
                         __global const float* B) {
    long j0 = get_global_id(0) * 4, i = get_global_id(1), b = get_global_id(2);
    if (i >= g.M || j0 >= g.N) return;
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    long K = g.K, N = g.N, sbn = g.sbn;
    __global const float* a = A + pa + i * g.sam;
    __global const float* b0 = B + pb + j0 * sbn;
    __global const float* b1 = B + pb + (j0 + 1 < N ? j0 + 1 : j0) * sbn;  // columns past N repeat j0
    __global const float* b2 = B + pb + (j0 + 2 < N ? j0 + 2 : j0) * sbn;
    __global const float* b3 = B + pb + (j0 + 3 < N ? j0 + 3 : j0) * sbn;
    float8 c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;
    long k = 0;
    for (; k + 8 <= K; k += 8) {
        float8 av = VL8(0, a + k);
        c0 = av * VL8(0, b0 + k) + c0; c1 = av * VL8(0, b1 + k) + c1;
        c2 = av * VL8(0, b2 + k) + c2; c3 = av * VL8(0, b3 + k) + c3;
    }
    float4 s0 = c0.lo + c0.hi, s1 = c1.lo + c1.hi, s2 = c2.lo + c2.hi, s3 = c3.lo + c3.hi;
    float r[4] = {(s0.x + s0.y) + (s0.z + s0.w), (s1.x + s1.y) + (s1.z + s1.w),
                  (s2.x + s2.y) + (s2.z + s2.w), (s3.x + s3.y) + (s3.z + s3.w)};
    for (; k < K; ++k) {
        float av = a[k];
        r[0] = av * b0[k] + r[0]; r[1] = av * b1[k] + r[1]; r[2] = av * b2[k] + r[2]; r[3] = av * b3[k] + r[3];
    }
    __global float* o = out + (b * g.M + i) * N + j0;
    for (int c = 0; c < 4 && j0 + c < N; ++c) o[c] = r[c] * alpha;
}

// A and B both dense along K: C[i, j] = dot(A[i, :], B[:, j]) with float4 loads along K
__kernel void mm_nt_f32(mm_t g, float alpha, __global float* out, __global const float* A,
                        __global const float* B) {
    long j0 = get_global_id(0) * 4, i0 = get_global_id(1) * 4, b = get_global_id(2);
    if (i0 >= g.M || j0 >= g.N) return;
    long pa, pb;
    mm_batch(&g, b, &pa, &pb);
    if (i0 + 4 > g.M || j0 + 4 > g.N) { mm_edge(&g, alpha, out, A, B, pa, pb, b, i0, j0, 4, 4); return; }
    long sam = g.sam, sbn = g.sbn, K = g.K;
    __global const float* a0 = A + pa + i0 * sam;
    __global const float* b0 = B + pb + j0 * sbn;
    float4 acc[4][4];
    for (int r = 0; r < 4; ++r) for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
    long k = 0;
    for (; k + 4 <= K; k += 4) {
        float4 av[4], bv[4];
        for (int r = 0; r < 4; ++r) av[r] = VL4(0, a0 + r * sam + k);
        for (int c = 0; c < 4; ++c) bv[c] = VL4(0, b0 + c * sbn + k);
        for (int r = 0; r < 4; ++r) for (int c = 0; c < 4; ++c) acc[r][c] = ((av[r]) * (bv[c]) + (acc[r][c]));
    }
    float res[4][4];
    for (int r = 0; r < 4; ++r) for (int c = 0; c < 4; ++c) {
        float4 v = acc[r][c];
        float s = (v.s0 + v.s1) + (v.s2 + v.s3);
        for (long kk = k; kk < K; ++kk) s = ((a0[r * sam + kk]) * (b0[c * sbn + kk]) + (s));
        res[r][c] = s * alpha;
    }
    for (int r = 0; r < 4; ++r)
        vstore4((float4)(res[r][0], res[r][1], res[r][2], res[r][3]), 0, out + (b * g.M + i0 + r) * g.N + j0);
}
#endif
