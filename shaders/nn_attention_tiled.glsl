// nn.h attention_qkv as two small GEMMs per key tile (flash-attention style): out_h = V_h
// softmax(K_h^T q_i / sqrt(head_dim)) for every (sample b, head, query i). q and out are
// (heads*head_dim, batch*nq), k and v (heads*head_dim, batch*nk), CNHW: for one channel, tokens
// are adjacent, so every staging load below reads 32 adjacent floats (coalesced).
//
// A workgroup of WG = 128 (or 256) invocations takes a block of BR = 32 (or 64) queries of one
// (sample, head) and walks the keys in tiles of BC = 32. Per tile:
//  1. S = scale Q K^T (BR x 32) as a register-tiled GEMM: the reduction over head_dim runs in
//     slices of DC = 40 channels, each staging a 40-channel slice of Q and of K in shared memory;
//     an invocation computes 4 queries x 2 adjacent keys of S (8 accumulators) from two vec4
//     reads per channel (its queries, its keys' vec4). Q is re-staged per tile beside K (with
//     16 KiB of shared memory the whole Q block, 32 x 256 floats for the widest heads, does not
//     fit beside the rest), except in the *_q64r pipeline (QS = 1): heads of at most DC channels
//     keep their 64 x 40 Q block in shared memory (s_q, staged once) for the whole key walk, and
//     a tile stages only K.
//  2. the online softmax per query row: S goes to shared memory (s_p), 4 invocations per row take
//     8 keys each, their maxima meet in shared memory (a 4-value read, no tree), each computes
//     the new row maximum m, the row's rescale factor alpha = e^(m_old - m) and P = e^(S - m) in
//     place; one of them records m and alpha for the row.
//  3. O += P V with O register-tiled: an invocation holds 4 query rows x (a vec4 of columns in each
//     64-column chunk of head_dim), 4 x 16 floats for head_dim 256, not a whole head_dim row;
//     a chunk with nv < 16 vec4 of the head's columns (head_dim 40: 10; 80 and 160: the last
//     chunk 4 and 8) is taken by the first BR / 4 x nv invocations only, the others skip its
//     multiply-adds (the merged shader computed 64 columns, 1.6x the work at head_dim 40)
//     (the lanes shader's 256-float accumulator, which a GPU keeps in local memory). V goes
//     through shared memory in chunks of 32 keys x 64 columns (the Q/K space reused); per 4 keys
//     an invocation reads its 4 rows' P as vec4s (broadcast) and 4 vec4 of V for 64 multiply-adds
//     (on a GPU: 12 shared-memory wavefronts per warp for 16 issue cycles of FMAs). It also sums
//     its rows' P as it reads them, so the softmax denominator l needs no reduction: every
//     invocation owning a row keeps the same l in a register.
// No score matrix beyond one BR x 32 tile exists. Shared memory at BR = 32: 640 vec4 (Q and K
// slices, or the V chunk) + 32 x 9 vec4 (P, padded against bank conflicts) + 192 floats,
// 15.3 KiB: within the 16 KiB every Vulkan device has. At BR = 64: 960 + 576 vec4 + 384 floats,
// 25.5 KiB (CCFG_VK_ATTN_TILED_SHARED64), used where the device reports that much. At BR = 64 with
// Q resident: 640 (s_q) + 544 + 576 vec4 + 384 floats, 29 KiB (CCFG_VK_ATTN_TILED_SHARED_QR).
//
// Long key sequences: Mesa's lavapipe ends an invocation's loops after 65535 iterations in total
// (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET), so the host (csrc/nn_vk.c) splits the keys into blocks of
// whole tiles, one dispatch each. Between blocks a query's running maximum and sum wait in `ml`
// (2 floats per query) and its unnormalised output in `out`; flags bit 0: the first block (no
// state yet), bit 1: the last (divide by the sum). Constant-count loops are unrolled; per tile an
// invocation loops ceil(head_dim / DC) times over slices and ceil(min(DC, rest) / 4) times within
// each (the host's count is an upper bound of these and of the unrolled ones).
//
// ATTN_WG invocations take BR = ATTN_WG / 4 queries (every layout below has 4 rows per 16
// invocations and 4 invocations per row): 128 and 32 (15.3 KiB of shared memory, any device), or
// 256 and 64 (the *_q64.comp wrappers: 25.5 KiB, on devices that report that much; K and V
// staged once per 64 queries instead of 32)
layout(local_size_x = ATTN_WG) in;

