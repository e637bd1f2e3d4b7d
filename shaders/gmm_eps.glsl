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
// on its own (mode 1's code, a second scratch area). Both modes share one log-likelihood
// (log_lik) and one output loop (write_eps). Arithmetic in REAL (double where the device has it,
// as the CPU does); the softmax's exp in double is our own (exp_neg).
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
    uint flags;         // modes 1, 2: bit 0, parameters and per-row values kept near (below)
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

// Modes 1 and 2 keep what a row needs close (p.flags & 1, the default; off with
// CCFG_VULKAN_GMM_V1=1, which restores global memory for all three; the same bits):
// - the level's parameters (bias, a μ, 1 / c: 3 + K + 2 K D reals, read K D times per row by
//   every invocation) in shared memory `par` when they fit, loaded once per workgroup;
// - the row's x (D <= XMAX floats, read 2 K times per row) in the invocation's own `xrow`,
//   loaded once;
// - the row's per-component values (K or 2 K reals, K <= KPRIV) in its own `wv` instead of the
//   global scratch at a stride of K or 2 K reals between neighbouring invocations (uncoalesced).
// The host (backend_vk_ops.c) sizes its chunks and scratch by the same limits.
// 8.5 KiB of doubles (d = 64 with K <= 8, d = 32 with K <= 16): more would cost workgroups per
// compute unit where shared memory is scarce (64 KiB per AMD GCN CU: 5 groups of 11.5 KiB with red
// and lp, 21 KiB would be 3); with red and lp within Vulkan's 16 KiB minimum
const uint PAR_MAX = 1088u;
const uint XMAX = 64u;          // mode 1 and 2 rows: D <= 64 (the host)
const uint KPRIV = 32u;
shared REAL par[PAR_MAX];
bool g_near = false;            // p.flags & 1 (modes 1, 2)
bool g_par = false;             // the parameters are in `par`
bool g_priv = false;            // per-component values in `wv`, not in the scratch
float xrow[XMAX];
REAL wv[2u * KPRIV];

REAL L(uint i) { return g_par ? par[i] : lvl[i]; }
// the per-component value i (< 2 K) of the row whose scratch area starts at lk
REAL val(uint lk, uint i) { return g_priv ? wv[i] : scratch[lk + i]; }
void set_val(uint lk, uint i, REAL v)
{
    if (g_priv) wv[i] = v;
    else scratch[lk + i] = v;
}
// x of the row at element xr, coordinate j: from `xrow` when the row was cached there
REAL xval(uint xr, uint j, bool cached) { return cached ? REAL(xrow[j]) : REAL(x[xr + j]); }

// log w_k - ½ log det C_k - ½ Σ_j (x_j - a μ_kj)² / c_kj of the row at xr
REAL log_lik(uint xr, bool cached, uint k)
{
    const uint D = p.D, K = p.K, amu = 3u + K, ic = amu + K * D;
    REAL q = REAL(0.0);
    for (uint j = 0u; j < D; j++) {
        const REAL y = xval(xr, j, cached) - L(amu + k * D + j);
        q += y * y * L(ic + k * D + j);
    }
    return L(3u + k) - REAL(0.5) * q;
}

// out row = Σ_k s r_k (x - a μ_k) / c_k, the weights s r_k at val(lk, w0 + k)
void write_eps(uint row, uint xr, bool cached, uint lk, uint w0)
{
    const uint D = p.D, K = p.K, amu = 3u + K, ic = amu + K * D;
    for (uint i = 0u; i < D; i++) {
        REAL acc = REAL(0.0);
        for (uint k = 0u; k < K; k++) {
            const REAL r = val(lk, w0 + k);
            if (r != REAL(0.0))
                acc += r * (xval(xr, i, cached) - L(amu + k * D + i)) * L(ic + k * D + i);
        }
        o[p.oo + row * D + i] = float(acc);
    }
}

// mode 1: the whole row in one invocation, its log-likelihoods at val(lk, w0 + k)
void row_alone(uint row, bool cached, uint lk, uint w0)
{
    const uint K = p.K, xr = p.ox + row * p.D;
    const REAL s = L(2u);
    const int cr = cond[row];
    REAL mx = REAL(-1.0e300);
    for (uint k = 0u; k < K; k++) {
        const REAL l = log_lik(xr, cached, k);
        set_val(lk, w0 + k, l);
        if (allowed(cr, k)) mx = max(mx, l);
    }
    REAL tot = REAL(0.0);
    for (uint k = 0u; k < K; k++)
        if (allowed(cr, k)) tot += exp_neg(val(lk, w0 + k) - mx);
    for (uint k = 0u; k < K; k++)
        set_val(lk, w0 + k, allowed(cr, k) ? s * exp_neg(val(lk, w0 + k) - mx) / tot : REAL(0.0));
    write_eps(row, xr, cached, lk, w0);
}

// mode 2: row u of block 0 and its copies in the other blocks; values [0, K): the shared e_k,
// [K, 2K): a condition's s r_k or a row's own log-likelihoods
void rows_stacked(uint local, bool cached)
{
    const uint u = p.row0 + local, D = p.D, K = p.K, xu = p.ox + u * D, lk = 2u * local * K;
    const REAL s = L(2u);
    REAL mx = REAL(-1.0e300);
    for (uint k = 0u; k < K; k++) {
        const REAL l = log_lik(xu, cached, k);
        set_val(lk, k, l);
        mx = max(mx, l);
    }
    for (uint k = 0u; k < K; k++) set_val(lk, k, exp_neg(val(lk, k) - mx));
    for (uint b = 0u; b < p.nb; b++) {
        const uint row = u + b * p.m, xr = p.ox + row * D;
        bool same = true;
        for (uint j = 0u; j < D; j++)
            same = same && floatBitsToUint(x[xr + j]) ==
                               floatBitsToUint(cached ? xrow[j] : x[xu + j]);
        const int cr = cond[row];
        REAL tot = REAL(0.0);
        for (uint k = 0u; k < K; k++)
            if (allowed(cr, k)) tot += val(lk, k);
        if (!same || !(tot >= SHARE_MIN)) {
            row_alone(row, false, lk, K);   // its own x from x[] (xrow keeps row u's)
            continue;
        }
        // this condition's s r_k in the second area (free: the row is not on its own)
        for (uint k = 0u; k < K; k++)
            set_val(lk, K + k, allowed(cr, k) ? s * val(lk, k) / tot : REAL(0.0));
        write_eps(row, xr, cached, lk, K);  // x of this row is row u's, bit for bit
    }
}

void main()
{
    if (p.mode != 0u) {         // uniform across the dispatch: every invocation reaches the barrier
        const uint gid = gl_GlobalInvocationID.x;
        const uint npar = 3u + p.K + 2u * p.K * p.D;
        const bool near = (p.flags & 1u) != 0u;
        g_near = near;
        g_par = near && npar <= PAR_MAX;
        g_priv = near && p.K <= KPRIV;
        if (g_par) {
            for (uint i = gl_LocalInvocationID.x; i < npar; i += 128u) par[i] = lvl[i];
            barrier();
        }
        if (gid >= p.rows) return;
        const uint row = p.row0 + gid;     // mode 2: row u of block 0
        const bool cached = near && p.D <= XMAX;
        if (cached)
            for (uint j = 0u; j < p.D; j++) xrow[j] = x[p.ox + row * p.D + j];
        if (p.mode == 1u) row_alone(row, cached, gid * p.K, 0u);
        else rows_stacked(gid, cached);
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
