#version 450
// Safe Latent Diffusion, elementwise, one negative (backend op sld; methods §6):
//   g = mu * (eps_s - eps_u) + s_m * nu,  mu = min(s_s |eps_p - eps_s|, 1) if eps_p - eps_s < thr else 0
//   update: nu <- beta_m nu + (1 - beta_m) g;   apply: out -= w g
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer U { float eps_u[]; };
layout(std430, binding = 1) readonly buffer P { float eps_p[]; };
layout(std430, binding = 2) readonly buffer S { float eps_s[]; };
layout(std430, binding = 3) buffer N { float nu[]; };
layout(std430, binding = 4) buffer O { float o[]; };

layout(push_constant) uniform Push {
    uint count;
    uint flags;     // bit 0: update nu, bit 1: apply to out
    float w, s_s, thr, s_m, beta_m;
} p;

void main()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += stride) {
        const float s = eps_s[i];
        const float diff = eps_p[i] - s;
        const float mu = diff < p.thr ? min(p.s_s * abs(diff), 1.0) : 0.0;
        const float n0 = nu[i];
        const float g = fma(mu, s - eps_u[i], p.s_m * n0);
        if ((p.flags & 1u) != 0u) nu[i] = fma(p.beta_m, n0, (1.0 - p.beta_m) * g);
        if ((p.flags & 2u) != 0u) o[i] = fma(-p.w, g, o[i]);
    }
}
