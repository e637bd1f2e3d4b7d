#version 450
// nn.h linear: y[r, o] = bias[o] + sum_i s(x[r, i]) w[o, i], s = SiLU when flags bit 0 (x is
// not modified), identity otherwise. One invocation per output; row-major arrays. The host splits
// long inputs into chunks (n_in inputs per dispatch, rows of ld floats; x and w start at the
// chunk's first input): the first chunk writes y (with the bias), later ones add to it (bit 2),
// so that no invocation loops past the loop budget (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float wt[]; };
layout(std430, binding = 2) readonly buffer B { float bias[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, ow, ob, oy;
    uint rows, n_in, n_out, flags;  // flags bit 0: silu_in, bit 1: bias present, bit 2: accumulate
    uint ld;
} p;

void main()
{
    const uint count = p.rows * p.n_out;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint idx = gl_GlobalInvocationID.x; idx < count; idx += gstride) {
        const uint r = idx / p.n_out, o = idx - r * p.n_out;
        float acc = 0.0;
        for (uint i = 0u; i < p.n_in; i++) {
            float v = x[p.ox + r * p.ld + i];
            if ((p.flags & 1u) != 0u) v = v / (1.0 + exp(-v));
            acc += v * wt[p.ow + o * p.ld + i];
        }
        if ((p.flags & 2u) != 0u) acc += bias[p.ob + o];
        if ((p.flags & 4u) != 0u) acc += y[p.oy + idx];
        y[p.oy + idx] = acc;
    }
}
