#version 450
// out = a*x + b*y + c*z elementwise (backend op axpbypcz). y/z are skipped when their bit in
// `terms` is clear (the host then binds x in their place, so every binding is valid).
// out may be the same buffer as x, y or z: each element is read before it is written by the
// same invocation, so no `restrict`.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer Z { float z[]; };
layout(std430, binding = 3) buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint count;
    uint terms;     // bit 0: y present, bit 1: z present
    float a, b, c;
} p;

void main()
{
    // grid-stride loop: the host caps the number of workgroups, any count works
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        float v = p.a * x[i];
        if ((p.terms & 1u) != 0u) v = fma(p.b, y[i], v);
        if ((p.terms & 2u) != 0u) v = fma(p.c, z[i], v);
        o[i] = v;
    }
}