const uint WG = uint(ATTN_WG);  // invocations: CCFG_VK_ATTN_TILED_WG (or _WG64)
const uint BR = WG / 4u;        // queries per workgroup: CCFG_VK_ATTN_TILED_BR (or _BR64)
const uint BC = 32u;            // keys per tile: CCFG_VK_ATTN_TILED_BC
const uint DC = 40u;            // channels per Q/K slice: SD's heads (40, 80, 160) in whole ones
const uint DV = 64u;            // columns of V per chunk (16 vec4)
// NVC: V chunks of DV columns, up to head_dim = NVC x DV, set by the .comp wrapper: one pipeline
// per NVC = 1..4 (head_dim <= 64, 128, 192, 256), so an invocation holds 16 NVC accumulators, not
// the widest head's 64 (registers, hence occupancy on a GPU), and runs no chunk past head_dim (a
// uniform branch that a SIMD device such as lavapipe would otherwise execute masked)
const uint NVC = ATTN_NVC;
// QS: Q slices kept resident in shared memory for the whole key walk (s_q), staged once per
// workgroup instead of once per key tile; 0 (the default) re-stages Q's slice beside K's in every
// tile. The *_q64r wrapper sets QS = 1 (heads of at most DC channels, SD 1.x's level 0): the host
// picks it only for such heads and where the device reports its shared memory
#ifndef ATTN_QS
#define ATTN_QS 0
#endif
const uint QS = uint(ATTN_QS);
// ATTN_PREFETCH (the *_q64r wrapper, where QS > 0 leaves one K slice and one V chunk per tile):
// a tile's global loads are issued a phase early into registers: V's before S = Q K^T, the next
// tile's K before O += P V, and stored to shared memory after the barrier that frees it. On a GPU
// the loads' latency then overlaps the math instead of stalling the staging step.
#ifndef ATTN_PREFETCH
#define ATTN_PREFETCH 0
#endif
const uint PS = BC / 4u + 1u;   // s_p row stride (vec4), padded
const uint VS = DV / 4u + 1u;   // sV row stride (vec4), padded
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

// stage: Q slice at [0, DC BR / 4) as [d * BR / 4 + r / 4][r % 4] (only when QS = 0), then the K
// slice at [KOFF + d * 8 + j / 4][j % 4]; or the V chunk as [j * VS + c / 4][c % 4] (32 x 17 vec4)
const uint KOFF = QS > 0u ? 0u : (DC * BR) / 4u;
shared vec4 s_buf[max(KOFF + (DC * BC) / 4u, BC * VS)];
#if ATTN_QS > 0
// the resident Q: slice sl at [sl * DC BR / 4 + d * BR / 4 + r / 4][r % 4]
shared vec4 s_q[QS * DC * BR / 4u];
#endif
shared vec4 s_p[BR * PS];       // S, then P, of the tile: [row * PS + key / 4][key % 4]
shared float s_red[WG];         // the row owners' partial maxima
shared float s_m[BR];           // each row's running maximum
shared float s_a[BR];           // each row's rescale factor for this tile; at the end its sum l

