#version 450
// nn.h attention_qkv: out_h = V_h softmax(K_h^T q_i / sqrt(head_dim)) for every (sample b, head,
// query i). q and out are (heads*head_dim, batch*nq), k and v (heads*head_dim, batch*nk), CNHW
// (self-attention binds the three row blocks of one qkv array; cross-attention a text condition).
// A workgroup of WG invocations serves WG / lanes queries; the `lanes` invocations of one query
// split its keys (j = lane, lane + lanes, ...). Each keeps an online softmax over its keys
// (running maximum m, sum l, accumulator acc, rescaled whenever m grows: no score matrix is
// stored), and the lanes' partial results are merged through shared memory:
//     M = max m_t,  L = sum l_t e^(m_t - M),  out = sum acc_t e^(m_t - M) / L.
// Why split the keys: besides spreading long sequences over a GPU's lanes, no loop of one
// invocation then runs more than (nk / lanes) * head_dim times. Mesa's lavapipe stops a loop after
// 65535 iterations in total per invocation; one invocation looping over all keys with an inner loop
// over head_dim gave silently wrong output from 32k tokens x head_dim on. The host picks lanes
// (csrc/nn_vk.c); lanes = 1 is one invocation per query and needs no merge.
layout(local_size_x = 64) in;

const uint WG = 64u;                // CCFG_VK_ATTENTION_WG
const uint MAX_HEAD_DIM = 256u;     // the host refuses larger heads
const uint CHUNK = 32u;             // accumulator columns merged per round

layout(std430, binding = 0) readonly buffer Q { float qb[]; };
layout(std430, binding = 1) readonly buffer K { float kb[]; };
layout(std430, binding = 2) readonly buffer V { float vb[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint oq, ok, ov, oo;
    uint batch, nq, nk, heads, head_dim;
    float scale;
    uint lanes;
} p;

shared float s_m[WG];
shared float s_l[WG];
shared float s_acc[WG * CHUNK];

void main()
{
    const uint qcols = p.batch * p.nq, kcols = p.batch * p.nk;
    const uint count = p.batch * p.heads * p.nq;
    const uint t = gl_LocalInvocationID.x, q = t / p.lanes, lane = t - q * p.lanes;
    const uint first = q * p.lanes;            // the query's first invocation
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint idx = group * (WG / p.lanes) + q;
    // past the last query an invocation computes nothing but still reaches every barrier
    const bool live = idx < count;
    const uint b = idx / (p.heads * p.nq), r = idx - b * p.heads * p.nq;
    const uint hd = r / p.nq, i = r - hd * p.nq;
    const uint row = hd * p.head_dim;
    const uint col_i = b * p.nq + i;

    float acc[MAX_HEAD_DIM];
    for (uint d = 0u; d < p.head_dim; d++) acc[d] = 0.0;
    float m = -3.0e38, l = 0.0;
    if (live) {
        for (uint j = lane; j < p.nk; j += p.lanes) {
            const uint col_j = b * p.nk + j;
            float s = 0.0;
            for (uint d = 0u; d < p.head_dim; d++)
                s += qb[p.oq + (row + d) * qcols + col_i] * kb[p.ok + (row + d) * kcols + col_j];
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
                acc[d] += e * vb[p.ov + (row + d) * kcols + col_j];
        }
    }

    // merge the lanes of each query: the largest maximum, then every share rescaled to it
    s_m[t] = m;
    barrier();
    for (uint st = p.lanes / 2u; st > 0u; st >>= 1u) {
        if (lane < st) s_m[t] = max(s_m[t], s_m[t + st]);
        barrier();
    }
    const float f = exp(m - s_m[first]);       // 0 for a lane that saw no key
    s_l[t] = l * f;
    barrier();
    for (uint st = p.lanes / 2u; st > 0u; st >>= 1u) {
        if (lane < st) s_l[t] += s_l[t + st];
        barrier();
    }
    const float L = s_l[first];
    for (uint d0 = 0u; d0 < p.head_dim; d0 += CHUNK) {
        const uint nd = min(CHUNK, p.head_dim - d0);
        for (uint c = 0u; c < nd; c++) s_acc[t * CHUNK + c] = acc[d0 + c] * f;
        barrier();
        for (uint st = p.lanes / 2u; st > 0u; st >>= 1u) {
            if (lane < st)
                for (uint c = 0u; c < nd; c++) s_acc[t * CHUNK + c] += s_acc[(t + st) * CHUNK + c];
            barrier();
        }
        if (live)
            for (uint c = lane; c < nd; c += p.lanes)
                o[p.oo + (row + d0 + c) * qcols + col_i] = s_acc[first * CHUNK + c] / L;
        barrier();
    }
}
