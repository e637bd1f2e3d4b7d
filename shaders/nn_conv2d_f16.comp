#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_EXT_shader_16bit_storage : require
// nn.h conv2d with half-precision inputs and float32 accumulation (CCFG_VULKAN_PRECISION=fp16,
// csrc/nn_vk.c): nn_conv2d.comp's implicit GEMM (same tiles, stages, chunks, flags and split-K
// slices; read its header) with two differences:
//  - w is float16 (binding 1 holds 2 weights per 32-bit element: the layer's packed form, which
//    csrc/nn_vk.c converts with nn_to_f16.comp once when a model is placed, or per call without
//    one), so the weights' reads are half;
//  - every input x is rounded to float16 as it is staged (x stays float32 in memory: the other
//    ops write float32); with a GroupNorm folded in (flags bits 3 and 4) the normalised value
//    x a + d (then SiLU) is what is rounded, as the unfused path rounds the normalised tensor.
// Products of two float16 values are exact in float32, and the sums are float32: this computes
// what a tensor-core (cooperative matrix) convolution with float16 inputs and float32
// accumulators computes, up to the order of the sums, so the precision contract measured with it
// on any device (lavapipe included) is the one nn_conv2d_coop.comp has (docs/PERFORMANCE.md).
// Needs storageBuffer16BitAccess only (no float16 arithmetic: the rounding of x goes through
// packHalf2x16).
layout(local_size_x = 128) in;

const uint BM = 64u;    // output channels per tile: vk_nn.h CCFG_VK_CONV_BM
const uint BN = 128u;   // output pixels per tile: vk_nn.h CCFG_VK_CONV_BN
const uint BK = 8u;     // input channels per shared-memory stage: vk_nn.h CCFG_VK_CONV_BK
const uint NT = 128u;   // invocations: 8 rows (tm) x 16 columns (tn)
// an invocation computes 8 x 8 outputs: channels 4 tm + q and 32 + 4 tm + q, pixels 4 tn + e and
// 64 + 4 tn + e (q, e < 4), read from shared memory as vec4s

#define CONV_WEIGHT float16_t   // 2 per element of ow
#include "nn_conv2d_io.glsl"   // bindings 0-5 and the push block p

// As[c][m / 4], Bs[c][n / 4]: the stage, read as vec4s (two of each per channel and invocation)
shared vec4 As[BK][BM / 4u];
shared vec4 Bs[BK][BN / 4u];

// v rounded to the nearest float16 (as a float16 cast; overflow to +-inf), kept as float32
float to_half(float v) { return unpackHalf2x16(packHalf2x16(vec2(v, 0.0))).x; }

// The global values of stage (tap, c0) this invocation stages: 4 weights (output channels
// m0 + 4 am + q, input channel c0 + ac) and BK inputs (its pixel, channels c0 .. c0 + BK - 1 at
// the tap's offset). Out-of-image taps and channels past cin read a clamped address, masked to 0.
void fetch(uint tap, uint c0, uint wrow[4], bool mok[4], uint ac, int iy0, int ix0, bool pv,
           uint xb, uint n_in, uint kk, uint abb, out vec4 wv, out float xv[BK])
{
    const uint ky = tap / p.k, kx = tap - ky * p.k;
    const int iy = iy0 + int(ky), ix = ix0 + int(kx);
    const bool ok = pv && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.w);
    const uint xo = xb + uint(clamp(iy, 0, int(p.h) - 1)) * p.w + uint(clamp(ix, 0, int(p.w) - 1));
    const uint ca = c0 + ac;
    const uint wcol = min(ca, p.cin - 1u) * kk + tap;
    [[unroll]] for (uint q = 0u; q < 4u; q++) {
        const float v = float(wt[wrow[q] + wcol]);
        wv[q] = (mok[q] && ca < p.cin) ? v : 0.0;
    }
    [[unroll]] for (uint c = 0u; c < BK; c++) {
        const uint cb = c0 + c;
        const uint cc = min(cb, p.cin - 1u);
        float v = x[xo + cc * n_in];
        if ((p.flags & 8u) != 0u) {
            v = v * ab[abb + 2u * cc] + ab[abb + 2u * cc + 1u];
            if ((p.flags & 16u) != 0u) v = v / (1.0 + exp(-v));
        }
        v = to_half(v);
        xv[c] = (ok && cb < p.cin) ? v : 0.0;
    }
}

