#version 450
// nn.h attention: one invocation per (sample b, head, query pixel i). qkv rows are
// [q heads | k heads | v heads], each (head_dim, batch*hw) in CNHW; out_h = V_h softmax(K_h^T q_i
// / sqrt(head_dim)). One pass over the keys with a running maximum (online softmax): the
// accumulator is rescaled whenever the maximum grows, so no score matrix is stored.
layout(local_size_x = 128) in;

const uint MAX_HEAD_DIM = 256u;     // the host refuses larger heads

layout(std430, binding = 0) readonly buffer QKV { float qkv[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint oq, oo;
    uint batch, hw, heads, head_dim;
    float scale;
} p;

void main()
{
    const uint cols = p.batch * p.hw, inner = p.heads * p.head_dim;
    const uint count = p.batch * p.heads * p.hw;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    float acc[MAX_HEAD_DIM];
    for (uint idx = gl_GlobalInvocationID.x; idx < count; idx += gstride) {
        const uint b = idx / (p.heads * p.hw), r = idx - b * p.heads * p.hw;
        const uint hd = r / p.hw, i = r - hd * p.hw;
        const uint qrow = hd * p.head_dim, krow = inner + qrow, vrow = 2u * inner + qrow;
        const uint col_i = b * p.hw + i;
        for (uint d = 0u; d < p.head_dim; d++) acc[d] = 0.0;
        float m = -3.0e38, l = 0.0;
        for (uint j = 0u; j < p.hw; j++) {
            const uint col_j = b * p.hw + j;
            float s = 0.0;
            for (uint d = 0u; d < p.head_dim; d++)
                s += qkv[p.oq + (qrow + d) * cols + col_i] * qkv[p.oq + (krow + d) * cols + col_j];
            s *= p.scale;
            if (s > m) {
                const float f = exp(m - s);
                l *= f;
                for (uint d = 0u; d < p.head_dim; d++) acc[d] *= f;
                m = s;
            }
            const float e = exp(s - m);
            l += e;
            for (uint d = 0u; d < p.head_dim; d++)
                acc[d] += e * qkv[p.oq + (vrow + d) * cols + col_j];
        }
        for (uint d = 0u; d < p.head_dim; d++) o[p.oo + (qrow + d) * cols + col_i] = acc[d] / l;
    }
}
