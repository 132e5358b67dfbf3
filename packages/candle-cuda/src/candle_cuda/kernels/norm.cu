// Row kernels over the last dim: softmax / log_softmax, rms_norm, layer_norm. One block per row; the
// row is read once into shared memory (as CT) when `cached` is set (the launcher checks that d values
// fit the dynamic shared memory it passes), else read again from global memory on each pass.
// float16/bfloat16 compute in float32 and round once, like the composition in core. With `vec` (the
// launcher checks d is a multiple of VEC_N and both rows are 16-byte aligned) rows move in 16-byte words.
#define VEC_N (16 / (int)sizeof(T))
union VecT {
    uint4 v;
    T e[16 / sizeof(T)];
};

// y[i] = ST(EXPR) for i in the row, EXPR an expression of i (16-byte stores with vec)
#define ROW_WRITE(EXPR)                                                                    \
    if (vec) {                                                                             \
        for (i64 iv = threadIdx.x; iv < d / VEC_N; iv += blockDim.x) {                     \
            VecT u;                                                                        \
            for (int k = 0; k < VEC_N; ++k) {                                              \
                i64 i = iv * VEC_N + k;                                                    \
                u.e[k] = ST(EXPR);                                                         \
            }                                                                              \
            reinterpret_cast<uint4*>(yr)[iv] = u.v;                                        \
        }                                                                                  \
    } else {                                                                               \
        for (i64 i = threadIdx.x; i < d; i += blockDim.x) yr[i] = ST(EXPR);                \
    }

__device__ __forceinline__ CT row_get(const T* xr, CT* cache, int cached, i64 i) {
    return cached ? cache[i] : LD(xr[i]);
}

__device__ __forceinline__ void row_load(const T* xr, CT* cache, int cached, i64 d, int vec) {
    if (cached) {
        if (vec) {
            for (i64 iv = threadIdx.x; iv < d / VEC_N; iv += blockDim.x) {
                VecT u;
                u.v = reinterpret_cast<const uint4*>(xr)[iv];
                for (int k = 0; k < VEC_N; ++k) cache[iv * VEC_N + k] = LD(u.e[k]);
            }
        } else {
            for (i64 i = threadIdx.x; i < d; i += blockDim.x) cache[i] = LD(xr[i]);
        }
        __syncthreads();
    }
}

KERNEL(softmax)(const T* __restrict__ x, T* __restrict__ y, i64 d, int log_, int cached, int vec) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    CT* cache = reinterpret_cast<CT*>(smem_raw);
    __shared__ CT scratch[32];
    const T* xr = x + (i64)blockIdx.x * d;
    T* yr = y + (i64)blockIdx.x * d;
    row_load(xr, cache, cached, d, vec);
    CT m = CT_NEG_INF;
    for (i64 i = threadIdx.x; i < d; i += blockDim.x) m = ct_max(m, row_get(xr, cache, cached, i));
    m = block_max(m, scratch);
    if (m == CT_NEG_INF) m = (CT)0;  // a row of -inf: exp gives 0 / 0 = NaN like the composition
    CT s = (CT)0;
    for (i64 i = threadIdx.x; i < d; i += blockDim.x) s += ct_exp(row_get(xr, cache, cached, i) - m);
    s = block_sum(s, scratch);
    if (log_) {
        CT ls = ct_log(s);
        ROW_WRITE(row_get(xr, cache, cached, i) - m - ls)
    } else {
        CT inv = (CT)1 / s;
        ROW_WRITE(ct_exp(row_get(xr, cache, cached, i) - m) * inv)
    }
}

KERNEL(rms_norm)(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y, i64 d, int has_w,
                 CT eps, int cached, int vec) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    CT* cache = reinterpret_cast<CT*>(smem_raw);
    __shared__ CT scratch[32];
    const T* xr = x + (i64)blockIdx.x * d;
    T* yr = y + (i64)blockIdx.x * d;
    row_load(xr, cache, cached, d, vec);
    CT ss = (CT)0;
    for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
        CT v = row_get(xr, cache, cached, i);
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    CT r = ct_rsqrt(ss / (CT)d + eps);
    ROW_WRITE(has_w ? row_get(xr, cache, cached, i) * r * LD(w[i]) : row_get(xr, cache, cached, i) * r)
}

__device__ __forceinline__ CT ln_value(CT x, CT mu, CT r, const T* w, const T* b, int flags, i64 i) {
    CT v = (x - mu) * r;
    if (flags & 1) v = v * LD(w[i]);
    if (flags & 2) v = v + LD(b[i]);
    return v;
}

KERNEL(layer_norm)(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                   T* __restrict__ y, i64 d, int flags, CT eps, int cached, int vec) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    CT* cache = reinterpret_cast<CT*>(smem_raw);
    __shared__ CT scratch[32];
    const T* xr = x + (i64)blockIdx.x * d;
    T* yr = y + (i64)blockIdx.x * d;
    row_load(xr, cache, cached, d, vec);
    CT s = (CT)0;
    for (i64 i = threadIdx.x; i < d; i += blockDim.x) s += row_get(xr, cache, cached, i);
    CT mu = block_sum(s, scratch) / (CT)d;
    CT v2 = (CT)0;
    for (i64 i = threadIdx.x; i < d; i += blockDim.x) {
        CT c = row_get(xr, cache, cached, i) - mu;
        v2 += c * c;
    }
    CT r = ct_rsqrt(block_sum(v2, scratch) / (CT)d + eps);
    ROW_WRITE(ln_value(row_get(xr, cache, cached, i), mu, r, w, b, flags, i))
}