// P V's layout for chunk cc: its columns' vec4 count (16, or fewer in a head's last partial chunk)
// and so the invocations that take a part (the first BR / 4 x nv; flags bit 2, the merged shader:
// always 16, all of them)
uint pv_vec4s(uint cc)
{
    if ((p.flags & 4u) != 0u) return DV / 4u;
    return p.head_dim > DV * cc ? min(DV / 4u, (p.head_dim - DV * cc + 3u) / 4u) : 0u;
}

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint qcols = p.batch * p.nq, kcols = p.batch * p.nk;
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint gpb = (p.nq + BR - 1u) / BR;    // workgroups per (sample, head)
    const uint bh = group / gpb;
    // past the last (sample, head) (the last row of a dispatch wider than 65535 workgroups) a
    // workgroup returns at once: the whole workgroup, so no barrier is skipped by some only
    if (bh >= p.batch * p.heads) return;
    const uint i0 = (group - bh * gpb) * BR;   // the block's first query
    const uint b = bh / p.heads, hd = bh - b * p.heads;
    const uint row = hd * p.head_dim;          // the head's first channel
    const uint qc0 = b * p.nq + i0;            // the block's first query column
    const uint D = p.head_dim;
    const bool first_block = (p.flags & 1u) != 0u, last_block = (p.flags & 2u) != 0u;

    // S layout: rows 4 sr + a, keys 2 sc and 2 sc + 1 (one vec2 of K per channel)
    const uint sr = t / 16u, sc = t % 16u;
    // O layout, per chunk cc of DV columns with nv = pv_vec4s(cc) vec4 of columns: invocation
    // t < BR / 4 x nv holds rows 4 (t / nv) + a, columns DV cc + 4 (t % nv) + e. Heads whose width
    // is not a multiple of 64 (SD's 40, 80, 160) thus leave whole invocations out of the last
    // chunk's multiply-adds instead of computing zero columns (on a GPU: whole warps idle, their
    // issue slots free for the SM's other workgroups). l (the rows' sums) follows chunk 0's rows.
    const uint nv0 = pv_vec4s(0u);
    const bool own0 = t < (BR / 4u) * nv0;
    const uint orow0 = own0 ? t / nv0 : 0u, oc0 = own0 ? t % nv0 : 0u;
    // row-owner layout: row t / 4, keys 8 (t % 4) .. + 7
    const uint rr = t / 4u, rq = t % 4u;

    vec4 acc[4][NVC];
    float l[4];
    [[unroll]] for (uint a = 0u; a < 4u; a++) {
        l[a] = 0.0;
        [[unroll]] for (uint cc = 0u; cc < NVC; cc++) acc[a][cc] = vec4(0.0);
    }
    if (t < BR) s_m[t] = NEG;
    if (!first_block) {
        // earlier blocks' maximum and sum (ml), and their unnormalised output (out)
        if (t < BR && i0 + t < p.nq) s_m[t] = ml[p.os + 2u * (bh * p.nq + i0 + t)];
        [[unroll]] for (uint a = 0u; a < 4u; a++) {
            const uint r = 4u * orow0 + a;
            if (own0 && i0 + r < p.nq) l[a] = ml[p.os + 2u * (bh * p.nq + i0 + r) + 1u];
        }
        [[unroll]] for (uint cc = 0u; cc < NVC; cc++) {
            const uint nv = pv_vec4s(cc);
            if (t >= (BR / 4u) * nv) continue;
            const uint orow = t / nv, oc = t % nv;
            [[unroll]] for (uint a = 0u; a < 4u; a++) {
                const uint r = 4u * orow + a;
                if (i0 + r >= p.nq) continue;
                [[unroll]] for (uint e = 0u; e < 4u; e++) {
                    const uint c = DV * cc + 4u * oc + e;
                    if (c < D) acc[a][cc][e] = o[p.oo + (row + c) * qcols + qc0 + r];
                }
            }
        }
    }

#if ATTN_QS > 0
    // the resident Q, staged once (read after the first tile's barriers)
    [[unroll]] for (uint sl = 0u; sl < QS; sl++)
        [[unroll]] for (uint u = 0u; u < (DC * BR) / WG; u++) {
            const uint e = t + WG * u, d = e / BR, r = e % BR, ch = DC * sl + d;
            const bool ok = ch < D && i0 + r < p.nq;
            const float qv = qb[p.oq + min(row + ch, row + D - 1u) * qcols +
                                min(qc0 + r, qcols - 1u)];
            s_q[sl * ((DC * BR) / 4u) + d * (BR / 4u) + r / 4u][r % 4u] = ok ? qv : 0.0;
        }
#endif
    const uint end = p.k0 + p.kn;
#if ATTN_PREFETCH
    // the registers of the prefetch: this tile's K slice share, then its V chunk share
    float kr[(DC * BC) / WG], vr[(BC * DV) / WG];
    [[unroll]] for (uint u = 0u; u < (DC * BC) / WG; u++) {
        const uint e = t + WG * u, d = e / BC, j = e % BC;
        const bool ok = d < D && j < min(BC, end - p.k0);
        const float kv = kb[p.ok + min(row + d, row + D - 1u) * kcols +
                            min(b * p.nk + p.k0 + j, kcols - 1u)];
        kr[u] = ok ? kv : 0.0;
    }
