// The coefficient table of a rule's device form (backend op combine_form, ccfg.h
// ccfg_coef_form), from the partial sums that dots.glsl wrote, on the device: the reductions
// never go to the host. The table is what the host's rules/ccfg.c and rules/perp_neg.c compute,
// term by term in the same order; the F64 variant in double as they do (the partials are summed
// in the same order as the host sums them), the float one in float. Stages, one dispatch each:
//   0: red[e] = sum over g of part[e * groups + g]: each sample's reductions, laid out as the
//      partials with one partial per sample, [blocks][3][n] (block j: ‖D_p‖², ‖D_n_j‖²,
//      <D_n_j, D_p>). Skipped where groups == 1: the partials are the reductions. Also skipped
//      with flag 4 (fused, the host's default): stages 1-3 then sum each reduction they read
//      from its partials themselves, by the same loop in the same order, so the values are
//      bit for bit stage 0's (CCFG_VULKAN_COEF_UNFUSED=1 keeps stage 0, for A/B runs).
//   1: (Perp-Neg batch_global) workgroup (s, j) sums ‖D_p‖² and <D_n_j, D_p> over the SLICE
//      samples of slice s: glob[(j * slices + s) * 2 + 0/1], a tree of 128 per workgroup.
//   2: an invocation per sample writes coef[i * (2 + k) + (c_u, c_p, c_n_0 ..)]. Family 3 (DNG,
//      rules/dng.c) reads no reductions: its table comes from the state log p, [k][n], bound
//      as Glob (p = exp_neg(log p), log p <= log p_max < 0).
//   3: DNG's posterior update (rules/dng.c observe, ccfg_log_posterior_update): an invocation
//      per (negative j, sample i) adds the step's log-likelihood ratio to glob[j * n + i] and
//      clamps it, from the reductions of block j (‖D_n_j‖², <D_n_j, r_u>).
// COEF_NO_BARRIER (coef_nb*.comp) compiles stages 0, 2 and 3 alone: no shared arrays and no
// barrier(). lavapipe runs the invocations of a shader that contains a barrier as coroutines,
// which costs the barrier-free stages ~20 % there even though they never reach it; a GPU pays
// nothing for either. The host picks the variant per stage (stage 1 needs the barriers).
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
    uint flags;     // 1: naive positive (λ+ = 1), 2: batch global projection,
                    // 4: fused: reductions summed from the partials where read (no stage 0)
    uint slices;    // stage 1/2: slices of SLICE samples
    float wf, wnf, tauf, offf, varf, lof, hif;    // stage 3: w = b2, wn = b1, tau = t
    uint pad;
    uvec2 wd, wnd, taud, offd, vard, lod, hid;
} p;

const uint SLICE = 128u * 256u;     // samples per workgroup of stage 1: 256 each per invocation

#ifndef COEF_NO_BARRIER
shared REAL s0[128], s1[128];
#endif

// 2σ(z) without overflow, as ccfg_two_sigmoid (guidance.c)
REAL two_sigmoid(REAL z)
{
    if (z >= REAL(0.0)) return REAL(2.0) / (REAL(1.0) + exp_neg(-z));
    const REAL e = exp_neg(z);
    return REAL(2.0) * e / (REAL(1.0) + e);
}

// reduction e of the layout above: the sum of its partials, in order from 0 (stage 0's sum)
REAL partial_sum(uint e)
{
    REAL s = REAL(0.0);
    for (uint g = 0u; g < p.groups; g++) s += part[e * p.groups + g];
    return s;
}

// stage 0's red[e], or with flag 4 the same sum made here, where it is read
REAL reduction(uint e) { return (p.flags & 4u) != 0u ? partial_sum(e) : red[e]; }

// reductions of sample i: ‖D_p‖² (block 0), ‖D_n_j‖², <D_n_j, D_p>
REAL red_pp(uint i) { return reduction(i); }
REAL red_nn(uint j, uint i) { return reduction((3u * j + 1u) * p.n + i); }
REAL red_np(uint j, uint i) { return reduction((3u * j + 2u) * p.n + i); }

void sum_partials()
{
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint e = gl_GlobalInvocationID.x; e < p.count; e += stride) red[e] = partial_sum(e);
}

#ifndef COEF_NO_BARRIER
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
#endif

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
    } else if (p.family == 3u) {
        // rules/dng.c: c = (1 - w, w, -cn_j), c_u += cn_j, cn_j = λ0 p_j / (1 - p_j)
        REAL c0 = REAL(1.0) - w;
        coef[row + 1u] = w;
        for (uint j = 0u; j < p.k; j++) {
            const REAL pj = exp_neg(glob[j * p.n + i]);
            const REAL cn = wn * pj / (REAL(1.0) - pj);
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

// rules/dng.c observe, term by term: Δ = b2 nn - b1 np, lp = clamp(lp + (-t Δ + off) / two_var)
void posterior_update(uint q)
{
    const uint j = q / p.n, i = q - j * p.n;
    const REAL b2 = COEF(p.wf, p.wd), b1 = COEF(p.wnf, p.wnd), t = COEF(p.tauf, p.taud);
    const REAL off = COEF(p.offf, p.offd), two_var = COEF(p.varf, p.vard);
    const REAL delta = b2 * red_nn(j, i) - b1 * red_np(j, i);
    const REAL lp = glob[q] + (-t * delta + off) / two_var;
    glob[q] = min(max(lp, COEF(p.lof, p.lod)), COEF(p.hif, p.hid));
}

void main()
{
    if (p.stage == 0u) {
        sum_partials();
#ifndef COEF_NO_BARRIER
    } else if (p.stage == 1u) {
        batch_sums();
#endif
    } else if (p.stage == 3u) {
        const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
        for (uint q = gl_GlobalInvocationID.x; q < p.n * p.k; q += stride) posterior_update(q);
    } else {
        const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
        for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) coefficients(i);
    }
}
