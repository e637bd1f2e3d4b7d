// out = a*x + b*y + c*z elementwise (backend op axpbypcz). y/z are skipped when their bit in
// `terms` is clear (the host then binds x in their place, so every binding is valid).
// Every array is a buffer plus an element offset (backend_vk.c hands out sub-allocations as
// device addresses). out may alias x, y or z element for element: each element is read before
// the same invocation writes it, so no `restrict`.
#include "real.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer Z { float z[]; };
layout(std430, binding = 3) buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint count;
    uint terms;     // bit 0: y present, bit 1: z present
    uint ox, oy, oz, oo;
    float af, bf, cf;
    uint pad;
    uvec2 ad, bd, cd;
} p;

void main()
{
    const REAL a = COEF(p.af, p.ad), b = COEF(p.bf, p.bd), c = COEF(p.cf, p.cd);
    // grid-stride loop: the host caps the number of workgroups, any count works
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        REAL v = a * REAL(x[p.ox + i]);
        if ((p.terms & 1u) != 0u) v += b * REAL(y[p.oy + i]);
        if ((p.terms & 2u) != 0u) v += c * REAL(z[p.oz + i]);
        o[p.oo + i] = float(v);
    }
}
