// The coefficient table of a rule's device form (backend op combine_form, ccfg.h
// ccfg_coef_form), from the partial sums that dots.glsl wrote, on the device: the reductions
// never go to the host. The table is what the host's rules/ccfg.c and rules/perp_neg.c compute,
// term by term in the same order; the F64 variant in double as they do (the partials are summed
// in the same order as the host sums them), the float one in float. Stages, one dispatch each:
//   0: red[e] = sum over g of part[e * groups + g]: each sample's reductions, laid out as the
//      partials with one partial per sample, [blocks][3][n] (block j: ‖D_p‖², ‖D_n_j‖²,
//      <D_n_j, D_p>). Skipped where groups == 1: the partials are the reductions.
//   1: (Perp-Neg batch_global) workgroup (s, j) sums ‖D_p‖² and <D_n_j, D_p> over the SLICE
//      samples of slice s: glob[(j * slices + s) * 2 + 0/1], a tree of 128 per workgroup.
//   2: an invocation per sample writes coef[i * (2 + k) + (c_u, c_p, c_n_0 ..)].
#include "real.glsl"
#include "exp_neg.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer Part { REAL part[]; };
layout(std430, binding = 1) buffer Red { REAL red[]; };
layout(std430, binding = 2) writeonly buffer Coef { REAL coef[]; };
layout(std430, binding = 3) buffer Glob { REAL glob[]; };

layout(push_constant) uniform Push {
    uint n;         // samples
    uint k;         // active negatives
    uint groups;    // partials per sample (stage 0)
    uint count;     // stage 0: reductions to sum ([blocks][3][n])
    uint stage;
    uint family;    // 1 contrastive (CCFG), 2 perpendicular (Perp-Neg), as ccfg_form_family
    uint flags;     // 1: naive positive (λ+ = 1), 2: batch global projection
    uint slices;    // stage 1/2: slices of SLICE samples
    float wf, wnf, tauf;
    uint pad;
    uvec2 wd, wnd, taud;
} p;

const uint SLICE = 128u * 256u;     // samples per workgroup of stage 1: 256 each per invocation

shared REAL s0[128], s1[128];

// 2σ(z) without overflow, as ccfg_two_sigmoid (guidance.c)
REAL two_sigmoid(REAL z)
{
    if (z >= REAL(0.0)) return REAL(2.0) / (REAL(1.0) + exp_neg(-z));
    const REAL e = exp_neg(z);
    return REAL(2.0) * e / (REAL(1.0) + e);
}

// reductions of sample i: ‖D_p‖² (block 0), ‖D_n_j‖², <D_n_j, D_p>
REAL red_pp(uint i) { return red[i]; }
REAL red_nn(uint j, uint i) { return red[(3u * j + 1u) * p.n + i]; }
REAL red_np(uint j, uint i) { return red[(3u * j + 2u) * p.n + i]; }

void sum_partials()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < p.count; e += stride) {
        REAL s = REAL(0.0);
        for (uint g = 0u; g < p.groups; g++) s += part[e * p.groups + g];
        red[e] = s;
    }
}

void batch_sums()
{
    const uint lid = gl_LocalInvocationID.x, s = gl_WorkGroupID.x, j = gl_WorkGroupID.y;
    REAL a = REAL(0.0), b = REAL(0.0);
    for (uint q = 0u; q < 256u; q++) {
        const uint i = s * SLICE + q * 128u + lid;
        if (i < p.n) {
            a += red_pp(i);
            b += red_np(j, i);
        }
    }
    s0[lid] = a;
    s1[lid] = b;
    barrier();
    for (uint h = 64u; h > 0u; h >>= 1) {
        if (lid < h) {
            s0[lid] += s0[lid + h];
            s1[lid] += s1[lid + h];
        }
        barrier();
    }
    if (lid == 0u) {
        glob[(j * p.slices + s) * 2u] = s0[0];
        glob[(j * p.slices + s) * 2u + 1u] = s1[0];
    }
}

void coefficients(uint i)
{
    const REAL w = COEF(p.wf, p.wd), wn = COEF(p.wnf, p.wnd);
    const uint m = 2u + p.k, row = i * m;
    const REAL pp = red_pp(i);
    if (p.family == 1u) {
        // rules/ccfg.c: c = (1 - wp, wp, -cn_j), c_u += cn_j
        const REAL tau = COEF(p.tauf, p.taud);
        const REAL wp = (p.flags & 1u) != 0u ? w : w * two_sigmoid(tau * pp);
        REAL c0 = REAL(1.0) - wp;
        coef[row + 1u] = wp;
        for (uint j = 0u; j < p.k; j++) {
            const REAL cn = wn * two_sigmoid(-tau * red_nn(j, i));
            coef[row + 2u + j] = -cn;
            c0 += cn;
        }
        coef[row] = c0;
    } else {
        // rules/perp_neg.c: c = (1 - w, w), per negative c_p += w b π, c_u -= w b π, c_n = -w b,
        // c_u += w b
        const REAL wb = w * wn;
        REAL c0 = REAL(1.0) - w, c1 = w;
        for (uint j = 0u; j < p.k; j++) {
            REAL proj;
            if ((p.flags & 2u) != 0u) {
                REAL den = REAL(0.0), num = REAL(0.0);
                for (uint s = 0u; s < p.slices; s++) {
                    den += glob[(j * p.slices + s) * 2u];
                    num += glob[(j * p.slices + s) * 2u + 1u];
                }
                proj = den > REAL(0.0) ? num / den : REAL(0.0);
            } else {
                proj = pp > REAL(0.0) ? red_np(j, i) / pp : REAL(0.0);
            }
            c1 += wb * proj;
            c0 -= wb * proj;
            coef[row + 2u + j] = -wb;
            c0 += wb;
        }
        coef[row] = c0;
        coef[row + 1u] = c1;
    }
}

void main()
{
    if (p.stage == 0u) {
        sum_partials();
    } else if (p.stage == 1u) {
        batch_sums();
    } else {
        const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
        for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) coefficients(i);
    }
}
