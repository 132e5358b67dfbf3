// silu(a) * b, the SwiGLU gate, on contiguous arrays of n elements (grid-stride loop).
KERNEL(silu_mul)(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, i64 n) {
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        CT v = LD(a[i]);
        CT s = v / ((CT)1 + ct_exp(-v));
        y[i] = ST(s * LD(b[i]));
    }
}
