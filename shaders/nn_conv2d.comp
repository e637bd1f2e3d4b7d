#version 450
// nn.h conv2d in CNHW, direct: an invocation computes COB output channels (a block picked by
// gl_WorkGroupID.y, the same for the whole workgroup, so weight reads are uniform) at one output
// pixel (b, oy, ox), summing over (ci, ky, kx) in float32: every input value read serves COB
// outputs. y = (accumulate ? y : 0) + bias + conv(x, w); padding pad0 before, pad1 after (pad1
// only bounds the output size, which the host computes). Out-of-image taps read a clamped
// address and are masked to zero rather than branched around (SIMD-friendly on CPU drivers).
// Every array is a buffer plus an element offset (backend_vk.c device addresses).
layout(local_size_x = 128) in;

const uint COB = 8u;   // output channels per invocation; vk_nn.h CCFG_VK_CONV_COB

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float wt[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, ow, ob, oy;
    uint batch, cin, h, w, cout, k, stride, pad0, ho, wo;
    uint flags;     // bit 0: bias present, bit 1: accumulate into y
} p;

void main()
{
    const uint plane = p.ho * p.wo, n_in = p.batch * p.h * p.w, n_out = p.batch * plane;
    const uint co0 = gl_WorkGroupID.y * COB;
    const uint kk = p.k * p.k;
    // weight rows of this block; channels past cout read the last row and are never written
    uint wrow[COB];
    for (uint j = 0u; j < COB; j++) wrow[j] = p.ow + min(co0 + j, p.cout - 1u) * p.cin * kk;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < n_out; i += gstride) {
        const uint b = i / plane, pix = i - b * plane;
        const uint oyy = pix / p.wo, oxx = pix - oyy * p.wo;
        const int iy0 = int(oyy * p.stride) - int(p.pad0), ix0 = int(oxx * p.stride) - int(p.pad0);
        float acc[COB];
        for (uint j = 0u; j < COB; j++) acc[j] = 0.0;
        for (uint ky = 0u; ky < p.k; ky++) {
            const int iy = iy0 + int(ky);
            const bool vy = iy >= 0 && iy < int(p.h);
            const uint cy = uint(clamp(iy, 0, int(p.h) - 1));
            for (uint kx = 0u; kx < p.k; kx++) {
                const int ix = ix0 + int(kx);
                const bool valid = vy && ix >= 0 && ix < int(p.w);
                const uint cx = uint(clamp(ix, 0, int(p.w) - 1));
                const uint xo = p.ox + b * p.h * p.w + cy * p.w + cx;
                const uint tap = ky * p.k + kx;
                for (uint ci = 0u; ci < p.cin; ci++) {
                    const float xv = valid ? x[xo + ci * n_in] : 0.0;
                    for (uint j = 0u; j < COB; j++) acc[j] += wt[wrow[j] + ci * kk + tap] * xv;
                }
            }
        }
        for (uint j = 0u; j < COB; j++) {
            const uint co = co0 + j;
            if (co >= p.cout) break;
            float v = acc[j];
            if ((p.flags & 1u) != 0u) v += bias[p.ob + co];
            const uint at = p.oy + co * n_out + i;
            if ((p.flags & 2u) != 0u) v += y[at];
            y[at] = v;
        }
    }
}
