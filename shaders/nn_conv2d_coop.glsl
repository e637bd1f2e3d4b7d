// nn.h conv2d on cooperative matrices (GL_KHR_cooperative_matrix; tensor cores on NVIDIA): the
// implicit GEMM of nn_conv2d.comp, Y (cout x P) = W (cout x cin*k*k) * X~ (cin*k*k x P), with
// float16 inputs and float32 accumulators. One body, variants by #define (integer literals, no
// suffix: the preprocessor checks them below):
//   CM, CN, CK  the shape D (CM x CN) = A (CM x CK) B (CK x CN) + C, float16 A and B, float32
//               C and D, subgroup scope
//   SG          the subgroup size the variant runs with (csrc/backend_vk.c decide_coop requires
//               it of the device, or pins it with VK_EXT_subgroup_size_control)
//   FM, FN      the accumulators a subgroup owns: FM x FN fragments of CM x CN (default 2 x 2).
//               More of them feed each A and B fragment loaded from shared memory to more
//               multiplies (FM FN MMAs for FM + FN fragment loads); the workgroup tile grows
//               with them (CCFG_VULKAN_COOP_TILE, csrc/nn_vk.c)
//   COOP_PAD    shared-memory rows padded by 16 bytes against bank conflicts (LA, LB below)
//   COOP_PACKED the cheaper staging: each invocation stages float16 pairs (two adjacent channels
//               of W, two adjacent pixels of X~), converted two at a time and stored 32 bits at
//               a time (the shared arrays are f16vec2); without it one float16 at a time
// nn_conv2d_coop.comp: 16 x 16 x 16, SG 32 (NVIDIA tensor cores); nn_conv2d_coop8.comp: 8 x 8 x 8,
// SG 8 (Mesa lavapipe >= 26, which runs it on the CPU: the variant the tests run); the _t*
// twins the other tiles and stagings. The 16 x 16 x 16 ones have not run on any device yet; the
// 8 x 8 x 8 ones have (tests/test_vulkan_coop.py).
//
// A workgroup is 4 subgroups (WG = 4 SG invocations) and computes a BM x BN = 2 FM CM x 2 FN CN
// tile of Y (output channels: gl_WorkGroupID.y; pixels: gl_WorkGroupID.x, grid-stride over the
// tiles). Subgroup s owns the FM CM x FN CN quarter (s / 2, s % 2): FM x FN accumulators of
// CM x CN. The reduction runs in stages of one tap and BK = CK input channels: the workgroup
// stages a BM x BK slice of W and a BK x BN slice of X~ (gathered, rounded to float16) in shared
// memory, then every subgroup multiplies its fragments from there; the next stage's values are
// read into registers while the multiplies run and stored into the other of two shared-memory
// stages (NBUF below). Every accumulator receives the same multiplies of the same fragments in
// the same order whatever FM, FN and the staging: every variant computes the same bits.
// At the end each subgroup sends its accumulators one at a time through
// its own CM x CN float32 slice of shared memory so that bias, accumulate, the residual and the
// masks of partial tiles are applied per element as in nn_conv2d.comp (the element <-> lane
// mapping of a cooperative matrix is the implementation's, so the epilogue cannot read it in
// registers). Push constants, bindings, flags and chunks are nn_conv2d.comp's (declared once in
// nn_conv2d_io.glsl) with w in float16 (2 per element of ow, as nn_conv2d_f16.comp), its sixth
// binding included: with a GroupNorm folded in (flags bits 3 and 4, nn.h conv2d_packed_norm) every
// staged input is x a + d, then SiLU, computed in float32 and then rounded to float16 (the
// normalised value is what is rounded, as the unfused path rounds the normalised tensor it reads),
// and out-of-image taps stay 0 (the padding of the normalised tensor). The normalised tensor is
// then never written nor read back; the price is the normalisation's few instructions per staged
// input, run by the staging invocations beside the matrix units (docs/PERFORMANCE.md,
// "GroupNorm(+SiLU) folded into the cooperative-matrix convolution").
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_cooperative_matrix : require
#ifndef FM
#define FM 2
#endif
#ifndef FN
#define FN 2
#endif
#ifdef COOP_PACKED
#define PK 2
#define HT f16vec2
#else
#define PK 1
#define HT float16_t
#endif
#define WG (4 * SG)
// Staging: the units are PK adjacent float16 (channels of a row of W; pixels of a channel of X~).
// W: UK = CK / PK units per row; invocation t stages unit t % UK of rows t / UK + RA j.
// X~: UN = BN / PK units per channel; TPX = min(WG, UN) invocations side by side along them
// (consecutive invocations, consecutive pixels: the gathers of a row of the image are
// contiguous), each staging NPX units TPX apart for channels t / TPX + RB j. Every invocation
// stages the same number of values when these divide:
#define UK (CK / PK)
#define UN (2 * FN * CN / PK)
#if WG < UN
#define TPX WG
#else
#define TPX UN
#endif
#if (CK % PK) != 0 || (WG % UK) != 0 || ((2 * FM * CM) % (WG / UK)) != 0 || \
    (WG % TPX) != 0 || (UN % TPX) != 0 || (CK % (WG / TPX)) != 0 || (CN % PK) != 0
