// Scaled dot-product attention: softmax(q k^T * scale + mask) v, q [B, Hq, L, E], k [B, Hk, S, E],
// v [B, Hk, S, Ev] with any element strides; query head h reads kv head h / (Hq / Hk) (grouped-query
// attention without repeating K/V). mask_kind 0: none, 1: uint8 (non-zero = attend), 2: additive (T);
// the mask's strides are 0 along broadcast dims. causal: query i sees keys j <= i + offset. Rows that
// see no key give zeros. The output is contiguous [B, Hq, L, Ev]. Computed in CT (float32 for 16-bit
// dtypes).

__device__ __forceinline__ CT attn_score(CT s, const u8* mb, const T* ma, int mask_kind, i64 mofs) {
    if (mask_kind == 1) return mb[mofs] ? s : CT_NEG_INF;
    if (mask_kind == 2) return s + LD(ma[mofs]);
    return s;
}

// Decode / few query rows: one block per query row (b, hq, l). Scores of all S keys live in shared
// memory (the launcher checks they fit); one warp per key for q.k (lanes split E: coalesced reads),
// then the softmax, then p.v with threads along Ev (coalesced) and groups of threads along the keys.
// Dynamic shared memory: E + S + blockDim.x values of CT.
KERNEL(sdpa_decode)(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    const u8* __restrict__ mb, const T* __restrict__ ma, T* __restrict__ out,
                    i64 Hq, i64 L, i64 E, i64 Hk, i64 S, i64 Ev,
                    i64 qs0, i64 qs1, i64 qs2, i64 qs3, i64 ks0, i64 ks1, i64 ks2, i64 ks3,
                    i64 vs0, i64 vs1, i64 vs2, i64 vs3, i64 ms0, i64 ms1, i64 ms2, i64 ms3,
                    int mask_kind, int causal, i64 offset, CT scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    CT* qsh = reinterpret_cast<CT*>(smem_raw);
    CT* sc = qsh + E;
    CT* part = sc + S;
    __shared__ CT scratch[32];
    const i64 row = blockIdx.x;
    const i64 l = row % L;
    const i64 hq = (row / L) % Hq;
    const i64 b = row / (L * Hq);
    const i64 hk = hq / (Hq / Hk);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const T* qp = q + b * qs0 + hq * qs1 + l * qs2;
    for (i64 e = tid; e < E; e += blockDim.x) qsh[e] = LD(qp[e * qs3]) * scale;
    __syncthreads();
    i64 send = S;
    if (causal) {
        i64 lim = l + offset + 1;
        send = lim < 0 ? 0 : (lim < S ? lim : S);
    }
    const T* kb = k + b * ks0 + hk * ks1;
    const i64 mrow = b * ms0 + hq * ms1 + l * ms2;
    for (i64 j = warp; j < S; j += nw) {  // j is uniform in a warp: every lane joins warp_sum
        CT acc = (CT)0;
        if (j < send)
            for (i64 e = lane; e < E; e += 32) acc += qsh[e] * LD(kb[j * ks2 + e * ks3]);
        acc = warp_sum(acc);
        if (lane == 0) sc[j] = j < send ? attn_score(acc, mb, ma, mask_kind, mrow + j * ms3) : CT_NEG_INF;
    }
    __syncthreads();
    CT m = CT_NEG_INF;
    for (i64 j = tid; j < send; j += blockDim.x) m = ct_max(m, sc[j]);
    m = block_max(m, scratch);
    T* op = out + row * Ev;
    if (m == CT_NEG_INF) {  // no visible key
        for (i64 e = tid; e < Ev; e += blockDim.x) op[e] = ST((CT)0);
        return;
    }
    CT den = (CT)0;
    for (i64 j = tid; j < send; j += blockDim.x) {
        CT p = ct_exp(sc[j] - m);
        sc[j] = p;
        den += p;
    }
    den = block_sum(den, scratch);  // its barrier also publishes the probabilities
    const CT inv = (CT)1 / den;
    const T* vb = v + b * vs0 + hk * vs1;
    if (Ev <= blockDim.x) {
        const int ngrp = blockDim.x / (int)Ev, grp = tid / (int)Ev, e = tid % (int)Ev;
        CT acc = (CT)0;
        if (grp < ngrp)
            for (i64 j = grp; j < send; j += ngrp) acc += sc[j] * LD(vb[j * vs2 + e * vs3]);
        part[tid] = acc;
        __syncthreads();
        if (tid < Ev) {
            CT s = (CT)0;
            for (int g = 0; g < ngrp; ++g) s += part[g * Ev + tid];
            op[tid] = ST(s * inv);
        }
    } else {
        for (i64 e = tid; e < Ev; e += blockDim.x) {
            CT acc = (CT)0;
            for (i64 j = 0; j < send; ++j) acc += sc[j] * LD(vb[j * vs2 + e * vs3]);
            op[e] = ST(acc * inv);
        }
    }
}

