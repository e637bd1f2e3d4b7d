// nn.h attention_qkv on cooperative matrices (GL_KHR_cooperative_matrix; tensor cores on NVIDIA):
// flash-style, as nn_attention_tiled.glsl, with S = Q K^T and O += P V as float16 x float16 ->
// float32 matrix products and the online softmax in float32. q and out are (heads*head_dim,
// batch*nq), k and v (heads*head_dim, batch*nk), CNHW; out is float32. One body, variants by
// #define (integer literals: the preprocessor checks them below):
//   C        the matrices' M = N = K (float16 A and B, float32 C and result, subgroup scope)
//   SG       the subgroup size the variant runs with (pinned by the pipeline where the device
//            can: csrc/backend_vk.c decide_coop, get_pipe)
//   ATTN_NVC slices of DS = 64 channels: heads of up to 64 NVC channels (one pipeline per NVC, so
//            that an invocation holds Q and O for its class of head widths, not the widest)
// nn_attention_coop<NVC>.comp: 16 x 16 x 16 in subgroups of 32 (NVIDIA tensor cores; not run on
// any device yet); nn_attention_coop8_<NVC>.comp: 8 x 8 x 8 in subgroups of 8 (Mesa lavapipe >=
// 26: the variant tests/test_vulkan_coop_attention.py runs).
//
// A workgroup is NSG = 4 subgroups and takes BR = 4 C queries of one (sample, head); subgroup s
// owns queries 4 s .. (rows s C .. s C + C - 1 of the block) for the whole key walk: their Q as
// A matrices in registers, their S, P, softmax state and O. Keys go in tiles of BC = 4 C. Per tile:
//  1. S (C x BC per subgroup, 4 accumulators) = Q K^T: K is staged by the workgroup in slices of
//     DS channels x BC keys, rounded to float16, [channel][key] (row-major K^T, the B matrices);
//     each subgroup multiplies its Q blocks by them. Channels past head_dim (up to the next
//     multiple of C) are staged as zeros: head_dim is padded inside the shader, never by copies.
//  2. the subgroup stores S (float32) to its own C x BC slice of shared memory (the element <->
//     lane mapping of a cooperative matrix is the implementation's, so per-row work goes through
//     shared memory); SG / C invocations per row take BC C / SG keys each: the row maximum, the
//     running maximum m and rescale factor alpha = e^(m_old - m), P = e^(scale S - m) rounded to
//     float16 into the subgroup's P slice, and the row sum l of the rounded P (so that O / l is
//     the weighted mean of V with the weights P V used).
//  3. O += P V: V staged as slices of DS channels x BC keys ([channel][key]: column-major B
//     matrices), for each C-column block a fresh accumulator = P (C x BC) V (BC x C), stored
//     column-major to the subgroup's slice; each invocation then updates the C C / SG elements of
//     the block it owns, O = alpha O + (P V), in float32 registers (element e = lane + SG q: query
//     e % C, column e / C, so that the final stores of a lane run along queries, adjacent in out).
// Only the staging of Q, K and V needs workgroup barriers; the rest is within a subgroup.
// Shared memory (rows padded by 16 bytes, KS, SS, PS below): the stage DS x (BC + 8) float16, S or
// a P V block C x (BC + 4) float32 and P C x (BC + 8) float16 per subgroup, WG + 3 BR floats:
// 37,120 bytes at 16 x 16 x 16 (CCFG_VK_ATTN_COOP_SHARED), 12,800 at 8 x 8 x 8
// (CCFG_VK_ATTN_COOP8_SHARED).
//
// Keys [k0, k0 + kn) per dispatch, flags bit 0 the first block, bit 1 the last, the state array
// ml (2 floats per query: running maximum and sum) and the unnormalised O in out between blocks:
// nn_attention_tiled.glsl's protocol (csrc/nn_vk.c attention_key_blocks). Every loop is bounded
// by constants; all are unrolled but the staging loops of the 8 x 8 x 8 variant (STAGE_LOOP); the
// host's count for lavapipe's loop limit is an upper bound of every loop, unrolled or not.
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_cooperative_matrix : require

#define NSG 4
#define WG (NSG * SG)
#define DSL 64
// every row gets SG / C whole invocations, every C x C block C C / SG elements per invocation, and
// the staging loops the same count of values per invocation
#if (SG % C) != 0 || ((C * C) % SG) != 0 || ((DSL * 4 * C) % WG) != 0 || (DSL % C) != 0
#error "nn_attention_coop.glsl: C must divide SG and 64, and SG divide C C"
#endif