#error "nn_conv2d_coop.glsl: the staging does not divide this tile among the invocations"
#endif
layout(local_size_x = WG) in;
// vk_nn.h CCFG_VK_COOP_BM, _BN, _BK (per variant and tile)
const uint BM = 2u * FM * CM, BN = 2u * FN * CN, BK = CK;
const uint RA = WG / UK;            // rows of W apart between an invocation's units
const uint PA = BM / RA;            // W units an invocation stages per stage
const uint NPX = UN / TPX;          // X~ units (of PK pixels) an invocation stages per channel
const uint RB = WG / TPX;           // channels of X~ apart between an invocation's units
const uint NCH = BK / RB;           // channels of X~ an invocation stages per stage
const uint NP = NPX * PK;           // pixels an invocation gathers
#define CONV_WEIGHT float16_t
#include "nn_conv2d_io.glsl"   // bindings 0-5 and the push block p
// NBUF stages in shared memory: 2 (the default) while the subgroups multiply from one the next is
// stored into the other, one barrier per stage; COOP_SINGLE_BUFFER (the _sb variants,
// CCFG_VULKAN_COOP_SINGLE_BUFFER=1) one, two barriers per stage (the path before, for A/B runs)
#ifdef COOP_SINGLE_BUFFER
const uint NBUF = 1u;
#else
const uint NBUF = 2u;
#endif
// in units of PK float16 (coopMatLoad's offsets and strides count the array's elements). Rows of
// LA and LB units: UK and UN, or with COOP_PAD 8 float16 (16 bytes) more, so that the 8 rows of
// an 8 x 8 piece of a fragment (rows 32, 128 or 256 bytes apart unpadded: the same banks) start
// in 8 different 16-byte bank groups (row strides of 48, 144 or 272 bytes)
#ifdef COOP_PAD
const uint LA = UK + 8u / PK, LB = UN + 8u / PK;
#else
const uint LA = UK, LB = UN;
#endif
// As[s BM LA + m LA + c / PK]: stage s, output channel m0 + m, channel c
shared HT As[NBUF * BM * LA];
// Bs[s BK LB + c LB + n / PK]: stage s, input channel c at pixel n0 + n
shared HT Bs[NBUF * BK * LB];
shared float Cs[4u * CM * CN];  // each subgroup's CM x CN accumulator on its way out

// what an invocation knows of its pixels for the whole tile (index arithmetic out of the stage
// loop): the top-left tap's position, the sample's plane in x, the sample's (a, d) in ab (a
// folded GroupNorm), whether the pixel exists
struct Pix { int iy0, ix0; uint xb, abb; bool pv; };

// an input as staged: x, or with a folded GroupNorm x a + d with the (a, d) of its sample (abb)
// and channel cc, then SiLU; float32 throughout, rounded to float16 by the caller. The branch is
// uniform (push constant): the unfolded path pays nothing
float stage_in(float v, uint abb, uint cc)
{
    if ((p.flags & 8u) != 0u) {
        v = v * ab[abb + 2u * cc] + ab[abb + 2u * cc + 1u];
        if ((p.flags & 16u) != 0u) v = v / (1.0 + exp(-v));
    }
    return v;
}

// the PA weight units and NPX x NCH input units this invocation stages for stage (tap, c0):
// weights of rows m0 + wm + RA j at channels wc, wc + 1 (packed), inputs of channels xc + RB j at
// this invocation's pixels; out-of-image taps, channels past cin and rows past cout read a
// clamped address, masked to zero
void fetch(uint tap, uint c0, uint m0, uint wm, uint wc, Pix px[NP], uint xc, uint n_in, uint kk,
           out HT wv[PA], out HT xv[NPX * NCH])
{
    const uint ky = tap / p.k, kx = tap - ky * p.k;
    uint xo[NP];
    bool ok[NP];
    [[unroll]] for (uint q = 0u; q < NP; q++) {
        const int iy = px[q].iy0 + int(ky), ix = px[q].ix0 + int(kx);
        ok[q] = px[q].pv && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.w);
        xo[q] = px[q].xb + uint(clamp(iy, 0, int(p.h) - 1)) * p.w +
                uint(clamp(ix, 0, int(p.w) - 1));
    }
    const uint ca = c0 + wc;
