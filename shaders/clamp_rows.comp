#version 450
// out[i, j] = clamp(x[i, j], -b_i, b_i), divided by b_i when `divide`: the x0 clipping
// (clip_sample) and dynamic thresholding of DDIM/DDPM steps (csrc/solver.c), in float32 as the
// CPU backend does it (so the two agree bit for bit).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint count, dim, divide, ox, oo;
} p;

void main()
{
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint idx = gl_GlobalInvocationID.x; idx < p.count; idx += gstride) {
        const float bound = b[idx / p.dim];
        const float v = min(max(x[p.ox + idx], -bound), bound);
        o[p.oo + idx] = p.divide != 0u ? v / bound : v;
    }
}
