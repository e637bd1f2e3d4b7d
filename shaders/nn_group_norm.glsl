// nn.h group_norm (nn_group_norm.comp; nn_group_norm_sg.comp with SUBGROUP: the sums through
// subgroupAdd, on devices with GL_KHR_shader_subgroup_arithmetic in compute shaders).
// A (sample, group) of at most CCFG_VK_GN_FUSED values (csrc/vk_nn.h) is one workgroup of one
// dispatch (p.phase 3): mean, squared deviations about it, then the normalisation of its values,
// so the statistics never leave the workgroup and the op is one dispatch instead of three.
// Larger groups take three dispatches, so that no invocation's loops grow with the size of a
// group (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET) and large groups spread over many workgroups:
//   0  partial statistics: workgroup (pair, s), pair = (sample b, group g), takes elements
//      [s * part, (s + 1) * part) of the group's cg * hw values v = x + in_bias[b, c], and writes
//      their mean and the sum of squared deviations from it (two passes over the slice, so the
//      variance is as stable as torch's) to stats[2 * (pair * parts + s)];
//   1  one invocation per pair merges its `parts` slices (Chan et al.'s pairwise update) into
//      (mean, 1 / sqrt(var + eps)) at stats[2 * (pairs * parts + pair)] (biased variance);
//   2  one invocation per element: v = (v - mean) * rstd * gamma[c] + beta[c], optional FiLM
//      v * (1 + film[b, c]) + film[b, c + C], optional SiLU. y may alias x (read before written,
//      by the same invocation, after phases 0 and 1 have read everything).
// With flags bit 3 (nn.h group_norm_affine) nothing is normalised: y is the (a, d) array, and
// the last step (phase 3's third pass, phase 2) writes per sample b and channel c the a and d
// with which v = x a + d is the normalised value before SiLU (FiLM included) to
// y[2 (b C + c)] and y[2 (b C + c) + 1]; phase 2 then has one invocation per (b, c), or with
// flags bit 4 phase 1 writes them itself (each invocation its pair's channels) and phase 2 is not
// run: two dispatches for a large group instead of three. The convolution that reads the
// normalised tensor applies them (nn_conv2d.comp flags bit 3).
// Partial sums meet in shared memory: a tree, or with SUBGROUP one subgroupAdd and a sum over the
// workgroup's subgroups (the order differs: results agree to float32 rounding, not bit for bit).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer IB { float in_bias[]; };
layout(std430, binding = 2) readonly buffer G { float gamma[]; };
layout(std430, binding = 3) readonly buffer BE { float beta[]; };
layout(std430, binding = 4) readonly buffer F { float film[]; };
layout(std430, binding = 5) buffer Y { float y[]; };
layout(std430, binding = 6) buffer S { float stats[]; };

layout(push_constant) uniform Push {
    uint ox, oib, og, obe, of, oy, os;
    uint batch, c, hw, groups;
    float eps;
    uint flags;     // bit 0: in_bias, bit 1: film, bit 2: silu, bit 3: (a, d) into y instead,
                    // bit 4: phase 1 writes them
    uint phase, part, parts;
} p;

shared float red[128];

#ifdef SUBGROUP
// every invocation gets the same total: the subgroups' sums are added in subgroup order
float reduce_sum(float v)
{
    v = subgroupAdd(v);
    if (subgroupElect()) red[gl_SubgroupID] = v;
    barrier();
    float r = 0.0;
    for (uint i = 0u; i < gl_NumSubgroups; i++) r += red[i];
    barrier();
    return r;
}
#else
float reduce_sum(float v)
{
    const uint t = gl_LocalInvocationID.x;
    red[t] = v;
    barrier();
    for (uint s = 64u; s > 0u; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}
#endif

float load(uint c, uint b, uint pix)
{
    float v = x[p.ox + (c * p.batch + b) * p.hw + pix];
    if ((p.flags & 1u) != 0u) v += in_bias[p.oib + b * p.c + c];
    return v;
}

void partials()
{
    const uint cg = p.c / p.groups, n = cg * p.hw, t = gl_LocalInvocationID.x;
    const uint pairs = p.batch * p.groups;
    // one slice per workgroup; rows of workgroups past 65535 (the host caps each dimension)
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wg >= pairs * p.parts) return;      // uniform across the workgroup: no barrier skipped
    const uint pair = wg / p.parts, s = wg - pair * p.parts;
    const uint b = pair / p.groups, g = pair - b * p.groups, c0 = g * cg;
    const uint i0 = s * p.part, i1 = min(n, i0 + p.part);
    float sum = 0.0;
    for (uint i = i0 + t; i < i1; i += 128u) sum += load(c0 + i / p.hw, b, i % p.hw);
    const float mean = reduce_sum(sum) / float(i1 - i0);
    float q = 0.0;
    for (uint i = i0 + t; i < i1; i += 128u) {
        const float d = load(c0 + i / p.hw, b, i % p.hw) - mean;
        q += d * d;
    }
    const float m2 = reduce_sum(q);
    if (t == 0u) {
        stats[p.os + 2u * wg] = mean;
        stats[p.os + 2u * wg + 1u] = m2;
    }
}

