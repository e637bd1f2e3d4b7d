#version 450
// nn.h attention_qkv: out_h = V_h softmax(K_h^T q_i / sqrt(head_dim)) for every (sample b, head,
// query i). q and out are (heads*head_dim, batch*nq), k and v (heads*head_dim, batch*nk), CNHW
// (self-attention binds the three row blocks of one qkv array; cross-attention a text condition).
// A workgroup of WG invocations serves WG / lanes queries of one (sample, head); the `lanes`
// invocations of one query split its keys. The keys go through shared memory in tiles of
// TILE / head_dim keys: the whole workgroup copies a tile of K and of V (coalesced: adjacent
// invocations read adjacent keys of a channel), then every query of the workgroup reads it, so
// each K and V value is read from global memory once per workgroup instead of once per query
// (a reuse factor of WG / lanes). Within a tile the lanes of a query take keys lane,
// lane + lanes, ... Each invocation keeps an online softmax over its keys (running maximum m,
// sum l, accumulator acc, rescaled whenever m grows: no score matrix is stored), and the lanes'
// partial results are merged through shared memory (the tile's space, reused):
//     M = max m_t,  L = sum l_t e^(m_t - M),  out = sum acc_t e^(m_t - M) / L.
// Why split the keys: besides spreading long sequences over a GPU's lanes, an invocation's loops
// then run about (keys / lanes) * 3 * head_dim times. Mesa's lavapipe ends an invocation's loops
// after 65535 iterations in total, silently (one invocation looping over all keys gave wrong
// output from 32k tokens x head_dim on), so the host also splits the keys into blocks of kn, one
// dispatch each, within the loop budget (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET): between blocks a
// query's running maximum and sum wait in `ml` (2 floats per query) and its unnormalised output in
// `out`; the first block (flags bit 0) starts from nothing, the last (bit 1) divides by the sum.
// One block of all keys (both bits) is a single pass. lanes = 1 is one invocation per query and
// needs no merge. The host picks lanes (at most TILE / head_dim / KB, so that a tile keeps every
// lane busy) and blocks (csrc/nn_vk.c).
layout(local_size_x = 64) in;

const uint WG = 64u;                // CCFG_VK_ATTENTION_WG
const uint MAX_HEAD_DIM = 256u;     // the host refuses larger heads
const uint CHUNK = 32u;             // accumulator columns merged per round
const uint KB = 4u;                 // keys per round of an invocation: CCFG_VK_ATTENTION_KB
const uint TILE = 1920u;            // floats of K (and of V) per tile: CCFG_VK_ATTENTION_TILE

layout(std430, binding = 0) readonly buffer Q { float qb[]; };
layout(std430, binding = 1) readonly buffer K { float kb[]; };
layout(std430, binding = 2) readonly buffer V { float vb[]; };
layout(std430, binding = 3) buffer O { float o[]; };
layout(std430, binding = 4) buffer ST { float ml[]; };

layout(push_constant) uniform Push {
    uint oq, ok, ov, oo, os;
    uint batch, nq, nk, heads, head_dim;
    float scale;
    uint lanes;
    uint k0, kn, flags;     // this dispatch's keys [k0, k0 + kn); bit 0 first block, bit 1 last
    uint tk;                // keys per tile (<= TILE / head_dim, a multiple of KB x lanes)
} p;

// the K tile (channel-major: s_kv[d * tk + key]), then the V tile; after the keys, the merge's
// accumulator columns (WG * CHUNK = 2048 floats). 15.5 KiB in all: within the 16 KiB every
// device has.
shared float s_kv[2u * TILE];
shared float s_m[WG];
shared float s_l[WG];

