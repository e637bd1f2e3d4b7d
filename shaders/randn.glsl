// Standard normals, the same stream as rng.c (backend op randn): Philox-4x32-10 with counter
// (j/4, sample, stream, 0) and key (seed lo, seed hi); one invocation makes the 4 normals of one
// block. Philox is integer arithmetic, so the uniforms are bit-identical to the CPU's.
// Box–Muller is in float32 with our own log1p/sin/cos: Vulkan only promises sin/cos to an
// absolute 2^-11, far from the ~1e-7 relative we want, so the angle is reduced exactly in
// integers and the polynomials are evaluated on [0, pi/4].
// The f64 variant (devices with float64) evaluates Box–Muller in double like rng.c and rounds
// once, so its normals are the CPU's bit for bit (but for a double rounding tie, ~1e-8 of values):
// ill-conditioned runs (Perp-Neg in 2-D amplifies 1e-7 to 1e-1) then still agree.
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

#ifdef F64
// ln(u), u = (x + 0.5) / 2^32 in (0, 1), in double: u = m 2^e, m in [sqrt(1/2), sqrt(2)),
// ln m = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172: the series to t^25 is below 1e-19
double log_unit(uint x)
{
    const double u = (double(x) + 0.5lf) * (1.0lf / 4294967296.0lf);
    int e;
    double m = frexp(u, e);                         // m in [0.5, 1)
    if (m < 0.70710678118654752lf) {
        m *= 2.0lf;
        e -= 1;
    }
    const double t = (m - 1.0lf) / (m + 1.0lf), t2 = t * t;
    double s = 0.0lf;
    for (int q = 25; q >= 3; q -= 2) s = (s + 1.0lf / double(q)) * t2;
    return 2.0lf * t * (1.0lf + s) + double(e) * 0.69314718055994530942lf;
}

// (cos, sin) of 2 pi (y + 0.5) / 2^32 in double, the angle reduced exactly in integers
dvec2 cossin_d(uint y)
{
    const uint quadrant = y >> 30;
    const uint r = y & 0x3FFFFFFFu;
    const bool upper = r >= 0x20000000u;
    const double k = upper ? double(0x40000000u - r) - 0.5lf : double(r) + 0.5lf;
    const double a = k * 1.4629180792671596811e-09lf;    // 2 pi / 2^32
    const double a2 = a * a;
    // Taylor on [0, pi/4] to a^19 / a^20: below 1e-19
    double sa = 0.0lf, ca = 0.0lf;
    for (int q = 19; q >= 3; q -= 2) sa = (sa + 1.0lf) * (-a2 / double(q * (q - 1)));
    sa = a * (1.0lf + sa);
    for (int q = 20; q >= 2; q -= 2) ca = (ca + 1.0lf) * (-a2 / double(q * (q - 1)));
    ca = 1.0lf + ca;
    const dvec2 phi = upper ? dvec2(sa, ca) : dvec2(ca, sa);
    if (quadrant == 0u) return phi;
    if (quadrant == 1u) return dvec2(-phi.y, phi.x);
    if (quadrant == 2u) return -phi;
    return dvec2(phi.y, -phi.x);
}
#endif

void main()
{
    const uint total = p.rows * p.blocks;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < total; t += stride) {
        const uint row = t / p.blocks, blk = t - row * p.blocks;
        const uvec4 u = philox(uvec4(blk, p.first + row, p.stream, 0u), uvec2(p.seed_lo, p.seed_hi));
#ifdef F64
        const double r0 = sqrt(-2.0lf * log_unit(u.x)), r1 = sqrt(-2.0lf * log_unit(u.z));
        const dvec2 cs0 = cossin_d(u.y), cs1 = cossin_d(u.w);
        const float z[4] = float[4](float(r0 * cs0.x), float(r0 * cs0.y), float(r1 * cs1.x),
                                    float(r1 * cs1.y));
#else
        const float r0 = sqrt(minus2log(u.x)), r1 = sqrt(minus2log(u.z));
        const vec2 cs0 = cossin(u.y), cs1 = cossin(u.w);
        const float z[4] = float[4](r0 * cs0.x, r0 * cs0.y, r1 * cs1.x, r1 * cs1.y);
#endif
        const uint j0 = blk * 4u, base = p.oo + row * p.dim + j0;
        for (uint q = 0u; q < 4u && j0 + q < p.dim; q++) o[base + q] = z[q];
    }
}
