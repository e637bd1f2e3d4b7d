// nn.h conv2d on cooperative matrices (VK_NV_cooperative_matrix; tensor cores on NVIDIA): the
// implicit GEMM of nn_conv2d.comp, Y (cout x P) = W (cout x cin*k*k) * X~ (cin*k*k x P), with
// float16 inputs and float32 accumulators. Included by nn_conv2d_coop.comp (CM x CN x CK =
// 16 x 16 x 16) and nn_conv2d_coop8.comp (16 x 8 x 16): csrc/nn_vk.c takes the variant whose
// shape the device lists (VkCooperativeMatrixPropertiesNV: float16 A and B, float32 C and D,
// subgroup scope) and only with CCFG_VULKAN_PRECISION=coop or auto.
//
// UNVERIFIED: written without a device that has the extension (lavapipe has none); the tests
// (tests/test_vulkan_half.py) and benchmarks/gpu_vs_torch.py check it against the CPU on the
// first GPU that has it. Its arithmetic is nn_conv2d_f16.comp's (tested on lavapipe): float16
// weights and inputs, exact products, float32 sums in another order.
//
// A workgroup of 128 invocations = 4 subgroups of 32 (the host requires subgroupSize 32)
// computes a BM x BN = 64 x 64 tile of Y (output channels: gl_WorkGroupID.y; pixels:
// gl_WorkGroupID.x, grid-stride over the tiles). Subgroup s owns the 32 x 32 quarter (s / 2,
// s % 2): 2 x (32 / CN) accumulators of CM x CN. The reduction runs in stages of one tap and
// BK = CK input channels: the 128 invocations stage a BM x BK slice of W (8 weights each) and a
// BK x BN slice of X~ (8 gathered inputs each, rounded to float16) in shared memory, then every
// subgroup multiplies its fragments from there. At the end the accumulators go through shared
// memory (float32) so that bias, accumulate and the masks of partial tiles are applied per
// element as in nn_conv2d.comp (the residual r too). Push constants, bindings, flags and chunks
// are nn_conv2d.comp's with w in float16 (2 per element of ow, as nn_conv2d_f16.comp).
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_NV_cooperative_matrix : require

layout(local_size_x = 128) in;

const uint BM = 64u, BN = 64u, BK = CK;     // vk_nn.h CCFG_VK_COOP_BM, _BN, _BK
const uint FN = 32u / CN;                   // accumulators per subgroup along the pixels

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

shared float16_t As[BM * BK];   // As[m * BK + c]: weight of output channel m0 + m, channel c
shared float16_t Bs[BK * BN];   // Bs[c * BN + n]: input channel c at pixel n0 + n
shared float Cs[BM * BN];       // the tile's results, row-major

// the 8 weights and 8 inputs this invocation stages for stage (tap, c0); out-of-image taps,
// channels past cin and rows past cout read a clamped address, masked to zero
void fetch(uint tap, uint c0, uint wrow, bool mok, uint wc, int iy0, int ix0, bool pv, uint xb,
           uint xc, uint n_in, uint kk, out float16_t wv[8], out float16_t xv[8])
{
    const uint ky = tap / p.k, kx = tap - ky * p.k;
    const int iy = iy0 + int(ky), ix = ix0 + int(kx);
    const bool ok = pv && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.w);
    const uint xo = xb + uint(clamp(iy, 0, int(p.h) - 1)) * p.w + uint(clamp(ix, 0, int(p.w) - 1));
    [[unroll]] for (uint j = 0u; j < 8u; j++) {
        const uint ca = c0 + wc + j, cb = c0 + xc + j;
        const float16_t v = wt[wrow + min(ca, p.cin - 1u) * kk + tap];
        wv[j] = (mok && ca < p.cin) ? v : float16_t(0.0);
        const float u = x[xo + min(cb, p.cin - 1u) * n_in];
        xv[j] = (ok && cb < p.cin) ? float16_t(u) : float16_t(0.0);
    }
}

void main()
{
    const uint t = gl_LocalInvocationID.x, sg = gl_SubgroupID;
    const uint plane = p.ho * p.wo, n_out = p.batch * plane;
    const uint hw = p.h * p.w, n_in = p.batch * hw, kk = p.k * p.k;
    const uint m0 = gl_WorkGroupID.y * BM;
    // staging W: output channel m0 + t / 2, channels 8 (t % 2) .. + 8 of the stage
    const uint wm = t / 2u, wc = 8u * (t % 2u);
    const bool mok = m0 + wm < p.cout;
    const uint wrow = 2u * p.ow + min(m0 + wm, p.cout - 1u) * p.wstride;
    // staging X~: pixel n0 + t % 64, channels 8 (t / 64) .. + 8 of the stage
    const uint xn = t % 64u, xc = 8u * (t / 64u);
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

        fcoopmatNV<32, gl_ScopeSubgroup, CM, CN> acc[2][FN];
        [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < FN; j++)
                acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, CM, CN>(0.0);

        const uint nst = (p.cin + BK - 1u) / BK, stages = kk * nst;
        uint tap = 0u, c0 = 0u;
        float16_t wv[8], xv[8];
        fetch(tap, c0, wrow, mok, wc, iy0, ix0, pv, xb, xc, n_in, kk, wv, xv);
        for (uint st = 0u; st < stages; st++) {
            [[unroll]] for (uint j = 0u; j < 8u; j++) {
                As[wm * BK + wc + j] = wv[j];
                Bs[(xc + j) * BN + xn] = xv[j];
            }
            barrier();
            c0 += BK;
            if (c0 >= p.cin) {
                c0 = 0u;
                tap++;
            }
            if (st + 1u < stages)
                fetch(tap, c0, wrow, mok, wc, iy0, ix0, pv, xb, xc, n_in, kk, wv, xv);
            fcoopmatNV<16, gl_ScopeSubgroup, CM, CK> a[2];
            [[unroll]] for (uint i = 0u; i < 2u; i++)
                coopMatLoadNV(a[i], As, (32u * sr + CM * i) * BK, BK, false);
            [[unroll]] for (uint j = 0u; j < FN; j++) {
                fcoopmatNV<16, gl_ScopeSubgroup, CK, CN> bm;
                coopMatLoadNV(bm, Bs, 32u * sc + CN * j, BN, false);
                [[unroll]] for (uint i = 0u; i < 2u; i++)
                    acc[i][j] = coopMatMulAddNV(a[i], bm, acc[i][j]);
            }
            barrier();
        }

        [[unroll]] for (uint i = 0u; i < 2u; i++)
            [[unroll]] for (uint j = 0u; j < FN; j++)
                coopMatStoreNV(acc[i][j], Cs, (32u * sr + CM * i) * BN + 32u * sc + CN * j, BN,
                               false);
        barrier();
        for (uint e = t; e < BM * BN; e += 128u) {
            const uint co = m0 + e / BN, pj = n0 + e % BN;
            if (co < p.cout && pj < n_out) {
                const uint at = p.oy + co * n_out + pj;
                float v = Cs[e] + ((p.flags & 1u) != 0u ? bias[p.ob + co] : 0.0);
                if ((p.flags & 2u) != 0u) v += y[at];
                if ((p.flags & 4u) != 0u) v += r[p.ores + (at - p.oy)];
                y[at] = v;
            }
        }
        barrier();
    }
}