void main()
{
    const uint qcols = p.batch * p.nq, kcols = p.batch * p.nk;
    const uint t = gl_LocalInvocationID.x, q = t / p.lanes, lane = t - q * p.lanes;
    const uint first = q * p.lanes;            // the query's first invocation
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    // ceil(nq / (WG / lanes)) workgroups per (sample, head), so that a workgroup's queries share
    // their keys
    const uint per_wg = WG / p.lanes, gpb = (p.nq + per_wg - 1u) / per_wg;
    const uint bh = group / gpb, i = (group - bh * gpb) * per_wg + q;
    // past the last (sample, head) a workgroup loads nothing; past the last query an invocation
    // computes nothing; both still reach every barrier
    const bool wg_live = bh < p.batch * p.heads;
    const bool live = wg_live && i < p.nq;
    const uint b = bh / p.heads, hd = bh - b * p.heads;
    const uint idx = bh * p.nq + i;            // (b * heads + hd) * nq + i
    const uint row = hd * p.head_dim;
    const uint col_i = b * p.nq + i;
    const uint tk = p.tk;
    float acc[MAX_HEAD_DIM], qv[MAX_HEAD_DIM];     // the query, scaled, read once
    for (uint d = 0u; d < p.head_dim; d++) {
        acc[d] = 0.0;
        qv[d] = live ? qb[p.oq + (row + d) * qcols + col_i] * p.scale : 0.0;
    }
    float m = -3.0e38, l = 0.0;
    const uint end = p.k0 + p.kn;
    for (uint t0 = p.k0; t0 < end; t0 += tk) {
        const uint tn = min(tk, end - t0);
        barrier();                             // the previous tile is no longer read
        if (wg_live) {
            const uint src = b * p.nk + t0, nel = tn * p.head_dim;
            for (uint e = t; e < nel; e += WG) {
                const uint d = e / tn, key = e - d * tn;
                const uint at = (row + d) * kcols + src + key;
                s_kv[d * tk + key] = kb[p.ok + at];
                s_kv[TILE + d * tk + key] = vb[p.ov + at];
            }
        }
        barrier();
        if (live) {
            // KB keys per round, lane + lanes * u apart: one pass over the channels serves KB
            // scores, and the accumulator is rescaled and updated once per round instead of once
            // per key
            for (uint j0 = 0u; j0 < tn; j0 += KB * p.lanes) {
                float s[KB];
                uint cj[KB];
                bool ok[KB];
                for (uint u = 0u; u < KB; u++) {
                    const uint j = j0 + lane + u * p.lanes;
                    ok[u] = j < tn;
                    cj[u] = min(j, tn - 1u);
                    s[u] = 0.0;
                }
                for (uint d = 0u; d < p.head_dim; d++) {
                    const float qd = qv[d];
                    const uint base = d * tk;
                    for (uint u = 0u; u < KB; u++) s[u] += qd * s_kv[base + cj[u]];
                }
                float mx = m;
                for (uint u = 0u; u < KB; u++)
                    if (ok[u]) mx = max(mx, s[u]);
                if (mx > m) {
                    const float f = exp(m - mx);
                    l *= f;
                    for (uint d = 0u; d < p.head_dim; d++) acc[d] *= f;
                    m = mx;
                }
                float e[KB];
                for (uint u = 0u; u < KB; u++) {
                    e[u] = ok[u] ? exp(s[u] - m) : 0.0;
                    l += e[u];
                }
                for (uint d = 0u; d < p.head_dim; d++) {
                    const uint base = TILE + d * tk;
                    float a = acc[d];
                    for (uint u = 0u; u < KB; u++) a += e[u] * s_kv[base + cj[u]];
                    acc[d] = a;
                }
            }
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
    // the block's share, then the earlier blocks' (their maximum and sum in ml, their
    // unnormalised output in o), both rescaled to the larger maximum
    const bool first_block = (p.flags & 1u) != 0u, last_block = (p.flags & 2u) != 0u;
    float g_blk = 1.0, g_prev = 0.0, L = s_l[first];
    float m_all = s_m[first];
    if (!first_block && live) {
        const float m_prev = ml[p.os + 2u * idx], l_prev = ml[p.os + 2u * idx + 1u];
        m_all = max(m_all, m_prev);
        g_blk = exp(s_m[first] - m_all);
        g_prev = exp(m_prev - m_all);
        L = L * g_blk + l_prev * g_prev;
    }
    const float scale_out = last_block ? 1.0 / L : 1.0;
    for (uint d0 = 0u; d0 < p.head_dim; d0 += CHUNK) {
        const uint nd = min(CHUNK, p.head_dim - d0);
        for (uint c = 0u; c < nd; c++) s_kv[t * CHUNK + c] = acc[d0 + c] * f;
        barrier();
        for (uint st = p.lanes / 2u; st > 0u; st >>= 1u) {
            if (lane < st)
                for (uint c = 0u; c < nd; c++) s_kv[t * CHUNK + c] += s_kv[(t + st) * CHUNK + c];
            barrier();
        }
        if (live)
            for (uint c = lane; c < nd; c += p.lanes) {
                const uint at = p.oo + (row + d0 + c) * qcols + col_i;
                float v = s_kv[first * CHUNK + c] * g_blk;
                if (!first_block) v += o[at] * g_prev;
                o[at] = v * scale_out;
            }
        barrier();
    }
    if (!last_block && live && lane == 0u) {
        ml[p.os + 2u * idx] = m_all;
        ml[p.os + 2u * idx + 1u] = L;
    }
}
