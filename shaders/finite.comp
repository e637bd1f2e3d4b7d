#version 450
// Non-finite watch (backend op watch_finite): if any x is NaN or Inf, flag = min(flag, tag).
// The host sets the flag to 0xFFFFFFFF and reads it when it waits for the device anyway, so a
// step is checked without a wait. The test looks at the exponent bits rather than isnan/isinf,
// which a driver's fast-math may fold.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { uint x[]; };
layout(std430, binding = 1) buffer F { uint flag[]; };

layout(push_constant) uniform Push { uint count, ox, tag; } p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    bool bad = false;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride)
        bad = bad || (x[p.ox + i] & 0x7f800000u) == 0x7f800000u;
    if (bad) atomicMin(flag[0], p.tag);
}
