// Attention in one launch for CPU devices (float32): one work-item per query row (b, hq, l) streams
// the keys of its kv head once: the score q.k * scale, the mask (causal limit, bool or additive, read
// through broadcasting strides), an online softmax (running max; the sum and the output rescaled
// when the max grows) and the weighted sum of the value rows. No scores buffer, no other launch: the
// decode step's attention (and short prompts). Rows that see no key give zeros, as the composed
// path. Head dims E and Ev are multiples of 8, at most ATT_MAXE; the last dims of q, k, v dense.

#define ATT_MAXE 256

typedef struct {
    long Hq, Hk, L, S, E, Ev;
    long kind, causal, offset, mo;  // mask: 0 none, 1 bool (keep where true), 2 additive
    long ms[4];                     // mask strides (0 along broadcast dims) over [B, Hq, L, S]
    long qo, ko, vo;                // element offsets of q, k, v
    long qs[3], ks[3], vs[3];       // strides of q over (B, Hq, L); of k and v over (B, Hk, S)
} attr_t;

__kernel void attn_rows_f32(long rows, float scale, attr_t g, __global float* out, __global const float* Q,
                            __global const float* Kc, __global const float* V, __global const uchar* mbool,
                            __global const float* madd) {
    long row = get_global_id(0);
    if (row >= rows) return;
    long l = row % g.L, r = row / g.L;
    long hq = r % g.Hq, b = r / g.Hq;
    long hk = hq / (g.Hq / g.Hk);
    int e8 = (int)(g.E / 8), v8 = (int)(g.Ev / 8);
    __global const float* qp = Q + g.qo + b * g.qs[0] + hq * g.qs[1] + l * g.qs[2];
    __global const float* kp = Kc + g.ko + b * g.ks[0] + hk * g.ks[1];
    __global const float* vp = V + g.vo + b * g.vs[0] + hk * g.vs[1];
    long mrow = g.mo + b * g.ms[0] + hq * g.ms[1] + l * g.ms[2];
    float8 q[ATT_MAXE / 8], acc[ATT_MAXE / 8];
    for (int i = 0; i < e8; ++i) q[i] = VL8(i, qp) * scale;
    for (int i = 0; i < v8; ++i) acc[i] = 0.0f;
    long end = g.causal ? min(g.S, l + g.offset + 1) : g.S;  // keys j <= l + offset are visible
    float m = -INFINITY, sum = 0.0f;
    for (long j = 0; j < end; ++j) {
        __global const float* kj = kp + j * g.ks[2];
        float8 d = q[0] * VL8(0, kj);
        for (int i = 1; i < e8; ++i) d = q[i] * VL8(i, kj) + d;
        float4 d4 = d.lo + d.hi;
        float s = (d4.x + d4.y) + (d4.z + d4.w);
        if (g.kind == 1) { if (!mbool[mrow + j * g.ms[3]]) continue; }
        else if (g.kind == 2) s += madd[mrow + j * g.ms[3]];
        if (s == -INFINITY) continue;
        if (s > m) {  // a new max: rescale what was summed so far (exp(-inf) = 0 on the first key)
            float c = exp(m - s);
            sum *= c;
            for (int i = 0; i < v8; ++i) acc[i] *= c;
            m = s;
        }
        float p = exp(s - m);
        sum += p;
        __global const float* vj = vp + j * g.vs[2];
        for (int i = 0; i < v8; ++i) acc[i] = p * VL8(i, vj) + acc[i];
    }
    __global float* o = out + row * g.Ev;
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // no visible key: zeros
    for (int i = 0; i < v8; ++i) VS8(acc[i] * inv, i, o);
}
