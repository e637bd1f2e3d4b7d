#version 450
// flag[0] = 1 if any value is NaN or Inf (backend op all_finite; the host zeroes the flag first).
// The test looks at the exponent bits rather than isnan/isinf, which a driver's fast-math may fold.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { uint x[]; };
layout(std430, binding = 1) buffer F { uint flag[]; };

layout(push_constant) uniform Push { uint count; } p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    bool bad = false;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride)
        bad = bad || (x[i] & 0x7f800000u) == 0x7f800000u;
    if (bad) flag[0] = 1u;      // every writer writes the same value: the race is harmless
}
