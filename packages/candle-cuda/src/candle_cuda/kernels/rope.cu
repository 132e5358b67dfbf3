// Rotary embedding of x [B, H, S, D] (any element strides) with cos/sin [Bc, S, D/2] contiguous, Bc 1 or
// B. One thread per rotation pair (a, b) = (x[i], x[i + D/2]) or, interleaved, (x[2i], x[2i+1]):
// (a*cos - b*sin, b*cos + a*sin) written to `out` (any strides; it may be x itself: each thread reads
// its pair before writing it).
KERNEL(rope)(const T* x, const T* __restrict__ cs, const T* __restrict__ sn, T* out, i64 B, i64 H, i64 S,
             i64 half, i64 bc, i64 xs0, i64 xs1, i64 xs2, i64 xs3, i64 os0, i64 os1, i64 os2, i64 os3,
             int interleaved) {
    i64 total = B * H * S * half;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (i64)gridDim.x * blockDim.x) {
        i64 i = t % half;
        i64 r = t / half;
        i64 s = r % S;
        r /= S;
        i64 h = r % H;
        i64 b = r / H;
        i64 ia = interleaved ? 2 * i : i;
        i64 ib = interleaved ? 2 * i + 1 : i + half;
        i64 xb = b * xs0 + h * xs1 + s * xs2;
        i64 ob = b * os0 + h * os1 + s * os2;
        i64 ci = ((bc == 1 ? 0 : b) * S + s) * half + i;
        CT c = LD(cs[ci]), sv = LD(sn[ci]);
        CT va = LD(x[xb + ia * xs3]), vb = LD(x[xb + ib * xs3]);
        out[ob + ia * os3] = ST(va * c - vb * sv);
        out[ob + ib * os3] = ST(vb * c + va * sv);
    }
}
