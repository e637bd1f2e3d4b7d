#version 450
#extension GL_EXT_shader_16bit_storage : require
// float32 -> float16 (round to nearest even by the device's conversion; |v| > 65504 becomes
// +-inf, as a float16 cast does in PyTorch): the weights of the half-precision convolutions
// (nn_conv2d_f16.comp, nn_conv2d_coop*.comp): once per layer when a model is placed (its packed
// form, csrc/nn_vk.c vk_conv2d_pack), or into device scratch before each convolution without one. Needs only storageBuffer16BitAccess: float16 values are stored, never computed.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float16_t y[]; };

layout(push_constant) uniform Push {
    uint ox, oy;    // element offsets: oy in floats of the binding (2 float16 each)
    uint count;
} p;

void main()
{
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += gstride)
        y[2u * p.oy + i] = float16_t(x[p.ox + i]);
}
