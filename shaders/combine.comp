#version 450
// out_i = sum_q coef[i*m + q] * in[q]_i, per-sample linear combination (backend op combine).
// Up to 8 inputs per dispatch, as 8 separate bindings indexed by constants: dynamic indexing of a
// buffer array needs a device feature we do not want to depend on. Unused bindings repeat in0.
layout(local_size_x = 128) in;

layout(std430, binding = 0) buffer O { float o[]; };
layout(std430, binding = 1) readonly buffer C { float coef[]; };
layout(std430, binding = 2) readonly buffer I0 { float in0[]; };
layout(std430, binding = 3) readonly buffer I1 { float in1[]; };
layout(std430, binding = 4) readonly buffer I2 { float in2[]; };
layout(std430, binding = 5) readonly buffer I3 { float in3[]; };
layout(std430, binding = 6) readonly buffer I4 { float in4[]; };
layout(std430, binding = 7) readonly buffer I5 { float in5[]; };
layout(std430, binding = 8) readonly buffer I6 { float in6[]; };
layout(std430, binding = 9) readonly buffer I7 { float in7[]; };

layout(push_constant) uniform Push {
    uint count;     // n * dim
    uint dim;
    uint m;         // inputs (<= 8)
} p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        const uint c0 = (i / p.dim) * p.m;
        float v = coef[c0] * in0[i];
        if (p.m > 1u) v = fma(coef[c0 + 1u], in1[i], v);
        if (p.m > 2u) v = fma(coef[c0 + 2u], in2[i], v);
        if (p.m > 3u) v = fma(coef[c0 + 3u], in3[i], v);
        if (p.m > 4u) v = fma(coef[c0 + 4u], in4[i], v);
        if (p.m > 5u) v = fma(coef[c0 + 5u], in5[i], v);
        if (p.m > 6u) v = fma(coef[c0 + 6u], in6[i], v);
        if (p.m > 7u) v = fma(coef[c0 + 7u], in7[i], v);
        o[i] = v;
    }
}
