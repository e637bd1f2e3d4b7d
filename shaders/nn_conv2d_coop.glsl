// nn.h conv2d on cooperative matrices (GL_KHR_cooperative_matrix; tensor cores on NVIDIA): the
// implicit GEMM of nn_conv2d.comp, Y (cout x P) = W (cout x cin*k*k) * X~ (cin*k*k x P), with
// float16 inputs and float32 accumulators. One body, variants by #define (integer literals, no
// suffix: the preprocessor checks them below):
//   CM, CN, CK  the shape D (CM x CN) = A (CM x CK) B (CK x CN) + C, float16 A and B, float32
//               C and D, subgroup scope
//   SG          the subgroup size the variant runs with (csrc/backend_vk.c decide_coop requires
//               it of the device, or pins it with VK_EXT_subgroup_size_control)
// nn_conv2d_coop.comp: 16 x 16 x 16, SG 32 (NVIDIA tensor cores); nn_conv2d_coop8.comp: 8 x 8 x 8,
// SG 8 (Mesa lavapipe >= 26, which runs it on the CPU: the variant the tests run). The first has
// not run on any device yet; only the second has (tests/test_vulkan_coop.py).
//
// A workgroup is 4 subgroups (WG = 4 SG invocations) and computes a BM x BN = 4 CM x 4 CN tile of
// Y (output channels: gl_WorkGroupID.y; pixels: gl_WorkGroupID.x, grid-stride over the tiles).
// Subgroup s owns the 2 CM x 2 CN quarter (s / 2, s % 2): 2 x 2 accumulators of CM x CN. The
// reduction runs in stages of one tap and BK = CK input channels: the workgroup stages a BM x BK
// slice of W and a BK x BN slice of X~ (gathered, rounded to float16) in shared memory, then every
// subgroup multiplies its fragments from there; the next stage's values are read into registers
// while the multiplies run and stored into the other of two shared-memory stages (NBUF below).
// At the end each subgroup sends its accumulators one at a time through
// its own CM x CN float32 slice of shared memory so that bias, accumulate, the residual and the
// masks of partial tiles are applied per element as in nn_conv2d.comp (the element <-> lane
// mapping of a cooperative matrix is the implementation's, so the epilogue cannot read it in
// registers). Push constants, bindings, flags and chunks are nn_conv2d.comp's with w in float16
// (2 per element of ow, as nn_conv2d_f16.comp).
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_cooperative_matrix : require

#define WG (4 * SG)
// The staging below gives each invocation a fixed pixel of the X~ slice and a fixed channel of
// the W slice, and every invocation the same number of values: true for any subgroup size with
#if (SG % CN) != 0 || (WG % CK) != 0 || ((CM * CK) % SG) != 0 || ((CK * CN) % SG) != 0
#error "nn_conv2d_coop.glsl: SG must be a multiple of CN, 4 SG of CK, and divide CM CK and CK CN"
#endif

layout(local_size_x = WG) in;

const uint BM = 4u * CM, BN = 4u * CN, BK = CK;    // vk_nn.h CCFG_VK_COOP_BM, _BN, _BK (per variant)
const uint PA = BM * BK / WG;       // W values an invocation stages per stage
const uint PB = BK * BN / WG;       // X~ values an invocation stages per stage
const uint RA = WG / BK;            // rows of W apart between an invocation's values
const uint RB = WG / BN;            // channels of X~ apart between an invocation's values

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float16_t wt[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
// the residual (cout x P like y; may be y itself), read only with flags bit 2
layout(std430, binding = 4) readonly buffer R { float r[]; };

layout(push_constant) uniform Push {
    uint ox, ow, ob, oy, ores;
    uint batch, cin, h, w, cout, k, stride, pad0, ho, wo;
    uint flags;     // bit 0: bias present, bit 1: accumulate into y, bit 2: add the residual r
    uint wstride;   // weights per output channel of w (every input channel x k x k)
} p;

// NBUF stages in shared memory: 2 (the default) while the subgroups multiply from one the next is
// stored into the other, one barrier per stage; COOP_SINGLE_BUFFER (the _sb variants,
// CCFG_VULKAN_COOP_SINGLE_BUFFER=1) one, two barriers per stage (the path before, for A/B runs)
#ifdef COOP_SINGLE_BUFFER
const uint NBUF = 1u;
#else
const uint NBUF = 2u;
#endif
shared float16_t As[NBUF * BM * BK];  // As[s BM BK + m BK + c]: stage s, output channel m0 + m, channel c
shared float16_t Bs[NBUF * BK * BN];  // Bs[s BK BN + c BN + n]: stage s, input channel c at pixel n0 + n
shared float Cs[4u * CM * CN];      // each subgroup's CM x CN accumulator on its way out

// the PA weights and PB inputs this invocation stages for stage (tap, c0): weights of rows
// m0 + wm + RA j at channel wc, inputs of channels xc + RB j at this invocation's pixel;
// out-of-image taps, channels past cin and rows past cout read a clamped address, masked to zero
void fetch(uint tap, uint c0, uint m0, uint wm, uint wc, int iy0, int ix0, bool pv, uint xb,
           uint xc, uint n_in, uint kk, out float16_t wv[PA], out float16_t xv[PB])
{
    const uint ky = tap / p.k, kx = tap - ky * p.k;
    const int iy = iy0 + int(ky), ix = ix0 + int(kx);
    const bool ok = pv && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.w);
    const uint xo = xb + uint(clamp(iy, 0, int(p.h) - 1)) * p.w + uint(clamp(ix, 0, int(p.w) - 1));
    const uint ca = c0 + wc;
    const uint wcol = min(ca, p.cin - 1u) * kk + tap;
    [[unroll]] for (uint j = 0u; j < PA; j++) {
        const uint row = m0 + wm + RA * j;
        const float16_t v = wt[2u * p.ow + min(row, p.cout - 1u) * p.wstride + wcol];
        wv[j] = (row < p.cout && ca < p.cin) ? v : float16_t(0.0);
    }
    [[unroll]] for (uint j = 0u; j < PB; j++) {
        const uint cb = c0 + xc + RB * j;
        const float u = x[xo + min(cb, p.cin - 1u) * n_in];
        xv[j] = (ok && cb < p.cin) ? float16_t(u) : float16_t(0.0);
    }
}