#ifdef COOP_PACKED
    const uint wcol0 = min(ca, p.cin - 1u) * kk + tap, wcol1 = min(ca + 1u, p.cin - 1u) * kk + tap;
    const bool cok0 = ca < p.cin, cok1 = ca + 1u < p.cin;
    [[unroll]] for (uint j = 0u; j < PA; j++) {
        const uint row = m0 + wm + RA * j;
        const uint wr = 2u * p.ow + min(row, p.cout - 1u) * p.wstride;
        const bool rok = row < p.cout;
        wv[j] = f16vec2(rok && cok0 ? wt[wr + wcol0] : float16_t(0.0),
                        rok && cok1 ? wt[wr + wcol1] : float16_t(0.0));
    }
    [[unroll]] for (uint j = 0u; j < NCH; j++) {
        const uint cb = c0 + xc + RB * j;
        const uint cc = min(cb, p.cin - 1u), cx = cc * n_in;
        const bool cok = cb < p.cin;
        [[unroll]] for (uint u = 0u; u < NPX; u++) {
            const float v0 = stage_in(x[xo[2u * u] + cx], px[2u * u].abb, cc);
            const float v1 = stage_in(x[xo[2u * u + 1u] + cx], px[2u * u + 1u].abb, cc);
            // one conversion of the pair (a packed float32 -> float16 x 2 where the device has it)
            xv[j * NPX + u] = f16vec2(vec2(cok && ok[2u * u] ? v0 : 0.0,
                                           cok && ok[2u * u + 1u] ? v1 : 0.0));
        }
    }
#else
    const uint wcol = min(ca, p.cin - 1u) * kk + tap;
    [[unroll]] for (uint j = 0u; j < PA; j++) {
        const uint row = m0 + wm + RA * j;
        const float16_t v = wt[2u * p.ow + min(row, p.cout - 1u) * p.wstride + wcol];
        wv[j] = (row < p.cout && ca < p.cin) ? v : float16_t(0.0);
    }
    [[unroll]] for (uint j = 0u; j < NCH; j++) {
        const uint cb = c0 + xc + RB * j;
        const uint cc = min(cb, p.cin - 1u);
        [[unroll]] for (uint u = 0u; u < NPX; u++) {
            const float v = stage_in(x[xo[u] + cc * n_in], px[u].abb, cc);
            xv[j * NPX + u] = (ok[u] && cb < p.cin) ? float16_t(v) : float16_t(0.0);
        }
    }
#endif
}

// this invocation's staged units into shared-memory stage buf
void stage_store(uint buf, uint wm, uint wq, uint xq, uint xc, HT wv[PA], HT xv[NPX * NCH])
{
    [[unroll]] for (uint j = 0u; j < PA; j++)
        As[buf * BM * LA + (wm + RA * j) * LA + wq] = wv[j];
    [[unroll]] for (uint j = 0u; j < NCH; j++)
        [[unroll]] for (uint u = 0u; u < NPX; u++)
            Bs[buf * BK * LB + (xc + RB * j) * LB + xq + TPX * u] = xv[j * NPX + u];
}

