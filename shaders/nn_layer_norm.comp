#version 450
// nn.h layer_norm: LayerNorm over the c channels of every column (a token in CNHW), as torch's:
// y[:, j] = (x[:, j] - mean_j) / sqrt(var_j + eps) * gamma + beta, one invocation per column.
// Two passes over the column: the mean, then the variance about it (as stable as torch's).
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer G { float gamma[]; };
layout(std430, binding = 2) readonly buffer B { float beta[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint ox, og, ob, oy;
    uint cols, c, affine;
    float eps;
} p;

void main()
{
    const uint gstride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint j = gl_GlobalInvocationID.x; j < p.cols; j += gstride) {
        float mean = 0.0;
        for (uint ci = 0u; ci < p.c; ci++) mean += x[p.ox + ci * p.cols + j];
        mean /= float(p.c);
        float var = 0.0;
        for (uint ci = 0u; ci < p.c; ci++) {
            const float d = x[p.ox + ci * p.cols + j] - mean;
            var += d * d;
        }
        const float rstd = inversesqrt(var / float(p.c) + p.eps);
        for (uint ci = 0u; ci < p.c; ci++) {
            float v = (x[p.ox + ci * p.cols + j] - mean) * rstd;
            if (p.affine != 0u) v = v * gamma[p.og + ci] + beta[p.ob + ci];
            y[p.oy + ci * p.cols + j] = v;
        }
    }
}