#endif
    for (uint j0 = p.k0; j0 < end; j0 += BC) {
        const uint kc0 = b * p.nk + j0;        // the tile's first key column
        const uint tn = min(BC, end - j0);     // keys of this tile
#if ATTN_PREFETCH
        // this tile's V, read after the softmax
        [[unroll]] for (uint u = 0u; u < (BC * DV) / WG; u++) {
            const uint e = t + WG * u, c = e / BC, j = e % BC;
            const bool ok = c < D && j < tn;
            const float vv = vb[p.ov + min(row + c, row + D - 1u) * kcols +
                                min(kc0 + j, kcols - 1u)];
            vr[u] = ok ? vv : 0.0;
        }
#endif

        // 1. S = Q K^T over slices of DC channels
        float s[4][2];
        [[unroll]] for (uint a = 0u; a < 4u; a++) s[a][0] = s[a][1] = 0.0;
        for (uint d0 = 0u; d0 < D; d0 += DC) {
            barrier();      // the previous slice (or the previous tile's V chunk) is read
#if ATTN_QS == 0
            [[unroll]] for (uint u = 0u; u < (DC * BR) / WG; u++) {
                const uint e = t + WG * u, d = e / BR, r = e % BR, ch = d0 + d;
                const bool ok = ch < D && i0 + r < p.nq;
                const float qv = qb[p.oq + min(row + ch, row + D - 1u) * qcols +
                                    min(qc0 + r, qcols - 1u)];
                s_buf[d * (BR / 4u) + r / 4u][r % 4u] = ok ? qv : 0.0;
            }
#endif
            [[unroll]] for (uint u = 0u; u < (DC * BC) / WG; u++) {
                const uint e = t + WG * u, d = e / BC, j = e % BC, ch = d0 + d;
#if ATTN_PREFETCH
                s_buf[KOFF + d * (BC / 4u) + j / 4u][j % 4u] = kr[u];
#else
                const bool ok = ch < D && j < tn;
                const float kv = kb[p.ok + min(row + ch, row + D - 1u) * kcols +
                                    min(kc0 + j, kcols - 1u)];
                s_buf[KOFF + d * (BC / 4u) + j / 4u][j % 4u] = ok ? kv : 0.0;
#endif
            }
            barrier();
            // channels past D were staged as zeros: whole groups of 4
            const uint nd4 = (min(DC, D - d0) + 3u) / 4u;
            for (uint d4 = 0u; d4 < nd4; d4++) {
                [[unroll]] for (uint dd = 0u; dd < 4u; dd++) {
                    const uint d = 4u * d4 + dd;
#if ATTN_QS > 0
                    const vec4 qv = s_q[(d0 / DC) * ((DC * BR) / 4u) + d * (BR / 4u) + sr];
#else
                    const vec4 qv = s_buf[d * (BR / 4u) + sr];
#endif
                    const uint kbase = KOFF + d * (BC / 4u);
                    const vec4 kq = s_buf[kbase + sc / 2u];
                    const float k0v = (sc & 1u) != 0u ? kq.z : kq.x;
                    const float k1v = (sc & 1u) != 0u ? kq.w : kq.y;
                    [[unroll]] for (uint a = 0u; a < 4u; a++) {
                        s[a][0] += qv[a] * k0v;
                        s[a][1] += qv[a] * k1v;
                    }
                }
            }
        }
        // scaled scores to shared memory; keys past the tile are masked
        [[unroll]] for (uint a = 0u; a < 4u; a++)
            [[unroll]] for (uint h = 0u; h < 2u; h++) {
                const uint j = 2u * sc + h;
                s_p[(4u * sr + a) * PS + j / 4u][j % 4u] = j < tn ? s[a][h] * p.scale : NEG;
            }
        barrier();

        // 2. online softmax: 4 invocations per row
        float sv[8];
        float mx = NEG;
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            sv[i] = s_p[rr * PS + 2u * rq + i / 4u][i % 4u];
            mx = max(mx, sv[i]);
        }
        s_red[t] = mx;
        const float m_old = s_m[rr];
        barrier();
        const float m_new = max(max(max(s_red[4u * rr], s_red[4u * rr + 1u]),
                                    max(s_red[4u * rr + 2u], s_red[4u * rr + 3u])), m_old);
        [[unroll]] for (uint i = 0u; i < 8u; i++)
            s_p[rr * PS + 2u * rq + i / 4u][i % 4u] = exp(sv[i] - m_new);
        if (rq == 0u) {
            s_m[rr] = m_new;
            s_a[rr] = exp(m_old - m_new);
        }

        // 3. O = alpha O + P V, chunk by chunk of 64 columns (the first chunk's barriers also
        // publish P and alpha)
        [[unroll]] for (uint cc = 0u; cc < NVC; cc++) {
            if (DV * cc >= D) break;            // uniform: every invocation leaves together
            barrier();      // S's slices (or the previous chunk) are read
            [[unroll]] for (uint u = 0u; u < (BC * DV) / WG; u++) {
                const uint e = t + WG * u, c = e / BC, j = e % BC, ch = DV * cc + c;
#if ATTN_PREFETCH
                s_buf[j * VS + c / 4u][c % 4u] = vr[u];
#else
                const bool ok = ch < D && j < tn;
                const float vv = vb[p.ov + min(row + ch, row + D - 1u) * kcols +
                                    min(kc0 + j, kcols - 1u)];
                s_buf[j * VS + c / 4u][c % 4u] = ok ? vv : 0.0;
#endif
            }
            barrier();
#if ATTN_PREFETCH
            // the next tile's K (none past the block: zeros, from clamped addresses)
            [[unroll]] for (uint u = 0u; u < (DC * BC) / WG; u++) {
                const uint e = t + WG * u, d = e / BC, j = e % BC, j1 = j0 + BC;
                const bool ok = d < D && j1 < end && j < end - j1;
                const float kv = kb[p.ok + min(row + d, row + D - 1u) * kcols +
                                    min(b * p.nk + j1 + j, kcols - 1u)];
                kr[u] = ok ? kv : 0.0;
            }
#endif
            // this chunk's owners only (uniform per chunk of invocations past them: a loop of
            // 0 or 1 rounds, which lavapipe leaves once all its lanes are done)
            const uint nv = pv_vec4s(cc);
            for (uint w = t; w < (BR / 4u) * nv; w += WG) {
                const uint orow = w / nv, oc = w % nv;
                [[unroll]] for (uint a = 0u; a < 4u; a++) acc[a][cc] *= s_a[4u * orow + a];
                if (cc == 0u)
                    [[unroll]] for (uint a = 0u; a < 4u; a++) l[a] *= s_a[4u * orow + a];
                // the tile's share summed on its own, then added: a blocked sum, whose float32
                // rounding grows with tiles + BC rather than with the keys (20k keys: 4e-6 -> 1e-6)
                vec4 ac0 = vec4(0.0), ac1 = vec4(0.0), ac2 = vec4(0.0), ac3 = vec4(0.0);
                float ls0 = 0.0, ls1 = 0.0, ls2 = 0.0, ls3 = 0.0;
                // 4 keys a round: P as one vec4 per row, V as one vec4 per key
                [[unroll]] for (uint j4 = 0u; j4 < BC / 4u; j4++) {
                    const vec4 p0 = s_p[(4u * orow) * PS + j4];
                    const vec4 p1 = s_p[(4u * orow + 1u) * PS + j4];
                    const vec4 p2 = s_p[(4u * orow + 2u) * PS + j4];
                    const vec4 p3 = s_p[(4u * orow + 3u) * PS + j4];
                    [[unroll]] for (uint jj = 0u; jj < 4u; jj++) {
                        const vec4 vv = s_buf[(4u * j4 + jj) * VS + oc];
                        ac0 += p0[jj] * vv;
                        ac1 += p1[jj] * vv;
                        ac2 += p2[jj] * vv;
                        ac3 += p3[jj] * vv;
                    }
                    ls0 += (p0.x + p0.y) + (p0.z + p0.w);
                    ls1 += (p1.x + p1.y) + (p1.z + p1.w);
                    ls2 += (p2.x + p2.y) + (p2.z + p2.w);
                    ls3 += (p3.x + p3.y) + (p3.z + p3.w);
                }
                acc[0][cc] += ac0;
                acc[1][cc] += ac1;
                acc[2][cc] += ac2;
                acc[3][cc] += ac3;
                if (cc == 0u) {
                    l[0] += ls0;
                    l[1] += ls1;
                    l[2] += ls2;
                    l[3] += ls3;
                }
            }
        }
    }

    // the block's result: normalised (last block) or carried to the next dispatch. Chunk 0's
    // owners hold the rows' sums l; a chunk's owners may hold other rows (another nv): the sums
    // go through s_a (free now) to them
    barrier();      // the last tile's s_m and s_a reads and writes are done
    if (own0 && oc0 == 0u)
        [[unroll]] for (uint a = 0u; a < 4u; a++) s_a[4u * orow0 + a] = l[a];
    barrier();
    [[unroll]] for (uint cc = 0u; cc < NVC; cc++) {
        const uint nv = pv_vec4s(cc);
        if (t >= (BR / 4u) * nv) continue;
        const uint orow = t / nv, oc = t % nv;
        [[unroll]] for (uint a = 0u; a < 4u; a++) {
            const uint r = 4u * orow + a;
            if (i0 + r >= p.nq) continue;
            const float f = last_block ? 1.0 / s_a[r] : 1.0;
            [[unroll]] for (uint e = 0u; e < 4u; e++) {
                const uint c = DV * cc + 4u * oc + e;
                if (c < D) o[p.oo + (row + c) * qcols + qc0 + r] = acc[a][cc][e] * f;
            }
        }
    }
    if (!last_block && own0 && oc0 == 0u)
        [[unroll]] for (uint a = 0u; a < 4u; a++) {
            const uint r = 4u * orow0 + a;
            if (i0 + r >= p.nq) continue;
            const uint at = p.os + 2u * (bh * p.nq + i0 + r);
            ml[at] = s_m[r];
            ml[at + 1u] = l[a];
        }
}