void main()
{
    const uint t = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint plane = p.ho * p.wo, n_out = p.batch * plane;
    const uint hw = p.h * p.w, n_in = p.batch * hw, kk = p.k * p.k;
    const uint m0 = gl_WorkGroupID.y * BM;
    // staging W: rows wm + RA j, unit wq of the stage (channels PK wq ...: consecutive
    // invocations, consecutive channels); staging X~: units xq + TPX u (pixels PK (xq + TPX u)
    // + e), channels xc + RB j
    const uint wm = t / UK, wq = t % UK, wc = PK * wq;
    const uint xq = t % TPX, xc = t / TPX;
    const uint sr = sg / 2u, sc = sg % 2u;
    const uint tiles = (n_out + BN - 1u) / BN;
    for (uint tile = gl_WorkGroupID.x; tile < tiles; tile += gl_NumWorkGroups.x) {
        const uint n0 = tile * BN;
        Pix px[NP];
        [[unroll]] for (uint q = 0u; q < NP; q++) {
            const uint pn = n0 + PK * (xq + TPX * (q / PK)) + q % PK;
            const uint pc = min(pn, n_out - 1u);
            const uint b = pc / plane, rem = pc - b * plane, oyy = rem / p.wo;
            const uint oxx = rem - oyy * p.wo;
            px[q] = Pix(int(oyy * p.stride) - int(p.pad0), int(oxx * p.stride) - int(p.pad0),
                        p.ox + b * hw, p.oab + 2u * b * p.abstride, pn < n_out);
        }
        coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator> acc[FM][FN];
        [[unroll]] for (uint i = 0u; i < FM; i++)
            [[unroll]] for (uint j = 0u; j < FN; j++)
                acc[i][j] = coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator>(0.0);
        const uint nst = (p.cin + BK - 1u) / BK, stages = kk * nst;
        uint tap = 0u, c0 = 0u;
        HT wv[PA], xv[NPX * NCH];
        fetch(tap, c0, m0, wm, wc, px, xc, n_in, kk, wv, xv);
#ifndef COOP_SINGLE_BUFFER
        stage_store(0u, wm, wq, xq, xc, wv, xv);
        barrier();
#endif
        for (uint st = 0u; st < stages; st++) {
#ifdef COOP_SINGLE_BUFFER
            const uint buf = 0u;
            stage_store(0u, wm, wq, xq, xc, wv, xv);
            barrier();
#else
            const uint buf = st & 1u;
#endif
            c0 += BK;
            if (c0 >= p.cin) {
                c0 = 0u;
                tap++;
            }
            // the next stage's global reads overlap this stage's multiplies
            const bool more = st + 1u < stages;
            if (more)
                fetch(tap, c0, m0, wm, wc, px, xc, n_in, kk, wv, xv);
            coopmat<float16_t, gl_ScopeSubgroup, CM, CK, gl_MatrixUseA> a[FM];
            [[unroll]] for (uint i = 0u; i < FM; i++)
                coopMatLoad(a[i], As, buf * BM * LA + (FM * CM * sr + CM * i) * LA, LA,
                            gl_CooperativeMatrixLayoutRowMajor);
            [[unroll]] for (uint j = 0u; j < FN; j++) {
                coopmat<float16_t, gl_ScopeSubgroup, CK, CN, gl_MatrixUseB> bm;
                coopMatLoad(bm, Bs, buf * BK * LB + (FN * CN * sc + CN * j) / PK, LB,
                            gl_CooperativeMatrixLayoutRowMajor);
                [[unroll]] for (uint i = 0u; i < FM; i++)
                    acc[i][j] = coopMatMulAdd(a[i], bm, acc[i][j]);
            }
#ifndef COOP_SINGLE_BUFFER
            // the other buffer was last read in stage st - 1, before the barrier that ended it
            if (more)
                stage_store(buf ^ 1u, wm, wq, xq, xc, wv, xv);
#endif
            // single: every subgroup has read the stage before the next one is stored; double:
            // stage st + 1 is stored before anyone reads it, and stage st read before stage
            // st + 2 overwrites it
            barrier();
        }
        // the epilogue, per subgroup: its slice of Cs holds one accumulator at a time
        const uint cs = sg * CM * CN;
        [[unroll]] for (uint i = 0u; i < FM; i++)
            [[unroll]] for (uint j = 0u; j < FN; j++) {
                coopMatStore(acc[i][j], Cs, cs, CN, gl_CooperativeMatrixLayoutRowMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                [[unroll]] for (uint q = 0u; q < CM * CN / SG; q++) {
                    const uint e = lane + uint(SG) * q;     // lanes along a row: y contiguous
                    const uint co = m0 + FM * CM * sr + CM * i + e / CN;
                    const uint pj = n0 + FN * CN * sc + CN * j + e % CN;
                    if (co < p.cout && pj < n_out) {
                        const uint at = p.oy + co * n_out + pj;
                        float v = Cs[cs + e] + ((p.flags & 1u) != 0u ? bias[p.ob + co] : 0.0);
                        if ((p.flags & 2u) != 0u) v += y[at];
                        if ((p.flags & 4u) != 0u) v += r[p.ores + (at - p.oy)];
                        y[at] = v;
                    }
                }
                subgroupBarrier();  // every lane has read the slice before the next store
            }
    }
}
