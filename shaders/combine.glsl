// out_i = sum_q coef[i*m + q] * in[q]_i, per-sample linear combination (backend op combine).
// Up to 8 inputs per dispatch, as 8 separate bindings indexed by constants: dynamic indexing of a
// buffer array needs a device feature we do not want to depend on. Unused bindings repeat in0.
// More inputs: the host chunks them and later dispatches add to out (`accumulate`).
#include "real.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) buffer O { float o[]; };
layout(std430, binding = 1) readonly buffer C { REAL coef[]; };
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
    uint m;         // inputs in this dispatch (<= 8)
    uint stride_c;  // coefficients per sample (the whole combination's m)
    uint first_c;   // this dispatch's first coefficient within a sample's
    uint accumulate;
    uint oo;
    uint oi[8];
} p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        const uint c0 = (i / p.dim) * p.stride_c + p.first_c;
        REAL v = p.accumulate != 0u ? REAL(o[p.oo + i]) : REAL(0.0);
        v += coef[c0] * REAL(in0[p.oi[0] + i]);
        if (p.m > 1u) v += coef[c0 + 1u] * REAL(in1[p.oi[1] + i]);
        if (p.m > 2u) v += coef[c0 + 2u] * REAL(in2[p.oi[2] + i]);
        if (p.m > 3u) v += coef[c0 + 3u] * REAL(in3[p.oi[3] + i]);
        if (p.m > 4u) v += coef[c0 + 4u] * REAL(in4[p.oi[4] + i]);
        if (p.m > 5u) v += coef[c0 + 5u] * REAL(in5[p.oi[5] + i]);
        if (p.m > 6u) v += coef[c0 + 6u] * REAL(in6[p.oi[6] + i]);
        if (p.m > 7u) v += coef[c0 + 7u] * REAL(in7[p.oi[7] + i]);
        o[p.oo + i] = float(v);
    }
}