// the staging loops: unrolled on a GPU (the loads of an invocation issued together); not on
// lavapipe (8 x 8 x 8), whose compile time of the unrolled shader grows to minutes at NVC = 4
#if C == 8
#define STAGE_LOOP [[dont_unroll]]
#else
#define STAGE_LOOP [[unroll]]
#endif

layout(local_size_x = WG) in;

const uint BR = NSG * C;        // queries per workgroup: CCFG_VK_ATTN_COOP_BR (or COOP8_BR)
const uint BC = 4u * C;         // keys per tile: CCFG_VK_ATTN_COOP_BC (or COOP8_BC)
const uint DS = DSL;            // channels per K or V slice
const uint NVC = ATTN_NVC;      // slices: head_dim <= NVC DS
const uint QB = DS / C;         // C-blocks per slice
const uint KB = BC / C;         // C-blocks per key tile
const uint LPR = SG / C;        // invocations per row in the softmax
const uint KPL = BC / LPR;      // keys per invocation in the softmax
const uint EPL = (C * C) / SG;  // elements of a C x C block per invocation
const uint NST = (DS * BC) / WG;    // staged values per invocation per slice
const float NEG = -1.0e30;      // "no key yet" / a masked key: e^(NEG - m) is 0, never NaN

layout(std430, binding = 0) readonly buffer Q { float qb[]; };
layout(std430, binding = 1) readonly buffer K { float kb[]; };
layout(std430, binding = 2) readonly buffer V { float vb[]; };
layout(std430, binding = 3) buffer O { float o[]; };
layout(std430, binding = 4) buffer ST { float ml[]; };

layout(push_constant) uniform Push {
    uint oq, ok, ov, oo, os;
    uint batch, nq, nk, heads, head_dim;
    float scale;
    uint k0, kn, flags;     // this dispatch's keys [k0, k0 + kn); bit 0 first block, bit 1 last
} p;

// Row strides padded by 16 bytes: rows of 64 float16 (128 bytes) would start in the same bank,
// so a matrix load's rows would conflict (8 ways on a GPU with 32 banks of 4 bytes); 16-byte
// multiples keep every matrix load and store aligned to 16 bytes.
const uint KS = BC + 8u;        // s_kv's row stride (float16)
const uint SS = BC + 4u;        // s_s's row stride (float32)
const uint PS = BC + 8u;        // s_p's row stride (float16)
// the stage: a Q slice [channel * KS + query] (column-major A), a K slice [channel * KS + key]
// (row-major B = K^T) or a V slice [channel * KS + key] (column-major B = V); BR = BC
shared float16_t s_kv[DS * KS];
shared float s_s[NSG * C * SS];         // per subgroup: S (row-major, stride SS), then P V blocks
shared float16_t s_p[NSG * C * PS];     // per subgroup: P (row-major, stride PS)
// the row invocations' partial maxima, then sums, at [subgroup * SG + lane]: by subgroup and
// lane, not gl_LocalInvocationID, whose relation to them Vulkan leaves to the implementation
shared float s_red[WG];
shared float s_m[BR], s_l[BR], s_a[BR]; // per row: running maximum, sum, this tile's rescale