// (a, d) of channel c of sample b: x a + d = finish's v before its SiLU, as the CPU's
// gn_channel_affine computes them (nn_cpu.c)
void affine_of(uint c, uint b, float mean, float rstd)
{
    const float add = (p.flags & 1u) != 0u ? in_bias[p.oib + b * p.c + c] : 0.0;
    float a = rstd * gamma[p.og + c];
    float d = (add - mean) * a + beta[p.obe + c];
    if ((p.flags & 2u) != 0u) {
        const float sc = 1.0 + film[p.of + b * 2u * p.c + c];
        a *= sc;
        d = d * sc + film[p.of + b * 2u * p.c + p.c + c];
    }
    y[p.oy + 2u * (b * p.c + c)] = a;
    y[p.oy + 2u * (b * p.c + c) + 1u] = d;
}

void merge()
{
    const uint cg = p.c / p.groups, n = cg * p.hw;
    const uint pairs = p.batch * p.groups;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint pair = gl_GlobalInvocationID.x; pair < pairs; pair += gstride) {
        float cnt = 0.0, mean = 0.0, m2 = 0.0;
        for (uint s = 0u; s < p.parts; s++) {
            const uint at = p.os + 2u * (pair * p.parts + s);
            const float ns = float(min(n, (s + 1u) * p.part) - s * p.part);
            const float tot = cnt + ns, d = stats[at] - mean;
            mean += d * (ns / tot);
            m2 += stats[at + 1u] + d * d * (cnt * ns / tot);
            cnt = tot;
        }
        const uint at = p.os + 2u * (pairs * p.parts + pair);
        const float rstd = 1.0 / sqrt(m2 / float(n) + p.eps);
        if ((p.flags & 16u) != 0u) {
            // (a, d) of the pair's channels straight away: no phase 2
            const uint b = pair / p.groups, c0 = (pair - b * p.groups) * cg;
            for (uint i = 0u; i < cg; i++) affine_of(c0 + i, b, mean, rstd);
            continue;
        }
        stats[at] = mean;
        stats[at + 1u] = rstd;
    }
}

// the normalised value v of channel c of sample b, with the affine, FiLM and SiLU
float finish(float v, uint c, uint b, float mean, float rstd)
{
    v = (v - mean) * rstd * gamma[p.og + c] + beta[p.obe + c];
    if ((p.flags & 2u) != 0u)
        v = v * (1.0 + film[p.of + b * 2u * p.c + c]) + film[p.of + b * 2u * p.c + p.c + c];
    if ((p.flags & 4u) != 0u) v = v / (1.0 + exp(-v));
    return v;
}

void apply()
{
    const uint cg = p.c / p.groups, count = p.c * p.batch * p.hw;
    const uint pairs = p.batch * p.groups;
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if ((p.flags & 8u) != 0u) {
        // i indexes (b, c): one (a, d) each
        for (uint i = gl_GlobalInvocationID.x; i < p.batch * p.c; i += gstride) {
            const uint b = i / p.c, c = i - b * p.c;
            const uint at = p.os + 2u * (pairs * p.parts + b * p.groups + c / cg);
            affine_of(c, b, stats[at], stats[at + 1u]);
        }
        return;
    }
    for (uint i = gl_GlobalInvocationID.x; i < count; i += gstride) {
        // i indexes (c, b, pix) in CNHW
        const uint c = i / (p.batch * p.hw), r = i - c * p.batch * p.hw;
        const uint b = r / p.hw, pix = r - b * p.hw;
        const uint at = p.os + 2u * (pairs * p.parts + b * p.groups + c / cg);
        y[p.oy + i] = finish(load(c, b, pix), c, b, stats[at], stats[at + 1u]);
    }
}

// phase 3: one workgroup per (sample, group), the whole op. y may alias x: an invocation reads
// each of its values (passes 1, 2, 3) before it writes it, and no other workgroup touches them.
void fused()
{
    const uint cg = p.c / p.groups, n = cg * p.hw, t = gl_LocalInvocationID.x;
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wg >= p.batch * p.groups) return;   // uniform across the workgroup: no barrier skipped
    const uint b = wg / p.groups, c0 = (wg - b * p.groups) * cg;
    float sum = 0.0;
    for (uint i = t; i < n; i += 128u) sum += load(c0 + i / p.hw, b, i % p.hw);
    const float mean = reduce_sum(sum) / float(n);
    float q = 0.0;
    for (uint i = t; i < n; i += 128u) {
        const float d = load(c0 + i / p.hw, b, i % p.hw) - mean;
        q += d * d;
    }
    const float rstd = 1.0 / sqrt(reduce_sum(q) / float(n) + p.eps);
    if ((p.flags & 8u) != 0u) {
        for (uint i = t; i < cg; i += 128u) affine_of(c0 + i, b, mean, rstd);
        return;
    }
    for (uint i = t; i < n; i += 128u) {
        const uint c = c0 + i / p.hw, pix = i % p.hw;
        y[p.oy + (c * p.batch + b) * p.hw + pix] = finish(load(c, b, pix), c, b, mean, rstd);
    }
}

void main()
{
    if (p.phase == 0u) partials();
    else if (p.phase == 1u) merge();
    else if (p.phase == 2u) apply();
    else fused();
}
