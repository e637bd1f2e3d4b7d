// Safe Latent Diffusion, elementwise, one negative (backend op sld; methods §6):
//   g = mu * (eps_s - eps_u) + s_m * nu,  mu = min(s_s |eps_p - eps_s|, 1) if eps_p - eps_s < thr else 0
//   update: nu <- beta_m nu + (1 - beta_m) g;   apply: out -= w g
#include "real.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer U { float eps_u[]; };
layout(std430, binding = 1) readonly buffer P { float eps_p[]; };
layout(std430, binding = 2) readonly buffer S { float eps_s[]; };
layout(std430, binding = 3) buffer N { float nu[]; };
layout(std430, binding = 4) buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint count;
    uint flags;     // bit 0: update nu, bit 1: apply to out
    uint ou, op, os, on, oo;
    float wf, ssf, thrf, smf, betaf;
    uvec2 wd, ssd, thrd, smd, betad;
} p;

void main()
{
    const REAL w = COEF(p.wf, p.wd), s_s = COEF(p.ssf, p.ssd), thr = COEF(p.thrf, p.thrd);
    const REAL s_m = COEF(p.smf, p.smd), beta = COEF(p.betaf, p.betad);
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        const REAL s = REAL(eps_s[p.os + i]);
        const REAL diff = REAL(eps_p[p.op + i]) - s;
        const REAL mu = diff < thr ? min(s_s * abs(diff), REAL(1.0)) : REAL(0.0);
        const REAL n0 = REAL(nu[p.on + i]);
        const REAL g = mu * (s - REAL(eps_u[p.ou + i])) + s_m * n0;
        if ((p.flags & 1u) != 0u) nu[p.on + i] = float(beta * n0 + (REAL(1.0) - beta) * g);
        if ((p.flags & 2u) != 0u) o[p.oo + i] = float(REAL(o[p.oo + i]) - w * g);
    }
}
