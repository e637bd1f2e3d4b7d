// Per-sample reductions (backend ops dot and direction_dots), first pass.
// Workgroup (g, row) sums a strided slice of sample `row` in REAL (each thread sequentially,
// then a tree in shared memory) and writes one partial per output; the host adds the `groups`
// partials of each sample in double. The f64 variant accumulates in double as the CPU does:
// float32 sums lose digits where the rules divide small reductions (Perp-Neg's projection).
// No subgroup operations: the subgroup size is never assumed.
//   mode 0: s0 = <a, b>                     (a = binding 0, b = binding 1)
//   mode 1: s0 = ‖p - u‖²                   (u = binding 0, p = binding 1)
//   mode 2: s0 = ‖p - u‖², s1 = ‖n - u‖², s2 = <n - u, p - u>   (n = binding 2)
#include "real.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer U { float u[]; };
layout(std430, binding = 1) readonly buffer P { float pv[]; };
layout(std430, binding = 2) readonly buffer N { float nv[]; };
layout(std430, binding = 3) writeonly buffer R { REAL part[]; };   // per dispatch: [3][rows][groups] at base

layout(push_constant) uniform Push {
    uint dim;
    uint groups;    // workgroups per sample (gl_NumWorkGroups.x)
    uint mode;
    uint rows;      // samples in the whole problem (partials layout)
    uint row0;      // first sample of this dispatch (batches beyond the y-dispatch limit)
    uint base;      // where this dispatch's partials start (one block per negative)
    uint ou, op, on;    // element offsets of the inputs in their buffers
    uint per_row;       // 1: one invocation per row (short rows), groups == 1, no shared memory
} p;

shared REAL s0[128], s1[128], s2[128];

// one element's terms, shared by the one-row-per-invocation and the workgroup-per-row paths
void accumulate(uint k, inout REAL a0, inout REAL a1, inout REAL a2)
{
    if (p.mode == 0u) {
        a0 += REAL(u[p.ou + k]) * REAL(pv[p.op + k]);
    } else {
        const REAL dp = REAL(pv[p.op + k]) - REAL(u[p.ou + k]);
        a0 += dp * dp;
        if (p.mode == 2u) {
            const REAL dn = REAL(nv[p.on + k]) - REAL(u[p.ou + k]);
            a1 += dn * dn;
            a2 += dn * dp;
        }
    }
}

// short rows: a workgroup per row would spend its time in barriers
void row_alone(uint row)
{
    const uint start = row * p.dim;
    REAL a0 = REAL(0.0), a1 = REAL(0.0), a2 = REAL(0.0);
    for (uint j = 0u; j < p.dim; j++) {
        accumulate(start + j, a0, a1, a2);
    }
    const uint o = p.base + row, plane = p.rows;
    part[o] = a0;
    if (p.mode == 2u) {
        part[plane + o] = a1;
        part[2u * plane + o] = a2;
    }
}

void main()
{
    if (p.per_row != 0u) {      // uniform across the dispatch
        const uint row = p.row0 + gl_GlobalInvocationID.x;
        if (row < p.rows) row_alone(row);
        return;
    }
    const uint lid = gl_LocalInvocationID.x;
    const uint row = p.row0 + gl_WorkGroupID.y;
    const uint start = row * p.dim;
    REAL a0 = REAL(0.0), a1 = REAL(0.0), a2 = REAL(0.0);
    for (uint j = gl_WorkGroupID.x * 128u + lid; j < p.dim; j += p.groups * 128u) {
        accumulate(start + j, a0, a1, a2);
    }
    s0[lid] = a0; s1[lid] = a1; s2[lid] = a2;
    barrier();
    for (uint s = 64u; s > 0u; s >>= 1) {
        if (lid < s) {
            s0[lid] += s0[lid + s];
            s1[lid] += s1[lid + s];
            s2[lid] += s2[lid + s];
        }
        barrier();
    }
    if (lid == 0u) {
        const uint o = p.base + row * p.groups + gl_WorkGroupID.x, plane = p.rows * p.groups;
        part[o] = s0[0];
        if (p.mode == 2u) {
            part[plane + o] = s1[0];
            part[2u * plane + o] = s2[0];
        }
    }
}