void main()
{
    const uint t = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint qcols = p.batch * p.nq, kcols = p.batch * p.nk;
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint gpb = (p.nq + BR - 1u) / BR;    // workgroups per (sample, head)
    const uint bh = group / gpb;
    // past the last (sample, head): the whole workgroup returns, so no barrier is skipped by some
    if (bh >= p.batch * p.heads) return;
    const uint i0 = (group - bh * gpb) * BR;   // the block's first query
    const uint b = bh / p.heads, hd = bh - b * p.heads;
    const uint D = p.head_dim;
    const uint DP = (D + C - 1u) / C * C;      // head_dim padded to the matrices' K
    const uint row = hd * D;                   // the head's first channel
    const uint qc0 = b * p.nq + i0;            // the block's first query column
    const bool first_block = (p.flags & 1u) != 0u, last_block = (p.flags & 2u) != 0u;
    const uint r0 = sg * C;                    // this subgroup's first row of the block
    const uint sbase = sg * C * SS, pbase = sg * C * PS;   // its slices of s_s and s_p
    // softmax layout: row r0 + rl, keys part KPL .. part KPL + KPL - 1
    const uint rl = lane / LPR, part = lane % LPR, rr = r0 + rl;

    // the state: first block none; else the earlier blocks' maximum, sum and unnormalised O
    float acc[NVC * QB][EPL];
    [[unroll]] for (uint cb = 0u; cb < NVC * QB; cb++)
        [[unroll]] for (uint q = 0u; q < EPL; q++) {
            const uint e = lane + SG * q, i = e % C, c = cb * C + e / C;
            const bool ok = !first_block && c < D && i0 + r0 + i < p.nq;
            const float v = o[p.oo + min(row + c, row + D - 1u) * qcols +
                              min(qc0 + r0 + i, qcols - 1u)];
            acc[cb][q] = ok ? v : 0.0;
        }
    if (part == 0u) {
        const bool ok = !first_block && i0 + rr < p.nq;
        const uint at = p.os + 2u * (bh * p.nq + min(i0 + rr, p.nq - 1u));
        s_m[rr] = ok ? ml[at] : NEG;
        s_l[rr] = ok ? ml[at + 1u] : 0.0;
    }

    // Q, staged slice by slice, kept as this subgroup's A matrices for the whole key walk
    coopmat<float16_t, gl_ScopeSubgroup, C, C, gl_MatrixUseA> qa[NVC * QB];
    [[unroll]] for (uint sl = 0u; sl < NVC; sl++) {
        if (DS * sl >= D) break;            // uniform: the whole workgroup leaves together
        barrier();
        STAGE_LOOP for (uint u = 0u; u < NST; u++) {
            const uint e = t + WG * u, r = e % BR, c = e / BR, ch = DS * sl + c;
            if (ch >= DP) break;    // channels past DP are never read (c grows with u)
            const bool ok = ch < D && i0 + r < p.nq;
            const float v = qb[p.oq + min(row + ch, row + D - 1u) * qcols +
                               min(qc0 + r, qcols - 1u)];
            s_kv[c * KS + r] = ok ? float16_t(v) : float16_t(0.0);
        }
        barrier();
        [[unroll]] for (uint kd = 0u; kd < QB; kd++)
            if (DS * sl + C * kd < DP)
                coopMatLoad(qa[sl * QB + kd], s_kv, C * kd * KS + r0, KS,
                            gl_CooperativeMatrixLayoutColumnMajor);
    }

    const uint end = p.k0 + p.kn;
    for (uint j0 = p.k0; j0 < end; j0 += BC) {
        const uint kc0 = b * p.nk + j0;        // the tile's first key column
        const uint tn = min(BC, end - j0);     // keys of this tile

        // 1. S = Q K^T, slice by slice of K
        coopmat<float, gl_ScopeSubgroup, C, C, gl_MatrixUseAccumulator> sacc[KB];
        [[unroll]] for (uint n = 0u; n < KB; n++)
            sacc[n] = coopmat<float, gl_ScopeSubgroup, C, C, gl_MatrixUseAccumulator>(0.0);
        [[unroll]] for (uint sl = 0u; sl < NVC; sl++) {
            if (DS * sl >= D) break;
            barrier();      // every subgroup is done with the stage (Q, a K or a V slice)
            STAGE_LOOP for (uint u = 0u; u < NST; u++) {
                const uint e = t + WG * u, j = e % BC, c = e / BC, ch = DS * sl + c;
                if (ch >= DP) break;
                const bool ok = ch < D && j < tn;
                const float v = kb[p.ok + min(row + ch, row + D - 1u) * kcols +
                                   min(kc0 + j, kcols - 1u)];
                s_kv[c * KS + j] = ok ? float16_t(v) : float16_t(0.0);
            }
            barrier();
            [[unroll]] for (uint kd = 0u; kd < QB; kd++) {
                if (DS * sl + C * kd >= DP) break;
                [[unroll]] for (uint n = 0u; n < KB; n++) {
                    coopmat<float16_t, gl_ScopeSubgroup, C, C, gl_MatrixUseB> kt;
                    coopMatLoad(kt, s_kv, C * kd * KS + C * n, KS,
                                gl_CooperativeMatrixLayoutRowMajor);
                    sacc[n] = coopMatMulAdd(qa[sl * QB + kd], kt, sacc[n]);
                }
            }
        }
        [[unroll]] for (uint n = 0u; n < KB; n++)
            coopMatStore(sacc[n], s_s, sbase + C * n, SS, gl_CooperativeMatrixLayoutRowMajor);
        subgroupMemoryBarrierShared();
        subgroupBarrier();

        // 2. the online softmax, LPR invocations per row; keys past the tile are masked
        const uint sb = sbase + rl * SS + part * KPL, pb = pbase + rl * PS + part * KPL;
        float sv[KPL];
        float mx = NEG;
        [[unroll]] for (uint i = 0u; i < KPL; i++) {
            sv[i] = part * KPL + i < tn ? s_s[sb + i] * p.scale : NEG;
            mx = max(mx, sv[i]);
        }
        s_red[sg * SG + lane] = mx;
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        const float m_old = s_m[rr];
        float m_new = m_old;
        [[unroll]] for (uint pp = 0u; pp < LPR; pp++)
            m_new = max(m_new, s_red[sg * SG + rl * LPR + pp]);
        float sum = 0.0;
        [[unroll]] for (uint i = 0u; i < KPL; i++) {
            const float e = part * KPL + i < tn ? exp(sv[i] - m_new) : 0.0;
            const float16_t e16 = float16_t(e);
            s_p[pb + i] = e16;
            sum += float(e16);
        }
        subgroupBarrier();      // every row invocation has read the maxima
        s_red[sg * SG + lane] = sum;
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        if (part == 0u) {
            float l = 0.0;
            [[unroll]] for (uint pp = 0u; pp < LPR; pp++) l += s_red[sg * SG + rl * LPR + pp];
            const float alpha = exp(m_old - m_new);
            s_l[rr] = s_l[rr] * alpha + l;
            s_m[rr] = m_new;
            s_a[rr] = alpha;
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();      // P and alpha are published to the subgroup

        // 3. O = alpha O + P V, slice by slice of V, C columns at a time
        coopmat<float16_t, gl_ScopeSubgroup, C, C, gl_MatrixUseA> pa[KB];
        [[unroll]] for (uint kk = 0u; kk < KB; kk++)
            coopMatLoad(pa[kk], s_p, pbase + C * kk, PS, gl_CooperativeMatrixLayoutRowMajor);
        float al[EPL];
        [[unroll]] for (uint q = 0u; q < EPL; q++) al[q] = s_a[r0 + (lane + SG * q) % C];
        [[unroll]] for (uint sl = 0u; sl < NVC; sl++) {
            if (DS * sl >= D) break;
            barrier();      // every subgroup is done with the K slice
            STAGE_LOOP for (uint u = 0u; u < NST; u++) {
                const uint e = t + WG * u, j = e % BC, c = e / BC, ch = DS * sl + c;
                if (ch >= DP) break;
                const bool ok = ch < D && j < tn;
                const float v = vb[p.ov + min(row + ch, row + D - 1u) * kcols +
                                   min(kc0 + j, kcols - 1u)];
                s_kv[c * KS + j] = ok ? float16_t(v) : float16_t(0.0);
            }
            barrier();
            [[unroll]] for (uint cl = 0u; cl < QB; cl++) {
                const uint cb = sl * QB + cl;
                if (C * cb >= DP) break;
                coopmat<float, gl_ScopeSubgroup, C, C, gl_MatrixUseAccumulator> pv =
                    coopmat<float, gl_ScopeSubgroup, C, C, gl_MatrixUseAccumulator>(0.0);
                [[unroll]] for (uint kk = 0u; kk < KB; kk++) {
                    coopmat<float16_t, gl_ScopeSubgroup, C, C, gl_MatrixUseB> vm;
                    coopMatLoad(vm, s_kv, C * cl * KS + C * kk, KS,
                                gl_CooperativeMatrixLayoutColumnMajor);
                    pv = coopMatMulAdd(pa[kk], vm, pv);
                }
                coopMatStore(pv, s_s, sbase, C, gl_CooperativeMatrixLayoutColumnMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                [[unroll]] for (uint q = 0u; q < EPL; q++)
                    acc[cb][q] = al[q] * acc[cb][q] + s_s[sbase + lane + SG * q];
                subgroupBarrier();      // every invocation has read the block before the next
            }
        }
    }

    // the block's result: normalised (last block) or carried to the next dispatch with the state
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    [[unroll]] for (uint cb = 0u; cb < NVC * QB; cb++) {
        if (C * cb >= DP) break;
        [[unroll]] for (uint q = 0u; q < EPL; q++) {
            const uint e = lane + SG * q, i = e % C, c = cb * C + e / C;
            if (c < D && i0 + r0 + i < p.nq)
                o[p.oo + (row + c) * qcols + qc0 + r0 + i] =
                    acc[cb][q] * (last_block ? 1.0 / s_l[r0 + i] : 1.0);
        }
    }
    if (!last_block && part == 0u && i0 + rr < p.nq) {
        const uint at = p.os + 2u * (bh * p.nq + i0 + rr);
        ml[at] = s_m[rr];
        ml[at + 1u] = s_l[rr];
    }
}
