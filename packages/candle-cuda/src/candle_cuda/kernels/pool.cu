// max pooling over contiguous NCHW input with PyTorch's scan order: a strictly larger value or a NaN
// takes over (so the last NaN wins), padding never does; a window holding only the lowest value points
// at its first in-range element. Indices are positions in the flattened H*W plane (int64). One thread
// per output element.
KERNEL(max_pool2d)(const T* __restrict__ x, T* __restrict__ out, i64* __restrict__ idx, i64 NC, i64 H,
                   i64 W, i64 Ho, i64 Wo, i64 kh, i64 kw, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
    i64 total = NC * Ho * Wo;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 xq = t % Wo, r = t / Wo;
        i64 y = r % Ho, nc = r / Ho;
        const T* base = x + nc * H * W;
        CT best = CT_NEG_INF;
        i64 bi = -1, first = -1;
        for (i64 i = 0; i < kh; ++i) {
            i64 h = y * sh - ph + i * dh;
            if (h < 0 || h >= H) continue;
            for (i64 j = 0; j < kw; ++j) {
                i64 p = xq * sw - pw + j * dw;
                if (p < 0 || p >= W) continue;
                if (first < 0) first = h * W + p;
                CT v = LD(base[h * W + p]);
                if (v > best || v != v) {
                    best = v;
                    bi = h * W + p;
                }
            }
        }
        if (bi < 0) {
            bi = first;
            if (first >= 0) best = LD(base[first]);
        }
        out[t] = ST(best);
        idx[t] = bi;
    }
}
