#version 450
// nn.h conv2d in CNHW, direct: one invocation per output element (co, b, oy, ox), summing over
// (ci, ky, kx) in float32. y = (accumulate ? y : 0) + bias + conv(x, w); padding pad0 before,
// pad1 after (pad1 only bounds the output size, which the host computes). Every array is a
// buffer plus an element offset (backend_vk.c device addresses).
layout(local_size_x = 128) in;

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
    const uint plane = p.ho * p.wo, n_in = p.batch * p.h * p.w;
    const uint count = p.cout * p.batch * plane;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < count; i += gstride) {
        const uint co = i / (p.batch * plane);
        const uint r = i - co * p.batch * plane;
        const uint b = r / plane, pix = r - b * plane;
        const uint oyy = pix / p.wo, oxx = pix - oyy * p.wo;
        const int iy0 = int(oyy * p.stride) - int(p.pad0), ix0 = int(oxx * p.stride) - int(p.pad0);
        float acc = 0.0;
        for (uint ci = 0u; ci < p.cin; ci++) {
            const uint xbase = p.ox + ci * n_in + b * p.h * p.w;
            const uint wbase = p.ow + (co * p.cin + ci) * p.k * p.k;
            for (uint ky = 0u; ky < p.k; ky++) {
                const int iy = iy0 + int(ky);
                if (iy < 0 || iy >= int(p.h)) continue;
                for (uint kx = 0u; kx < p.k; kx++) {
                    const int ix = ix0 + int(kx);
                    if (ix < 0 || ix >= int(p.w)) continue;
                    acc += wt[wbase + ky * p.k + kx] * x[xbase + uint(iy) * p.w + uint(ix)];
                }
            }
        }
        if ((p.flags & 1u) != 0u) acc += bias[p.ob + co];
        if ((p.flags & 2u) != 0u) acc += y[p.oy + i];
        y[p.oy + i] = acc;
    }
}
