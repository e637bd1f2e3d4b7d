// nn.h conv2d in CNHW as an implicit GEMM: Y (cout x P) = W (cout x cin*k*k) * X~ (cin*k*k x P),
// P = batch * ho * wo output pixels, where X~ (im2col) is never stored: its tiles are gathered
// from x straight into shared memory. One body, variants by #define (CCFG_VULKAN_CONV_TILE,
// csrc/nn_vk.c conv_tile; the .comp files define them and include this):
//   TILE_BM      output channels per tile, 64 (the default, nn_conv2d.comp) or 128
//                (nn_conv2d_t128*.comp): NT = 2 TILE_BM invocations, each 8 x 8 outputs, so a
//                staged weight is read by 16 invocations and a staged input by 8 (64) or 16 (128)
//   CONV_DOUBLE_BUFFER  two shared-memory stages (the _db files): the next stage's registers are
//                stored into the other stage after this stage's multiply-adds, one barrier per
//                stage instead of two
// Every variant gives every output the same multiply-adds in the same order (one running float32
// sum over the stages, and within a stage over its channels, written as the same expression), so
// every variant computes the bits of nn_conv2d.comp (tests/test_vulkan_conv_tiles.py).
//
// A workgroup computes a BM x BN = TILE_BM x 128 tile of Y (BM output channels:
// gl_WorkGroupID.y; BN output pixels: gl_WorkGroupID.x, grid-stride over pixel tiles past 65535).
// The reduction runs in stages: tap by tap (ky, kx) and, within a tap, over the input channels in
// chunks of BK = 8. Per stage the NT invocations copy a BK x BM slice of W and a BK x BN slice of
// X~ into shared memory (6 KiB, or 8 KiB with BM = 128; twice that double-buffered), then each
// multiplies 8 x 8 outputs from vec4 reads of it. The next stage's global loads are issued before
// this stage's multiply-adds (software pipelining).
// Taps outside channels: a stage's input position and padding test are computed once per stage,
// not per element (no division in the inner loop), at the cost of rounding each tap's channels up
// to BK (only a first convolution of 1-4 input channels pays much for that).
//
// y = ((conv(x, w) + bias) + (accumulate ? y : 0)) + (residual ? r : 0), in that order. r (binding
// 4, its own element offset) is a separate input so that a resnet's skip connection is added here
// instead of being copied into y first for the convolution to accumulate onto (the same sum, bit
// for bit). Padding pad0 before, pad1 after (pad1 only bounds
// the output size, which the host computes). Out-of-image taps, channels past cin and rows past
// cout read a clamped address and are masked to zero rather than branched around.
// A GroupNorm(+SiLU) folded in (flags bit 3, bit 4 for the SiLU; csrc/nn_vk.c
// conv2d_packed_norm): every input is staged as v = x a + d, then SiLU(v), with (a, d) of its
// sample and channel from binding 5 (nn.h group_norm_affine), so the normalised tensor is never
// written and read back. Out-of-image taps stay 0: the padding is of the normalised tensor (a
// GroupNorm then a zero-padded convolution), not SiLU(d). Split-K's slices keep these two bits.
// Every array is a buffer plus an element offset (backend_vk.c device addresses). Many input
// channels are split into chunks by the host (cin channels per dispatch; x and w start at the
// chunk's first channel, w's rows are wstride floats apart): later chunks accumulate, so no
// invocation loops past the loop budget (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET). The constant-count
// loops are unrolled, so an invocation loops k*k*ceil(cin / BK) times per tile (one per stage).
//
// Split-K (p.split != 0; csrc/nn_vk.c conv_splitk, CCFG_VULKAN_CONV_SPLITK): where a convolution
// has too few tiles to fill a GPU (low resolutions, few rows) and a long reduction, the host
// splits the stages into slices of p.split stages, one more workgroup row per slice and channel
// tile. A slice's workgroup writes its raw partial tile to its slice of y (device scratch; of the
// flags only bits 3 and 4, the input's), and nn_conv2d_reduce.comp then adds the slices in order
// and applies the epilogue above: no float atomics, so the result depends only on the sizes and
// the slices.
#extension GL_EXT_control_flow_attributes : require
#ifndef TILE_BM
#define TILE_BM 64
#endif
#if TILE_BM != 64 && TILE_BM != 128
#error "nn_conv2d.glsl: TILE_BM must be 64 or 128"
#endif
#ifdef CONV_DOUBLE_BUFFER
#define NBUF 2
#else
#define NBUF 1
#endif
#define NTI (2 * TILE_BM)
layout(local_size_x = NTI) in;