// Prefill: flash-attention style. One block per (tile of BQ query rows, b * Hq + hq); key/value tiles
// of BK rows go through shared memory, the softmax is kept online (running max and sum per row), the
// output accumulates in registers: thread t owns the elements t, t + blockDim, ... of the [BQ, Ev]
// tile (at most FLASH_ACC each; the launcher guarantees BQ * Ev <= FLASH_ACC * blockDim). Causal
// blocks stop at the last key any of their rows sees. Dynamic shared memory:
// BQ*E + BK*(E+1) + BK*Ev + BQ*BK + 3*BQ values of CT.
#define FLASH_ACC 32
KERNEL(sdpa_flash)(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   const u8* __restrict__ mb, const T* __restrict__ ma, T* __restrict__ out,
                   i64 Hq, i64 L, i64 E, i64 Hk, i64 S, i64 Ev,
                   i64 qs0, i64 qs1, i64 qs2, i64 qs3, i64 ks0, i64 ks1, i64 ks2, i64 ks3,
                   i64 vs0, i64 vs1, i64 vs2, i64 vs3, i64 ms0, i64 ms1, i64 ms2, i64 ms3,
                   int mask_kind, int causal, i64 offset, CT scale, i64 BQ, i64 BK) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    CT* Qs = reinterpret_cast<CT*>(smem_raw);
    CT* Ks = Qs + BQ * E;
    CT* Vs = Ks + BK * (E + 1);
    CT* P = Vs + BK * Ev;
    CT* mrow = P + BQ * BK;
    CT* lrow = mrow + BQ;
    CT* alpha = lrow + BQ;
    const int tid = threadIdx.x, nt = blockDim.x;
    const i64 q0 = (i64)blockIdx.x * BQ;
    const i64 hq = blockIdx.y % Hq, b = blockIdx.y / Hq;
    const i64 hk = hq / (Hq / Hk);
    const T* qb = q + b * qs0 + hq * qs1;
    const T* kb = k + b * ks0 + hk * ks1;
    const T* vb = v + b * vs0 + hk * vs1;
    const i64 mbase = b * ms0 + hq * ms1;
    for (i64 idx = tid; idx < BQ * E; idx += nt) {
        i64 r = idx / E, e = idx % E, l = q0 + r;
        Qs[idx] = l < L ? LD(qb[l * qs2 + e * qs3]) * scale : (CT)0;
    }
    for (i64 r = tid; r < BQ; r += nt) {
        mrow[r] = CT_NEG_INF;
        lrow[r] = (CT)0;
    }
    CT acc[FLASH_ACC];
#pragma unroll
    for (int c = 0; c < FLASH_ACC; ++c) acc[c] = (CT)0;
    i64 kend = S;
    if (causal) {
        i64 lim = q0 + BQ - 1 + offset + 1;
        kend = lim < 0 ? 0 : (lim < S ? lim : S);
    }
    for (i64 j0 = 0; j0 < kend; j0 += BK) {
        __syncthreads();  // the previous tile is consumed (and Qs/mrow are written on the first pass)
        for (i64 idx = tid; idx < BK * E; idx += nt) {
            i64 jj = idx / E, e = idx % E, j = j0 + jj;
            Ks[jj * (E + 1) + e] = j < S ? LD(kb[j * ks2 + e * ks3]) : (CT)0;
        }
        for (i64 idx = tid; idx < BK * Ev; idx += nt) {
            i64 jj = idx / Ev, e = idx % Ev, j = j0 + jj;
            Vs[idx] = j < S ? LD(vb[j * vs2 + e * vs3]) : (CT)0;
        }
        __syncthreads();
        for (i64 idx = tid; idx < BQ * BK; idx += nt) {
            i64 r = idx / BK, jj = idx % BK, l = q0 + r, j = j0 + jj;
            bool ok = j < S && l < L && (!causal || j <= l + offset);
            CT s = CT_NEG_INF;
            if (ok) {
                CT d = (CT)0;
                const CT* qr = Qs + r * E;
                const CT* kr = Ks + jj * (E + 1);
                for (i64 e = 0; e < E; ++e) d += qr[e] * kr[e];
                s = attn_score(d, mb, ma, mask_kind, mbase + l * ms2 + j * ms3);
            }
            P[idx] = s;
        }
        __syncthreads();
        for (i64 r = tid; r < BQ; r += nt) {
            CT* pr = P + r * BK;
            CT mx = CT_NEG_INF;
            for (i64 jj = 0; jj < BK; ++jj) mx = ct_max(mx, pr[jj]);
            CT mnew = ct_max(mrow[r], mx);
            if (mnew == CT_NEG_INF) {
                alpha[r] = (CT)1;
                for (i64 jj = 0; jj < BK; ++jj) pr[jj] = (CT)0;
            } else {
                CT a = mrow[r] == CT_NEG_INF ? (CT)0 : ct_exp(mrow[r] - mnew);
                CT sum = (CT)0;
                for (i64 jj = 0; jj < BK; ++jj) {
                    CT p = pr[jj] == CT_NEG_INF ? (CT)0 : ct_exp(pr[jj] - mnew);
                    pr[jj] = p;
                    sum += p;
                }
                lrow[r] = lrow[r] * a + sum;
                mrow[r] = mnew;
                alpha[r] = a;
            }
        }
        __syncthreads();
#pragma unroll
        for (int c = 0; c < FLASH_ACC; ++c) {
            i64 idx = tid + (i64)c * nt;
            if (idx < BQ * Ev) {
                i64 r = idx / Ev, e = idx % Ev;
                const CT* pr = P + r * BK;
                CT s = acc[c] * alpha[r];
                for (i64 jj = 0; jj < BK; ++jj) s += pr[jj] * Vs[jj * Ev + e];
                acc[c] = s;
            }
        }
    }
    __syncthreads();
    T* ob = out + (b * Hq + hq) * L * Ev;
#pragma unroll
    for (int c = 0; c < FLASH_ACC; ++c) {
        i64 idx = tid + (i64)c * nt;
        if (idx < BQ * Ev) {
            i64 r = idx / Ev, e = idx % Ev, l = q0 + r;
            if (l < L) {
                CT den = kend > 0 ? lrow[r] : (CT)0;
                ob[l * Ev + e] = ST(den > (CT)0 ? acc[c] / den : (CT)0);
            }
        }
    }
}
