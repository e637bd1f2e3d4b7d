#version 450
// Standard normals, the same stream as rng.c (backend op randn): Philox-4x32-10 with counter
// (j/4, sample, stream, 0) and key (seed lo, seed hi); one invocation makes the 4 normals of one
// block. Philox is integer arithmetic, so the uniforms are bit-identical to the CPU's.
// Box–Muller is in float32 with our own log1p/sin/cos: Vulkan only promises sin/cos to an
// absolute 2^-11, far from the ~1e-7 relative we want, so the angle is reduced exactly in
// integers and the polynomials are evaluated on [0, pi/4].
layout(local_size_x = 128) in;

layout(std430, binding = 0) writeonly buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint rows;      // n
    uint dim;
    uint blocks;    // (dim + 3) / 4
    uint seed_lo, seed_hi;
    uint stream;    // low 32 bits, as rng.c uses it
    uint first;     // low 32 bits of the first sample index (wraps like the CPU's uint32 cast)
    uint oo;        // element offset of out in its buffer
} p;

uvec4 philox(uvec4 c, uvec2 k)
{
    for (int r = 0; r < 10; r++) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c.x, hi0, lo0);
        umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += uvec2(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// -2 ln(u), u = (x + 0.5) / 2^32
float minus2log(uint x)
{
    if (x < 0x80000000u) {
        // u < 0.5: the builtin log is 3 ulp outside [0.5, 2]
        return -2.0 * log((float(x) + 0.5) * 2.3283064365386963e-10);
    }
    // u >= 0.5: ln(1 - c), c = 1 - u taken exactly from the integer, via 2 atanh(s), s = -c/(2-c)
    const float c = (float(~x) + 0.5) * 2.3283064365386963e-10;
    const float s = -c / (2.0 - c), s2 = s * s;       // |s| <= 1/3: 8 terms reach 1e-9
    float t = 1.0 / 15.0;
    t = fma(t, s2, 1.0 / 13.0);
    t = fma(t, s2, 1.0 / 11.0);
    t = fma(t, s2, 1.0 / 9.0);
    t = fma(t, s2, 1.0 / 7.0);
    t = fma(t, s2, 1.0 / 5.0);
    t = fma(t, s2, 1.0 / 3.0);
    t = fma(t, s2, 1.0);
    return -4.0 * s * t;
}

// (cos, sin) of theta = 2 pi (y + 0.5) / 2^32
vec2 cossin(uint y)
{
    const uint quadrant = y >> 30;
    const uint r = y & 0x3FFFFFFFu;                 // phi = 2 pi (r + 0.5) / 2^32 in (0, pi/2)
    const bool upper = r >= 0x20000000u;            // phi > pi/4: use pi/2 - phi
    const float k = upper ? float(0x40000000u - r) - 0.5 : float(r) + 0.5;
    const float a = k * 1.4629180792671596e-09;     // 2 pi / 2^32; a in (0, pi/4]
    const float a2 = a * a;
    float sa = 1.0 / 362880.0;                      // Taylor to a^9 / a^10: error < 3e-9
    sa = fma(sa, a2, -1.0 / 5040.0);
    sa = fma(sa, a2, 1.0 / 120.0);
    sa = fma(sa, a2, -1.0 / 6.0);
    sa = a * fma(sa, a2, 1.0);
    float ca = -1.0 / 3628800.0;
    ca = fma(ca, a2, 1.0 / 40320.0);
    ca = fma(ca, a2, -1.0 / 720.0);
    ca = fma(ca, a2, 1.0 / 24.0);
    ca = fma(ca, a2, -0.5);
    ca = fma(ca, a2, 1.0);
    const vec2 phi = upper ? vec2(sa, ca) : vec2(ca, sa);   // (cos phi, sin phi)
    if (quadrant == 0u) return phi;
    if (quadrant == 1u) return vec2(-phi.y, phi.x);
    if (quadrant == 2u) return -phi;
    return vec2(phi.y, -phi.x);
}

void main()
{
    const uint total = p.rows * p.blocks;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < total; t += stride) {
        const uint row = t / p.blocks, blk = t - row * p.blocks;
        const uvec4 u = philox(uvec4(blk, p.first + row, p.stream, 0u), uvec2(p.seed_lo, p.seed_hi));
        const float r0 = sqrt(minus2log(u.x)), r1 = sqrt(minus2log(u.z));
        const vec2 cs0 = cossin(u.y), cs1 = cossin(u.w);
        const float z[4] = float[4](r0 * cs0.x, r0 * cs0.y, r1 * cs1.x, r1 * cs1.y);
        const uint j0 = blk * 4u, base = p.oo + row * p.dim + j0;
        for (uint q = 0u; q < 4u && j0 + q < p.dim; q++) o[base + q] = z[q];
    }
}
