#version 450
// nn.h layer_norm: LayerNorm over the c channels of every column (a token in CNHW), as torch's:
// y[:, j] = (x[:, j] - mean_j) / sqrt(var_j + eps) * gamma + beta. Two passes over the column:
// the mean, then the variance about it (as stable as torch's). A workgroup serves 128 / lanes
// columns; the `lanes` invocations of a column split its channels (ci = lane, lane + lanes, ...)
// and add their partial sums through shared memory. The host picks lanes (csrc/nn_vk.c) so that
// no invocation loops past the loop budget (csrc/vk_nn.h CCFG_VK_LOOP_BUDGET); lanes = 1 is one
// invocation per column. Workgroups come in rows of at most 65535 (one column per invocation).
layout(local_size_x = 128) in;

const uint WG = 128u;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer G { float gamma[]; };
layout(std430, binding = 2) readonly buffer B { float beta[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, og, ob, oy;
    uint cols, c, affine;
    float eps;
    uint lanes;
} p;

shared float red[WG];

// the sum of v over the lanes of this invocation's column (every invocation calls it)
float column_sum(float v, uint t, uint lane, uint first)
{
    red[t] = v;
    barrier();
    for (uint st = p.lanes / 2u; st > 0u; st >>= 1u) {
        if (lane < st) red[t] += red[t + st];
        barrier();
    }
    const float r = red[first];
    barrier();
    return r;
}

void main()
{
    const uint t = gl_LocalInvocationID.x, q = t / p.lanes, lane = t - q * p.lanes;
    const uint first = q * p.lanes;
    const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint j = group * (WG / p.lanes) + q;
    // past the last column an invocation computes nothing but still reaches every barrier
    const bool live = j < p.cols;
    float s = 0.0;
    if (live)
        for (uint ci = lane; ci < p.c; ci += p.lanes) s += x[p.ox + ci * p.cols + j];
    const float mean = column_sum(s, t, lane, first) / float(p.c);
    float var = 0.0;
    if (live)
        for (uint ci = lane; ci < p.c; ci += p.lanes) {
            const float d = x[p.ox + ci * p.cols + j] - mean;
            var += d * d;
        }
    const float rstd = inversesqrt(column_sum(var, t, lane, first) / float(p.c) + p.eps);
    if (live)
        for (uint ci = lane; ci < p.c; ci += p.lanes) {
            float v = (x[p.ox + ci * p.cols + j] - mean) * rstd;
            if (p.affine != 0u) v = v * gamma[p.og + ci] + beta[p.ob + ci];
            y[p.oy + ci * p.cols + j] = v;
        }
}