void main()
{
    const uint t = gl_LocalInvocationID.x;
    const uint plane = p.ho * p.wo, n_out = p.batch * plane;
    const uint hw = p.h * p.w, n_in = p.batch * hw, kk = p.k * p.k;
    // split-K: workgroup row y = slice x mtiles + output-channel tile; one slice without it
    const uint mtiles = (p.cout + BM - 1u) / BM;
    const uint slice = gl_WorkGroupID.y / mtiles;
    const uint m0 = (gl_WorkGroupID.y - slice * mtiles) * BM;
    const uint tm = t / 16u, tn = t % 16u;
    // loading W: input channel ac of the stage, output channels m0 + 4 am + q (one vec4 each)
    const uint ac = t % BK, am = t / BK;
    uint wrow[4];
    bool mok[4];
    [[unroll]] for (uint q = 0u; q < 4u; q++) {
        wrow[q] = 2u * p.ow + min(m0 + 4u * am + q, p.cout - 1u) * p.wstride;
        mok[q] = m0 + 4u * am + q < p.cout;
    }

    const uint tiles = (n_out + BN - 1u) / BN;
    for (uint tile = gl_WorkGroupID.x; tile < tiles; tile += gl_NumWorkGroups.x) {
        const uint n0 = tile * BN;
        // loading X~: the invocation gathers pixel n0 + t for every channel of a stage
        const uint pn = n0 + t;
        const bool pv = pn < n_out;
        const uint pc = min(pn, n_out - 1u);
        const uint b = pc / plane, rem = pc - b * plane, oyy = rem / p.wo, oxx = rem - oyy * p.wo;
        const int iy0 = int(oyy * p.stride) - int(p.pad0), ix0 = int(oxx * p.stride) - int(p.pad0);
        const uint xb = p.ox + b * hw;
        const uint abb = p.oab + 2u * b * p.abstride;   // this pixel's sample's (a, d)

        vec4 acc[8][2];
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            acc[i][0] = vec4(0.0);
            acc[i][1] = vec4(0.0);
        }

        // Stages in order (tap, then channels c0 = 0, BK, ...). Software pipelining: the global
        // loads of the next stage are issued into registers before this stage's multiply-adds,
        // so their latency is hidden behind them within the workgroup; the registers are written
        // to shared memory once the stage has been read.
        // Split-K: slice s takes stages [s split, min((s + 1) split, stages)), in the unsplit
        // order (the host makes every slice non-empty); without it, all of them.
        const uint nst = (p.cin + BK - 1u) / BK, stages = kk * nst;
        const uint sps = p.split != 0u ? p.split : stages;
        const uint st0 = slice * sps, st1 = min(stages, st0 + sps);
        uint tap = st0 / nst, c0 = (st0 - tap * nst) * BK;
        vec4 wv;
        float xv[BK];
        fetch(tap, c0, wrow, mok, ac, iy0, ix0, pv, xb, n_in, kk, abb, wv, xv);
        for (uint st = st0; st < st1; st++) {
            As[ac][am] = wv;
            [[unroll]] for (uint c = 0u; c < BK; c++) Bs[c][t / 4u][t % 4u] = xv[c];
            barrier();
            c0 += BK;
            if (c0 >= p.cin) {
                c0 = 0u;
                tap++;
            }
            if (st + 1u < st1)
                fetch(tap, c0, wrow, mok, ac, iy0, ix0, pv, xb, n_in, kk, abb, wv, xv);
            [[unroll]] for (uint c = 0u; c < BK; c++) {
                const vec4 a0 = As[c][tm], a1 = As[c][8u + tm];
                const vec4 b0 = Bs[c][tn], b1 = Bs[c][16u + tn];
                [[unroll]] for (uint q = 0u; q < 4u; q++) {
                    acc[q][0] += a0[q] * b0;
                    acc[q][1] += a0[q] * b1;
                    acc[4u + q][0] += a1[q] * b0;
                    acc[4u + q][1] += a1[q] * b1;
                }
            }
            barrier();
        }

        // acc[i][h]: channel m0 + 4 tm + i (i < 4) or m0 + 32 + 4 tm + i - 4, pixels
        // n0 + 64 h + 4 tn + e. Split-K: the raw partial sums go to slice s of the scratch y.
        const bool part = p.split != 0u;
        const uint oys = p.oy + (part ? slice * p.cout * n_out : 0u);
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            const uint co = m0 + (i < 4u ? 4u * tm + i : 32u + 4u * tm + i - 4u);
            if (co < p.cout) {
                const float bv = (p.flags & 1u) != 0u ? bias[p.ob + co] : 0.0;
                [[unroll]] for (uint h = 0u; h < 2u; h++)
                    [[unroll]] for (uint e = 0u; e < 4u; e++) {
                        const uint pj = n0 + 64u * h + 4u * tn + e;
                        if (pj < n_out) {
                            const uint at = oys + co * n_out + pj;
                            if (part) {
                                y[at] = acc[i][h][e];
                                continue;
                            }
                            float v = acc[i][h][e] + bv;
                            if ((p.flags & 2u) != 0u) v += y[at];
                            if ((p.flags & 4u) != 0u) v += r[p.ores + (at - p.oy)];
                            y[at] = v;
                        }
                    }
            }
        }
    }
}