// vk_nn.h CCFG_VK_CONV_BM (the default's; CCFG_VK_CONV_BM_128 for 128), CCFG_VK_CONV_BN, _BK
const uint BM = uint(TILE_BM);  // output channels per tile
const uint BN = 128u;           // output pixels per tile
const uint BK = 8u;             // input channels per shared-memory stage
const uint NT = uint(NTI);      // invocations: BM / 8 rows (tm) x 16 columns (tn)
const uint XC = BK * BN / NT;   // channels of one pixel of X~ an invocation stages: 8 or 4
// an invocation computes 8 x 8 outputs: channels 4 tm + q and BM / 2 + 4 tm + q, pixels 4 tn + e
// and 64 + 4 tn + e (q, e < 4), read from shared memory as vec4s

#define CONV_WEIGHT float
#include "nn_conv2d_io.glsl"   // bindings 0-5 and the push block p

// As[b][c][m / 4], Bs[b][c][n / 4]: stage b (0, or 0 and 1 double-buffered), read as vec4s (two of
// each per channel and invocation)
shared vec4 As[NBUF][BK][BM / 4u];
shared vec4 Bs[NBUF][BK][BN / 4u];

// The global values of stage (tap, c0) this invocation stages: 4 weights (output channels
// m0 + 4 am + q, input channel c0 + ac) and XC inputs (its pixel, channels c0 + xc0 ..
// c0 + xc0 + XC - 1 at the tap's offset). Out-of-image taps and channels past cin read a clamped
// address, masked to 0.
void fetch(uint tap, uint c0, uint wrow[4], bool mok[4], uint ac, uint xc0, int iy0, int ix0,
           bool pv, uint xb, uint n_in, uint kk, uint abb, out vec4 wv, out float xv[XC])
{
    const uint ky = tap / p.k, kx = tap - ky * p.k;
    const int iy = iy0 + int(ky), ix = ix0 + int(kx);
    const bool ok = pv && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.w);
    const uint xo = xb + uint(clamp(iy, 0, int(p.h) - 1)) * p.w + uint(clamp(ix, 0, int(p.w) - 1));
    const uint ca = c0 + ac;
    const uint wcol = min(ca, p.cin - 1u) * kk + tap;
    [[unroll]] for (uint q = 0u; q < 4u; q++) {
        const float v = wt[wrow[q] + wcol];
        wv[q] = (mok[q] && ca < p.cin) ? v : 0.0;
    }
    [[unroll]] for (uint c = 0u; c < XC; c++) {
        const uint cb = c0 + xc0 + c;
        const uint cc = min(cb, p.cin - 1u);
        float v = x[xo + cc * n_in];
        if ((p.flags & 8u) != 0u) {
            v = v * ab[abb + 2u * cc] + ab[abb + 2u * cc + 1u];
            if ((p.flags & 16u) != 0u) v = v / (1.0 + exp(-v));
        }
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
    // loading W: input channel ac of the stage, output channels m0 + 4 am + q (one vec4 each:
    // NT / BK = BM / 4 of them)
    const uint ac = t % BK, am = t / BK;
    // loading X~: pixel n0 + pl of the tile, channels xc0 .. xc0 + XC - 1 of the stage
    const uint pl = t % BN, xc0 = t / BN * XC;
    uint wrow[4];
    bool mok[4];
    [[unroll]] for (uint q = 0u; q < 4u; q++) {
        wrow[q] = p.ow + min(m0 + 4u * am + q, p.cout - 1u) * p.wstride;
        mok[q] = m0 + 4u * am + q < p.cout;
    }

    const uint tiles = (n_out + BN - 1u) / BN;
    for (uint tile = gl_WorkGroupID.x; tile < tiles; tile += gl_NumWorkGroups.x) {
        const uint n0 = tile * BN;
        const uint pn = n0 + pl;
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
        // to shared memory once the stage has been read (single buffer: at the top of the next
        // iteration, after a second barrier; double-buffered: into the other stage right after
        // the multiply-adds, then the stage's one barrier).
        // Split-K: slice s takes stages [s split, min((s + 1) split, stages)), in the unsplit
        // order (the host makes every slice non-empty); without it, all of them.
        const uint nst = (p.cin + BK - 1u) / BK, stages = kk * nst;
        const uint sps = p.split != 0u ? p.split : stages;
        const uint st0 = slice * sps, st1 = min(stages, st0 + sps);
        uint tap = st0 / nst, c0 = (st0 - tap * nst) * BK;
        vec4 wv;
        float xv[XC];
        fetch(tap, c0, wrow, mok, ac, xc0, iy0, ix0, pv, xb, n_in, kk, abb, wv, xv);
#ifdef CONV_DOUBLE_BUFFER
        As[0][ac][am] = wv;
        [[unroll]] for (uint c = 0u; c < XC; c++) Bs[0][xc0 + c][pl / 4u][pl % 4u] = xv[c];
        barrier();
        uint cur = 0u;
#else
        const uint cur = 0u;
#endif
        for (uint st = st0; st < st1; st++) {
#ifndef CONV_DOUBLE_BUFFER
            As[0][ac][am] = wv;
            [[unroll]] for (uint c = 0u; c < XC; c++) Bs[0][xc0 + c][pl / 4u][pl % 4u] = xv[c];
            barrier();
#endif
            c0 += BK;
            if (c0 >= p.cin) {
                c0 = 0u;
                tap++;
            }
            if (st + 1u < st1)
                fetch(tap, c0, wrow, mok, ac, xc0, iy0, ix0, pv, xb, n_in, kk, abb, wv, xv);
            // the same expression, in the same order, in every variant (the same bits)
            [[unroll]] for (uint c = 0u; c < BK; c++) {
                const vec4 a0 = As[cur][c][tm], a1 = As[cur][c][BM / 8u + tm];
                const vec4 b0 = Bs[cur][c][tn], b1 = Bs[cur][c][16u + tn];
                [[unroll]] for (uint q = 0u; q < 4u; q++) {
                    acc[q][0] += a0[q] * b0;
                    acc[q][1] += a0[q] * b1;
                    acc[4u + q][0] += a1[q] * b0;
                    acc[4u + q][1] += a1[q] * b1;
                }
            }
#ifdef CONV_DOUBLE_BUFFER
            // stage cur ^ 1 was last read before the previous iteration's barrier
            if (st + 1u < st1) {
                As[cur ^ 1u][ac][am] = wv;
                [[unroll]] for (uint c = 0u; c < XC; c++)
                    Bs[cur ^ 1u][xc0 + c][pl / 4u][pl % 4u] = xv[c];
            }
            cur ^= 1u;
#endif
            barrier();
        }

        // acc[i][h]: channel m0 + 4 tm + i (i < 4) or m0 + BM / 2 + 4 tm + i - 4, pixels
        // n0 + 64 h + 4 tn + e. Split-K: the raw partial sums go to slice s of the scratch y.
        const bool part = p.split != 0u;
        const uint oys = p.oy + (part ? slice * p.cout * n_out : 0u);
        [[unroll]] for (uint i = 0u; i < 8u; i++) {
            const uint co = m0 + (i < 4u ? 4u * tm + i : BM / 2u + 4u * tm + i - 4u);
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
