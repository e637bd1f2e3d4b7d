#version 450
// The elementwise nn.h ops, one invocation per output element (mode):
//   0 copy y = x, 1 silu y = x sigmoid(x), 2 scale y = a x (y may alias x),
//   3 nearest 2x upsampling (c, batch, h, w) -> (c, batch, 2h, 2w),
//   4 NCHW -> CNHW with y = a x + b, 5 CNHW -> NCHW,
//   6 GEGLU y = h gelu(g) with x = [h; g] (count = size of h), gelu exact through erf.
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, oy, count, mode;
    uint batch, c, h, w;    // mode 3: sizes of x; modes 4, 5: h = hw
    float a, b;
} p;

// erf to float32 rounding (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): GLSL has no erf
float erf_as(float v)
{
    const float t = 1.0 / (1.0 + 0.3275911 * abs(v));
    const float poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                       + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-v * v));
}

void main()
{
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += gstride) {
        float v;
        if (p.mode == 0u) {
            v = x[p.ox + i];
        } else if (p.mode == 1u) {
            const float u = x[p.ox + i];
            v = u / (1.0 + exp(-u));
        } else if (p.mode == 2u) {
            v = p.a * x[p.ox + i];
        } else if (p.mode == 3u) {
            const uint w2 = 2u * p.w, plane2 = 4u * p.h * p.w;
            const uint cb = i / plane2, r = i - cb * plane2;
            const uint yy = r / w2, xx = r - yy * w2;
            v = x[p.ox + cb * p.h * p.w + (yy / 2u) * p.w + xx / 2u];
        } else if (p.mode == 4u) {
            // i indexes the CNHW output (c, b, pix); the input is (b, c, pix)
            const uint cc = i / (p.batch * p.h), r = i - cc * p.batch * p.h;
            const uint bb = r / p.h, pix = r - bb * p.h;
            v = p.a * x[p.ox + (bb * p.c + cc) * p.h + pix] + p.b;
        } else if (p.mode == 6u) {
            const float g = x[p.ox + p.count + i];
            v = x[p.ox + i] * (0.5 * g * (1.0 + erf_as(g * 0.70710678)));
        } else {
            // i indexes the NCHW output (b, c, pix); the input is (c, b, pix)
            const uint bb = i / (p.c * p.h), r = i - bb * p.c * p.h;
            const uint cc = r / p.h, pix = r - cc * p.h;
            v = x[p.ox + (cc * p.batch + bb) * p.h + pix];
        }
        y[p.oy + i] = v;
    }
}