// this invocation's staged values into shared-memory stage buf
void stage_store(uint buf, uint wm, uint wc, uint xn, uint xc, float16_t wv[PA], float16_t xv[PB])
{
    [[unroll]] for (uint j = 0u; j < PA; j++)
        As[buf * BM * BK + (wm + RA * j) * BK + wc] = wv[j];
    [[unroll]] for (uint j = 0u; j < PB; j++)
        Bs[buf * BK * BN + (xc + RB * j) * BN + xn] = xv[j];
}

void main()
{
    const uint t = gl_LocalInvocationID.x, sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
    const uint plane = p.ho * p.wo, n_out = p.batch * plane;
    const uint hw = p.h * p.w, n_in = p.batch * hw, kk = p.k * p.k;
    const uint m0 = gl_WorkGroupID.y * BM;
    // staging W: rows wm + RA j, channel wc of the stage (consecutive invocations, consecutive
    // channels); staging X~: pixel n0 + xn, channels xc + RB j (consecutive invocations,
    // consecutive pixels: the gathers of a row of the image are contiguous)
    const uint wm = t / BK, wc = t % BK;
    const uint xn = t % BN, xc = t / BN;
    const uint sr = sg / 2u, sc = sg % 2u;

    const uint tiles = (n_out + BN - 1u) / BN;
    for (uint tile = gl_WorkGroupID.x; tile < tiles; tile += gl_NumWorkGroups.x) {
        const uint n0 = tile * BN;
        const uint pn = n0 + xn;
        const bool pv = pn < n_out;
        const uint pc = min(pn, n_out - 1u);
        const uint b = pc / plane, rem = pc - b * plane, oyy = rem / p.wo, oxx = rem - oyy * p.wo;
        const int iy0 = int(oyy * p.stride) - int(p.pad0), ix0 = int(oxx * p.stride) - int(p.pad0);
        const uint xb = p.ox + b * hw;

        coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator> acc[2][2];
        [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < 2u; j++)
                acc[i][j] = coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator>(0.0);

        const uint nst = (p.cin + BK - 1u) / BK, stages = kk * nst;
        uint tap = 0u, c0 = 0u;
        float16_t wv[PA], xv[PB];
        fetch(tap, c0, m0, wm, wc, iy0, ix0, pv, xb, xc, n_in, kk, wv, xv);
#ifndef COOP_SINGLE_BUFFER
        stage_store(0u, wm, wc, xn, xc, wv, xv);
        barrier();
#endif
        for (uint st = 0u; st < stages; st++) {
#ifdef COOP_SINGLE_BUFFER
            const uint buf = 0u;
            stage_store(0u, wm, wc, xn, xc, wv, xv);
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
                fetch(tap, c0, m0, wm, wc, iy0, ix0, pv, xb, xc, n_in, kk, wv, xv);
            coopmat<float16_t, gl_ScopeSubgroup, CM, CK, gl_MatrixUseA> a[2];
            [[unroll]] for (uint i = 0u; i < 2u; i++)
                coopMatLoad(a[i], As, buf * BM * BK + (2u * CM * sr + CM * i) * BK, BK,
                            gl_CooperativeMatrixLayoutRowMajor);
            [[unroll]] for (uint j = 0u; j < 2u; j++) {
                coopmat<float16_t, gl_ScopeSubgroup, CK, CN, gl_MatrixUseB> bm;
                coopMatLoad(bm, Bs, buf * BK * BN + 2u * CN * sc + CN * j, BN,
                            gl_CooperativeMatrixLayoutRowMajor);
                [[unroll]] for (uint i = 0u; i < 2u; i++)
                    acc[i][j] = coopMatMulAdd(a[i], bm, acc[i][j]);
            }
#ifndef COOP_SINGLE_BUFFER
            // the other buffer was last read in stage st - 1, before the barrier that ended it
            if (more)
                stage_store(buf ^ 1u, wm, wc, xn, xc, wv, xv);
#endif
            // single: every subgroup has read the stage before the next one is stored; double:
            // stage st + 1 is stored before anyone reads it, and stage st read before stage
            // st + 2 overwrites it
            barrier();
        }

        // the epilogue, per subgroup: its slice of Cs holds one accumulator at a time
        const uint cs = sg * CM * CN;
        [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < 2u; j++) {
                coopMatStore(acc[i][j], Cs, cs, CN, gl_CooperativeMatrixLayoutRowMajor);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                [[unroll]] for (uint q = 0u; q < CM * CN / SG; q++) {
                    const uint e = lane + uint(SG) * q;     // lanes along a row: y contiguous
                    const uint co = m0 + 2u * CM * sr + CM * i + e / CN;
                    const uint pj = n0 + 2u * CN * sc + CN * j + e % CN;
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
