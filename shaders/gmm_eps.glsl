// The exact eps of a noised Gaussian mixture (gmm.c's formula), one workgroup per row:
//   x_t | k ~ N(a μ_k, C_k), C_k = U_k diag(a² λ_k + s²) U_kᵀ,
//   eps(x_t) = s Σ_k r_k U_k (z_k / c_k),  z_k = U_kᵀ (x_t - a μ_k),  c_k = a² λ_k + s²,
//   r_k = softmax_k(bias_k - ½ Σ z_k² / c_k) over the components of the row's condition,
//   bias_k = log w_k - ½ log det C_k (from the host: GLSL has no double log; the host also
//   sends a μ_k and 1 / c_k of the level, the same for every row).
// Axis-aligned mixtures (full == 0) have U = I; full covariances keep w_k = z_k / c_k of the
// chunk's rows in `scratch` between the two rotations. Small axis-aligned mixtures (mode 1) take
// one invocation per row instead of a workgroup, with the row's log-likelihoods in `scratch`:
// a workgroup's barriers would cost more than the arithmetic. Mode 2 is mode 1 for rows the
// sampler stacked as `nb` blocks of `m` rows (one block per condition, the same x): an invocation
// takes row u of block 0, computes its log-likelihoods and their exps e_k = exp(l_k - max_k l_k)
// once, and reuses them for row u + j m of every block j whose x is bit for bit the same:
// r_k = e_k / Σ_{k allowed} e_k (as the CPU's row blocks, gmm.c). A row that differs, or whose
// condition's best component is so far below the row's best that its e_k underflow, is computed
// on its own (mode 1's code, a second scratch area). Arithmetic in REAL
// (double where the device has it, as the CPU does); the softmax's exp in double is our own.
#include "real.glsl"
#include "exp_neg.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer E { REAL U[]; };        // [K, D, D], column j = eigenvector j
layout(std430, binding = 3) readonly buffer ET { REAL UT[]; };      // [K, D, D], U transposed
layout(std430, binding = 4) readonly buffer V { REAL lvl[]; };      // a, s², s, bias[K], a μ [K, D], 1 / c [K, D]
layout(std430, binding = 5) readonly buffer C { int cond[]; };      // [rows] of the whole call
layout(std430, binding = 6) readonly buffer K_ { uint mask[]; };    // [concepts, K]
layout(std430, binding = 7) buffer W { REAL scratch[]; };           // [chunk rows, K, D], [.., K] or [.., 2K]

layout(push_constant) uniform Push {
    uint D, K, full;
    uint mode;          // 0: a workgroup per row, 1: an invocation per row (axis-aligned only)
    uint rows;          // rows in this dispatch (mode 1)
    uint ox, oo;        // element offsets of x and out
    uint row0;          // first row of this dispatch (within the call)
    uint nb, m;         // mode 2: blocks, and rows per block (row0, rows: rows of block 0)
} p;

// mode 2: the sum of a condition's shared exps below which the row gets exps of its own (its
// best component is then more than ~575 nats (double) or ~46 nats (float) below the row's best)
#ifdef F64
const REAL SHARE_MIN = REAL(1.0e-250);
#else
const REAL SHARE_MIN = REAL(1.0e-20);
#endif

const uint KMAX = 256;  // the host refuses more components
shared REAL red[128];
shared REAL lp[KMAX];

// sum of v over the workgroup, returned to every invocation
REAL workgroup_sum(REAL v)
{
    const uint lid = gl_LocalInvocationID.x;
    red[lid] = v;
    barrier();
    for (uint s = 64u; s > 0u; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier();
    }
    const REAL total = red[0];
    barrier();
    return total;
}

bool allowed(int cr, uint k) { return cr < 0 || mask[uint(cr) * p.K + k] != 0u; }

// mode 1: the whole row in one invocation, its log-likelihoods in scratch[lk, lk + K)
void row_alone(uint row, uint lk)
{
    const uint D = p.D, K = p.K, xr = p.ox + row * D;
    const REAL s = lvl[2];
    const uint amu = 3u + K, ic = amu + K * D;
    const int cr = cond[row];
    REAL mx = REAL(-1.0e300);
    for (uint k = 0u; k < K; k++) {
        REAL q = REAL(0.0);
        for (uint j = 0u; j < D; j++) {
            const REAL y = REAL(x[xr + j]) - lvl[amu + k * D + j];
            q += y * y * lvl[ic + k * D + j];
        }
        const REAL l = lvl[3u + k] - REAL(0.5) * q;
        scratch[lk + k] = l;
        if (allowed(cr, k)) mx = max(mx, l);
    }
    REAL tot = REAL(0.0);
    for (uint k = 0u; k < K; k++)
        if (allowed(cr, k)) tot += exp_neg(scratch[lk + k] - mx);
    for (uint k = 0u; k < K; k++)
        scratch[lk + k] = allowed(cr, k) ? s * exp_neg(scratch[lk + k] - mx) / tot : REAL(0.0);
    for (uint i = 0u; i < D; i++) {
        REAL acc = REAL(0.0);
        for (uint k = 0u; k < K; k++) {
            const REAL r = scratch[lk + k];
            if (r != REAL(0.0))
                acc += r * (REAL(x[xr + i]) - lvl[amu + k * D + i]) * lvl[ic + k * D + i];
        }
        o[p.oo + row * D + i] = float(acc);
    }
}

