#version 450
// nn.h conv2d in CNHW, direct, register-blocked: an invocation computes COB output channels (a
// block picked by gl_WorkGroupID.y, the same for the whole workgroup, so weight reads are
// uniform) at PX adjacent output pixels of one row (b, oy, ox..ox+PX-1), summing over
// (ky, kx, ci) in float32: each weight read serves PX outputs and each input read COB outputs.
// y = ((conv(x, w) + bias) + (accumulate ? y : 0)) + (residual ? r : 0), in that order. r (binding
// 4, its own element offset) is a separate input so that a resnet's skip connection is added here
// instead of being copied into y first for the convolution to accumulate onto (the same sum, bit
// for bit). Padding pad0 before, pad1 after (pad1 only bounds
// the output size, which the host computes). Out-of-image taps read a clamped address and are
// masked to zero rather than branched around (SIMD-friendly on CPU drivers).
// Every array is a buffer plus an element offset (backend_vk.c device addresses).
// Many input channels are split into chunks by the host (cin channels per dispatch; x and w start
// at the chunk's first channel, w's rows are wstride floats apart): later chunks accumulate, so no
// invocation loops past the loop budget (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET).
layout(local_size_x = 128) in;

const uint COB = 8u;   // output channels per invocation: vk_nn.h CCFG_VK_CONV_COB
const uint PX = 4u;    // output pixels per invocation: vk_nn.h CCFG_VK_CONV_PX

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float wt[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) buffer Y { float y[]; };
// the residual (cout x P like y; may be y itself), read only with flags bit 2
layout(std430, binding = 4) readonly buffer R { float r[]; };

layout(push_constant) uniform Push {
    uint ox, ow, ob, oy, ores;
    uint batch, cin, h, w, cout, k, stride, pad0, ho, wo;
    uint flags;     // bit 0: bias present, bit 1: accumulate into y, bit 2: add the residual r
    uint wstride;   // floats per output channel of w (every input channel x k x k)
} p;

void main()
{
    const uint quads = (p.wo + PX - 1u) / PX;
    const uint plane = p.ho * p.wo, n_in = p.batch * p.h * p.w, n_out = p.batch * plane;
    const uint items = p.batch * p.ho * quads;
    const uint co0 = gl_WorkGroupID.y * COB;
    const uint kk = p.k * p.k;
    // weight rows of this block; channels past cout read the last row and are never written
    uint wrow[COB];
    for (uint j = 0u; j < COB; j++) wrow[j] = p.ow + min(co0 + j, p.cout - 1u) * p.wstride;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint it = gl_GlobalInvocationID.x; it < items; it += gstride) {
        const uint row = it / quads, q = it - row * quads;      // row = b * ho + oy
        const uint b = row / p.ho, oyy = row - b * p.ho;
        const uint ox0 = q * PX;
        const int iy0 = int(oyy * p.stride) - int(p.pad0);
        float acc[COB][PX];
        for (uint j = 0u; j < COB; j++)
            for (uint e = 0u; e < PX; e++) acc[j][e] = 0.0;
        for (uint ky = 0u; ky < p.k; ky++) {
            const int iy = iy0 + int(ky);
            const bool vy = iy >= 0 && iy < int(p.h);
            const uint rowbase = p.ox + b * p.h * p.w + uint(clamp(iy, 0, int(p.h) - 1)) * p.w;
            for (uint kx = 0u; kx < p.k; kx++) {
                uint xo[PX];
                bool ok[PX];
                for (uint e = 0u; e < PX; e++) {
                    const int ix = int((ox0 + e) * p.stride) - int(p.pad0) + int(kx);
                    ok[e] = vy && ix >= 0 && ix < int(p.w);
                    xo[e] = rowbase + uint(clamp(ix, 0, int(p.w) - 1));
                }
                const uint tap = ky * p.k + kx;
                for (uint ci = 0u; ci < p.cin; ci++) {
                    float xv[PX];
                    for (uint e = 0u; e < PX; e++) xv[e] = ok[e] ? x[xo[e] + ci * n_in] : 0.0;
                    for (uint j = 0u; j < COB; j++) {
                        const float wv = wt[wrow[j] + ci * kk + tap];
                        for (uint e = 0u; e < PX; e++) acc[j][e] += wv * xv[e];
                    }
                }
            }
        }
        for (uint j = 0u; j < COB; j++) {
            const uint co = co0 + j;
            if (co >= p.cout) break;
            const float bv = (p.flags & 1u) != 0u ? bias[p.ob + co] : 0.0;
            for (uint e = 0u; e < PX; e++) {
                if (ox0 + e >= p.wo) break;
                const uint at = p.oy + co * n_out + b * plane + oyy * p.wo + ox0 + e;
                float v = acc[j][e] + bv;
                if ((p.flags & 2u) != 0u) v += y[at];
                if ((p.flags & 4u) != 0u) v += r[p.ores + (at - p.oy)];
                y[at] = v;
            }
        }
    }
}
