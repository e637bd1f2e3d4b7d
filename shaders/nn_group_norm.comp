#version 450
// nn.h group_norm: one workgroup per (sample b, group g). v = x + in_bias[b, c]; two passes over
// the group's channels x pixels (mean, then the biased variance of the centred values, as torch);
// then v = (v - mean) / sqrt(var + eps) * gamma + beta, optional FiLM v * (1 + film[b, c]) +
// film[b, c + C], optional SiLU. Partial sums meet in shared memory (tree, no subgroup ops).
// y may alias x: each element is read by the invocation that writes it, after both reductions.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer IB { float in_bias[]; };
layout(std430, binding = 2) readonly buffer G { float gamma[]; };
layout(std430, binding = 3) readonly buffer BE { float beta[]; };
layout(std430, binding = 4) readonly buffer F { float film[]; };
layout(std430, binding = 5) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, oib, og, obe, of, oy;
    uint batch, c, hw, groups;
    float eps;
    uint flags;     // bit 0: in_bias, bit 1: film, bit 2: silu
} p;

shared float part[128];

float reduce_sum(float v)
{
    const uint t = gl_LocalInvocationID.x;
    part[t] = v;
    barrier();
    for (uint s = 64u; s > 0u; s >>= 1) {
        if (t < s) part[t] += part[t + s];
        barrier();
    }
    const float r = part[0];
    barrier();
    return r;
}

float load(uint c, uint b, uint pix)
{
    float v = x[p.ox + (c * p.batch + b) * p.hw + pix];
    if ((p.flags & 1u) != 0u) v += in_bias[p.oib + b * p.c + c];
    return v;
}

void main()
{
    const uint cg = p.c / p.groups, n = cg * p.hw, t = gl_LocalInvocationID.x;
    for (uint wg = gl_WorkGroupID.x; wg < p.batch * p.groups; wg += gl_NumWorkGroups.x) {
        const uint b = wg / p.groups, g = wg - b * p.groups, c0 = g * cg;
        float s = 0.0;
        for (uint i = t; i < n; i += 128u) s += load(c0 + i / p.hw, b, i % p.hw);
        const float mean = reduce_sum(s) / float(n);
        float q = 0.0;
        for (uint i = t; i < n; i += 128u) {
            const float d = load(c0 + i / p.hw, b, i % p.hw) - mean;
            q += d * d;
        }
        const float rstd = 1.0 / sqrt(reduce_sum(q) / float(n) + p.eps);
        for (uint i = t; i < n; i += 128u) {
            const uint c = c0 + i / p.hw, pix = i % p.hw;
            float v = (load(c, b, pix) - mean) * rstd * gamma[p.og + c] + beta[p.obe + c];
            if ((p.flags & 2u) != 0u)
                v = v * (1.0 + film[p.of + b * 2u * p.c + c]) + film[p.of + b * 2u * p.c + p.c + c];
            if ((p.flags & 4u) != 0u) v = v / (1.0 + exp(-v));
            y[p.oy + (c * p.batch + b) * p.hw + pix] = v;
        }
    }
}