// mode 2: row u of block 0 and its copies in the other blocks; scratch [2 local, 2 local + 1) K:
// the shared e_k, then a condition's s r_k or a row's own log-likelihoods
void rows_stacked(uint local)
{
    const uint u = p.row0 + local, D = p.D, K = p.K, xu = p.ox + u * D, lk = 2u * local * K;
    const REAL s = lvl[2];
    const uint amu = 3u + K, ic = amu + K * D;
    REAL mx = REAL(-1.0e300);
    for (uint k = 0u; k < K; k++) {
        REAL q = REAL(0.0);
        for (uint j = 0u; j < D; j++) {
            const REAL y = REAL(x[xu + j]) - lvl[amu + k * D + j];
            q += y * y * lvl[ic + k * D + j];
        }
        const REAL l = lvl[3u + k] - REAL(0.5) * q;
        scratch[lk + k] = l;
        mx = max(mx, l);
    }
    for (uint k = 0u; k < K; k++) scratch[lk + k] = exp_neg(scratch[lk + k] - mx);
    for (uint b = 0u; b < p.nb; b++) {
        const uint row = u + b * p.m, xr = p.ox + row * D;
        bool same = true;
        for (uint j = 0u; j < D; j++)
            same = same && floatBitsToUint(x[xr + j]) == floatBitsToUint(x[xu + j]);
        const int cr = cond[row];
        REAL tot = REAL(0.0);
        for (uint k = 0u; k < K; k++)
            if (allowed(cr, k)) tot += scratch[lk + k];
        if (!same || !(tot >= SHARE_MIN)) {
            row_alone(row, lk + K);
            continue;
        }
        // this condition's s r_k in the second area (free: the row is not on its own)
        for (uint k = 0u; k < K; k++)
            scratch[lk + K + k] = allowed(cr, k) ? s * scratch[lk + k] / tot : REAL(0.0);
        for (uint i = 0u; i < D; i++) {
            REAL acc = REAL(0.0);
            for (uint k = 0u; k < K; k++) {
                const REAL r = scratch[lk + K + k];
                if (r != REAL(0.0))
                    acc += r * (REAL(x[xr + i]) - lvl[amu + k * D + i]) * lvl[ic + k * D + i];
            }
            o[p.oo + row * D + i] = float(acc);
        }
    }
}

void main()
{
    if (p.mode == 1u) {         // uniform across the dispatch: no barrier below is skipped by some
        if (gl_GlobalInvocationID.x < p.rows)
            row_alone(p.row0 + gl_GlobalInvocationID.x, gl_GlobalInvocationID.x * p.K);
        return;
    }
    if (p.mode == 2u) {
        if (gl_GlobalInvocationID.x < p.rows) rows_stacked(gl_GlobalInvocationID.x);
        return;
    }
    const uint lid = gl_LocalInvocationID.x;
    const uint local_row = gl_WorkGroupID.x, row = p.row0 + local_row;
    const uint D = p.D, K = p.K;
    const uint xr = p.ox + row * D;
    const REAL s = lvl[2];
    const uint amu = 3u + K, ic = amu + K * D;
    const int cr = cond[row];

    // log-likelihood of every component (its normalising constant included)
    for (uint k = 0u; k < K; k++) {
        REAL q = REAL(0.0);
        if (p.full != 0u) {
            const uint wk = (local_row * K + k) * D;
            for (uint j = lid; j < D; j += 128u) {
                REAL z = REAL(0.0);
                for (uint d = 0u; d < D; d++)
                    z += (REAL(x[xr + d]) - lvl[amu + k * D + d]) * U[(k * D + d) * D + j];
                const REAL w = z * lvl[ic + k * D + j];
                scratch[wk + j] = w;
                q += z * w;
            }
        } else {
            for (uint j = lid; j < D; j += 128u) {
                const REAL y = REAL(x[xr + j]) - lvl[amu + k * D + j];
                q += y * y * lvl[ic + k * D + j];
            }
        }
        q = workgroup_sum(q);
        if (lid == 0u) lp[k] = lvl[3u + k] - REAL(0.5) * q;
    }
    memoryBarrierBuffer();      // scratch written above is read by other invocations below
    barrier();

    // responsibilities within the row's condition (cond < 0: the whole mixture)
    REAL mx = REAL(-1.0e300);
    for (uint k = 0u; k < K; k++)
        if (cr < 0 || mask[uint(cr) * K + k] != 0u) mx = max(mx, lp[k]);
    REAL tot = REAL(0.0);
    for (uint k = 0u; k < K; k++)
        if (cr < 0 || mask[uint(cr) * K + k] != 0u) tot += exp_neg(lp[k] - mx);
    barrier();      // everyone has read lp: it now holds s r_k
    for (uint k = lid; k < K; k += 128u)
        lp[k] = (cr < 0 || mask[uint(cr) * K + k] != 0u) ? s * exp_neg(lp[k] - mx) / tot : REAL(0.0);
    barrier();

    // eps = Σ_k s r_k U_k w_k
    for (uint i = lid; i < D; i += 128u) {
        REAL acc = REAL(0.0);
        for (uint k = 0u; k < K; k++) {
            const REAL r = lp[k];
            if (r == REAL(0.0)) continue;
            if (p.full != 0u) {
                const uint wk = (local_row * K + k) * D;
                REAL v = REAL(0.0);
                for (uint j = 0u; j < D; j++) v += UT[(k * D + j) * D + i] * scratch[wk + j];
                acc += r * v;
            } else {
                acc += r * (REAL(x[xr + i]) - lvl[amu + k * D + i]) * lvl[ic + k * D + i];
            }
        }
        o[p.oo + row * D + i] = float(acc);
    }
}
