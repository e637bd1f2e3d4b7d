#version 450
// The second half of a split-K convolution (csrc/nn_vk.c, CCFG_VULKAN_CONV_SPLITK): nn_conv2d.comp
// (or nn_conv2d_f16.comp) with p.slices = S > 1 wrote S partial sums of every output, slice s
// reducing its own contiguous share of the stages (taps x input channels), to scratch `part`
// (S x count floats). Here each output is
//   y = (((part_0 + part_1 + ... + part_{S-1}) + bias) + (accumulate ? y : 0)) + (residual ? r : 0)
// summed left to right in that fixed order: no atomics, so the result depends only on the sizes
// and S (deterministic), and the epilogue is the unsplit shader's, in its order.
// An invocation loops over S slices per element of its grid-stride loop (the host keeps both within
// the loop budget, csrc/vk_nn.h CCFG_VK_LOOP_BUDGET).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer P { float part[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
// the residual (like y; may be y itself), read only with flags bit 2
layout(std430, binding = 3) readonly buffer R { float r[]; };

layout(push_constant) uniform Push {
    uint opart, ob, oy, ores;
    uint count;     // outputs: cout x n_out
    uint n_out;     // output pixels per channel (batch x ho x wo)
    uint slices;
    uint flags;     // bit 0: bias present, bit 1: accumulate into y, bit 2: add the residual r
} p;

void main()
{
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += gstride) {
        float v = part[p.opart + i];
        for (uint s = 1u; s < p.slices; s++) v += part[p.opart + s * p.count + i];
        if ((p.flags & 1u) != 0u) v += bias[p.ob + i / p.n_out];
        if ((p.flags & 2u) != 0u) v += y[p.oy + i];
        if ((p.flags & 4u) != 0u) v += r[p.ores + i];
        y[p.oy + i] = v;
    }
}
