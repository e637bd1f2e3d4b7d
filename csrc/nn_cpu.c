/* nn_cpu.c — the CPU implementation of nn.h. Layout CNHW (see nn.h). 3x3 stride-1 convolutions
 * by Winograd F(2x2,3x3) (filters packed once by conv2d_pack; a preceding GroupNorm(+SiLU) can be
 * folded into the input copy: conv2d_packed_norm), else by a register-tiled direct kernel; 1x1
 * convolutions by a pointwise tile (both kernels in nn_cpu_conv.h), other convolutions by im2col +
 * OpenBLAS sgemm, attention flash-style (nn_cpu_attn.h), everything elementwise as OpenMP loops;
 * ccfg_nn_cpu_profile times the ops per kind. docs/PERFORMANCE.md ("CPU attention, flash-style;
 * direct convolutions" and "UNet2DModel on the CPU: Winograd") has the measurements behind each
 * choice. */
/* lets GCC if-convert and vectorise exp_fast's clamp and float->int step (we never rely on
 * floating-point traps); results are unchanged */
#pragma GCC optimize("no-trapping-math")

#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "nn.h"

/* The register-tiled kernels (nn_cpu_attn.h, nn_cpu_conv.h) are plain C on GCC's vector
 * extension, compiled three times: AVX-512 (16 floats a register: this machine kind, AMD EPYC,
 * does 512-bit FMAs at full rate and oneDNN uses them), AVX2+FMA (8) and the baseline (8 floats
 * as two SSE registers), picked at run time (kernel_isa). fp-contract turns `a += k * q` into
 * FMAs in the copies that have them. */
typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KERNEL_CLONES 1
#endif

/* 2: AVX-512F, 1: AVX2 and FMA, 0: the baseline copy. The environment variable
 * CCFG_CPU_KERNELS=avx2 or =baseline caps the choice (read once), so that the tests can run the
 * copies this CPU would not pick. */
static int kernel_isa(void)
{
#ifdef KERNEL_CLONES
    static int isa = -1;
    int v = __atomic_load_n(&isa, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") ? 2
            : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
        const char *cap = getenv("CCFG_CPU_KERNELS");
        if (cap && !strcmp(cap, "avx2") && v > 1) v = 1;
        if (cap && !strcmp(cap, "baseline")) v = 0;
        __atomic_store_n(&isa, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

/* 1 when the environment variable `name` is "0", read once into *cache (-1: not read yet): the
 * switches below turn a speed path off for comparisons */
static int switched_off(const char *name, int *cache)
{
    int v = __atomic_load_n(cache, __ATOMIC_RELAXED);
    if (v < 0) {
        const char *e = getenv(name);
        v = e && !strcmp(e, "0");
        __atomic_store_n(cache, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* CCFG_CPU_WINOGRAD=0 turns the Winograd 3x3 path off: the direct kernel then runs every 3x3
 * convolution */
static int wino_off(void)
{
    static int off = -1;
    return switched_off("CCFG_CPU_WINOGRAD", &off);
}

/* CCFG_CPU_FUSE_NORM=0 has conv2d_packed_norm decline every layer: the UNet then writes each
 * GroupNorm's output and convolves it */
static int fuse_off(void)
{
    static int off = -1;
    return switched_off("CCFG_CPU_FUSE_NORM", &off);
}

#define CACHE_TILE_FLOATS ((int64_t)1 << 18)
/* parallel loops below this many elements run on one thread: a fork/join costs more than the
 * loop, and far more on a loaded machine */
#define PAR_MIN ((int64_t)1 << 16)


/* exp(x) in float, within 2 ulp (Cephes expf: x = n ln2 + r, degree-6 polynomial in r), written
 * without calls or branches so loops using it vectorise; libm's expf made SiLU ~8% of a forward */
static inline __attribute__((always_inline)) float exp_fast(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round(x / ln2) */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = p * r * r + r + 1.0f;
    /* 2^n; a NaN x (NaN n) must not reach the int conversion (undefined): its e is NaN anyway */
    const int32_t bits = ((int32_t)(n > -127.0f ? n : -127.0f) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

static inline __attribute__((always_inline)) float silu1(float v)
{
    return v / (1.0f + exp_fast(-v));
}

/* Threads: one OpenMP pool does all the parallel work; every sgemm runs single-threaded inside
 * it (begin() pins OpenBLAS to one thread for the duration of a forward). Two pools (OpenMP loops
 * and OpenBLAS's own pthreads) spinning against each other cost 5-25x on a shared 2-core box. */
static int saved_blas_threads = -1;

static void cpu_begin(void)
{
    saved_blas_threads = openblas_get_num_threads();
    if (saved_blas_threads != 1) openblas_set_num_threads(1);
}

static void cpu_end(void)
{
    if (saved_blas_threads > 1) openblas_set_num_threads(saved_blas_threads);
    saved_blas_threads = -1;
}

/* col[r, (R - row0) * wo + ox] for output rows R in [row0, row0 + rows) (R = b * ho + oy) and
 * r = (ci, ky, kx); zero where the kernel reads padding. `cols` = the tile width rows * wo. */
static void im2col_rows(int cin, int h, int w, const float *x, int64_t n_in, int k, int stride,
                        int pad0, int ho, int wo, int64_t row0, int rows, float *col)
{
    const int K = cin * k * k;
    const int64_t cols = (int64_t)rows * wo;
    for (int r = 0; r < K; r++) {
        const int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        const float *xc = x + ci * n_in;
        if (stride == 1 && wo == w) {
            /* 'same' convolution: the rows of one image that read inside it are one shifted
             * block copy; then the column that fell off the edge is zeroed */
            const int shift = kx - pad0;
            for (int i = 0; i < rows;) {
                const int64_t R = row0 + i;
                const int b = (int)(R / ho), oy = (int)(R % ho);
                int run = ho - oy;                   /* rows left in this image */
                if (run > rows - i) run = rows - i;
                float *dst = col + (int64_t)r * cols + (int64_t)i * wo;
                int a = 0, z = run;                  /* rows [a, z) of the run read inside */
                while (a < run && oy + a + ky - pad0 < 0) a++;
                while (z > a && oy + z - 1 + ky - pad0 >= h) z--;
                if (a > 0) memset(dst, 0, (size_t)a * wo * sizeof(float));
                if (z < run) memset(dst + (int64_t)z * wo, 0, (size_t)(run - z) * wo * sizeof(float));
                if (z > a) {
                    const float *src = xc + (int64_t)b * h * w + (int64_t)(oy + a + ky - pad0) * w;
                    float *d = dst + (int64_t)a * wo;
                    const int64_t len = (int64_t)(z - a) * w;
                    const int64_t lo = shift < 0 ? -shift : 0, hi = shift > 0 ? len - shift : len;
                    if (hi > lo) memcpy(d + lo, src + lo + shift, (size_t)(hi - lo) * sizeof(float));
                    for (int64_t j = 0; j < lo; j++) d[j] = 0.0f;
                    for (int64_t j = hi > lo ? hi : lo; j < len; j++) d[j] = 0.0f;
                    /* inside the block, row ends wrapped into the neighbouring row: zero them */
                    for (int q = 0; q < z - a; q++) {
                        float *rowp = d + (int64_t)q * w;
                        for (int ox = 0; ox < -shift && ox < w; ox++) rowp[ox] = 0.0f;
                        for (int ox = w - shift; ox < w; ox++) if (ox >= 0) rowp[ox] = 0.0f;
                    }
                }
                i += run;
            }
            continue;
        }
        for (int i = 0; i < rows; i++) {
            const int64_t R = row0 + i;
            const int b = (int)(R / ho), oy = (int)(R % ho);
            const int iy = oy * stride + ky - pad0;
            float *dst = col + (int64_t)r * cols + (int64_t)i * wo;
            if (iy < 0 || iy >= h) {
                memset(dst, 0, (size_t)wo * sizeof(float));
                continue;
            }
            const float *src = xc + (int64_t)b * h * w + (int64_t)iy * w;
            for (int ox = 0; ox < wo; ox++) {
                const int ix = ox * stride + kx - pad0;
                dst[ox] = ix >= 0 && ix < w ? src[ix] : 0.0f;
            }
        }
    }
}

/* Direct 3x3 convolution (nn_cpu_conv.h) for stride 1 and padding 1, every ResNet convolution
 * of a UNet: no im2col (9 copies of the input, then sgemm packing it again). */

/* the zero-padded planes of sample b: xp[ci * ps + (y + 1) * wp + x + 1] = x[ci, b, y, x], ps =
 * (h + 2) * wp + 64 (zeros past the last row for the last tile's reads) */
static void pad_sample(int cin, int h, int w, const float *x, int64_t n_in, int b, int64_t ps,
                       float *xp)
{
    const int wp = w + 2;
    for (int ci = 0; ci < cin; ci++) {
        float *pl = xp + ci * ps;
        const float *src = x + ci * n_in + (int64_t)b * h * w;
        memset(pl, 0, (size_t)wp * sizeof(float));
        for (int y = 0; y < h; y++) {
            float *row = pl + (int64_t)(y + 1) * wp;
            row[0] = 0.0f;
            memcpy(row + 1, src + (int64_t)y * w, (size_t)w * sizeof(float));
            row[w + 1] = 0.0f;
        }
        memset(pl + (int64_t)(h + 1) * wp, 0, (size_t)(ps - (int64_t)(h + 1) * wp) * sizeof(float));
    }
}

#ifdef KERNEL_CLONES
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define CONV_FN(name) name##_avx512
#define CO 12
#define WCO 8
#define WNV 3
#define VF v16f
#define VN 16
#include "nn_cpu_conv.h"
#undef CONV_FN
#undef CO
#undef WCO
#undef WNV
#undef VF
#undef VN
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define CONV_FN(name) name##_avx2
#define CO 6
#define WCO 6
#define WNV 2
#define VF v8f
#define VN 8
#include "nn_cpu_conv.h"
#undef CONV_FN
#undef CO
#undef WCO
#undef WNV
#undef VF
#undef VN
#pragma GCC pop_options
#endif
#define CONV_FN(name) name##_base
#define CO 6
#define WCO 6
#define WNV 2
#define VF v8f
#define VN 8
#include "nn_cpu_conv.h"
#undef CONV_FN
#undef CO
#undef WCO
#undef WNV
#undef VF
#undef VN

/* 1 when the direct kernel ran; 0: the layer or the scratch does not suit it (decided by the
 * layer's shape and the scratch, never by the batch, so a sample's result does not depend on
 * the batch it is in) */
/* the weights of output channels [cb * co_tile, +co_tile) as wk[(ci * 9 + tap) * co_tile + c]
 * (zeros past cout); each weight row read contiguously */
static void pack_conv_tile(int cin, int cout, int co_tile, int cb, const float *weight, float *wk)
{
    const int64_t row = (int64_t)cin * 9;
    for (int c = 0; c < co_tile; c++) {
        const int co = cb * co_tile + c;
        if (co >= cout) {
            for (int64_t r = 0; r < row; r++) wk[r * co_tile + c] = 0.0f;
            continue;
        }
        const float *wr = weight + (int64_t)co * row;
        for (int64_t r = 0; r < row; r++) wk[r * co_tile + c] = wr[r];
    }
}

/* the direct kernel's tile of output channels on this CPU's kernel copy */
static int direct_co_tile(void) { return kernel_isa() == 2 ? 12 : 6; }
/* its scratch per thread for h x w images: one sample's padded planes (+64 floats the row loads
 * run past) and one tile's packed weights */
static int64_t direct_per(int cin, int h, int w)
{
    return (int64_t)cin * ((int64_t)(h + 2) * (w + 2) + 64) + (int64_t)direct_co_tile() * cin * 9;
}
/* and the whole layer's packed weights, kept once for all threads where the scratch holds them */
static int64_t direct_all_len(int cin, int cout)
{
    const int co_tile = direct_co_tile();
    return (int64_t)co_tile * cin * 9 * ((cout + co_tile - 1) / co_tile);
}
/* narrow images waste 2 of every w + 2 virtual columns: the direct kernel from 8 columns */
static int direct_shape(int w) { return w >= 8; }

static int conv3x3_direct(int batch, int cin, int h, int w, const float *x, int cout,
                          const float *weight, const float *bias, int accumulate, float *y,
                          float *scratch, int64_t scratch_len)
{
    const int isa = kernel_isa(), co_tile = direct_co_tile();
    (void)isa;  /* read only where KERNEL_CLONES picks a compiled copy (not under clang) */
    const int nco = (cout + co_tile - 1) / co_tile;
    /* per thread: one sample's padded planes and one tile's packed weights */
    const int64_t ps = (int64_t)(h + 2) * (w + 2) + 64, tile_len = (int64_t)co_tile * cin * 9;
    const int64_t per = direct_per(cin, h, w);
    if (!direct_shape(w) || per > scratch_len) return 0;
    int nt = omp_get_max_threads();
    const int64_t n_in = (int64_t)batch * h * w;
    const int64_t items = (int64_t)batch * nco;
    if (items < 2 || (int64_t)cout * cin * 9 * n_in < 64 * PAR_MIN) nt = 1;
    /* the whole layer packed once, shared, when the scratch holds it besides the threads'
     * planes; else each item packs its tile (same numbers, more packing) */
    const int64_t all_len = direct_all_len(cin, cout);
    const int shared = all_len + nt * per <= scratch_len;
    float *const base = shared ? scratch + all_len : scratch;
    if (((shared ? scratch_len - all_len : scratch_len) / per) < nt)
        nt = (int)((shared ? scratch_len - all_len : scratch_len) / per);
    if (nt < 1) nt = 1;
    if (shared)
        for (int cb = 0; cb < nco; cb++)
            pack_conv_tile(cin, cout, co_tile, cb, weight, scratch + cb * tile_len);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *xp = base + (int64_t)omp_get_thread_num() * per, *own = xp + (int64_t)cin * ps;
        int padded = -1;    /* the sample whose planes are in xp */
        /* items sample-major: a thread's static share covers few samples, each padded once */
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            const int b = (int)(it / nco), cb = (int)(it % nco);
            if (b != padded) pad_sample(cin, h, w, x, n_in, b, ps, xp);
            padded = b;
            const float *wk = own;
            if (shared) wk = scratch + cb * tile_len;
            else pack_conv_tile(cin, cout, co_tile, cb, weight, own);
#ifdef KERNEL_CLONES
            if (isa == 2) {
                direct_block_avx512(cin, h, w, xp, ps, wk, cout, cb * co_tile, bias, accumulate,
                                    y, n_in, b);
                continue;
            }
            if (isa == 1) {
                direct_block_avx2(cin, h, w, xp, ps, wk, cout, cb * co_tile, bias, accumulate,
                                  y, n_in, b);
                continue;
            }
#endif
            direct_block_base(cin, h, w, xp, ps, wk, cout, cb * co_tile, bias, accumulate, y,
                              n_in, b);
        }
    }
    return 1;
}

/* Winograd F(2x2, 3x3) (nn_cpu_conv.h wino_*): 3x3, stride 1, padding 1 convolutions with
 * 16 products per 2x2 output tile and input channel instead of 36. */

/* the transformed weights U = G g G^T (G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]) as
 * U[((pos * nco + cb) * cin + ci) * co_tile + c] for output channel cb * co_tile + c (zeros past
 * cout): a tile's CO weights of one input channel and position are contiguous. Computed in
 * double, rounded once. */
static void wino_pack(int cin, int cout, int co_tile, const float *weight, float *U)
{
    const int nco = (cout + co_tile - 1) / co_tile;
    for (int cb = 0; cb < nco; cb++)
        for (int ci = 0; ci < cin; ci++)
            for (int c = 0; c < co_tile; c++) {
                const int co = cb * co_tile + c;
                double u[16] = {0};
                if (co < cout) {
                    const float *g = weight + ((int64_t)co * cin + ci) * 9;
                    double t[4][3];                 /* G g */
                    for (int j = 0; j < 3; j++) {
                        t[0][j] = g[j];
                        t[1][j] = 0.5 * ((double)g[j] + g[3 + j] + g[6 + j]);
                        t[2][j] = 0.5 * ((double)g[j] - g[3 + j] + g[6 + j]);
                        t[3][j] = g[6 + j];
                    }
                    for (int i = 0; i < 4; i++) {   /* (G g) G^T */
                        u[i * 4 + 0] = t[i][0];
                        u[i * 4 + 1] = 0.5 * (t[i][0] + t[i][1] + t[i][2]);
                        u[i * 4 + 2] = 0.5 * (t[i][0] - t[i][1] + t[i][2]);
                        u[i * 4 + 3] = t[i][2];
                    }
                }
                for (int pos = 0; pos < 16; pos++)
                    U[(((int64_t)pos * nco + cb) * cin + ci) * co_tile + c] = (float)u[pos];
            }
}

/* the Winograd register tile of this CPU's kernel copy (nn_cpu_conv.h WCO x WNV VN): output
 * channels, and columns per block */
static int wino_co_tile(void) { return kernel_isa() == 2 ? 8 : 6; }
static int wino_cb(void) { return kernel_isa() == 2 ? 48 : 16; }

/* floats of wino_pack's output for a layer (co_tile of this CPU's kernel copy) */
static int64_t wino_packed_len(int cin, int cout)
{
    const int co_tile = wino_co_tile();
    return (int64_t)16 * ((cout + co_tile - 1) / co_tile) * co_tile * cin;
}

/* Winograd only up to this many input channels: its transforms add float32 rounding that grows
 * with the sum's length (the op tests' 1e-5 bound holds with margin below it) */
enum { WINO_MAX_CIN = 1024 };

/* the Winograd path's layout for h x w images: samples per group, columns per block, plane
 * stride; returns the floats of scratch one thread uses */
static int64_t wino_layout(int cin, int h, int w, int *g_out, int *cb_out, int64_t *pst_out)
{
    const int co_tile = wino_co_tile(), cb = wino_cb();
    const int hq = (h + 1) / 2 + 1, wq = (w + 1) / 2 + 1;
    const int64_t hwq = (int64_t)hq * wq;
    /* samples per group: at least 128 columns, so that small images fill the vectors, and of
     * the next few counts the one whose columns best fill whole blocks (the last block's unused
     * columns are computed too) */
    const int g0 = (int)((128 + hwq - 1) / hwq);
    int g = g0;
    for (int k = g0 + 1; k < g0 + 4 && k * hwq <= 1024; k++) {
        const int64_t waste_g = ((g * hwq + cb - 1) / cb * cb - g * hwq) * k;
        const int64_t waste_k = ((k * hwq + cb - 1) / cb * cb - k * hwq) * g;
        if (waste_k < waste_g) g = k;      /* less unused work per column */
    }
    const int64_t nblk = (g * hwq + cb - 1) / cb;
    const int64_t pst = (nblk * cb + wq + 1 + 15) & ~(int64_t)15;
    if (g_out) *g_out = g;
    if (cb_out) *cb_out = cb;
    if (pst_out) *pst_out = pst;
    /* the planes, one column block of V, its M, the 4 output rows and the slack past them that
     * wino_store's vector loads read (ignored lanes), one normalised input plane (pad_polyphase's
     * tmp), 64-byte alignment */
    return 4 * (int64_t)cin * pst + 16 * (int64_t)cin * cb + 16 * (int64_t)co_tile * cb + 4 * cb
           + 32 + (((int64_t)h * w + 15) & ~(int64_t)15) + 16;
}

/* the shapes the Winograd path takes: 2+ rows and 8+ columns (its 2x2 tiles; narrower images
 * fill few vector lanes) and at most WINO_MAX_CIN input channels */
static int wino_shape(int cin, int h, int w) { return w >= 8 && h >= 2 && cin <= WINO_MAX_CIN; }

/* 1 when the Winograd path ran (decided by the layer's shape and the scratch, never the batch);
 * packed: wino_pack's output for this CPU, or NULL (packed here into the scratch); ab, silu: the
 * input read through a folded GroupNorm(+SiLU) (pad_polyphase), ab NULL: as it is */
static int conv3x3_wino(int batch, int cin, int h, int w, const float *x, const float *ab,
                        int silu, int cout, const float *weight, const float *packed,
                        const float *bias, int accumulate, float *y, float *scratch,
                        int64_t scratch_len)
{
    const int isa = kernel_isa(), co_tile = wino_co_tile();
    (void)isa;  /* read only where KERNEL_CLONES picks a compiled copy (not under clang) */
    if (!wino_shape(cin, h, w)) return 0;
    const int nco = (cout + co_tile - 1) / co_tile;
    const int hq = (h + 1) / 2 + 1, wq = (w + 1) / 2 + 1;
    const int64_t hwq = (int64_t)hq * wq;
    int g, cb;
    int64_t pst;
    const int64_t per = wino_layout(cin, h, w, &g, &cb, &pst);
    /* at least two groups per thread where the batch allows (groups are the parallel items);
     * fewer samples per group changes no column's arithmetic */
    const int nth = omp_get_max_threads();
    if (nth > 1 && (int64_t)g * 2 * nth > batch) g = batch / (2 * nth) > 0 ? batch / (2 * nth) : 1;
    if (g > batch) g = batch > 0 ? batch : 1;
    const int64_t ulen = packed ? 0 : wino_packed_len(cin, cout);
    if (ulen + per > scratch_len) return 0;
    const int64_t groups = (batch + g - 1) / g, n_in = (int64_t)batch * h * w;
    int nt = omp_get_max_threads();
    if ((scratch_len - ulen) / per < nt) nt = (int)((scratch_len - ulen) / per);
    if (nt > groups) nt = (int)groups;
    if ((int64_t)cout * cin * 9 * n_in < 64 * PAR_MIN) nt = 1;
    if (nt < 1) nt = 1;
    const float *U = packed;
    if (!packed) {
        wino_pack(cin, cout, co_tile, weight, scratch);
        U = scratch;
    }
    const int64_t ustride = (int64_t)nco * co_tile * cin;
    float *const base = scratch + ulen;
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *pp = base + (int64_t)omp_get_thread_num() * per;
        pp += (0u - (uintptr_t)pp / sizeof(float)) & 15;    /* 64-byte aligned */
        float *V = pp + 4 * (int64_t)cin * pst, *M = V + 16 * (int64_t)cin * cb;
        float *t = M + 16 * (int64_t)co_tile * cb, *tmp = t + 4 * cb + 32;
        #pragma omp for schedule(static)
        for (int64_t gi = 0; gi < groups; gi++) {
            const int b0 = (int)(gi * g), gn = batch - b0 < g ? batch - b0 : g;
#ifdef KERNEL_CLONES
            if (isa == 2)
                pad_polyphase_avx512(cin, h, w, x, n_in, b0, gn, hq, wq, pst, ab, silu, tmp, pp);
            else if (isa == 1)
                pad_polyphase_avx2(cin, h, w, x, n_in, b0, gn, hq, wq, pst, ab, silu, tmp, pp);
            else
#endif
                pad_polyphase_base(cin, h, w, x, n_in, b0, gn, hq, wq, pst, ab, silu, tmp, pp);
            const int64_t cols = gn * hwq;
            for (int64_t g0 = 0; g0 < cols; g0 += cb) {
                const int n = cols - g0 < cb ? (int)(cols - g0) : cb;
#ifdef KERNEL_CLONES
                if (isa == 2) wino_input_avx512(cin, pp, pst, wq, g0, V);
                else if (isa == 1) wino_input_avx2(cin, pp, pst, wq, g0, V);
                else
#endif
                    wino_input_base(cin, pp, pst, wq, g0, V);
                for (int ct = 0; ct < nco; ct++) {
                    const float *Ut = U + (int64_t)ct * cin * co_tile;
#ifdef KERNEL_CLONES
                    if (isa == 2) wino_gemm_avx512(cin, V, Ut, ustride, M);
                    else if (isa == 1) wino_gemm_avx2(cin, V, Ut, ustride, M);
                    else
#endif
                        wino_gemm_base(cin, V, Ut, ustride, M);
                    for (int c = 0; c < co_tile && ct * co_tile + c < cout; c++) {
                        const int co = ct * co_tile + c;
                        const float bc = bias ? bias[co] : 0.0f;
                        float *yc = y + (int64_t)co * n_in;
#ifdef KERNEL_CLONES
                        if (isa == 2) {
                            wino_output_avx512(M, c, t);
                            wino_store_avx512(t, cb, g0, n, hq, wq, h, w, b0, bc, accumulate, yc);
                            continue;
                        }
                        if (isa == 1) {
                            wino_output_avx2(M, c, t);
                            wino_store_avx2(t, cb, g0, n, hq, wq, h, w, b0, bc, accumulate, yc);
                            continue;
                        }
#endif
                        wino_output_base(M, c, t);
                        wino_store_base(t, cb, g0, n, hq, wq, h, w, b0, bc, accumulate, yc);
                    }
                }
            }
        }
    }
    return 1;
}

/* what ccfg_nn_conv2d_scratch returns past any machine's memory (its sums stay far below
 * int64 overflow, and the caller's allocation fails) */
#define SCRATCH_SATURATED ((int64_t)1 << 60)

/* shared + threads * per, saturated */
static int64_t scratch_total(int64_t shared, int64_t per, int threads)
{
    if (shared >= SCRATCH_SATURATED || per > (SCRATCH_SATURATED - shared) / threads)
        return SCRATCH_SATURATED;
    return shared + per * threads;
}

/* The scratch cpu_conv2d uses for this layer on this input when given it: the path it takes
 * (the same shape tests, in the same order), and that path's own need, so that no path is left
 * for want of scratch and nothing is sized for a path not taken (the Winograd planes of a w x w
 * image for a 1 x w one, before). */
int64_t ccfg_nn_conv2d_scratch(int cin, int cout, int h, int w, int k, int stride, int pad0,
                               int pad1, int packed, int threads)
{
    if (cin < 1 || cout < 1 || h < 1 || w < 1 || k < 1 || stride < 1 || pad0 < 0 || pad1 < 0 ||
        threads < 1 || (int64_t)h + pad0 + pad1 < k || (int64_t)w + pad0 + pad1 < k)
        return 0;
    if (k == 1 && stride == 1 && pad0 == 0 && pad1 == 0) return 0;     /* conv1x1_direct */
    const int64_t wo = ((int64_t)w + pad0 + pad1 - k) / stride + 1;
    const int64_t K = (int64_t)cin * k * k;
    if (K > SCRATCH_SATURATED / wo) return SCRATCH_SATURATED;
    const int64_t row = K * wo;     /* one output row of im2col */
    if (k == 3 && stride == 1 && pad0 == 1 && pad1 == 1 && !wino_off() && wino_shape(cin, h, w))
        /* conv3x3_wino: its planes per thread, the transformed weights once unless packed */
        return scratch_total(packed ? 0 : wino_packed_len(cin, cout),
                             wino_layout(cin, h, w, NULL, NULL, NULL), threads);
    if (k == 3 && stride == 1 && pad0 == 1 && pad1 == 1 && direct_shape(w))
        /* conv3x3_direct: padded planes per thread, the layer's weights packed once (shared) */
        return scratch_total(direct_all_len(cin, cout), direct_per(cin, h, w), threads);
    /* im2col: a tile per thread of the whole output rows that fit in CACHE_TILE_FLOATS (the tile
     * cpu_conv2d keeps to), or of one row where a row is larger */
    return scratch_total(0, row >= CACHE_TILE_FLOATS ? row : CACHE_TILE_FLOATS / row * row,
                         threads);
}

/* 1x1 convolution (every projection and shortcut of a UNet): nn_cpu_conv.h's pointwise tile
 * instead of OpenBLAS's Haswell sgemm (AVX2 only: half this CPU's FMA width). Columns in chunks
 * of 256 (a chunk of x stays in L2 across the output-channel tiles); each output is one sum over
 * ci in order, wherever its column falls. */
static void conv1x1_direct(int batch, int cin, int h, int w, const float *x, int cout,
                           const float *weight, const float *bias, int accumulate, float *y)
{
    enum { CHUNK = 256 };
    const int isa = kernel_isa(), co_tile = isa == 2 ? 12 : 6;
    const int nco = (cout + co_tile - 1) / co_tile;
    const int64_t n = (int64_t)batch * h * w, chunks = (n + CHUNK - 1) / CHUNK;
    const int64_t items = chunks * nco;
    const int par = items > 1 && (int64_t)cout * cin * n > 64 * PAR_MIN;
    (void)isa, (void)par;  /* read only by the clone dispatch and OpenMP (fuzz builds have neither) */
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int64_t j0 = (it / nco) * CHUNK, j1 = j0 + CHUNK < n ? j0 + CHUNK : n;
        const int co0 = (int)(it % nco) * co_tile;
#ifdef KERNEL_CLONES
        if (isa == 2) {
            pointwise_block_avx512(cin, n, x, weight, cout, co0, bias, accumulate, y, j0, j1);
            continue;
        }
        if (isa == 1) {
            pointwise_block_avx2(cin, n, x, weight, cout, co0, bias, accumulate, y, j0, j1);
            continue;
        }
#endif
        pointwise_block_base(cin, n, x, weight, cout, co0, bias, accumulate, y, j0, j1);
    }
}

/* 1 when it ran; 0: the layer fell to im2col and scratch_len is short of one output row (nothing
 * written) */
static int cpu_conv2d(int batch, int cin, int h, int w, const float *x, int cout, int k,
                      int stride, int pad0, int pad1, const float *weight, const float *packed,
                      const float *bias, int accumulate, float *y, float *scratch,
                      int64_t scratch_len)
{
    if (k == 1 && stride == 1 && pad0 == 0 && pad1 == 0) {
        conv1x1_direct(batch, cin, h, w, x, cout, weight, bias, accumulate, y);
        return 1;
    }
    if (k == 3 && stride == 1 && pad0 == 1 && pad1 == 1 && !wino_off() &&
        conv3x3_wino(batch, cin, h, w, x, NULL, 0, cout, weight, packed, bias, accumulate, y,
                     scratch, scratch_len))
        return 1;
    if (k == 3 && stride == 1 && pad0 == 1 && pad1 == 1 &&
        conv3x3_direct(batch, cin, h, w, x, cout, weight, bias, accumulate, y, scratch,
                       scratch_len))
        return 1;
    const int ho = (h + pad0 + pad1 - k) / stride + 1, wo = (w + pad0 + pad1 - k) / stride + 1;
    const int64_t n_in = (int64_t)batch * h * w, n_out = (int64_t)batch * ho * wo;
    const int K = cin * k * k;
    /* im2col writes whole output rows: less than one would be written past the scratch's end
     * (checked here, not before the paths above, which need none of it) */
    if (scratch_len < (int64_t)K * wo) return 0;
    const int64_t work = (int64_t)cout * K * n_out;
    int nt = work > 64 * PAR_MIN ? omp_get_max_threads() : 1;
    if (k > 1 || stride > 1 || pad0 || pad1) {
        /* every thread needs one output row of im2col scratch */
        const int64_t fit = scratch_len / ((int64_t)K * wo);
        nt = fit < nt ? (int)(fit > 1 ? fit : 1) : nt;
    }
    /* bias first, then every GEMM accumulates (beta = 1) */
    #pragma omp parallel for schedule(static) if ((int64_t)cout * n_out > PAR_MIN)
    for (int co = 0; co < cout; co++) {
        float *row = y + co * n_out;
        const float b = bias ? bias[co] : 0.0f;
        if (!accumulate) for (int64_t j = 0; j < n_out; j++) row[j] = b;
        else if (b != 0.0f) for (int64_t j = 0; j < n_out; j++) row[j] += b;
    }
    if (k == 1 && stride == 1 && pad0 == 0 && pad1 == 0) {
        /* 1x1: the GEMM alone, its columns split between the threads */
        const int64_t part = (n_out + nt - 1) / nt;
        #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int t = 0; t < nt; t++) {
            const int64_t j0 = t * part, cols = n_out - j0 < part ? n_out - j0 : part;
            if (cols > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)cols, cin, 1.0f,
                            weight, cin, x + j0, (int)n_out, 1.0f, y + j0, (int)n_out);
        }
        return 1;
    }
    /* im2col in tiles of whole output rows, one tile per thread at a time */
    const int64_t total_rows = (int64_t)batch * ho;
    int64_t per_thread = scratch_len / nt;
    int64_t tile_rows = per_thread / ((int64_t)K * wo);
    /* a tile small enough to stay in cache between im2col writing it and sgemm packing it
     * (1 MiB: measured 10-25% faster forwards than 16 MiB tiles on the Fashion-MNIST UNet) */
    const int64_t cache_rows = CACHE_TILE_FLOATS / ((int64_t)K * wo);
    if (tile_rows > cache_rows) tile_rows = cache_rows;
    if (tile_rows < 1) tile_rows = 1;   /* one row per thread fits: nt <= fit above */
    const int64_t balanced = (total_rows + nt - 1) / nt;
    if (tile_rows > balanced) tile_rows = balanced;
    const int64_t tiles = (total_rows + tile_rows - 1) / tile_rows;
    #pragma omp parallel for schedule(dynamic) num_threads(nt) if (nt > 1)
    for (int64_t tix = 0; tix < tiles; tix++) {
        const int64_t row0 = tix * tile_rows;
        const int rows = (int)(total_rows - row0 < tile_rows ? total_rows - row0 : tile_rows);
        float *col = scratch + (int64_t)omp_get_thread_num() * per_thread;
        const int64_t cols = (int64_t)rows * wo;
        im2col_rows(cin, h, w, x, n_in, k, stride, pad0, ho, wo, row0, rows, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)cols, K, 1.0f, weight, K,
                    col, (int)cols, 1.0f, y + row0 * wo, (int)n_out);
    }
    return 1;
}

/* The two elementwise kernels of GroupNorm, compiled for AVX-512 and AVX2 as well as the baseline
 * and picked at load time (16- or 8-wide float; the divide in SiLU dominates GroupNorm on SSE2) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* sum and sum of squares of x + add over count values, in double */
CLONES static void sum_sq(const float *x, int count, double add, double *sum, double *sq)
{
    double s1 = 0.0, s2 = 0.0;
    #pragma omp simd reduction(+ : s1, s2)
    for (int p = 0; p < count; p++) {
        const double v = (double)x[p] + add;
        s1 += v;
        s2 += v * v;
    }
    *sum += s1;
    *sq += s2;
}

/* y = x * a + d, then SiLU if silu */
CLONES static void affine_silu(const float *x, int count, float a, float d, int silu, float *y)
{
    if (silu) {
        #pragma omp simd
        for (int p = 0; p < count; p++) y[p] = silu1(x[p] * a + d);
    } else {
        #pragma omp simd
        for (int p = 0; p < count; p++) y[p] = x[p] * a + d;
    }
}

/* GroupNorm's statistics of sample b, group g: mean and 1 / sqrt(var + eps), in double */
static void gn_stats(int b, int g, int cpg, int c, int64_t n, int hw, float eps, const float *x,
                     const float *in_bias, double *mean_out, double *rstd_out)
{
    /* sum and sum of squares in one pass, in double (activations are O(1)-O(100): no
     * cancellation worth the float32 output) */
    double sum = 0.0, sq = 0.0;
    for (int ci = g * cpg; ci < (g + 1) * cpg; ci++) {
        const float *xr = x + ci * n + (int64_t)b * hw;
        sum_sq(xr, hw, in_bias ? in_bias[(int64_t)b * c + ci] : 0.0, &sum, &sq);
    }
    const double count = (double)cpg * hw, mean = sum / count;
    double ss = sq - sum * mean;
    ss = ss > 0.0 ? ss : 0.0;
    *mean_out = mean;
    *rstd_out = 1.0 / sqrt(ss / count + (double)eps);
}

/* channel ci of sample b: v = (x + add - mean) * rstd * gamma + beta (then FiLM) = x * a + d */
static void gn_channel_affine(int b, int ci, int c, double mean, double rstd, const float *in_bias,
                              const float *gamma, const float *beta, const float *film, float *a_out,
                              float *d_out)
{
    const float add = in_bias ? in_bias[(int64_t)b * c + ci] : 0.0f;
    float a = (float)(rstd * gamma[ci]);
    float d = (float)(((double)add - mean) * rstd * gamma[ci] + beta[ci]);
    if (film) {
        const float sc = 1.0f + film[(int64_t)b * 2 * c + ci];
        const float sh = film[(int64_t)b * 2 * c + c + ci];
        a *= sc;
        d = d * sc + sh;
    }
    *a_out = a;
    *d_out = d;
}

/* group_norm: each (sample, channel)'s (a, d) from its group's statistics, then either applied
 * (y = a x + d, SiLU if asked) or, with ab set, stored in ab[2 (b c + ci) + {0, 1}] and nothing
 * applied: the convolution that reads the normalised tensor applies them (conv2d_packed_norm) */
static void cpu_group_norm(int batch, int c, int hw, int groups, float eps, const float *x,
                           const float *in_bias, const float *gamma, const float *beta,
                           const float *film, int silu, float *y, float *ab)
{
    const int cpg = c / groups;
    const int64_t n = (int64_t)batch * hw;
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)c * n > PAR_MIN)
    for (int b = 0; b < batch; b++) {
        for (int g = 0; g < groups; g++) {
            double mean, rstd;
            gn_stats(b, g, cpg, c, n, hw, eps, x, in_bias, &mean, &rstd);
            for (int ci = g * cpg; ci < (g + 1) * cpg; ci++) {
                float a, d;
                gn_channel_affine(b, ci, c, mean, rstd, in_bias, gamma, beta, film, &a, &d);
                if (ab) {
                    ab[2 * ((int64_t)b * c + ci)] = a;
                    ab[2 * ((int64_t)b * c + ci) + 1] = d;
                } else {
                    affine_silu(x + ci * n + (int64_t)b * hw, hw, a, d, silu,
                                y + ci * n + (int64_t)b * hw);
                }
            }
        }
    }
}

static void cpu_silu(int64_t count, const float *x, float *y)
{
    #pragma omp parallel for simd schedule(static) if (count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) y[i] = silu1(x[i]);
}

static void cpu_linear(int rows, int in, int out, const float *x, const float *w, const float *bias,
                       int silu_in, float *y, float *scratch)
{
    if (silu_in) {
        cpu_silu((int64_t)rows * in, x, scratch);
        x = scratch;
    }
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) y[(int64_t)r * out + o] = bias ? bias[o] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 1.0f,
                y, out);
}

static void cpu_timestep_embedding(int batch, int dim, const double *t, int flip_sin_to_cos,
                                   float freq_shift, float *out)
{
    /* float32 arithmetic in torch's order, so the embedding matches diffusers' rounding */
    const int half = dim / 2;
    const float neg_log_period = (float)(-log(10000.0));
    for (int b = 0; b < batch; b++) {
        const float tb = (float)t[b];
        float *o = out + (int64_t)b * dim;
        for (int j = 0; j < half; j++) {
            const float e = (neg_log_period * (float)j) / ((float)half - freq_shift);
            const float a = tb * expf(e);
            const float s = sinf(a), c = cosf(a);
            o[j] = flip_sin_to_cos ? c : s;
            o[half + j] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

static void cpu_embedding_add(int batch, int dim, const float *table, const int32_t *index,
                              float *y)
{
    for (int b = 0; b < batch; b++) {
        const float *row = table + (int64_t)index[b] * dim;
        for (int j = 0; j < dim; j++) y[(int64_t)b * dim + j] += row[j];
    }
}

/* Attention, flash-style (nn_cpu_attn.h): blocks of ATTN_QB queries against keys in blocks of
 * ATTN_KB, online softmax with exp_fast, scores never larger than one block. Before, one sgemm
 * wrote each (sample, head)'s whole nq x nk score matrix (4 MiB at 1024 tokens, 64 MiB at SD's
 * 4096), a scalar softmax called libm's expf over it in three passes, and a second sgemm with the
 * head's 8-160 channels as its inner dimension read it back: 2.9x torch's time. */
enum { ATTN_QB = 64, ATTN_KB = 128 };

#ifdef KERNEL_CLONES
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define ATTN_FN(name) name##_avx512
#define VF v16f
#define VN 16
#include "nn_cpu_attn.h"
#undef ATTN_FN
#undef VF
#undef VN
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("fp-contract=fast")
#define ATTN_FN(name) name##_avx2
#define VF v8f
#define VN 8
#include "nn_cpu_attn.h"
#undef ATTN_FN
#undef VF
#undef VN
#pragma GCC pop_options
#endif
#define ATTN_FN(name) name##_base
#define VF v8f
#define VN 8
#include "nn_cpu_attn.h"
#undef ATTN_FN
#undef VF
#undef VN

int64_t ccfg_nn_attention_scratch(int head_dim)
{
    /* the query block, its accumulator, one block of scores and one of packed keys, plus 64
     * bytes of alignment */
    return (int64_t)ATTN_QB * (2 * (int64_t)head_dim + ATTN_KB) + (int64_t)ATTN_KB * head_dim + 16;
}

static void cpu_attention_qkv(int batch, int nq, int nk, int heads, int head_dim, const float *q,
                              const float *k, const float *v, float *out, float *scratch,
                              int64_t scratch_len)
{
    const int64_t nqs = (int64_t)batch * nq, nks = (int64_t)batch * nk;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const int64_t per = ccfg_nn_attention_scratch(head_dim);
    const int qblocks = (nq + ATTN_QB - 1) / ATTN_QB;
    const int64_t items = (int64_t)batch * heads * qblocks;
    int slots = (int)(scratch_len / per < omp_get_max_threads() ? scratch_len / per
                                                                  : omp_get_max_threads());
    if (slots < 1) slots = 1;
    const int par = slots > 1 && items > 1 && items * ATTN_QB * nk * head_dim > PAR_MIN;
    const int isa = kernel_isa();
    (void)isa;  /* read only where KERNEL_CLONES picks a compiled copy (not under clang) */
    /* (sample, head, query block) items, each on its own: one thread's slice of scratch */
    #pragma omp parallel for schedule(static) num_threads(slots) if (par)
    for (int64_t it = 0; it < items; it++) {
        const int qb = (int)(it % qblocks);
        const int pair = (int)(it / qblocks), b = pair / heads, h = pair % heads;
        const int64_t rq = (int64_t)h * head_dim, i0 = (int64_t)qb * ATTN_QB;
        const int qn = nq - i0 < ATTN_QB ? (int)(nq - i0) : ATTN_QB;
        float *ws = scratch + (par ? (int64_t)omp_get_thread_num() * per : 0);
        ws += (0u - (uintptr_t)ws / sizeof(float)) & 15;    /* 64-byte aligned vector loads */
        const float *qp = q + rq * nqs + (int64_t)b * nq + i0;
        const float *kp = k + rq * nks + (int64_t)b * nk, *vp = v + rq * nks + (int64_t)b * nk;
        float *op = out + rq * nqs + (int64_t)b * nq + i0;
#ifdef KERNEL_CLONES
        if (isa == 2) {
            query_block_avx512(head_dim, qn, nk, scale, qp, nqs, kp, vp, nks, op, ws);
            continue;
        }
        if (isa == 1) {
            query_block_avx2(head_dim, qn, nk, scale, qp, nqs, kp, vp, nks, op, ws);
            continue;
        }
#endif
        query_block_base(head_dim, qn, nk, scale, qp, nqs, kp, vp, nks, op, ws);
    }
}

static void cpu_attention(int batch, int hw, int heads, int head_dim, const float *qkv, float *out,
                          float *scratch, int64_t scratch_len)
{
    const int64_t block = (int64_t)heads * head_dim * batch * hw;   /* one of q, k, v */
    cpu_attention_qkv(batch, hw, hw, heads, head_dim, qkv, qkv + block, qkv + 2 * block, out,
                      scratch, scratch_len);
}

/* LayerNorm per column over c channels: columns in blocks so that the inner loops run along rows
 * (contiguous in CNHW) and the statistics of a block stay in registers/L1 */
static void cpu_layer_norm(int64_t cols, int c, float eps, const float *x, const float *gamma,
                          const float *beta, float *y)
{
    enum { BLK = 256 };
    const int64_t blocks = (cols + BLK - 1) / BLK;
    #pragma omp parallel for schedule(static) if (cols * c > PAR_MIN)
    for (int64_t bk = 0; bk < blocks; bk++) {
        const int64_t j0 = bk * BLK, nb = cols - j0 < BLK ? cols - j0 : BLK;
        double sum[BLK], sq[BLK];
        float a[BLK], d[BLK];
        for (int64_t j = 0; j < nb; j++) sum[j] = sq[j] = 0.0;
        for (int ci = 0; ci < c; ci++) {
            const float *xr = x + (int64_t)ci * cols + j0;
            for (int64_t j = 0; j < nb; j++) {
                sum[j] += xr[j];
                sq[j] += (double)xr[j] * xr[j];
            }
        }
        for (int64_t j = 0; j < nb; j++) {
            const double mean = sum[j] / c, var = fmax(sq[j] / c - mean * mean, 0.0);
            const double rstd = 1.0 / sqrt(var + (double)eps);
            a[j] = (float)rstd;
            d[j] = (float)(-mean * rstd);
        }
        for (int ci = 0; ci < c; ci++) {
            const float *xr = x + (int64_t)ci * cols + j0;
            float *yr = y + (int64_t)ci * cols + j0;
            const float gm = gamma ? gamma[ci] : 1.0f, bt = beta ? beta[ci] : 0.0f;
            for (int64_t j = 0; j < nb; j++) yr[j] = (xr[j] * a[j] + d[j]) * gm + bt;
        }
    }
}

static void cpu_geglu(int64_t cols, int f, const float *x, float *y)
{
    const int64_t count = (int64_t)f * cols;
    #pragma omp parallel for schedule(static) if (count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) {
        const float g = x[count + i];
        y[i] = x[i] * (0.5f * g * (1.0f + erff(g * 0.70710678118654752f)));
    }
}

static void cpu_upsample_nearest2x(int batch, int c, int h, int w, const float *x, float *y)
{
    const int64_t planes = (int64_t)c * batch;
    #pragma omp parallel for schedule(static) if (planes * h * w > PAR_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * h * w;
        float *yp = y + p * 4 * h * w;
        for (int iy = 0; iy < h; iy++) {
            float *r0 = yp + (int64_t)(2 * iy) * 2 * w, *r1 = r0 + 2 * w;
            for (int ix = 0; ix < w; ix++) {
                const float v = xp[(int64_t)iy * w + ix];
                r0[2 * ix] = r0[2 * ix + 1] = v;
            }
            memcpy(r1, r0, (size_t)(2 * w) * sizeof(float));
        }
    }
}

static void cpu_copy(int64_t count, const float *x, float *y)
{
    if (count > 0 && x != y) memcpy(y, x, (size_t)count * sizeof(float));
}

static void cpu_scale(int64_t count, float a, float *x)
{
    #pragma omp parallel for schedule(static) if (count > PAR_MIN)
    for (int64_t i = 0; i < count; i++) x[i] *= a;
}

static void cpu_nchw_to_cnhw(int batch, int c, int hw, const float *x, float mul, float add,
                             float *y)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)batch * c * hw > PAR_MIN)
    for (int ci = 0; ci < c; ci++)
        for (int b = 0; b < batch; b++) {
            const float *src = x + ((int64_t)b * c + ci) * hw;
            float *dst = y + ((int64_t)ci * batch + b) * hw;
            for (int p = 0; p < hw; p++) dst[p] = mul * src[p] + add;
        }
}

static void cpu_cnhw_to_nchw(int batch, int c, int hw, const float *x, float *y)
{
    #pragma omp parallel for collapse(2) schedule(static) if ((int64_t)batch * c * hw > PAR_MIN)
    for (int b = 0; b < batch; b++)
        for (int ci = 0; ci < c; ci++)
            memcpy(y + ((int64_t)b * c + ci) * hw, x + ((int64_t)ci * batch + b) * hw,
                   (size_t)hw * sizeof(float));
}

/* Time per op kind (ccfg_nn_cpu_profile in nn.h): one relaxed load and a not-taken branch per op
 * call when off; when on, two omp_get_wtime calls and two atomic adds per call (ops take
 * microseconds to seconds). Process-wide: concurrent forwards on several host threads add up. */
enum { P_CONV3, P_CONV1, P_GN, P_LIN, P_SILU, P_TEMB, P_EMB, P_ATT, P_ATTX, P_LN, P_GEGLU, P_UP,
       P_COPY, P_SCALE, P_LAYOUT, P_KINDS };
static const char *const prof_names[P_KINDS] = {
    "conv kxk (3x3 direct; else im2col)", "conv 1x1 / projection", "group_norm (+SiLU)",
    "linear", "silu", "timestep_embedding", "embedding_add", "self-attention",
    "cross-attention (attention_qkv)", "layer_norm", "geglu", "upsample_nearest2x", "copy",
    "scale", "layout (nchw <-> cnhw)"};
static int prof_on;
static double prof_sec[P_KINDS];
static int64_t prof_calls[P_KINDS];

static inline double prof_begin(void)
{
    return __atomic_load_n(&prof_on, __ATOMIC_RELAXED) ? omp_get_wtime() : 0.0;
}

static inline void prof_end(int kind, double t0)
{
    if (!__atomic_load_n(&prof_on, __ATOMIC_RELAXED)) return;
    const double dt = omp_get_wtime() - t0;
    #pragma omp atomic
    prof_sec[kind] += dt;
    #pragma omp atomic
    prof_calls[kind]++;
}

int ccfg_nn_cpu_profile(int start, const char **names, double *ms, int64_t *calls, int cap)
{
    if (start) {
        __atomic_store_n(&prof_on, 0, __ATOMIC_RELAXED);
        memset(prof_sec, 0, sizeof prof_sec);
        memset(prof_calls, 0, sizeof prof_calls);
        __atomic_store_n(&prof_on, 1, __ATOMIC_RELAXED);
        return 0;
    }
    __atomic_store_n(&prof_on, 0, __ATOMIC_RELAXED);
    int n = 0;
    for (int k = 0; k < P_KINDS && n < cap; k++) {
        if (!prof_calls[k]) continue;
        names[n] = prof_names[k];
        ms[n] = prof_sec[k] * 1e3;
        calls[n] = prof_calls[k];
        n++;
    }
    return n;
}

/* nn.h's calling convention (backend first, a status back) around the kernels above, which cannot
 * fail: kept apart so the kernels stay plain functions */
#define UNUSED_BE (void)be
static int op_begin(const ccfg_backend *be) { UNUSED_BE; cpu_begin(); return CCFG_OK; }
static int op_end(const ccfg_backend *be) { UNUSED_BE; cpu_end(); return CCFG_OK; }
static int conv2d_any(int batch, int cin, int h, int w, const float *x, int cout, int k,
                      int stride, int pad0, int pad1, const float *weight, const float *packed,
                      const float *bias, int accumulate, float *y, float *scratch,
                      int64_t scratch_len)
{
    /* the GEMMs take cin*k*k and the output's batch*ho*wo as int (OpenBLAS's cblas interface):
     * a layer past that is refused, not wrapped (the classifier's C API allows 2^16 channels and
     * kernels of 1024) */
    const int64_t ho = stride > 0 ? ((int64_t)h + pad0 + pad1 - k) / stride + 1 : 0;
    const int64_t wo = stride > 0 ? ((int64_t)w + pad0 + pad1 - k) / stride + 1 : 0;
    if ((int64_t)cin * k * k > INT_MAX || (int64_t)batch * ho * wo > INT_MAX ||
        (int64_t)batch * h * w > INT_MAX)
        return ccfg_fail(CCFG_EINVAL, "nn conv2d: %d channels x %dx%d kernel on %d x %dx%d is "
                         "past the GEMM's int sizes", cin, k, k, batch, h, w);
    const double t0 = prof_begin();
    /* a layer that falls to im2col needs one output row of scratch at the least
     * (ccfg_nn_conv2d_scratch gives its path's need) */
    if (!cpu_conv2d(batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, packed, bias,
                    accumulate, y, scratch, scratch_len)) {
        const int64_t row = (int64_t)cin * k * k *
                            ((w + pad0 + pad1 - k) / (stride > 0 ? stride : 1) + 1);
        return ccfg_fail(CCFG_EINVAL, "nn conv2d: %lld floats of scratch, one output row of "
                         "im2col needs %lld", (long long)scratch_len, (long long)row);
    }
    prof_end(k > 1 || stride > 1 || pad0 || pad1 ? P_CONV3 : P_CONV1, t0);
    return CCFG_OK;
}
static int op_conv2d(const ccfg_backend *be, int batch, int cin, int h, int w, const float *x,
                     int cout, int k, int stride, int pad0, int pad1, const float *weight,
                     const float *bias, int accumulate, float *y, float *scratch,
                     int64_t scratch_len)
{
    UNUSED_BE;
    return conv2d_any(batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, NULL, bias,
                      accumulate, y, scratch, scratch_len);
}
/* the packed form: Winograd's U for 3x3, stride 1, padding 1 (what conv3x3_wino reads); none
 * with CCFG_CPU_WINOGRAD=0, so a model placed then keeps no filters it would never read */
static int64_t op_conv2d_packed_len(const ccfg_backend *be, int cin, int cout, int k, int stride,
                                    int pad0, int pad1)
{
    (void)be;
    if (k != 3 || stride != 1 || pad0 != 1 || pad1 != 1 || cin < 1 || cout < 1 ||
        cin > WINO_MAX_CIN || wino_off())
        return 0;
    return wino_packed_len(cin, cout);
}
static int op_conv2d_pack(const ccfg_backend *be, int cin, int cout, int k, int stride, int pad0,
                          int pad1, const float *weight, float *packed)
{
    UNUSED_BE;
    if (!op_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "nn conv2d_pack: a %dx%d stride-%d convolution of %d input "
                         "channels has no packed form", k, k, stride, cin);
    wino_pack(cin, cout, wino_co_tile(), weight, packed);
    return CCFG_OK;
}
static int op_conv2d_packed(const ccfg_backend *be, int batch, int cin, int h, int w,
                            const float *x, int cout, int k, int stride, int pad0, int pad1,
                            const float *weight, const float *packed, const float *bias,
                            int accumulate, float *y, float *scratch, int64_t scratch_len)
{
    UNUSED_BE;
    if (packed && !op_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "nn conv2d_packed: the layer has no packed form");
    return conv2d_any(batch, cin, h, w, x, cout, k, stride, pad0, pad1, weight, packed, bias,
                      accumulate, y, scratch, scratch_len);
}
static int op_conv2d_packed_norm(const ccfg_backend *be, int batch, int cin, int h, int w,
                                 const float *x, const float *ab, int silu, int cout, int k,
                                 int stride, int pad0, int pad1, const float *weight,
                                 const float *packed, const float *bias,
                                 const float *residual, int accumulate, float *y,
                                 float *scratch, int64_t scratch_len, int *done)
{
    UNUSED_BE;
    *done = 0;
    if (residual) return CCFG_OK;   /* no conv2d_residual here: declined (nn.h) */
    if (!ab || !packed || !op_conv2d_packed_len(be, cin, cout, k, stride, pad0, pad1))
        return ccfg_fail(CCFG_EINVAL, "nn conv2d_packed_norm: needs (a, d) and the layer's packed "
                         "3x3 weights");
    if (wino_off() || fuse_off()) return CCFG_OK;
    const double t0 = prof_begin();
    *done = conv3x3_wino(batch, cin, h, w, x, ab, silu, cout, weight, packed, bias, accumulate, y,
                         scratch, scratch_len);
    if (*done) prof_end(P_CONV3, t0);
    return CCFG_OK;
}
static int op_group_norm_affine(const ccfg_backend *be, int batch, int c, int hw, int groups,
                                float eps, const float *x, const float *in_bias,
                                const float *gamma, const float *beta, const float *film,
                                float *ab)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_group_norm(batch, c, hw, groups, eps, x, in_bias, gamma, beta, film, 0, NULL, ab);
    prof_end(P_GN, t0);
    return CCFG_OK;
}
static int op_group_norm(const ccfg_backend *be, int batch, int c, int hw, int groups, float eps,
                         const float *x, const float *in_bias, const float *gamma,
                         const float *beta, const float *film, int silu, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_group_norm(batch, c, hw, groups, eps, x, in_bias, gamma, beta, film, silu, y, NULL);
    prof_end(P_GN, t0);
    return CCFG_OK;
}
static int op_linear(const ccfg_backend *be, int rows, int in, int out, const float *x,
                     const float *w, const float *bias, int silu_in, float *y, float *scratch)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_linear(rows, in, out, x, w, bias, silu_in, y, scratch);
    prof_end(P_LIN, t0);
    return CCFG_OK;
}
static int op_silu(const ccfg_backend *be, int64_t count, const float *x, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_silu(count, x, y);
    prof_end(P_SILU, t0);
    return CCFG_OK;
}
static int op_timestep_embedding(const ccfg_backend *be, int batch, int dim, const double *t,
                                 int flip_sin_to_cos, float freq_shift, float *out)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_timestep_embedding(batch, dim, t, flip_sin_to_cos, freq_shift, out);
    prof_end(P_TEMB, t0);
    return CCFG_OK;
}
static int op_embedding_add(const ccfg_backend *be, int batch, int dim, const float *table,
                            const int32_t *index, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_embedding_add(batch, dim, table, index, y);
    prof_end(P_EMB, t0);
    return CCFG_OK;
}
static int op_attention(const ccfg_backend *be, int batch, int hw, int heads, int head_dim,
                        const float *qkv, float *out, float *scratch, int64_t scratch_len)
{
    UNUSED_BE;
    if (batch < 0 || hw < 1 || heads < 1 || head_dim < 1)
        return ccfg_fail(CCFG_EINVAL, "nn attention: invalid sizes");
    /* one thread's blocks at the least (ccfg_nn_attention_scratch): less would be written past
     * its end */
    if (scratch_len < ccfg_nn_attention_scratch(head_dim))
        return ccfg_fail(CCFG_EINVAL, "nn attention: %lld floats of scratch for heads of %d "
                         "channels, needs %lld", (long long)scratch_len, head_dim,
                         (long long)ccfg_nn_attention_scratch(head_dim));
    const double t0 = prof_begin();
    cpu_attention(batch, hw, heads, head_dim, qkv, out, scratch, scratch_len);
    prof_end(P_ATT, t0);
    return CCFG_OK;
}
static int op_attention_qkv(const ccfg_backend *be, int batch, int nq, int nk, int heads,
                            int head_dim, const float *q, const float *k, const float *v,
                            float *out, float *scratch, int64_t scratch_len)
{
    UNUSED_BE;
    if (batch < 0 || nq < 1 || nk < 1 || heads < 1 || head_dim < 1)
        return ccfg_fail(CCFG_EINVAL, "nn attention_qkv: invalid sizes");
    if (scratch_len < ccfg_nn_attention_scratch(head_dim))
        return ccfg_fail(CCFG_EINVAL, "nn attention_qkv: %lld floats of scratch for heads of %d "
                         "channels, needs %lld", (long long)scratch_len, head_dim,
                         (long long)ccfg_nn_attention_scratch(head_dim));
    const double t0 = prof_begin();
    cpu_attention_qkv(batch, nq, nk, heads, head_dim, q, k, v, out, scratch, scratch_len);
    prof_end(P_ATTX, t0);
    return CCFG_OK;
}
static int op_layer_norm(const ccfg_backend *be, int64_t cols, int c, float eps, const float *x,
                         const float *gamma, const float *beta, float *y)
{
    UNUSED_BE;
    if (cols < 0 || c < 1) return ccfg_fail(CCFG_EINVAL, "nn layer_norm: invalid sizes");
    const double t0 = prof_begin();
    cpu_layer_norm(cols, c, eps, x, gamma, beta, y);
    prof_end(P_LN, t0);
    return CCFG_OK;
}
static int op_geglu(const ccfg_backend *be, int64_t cols, int f, const float *x, float *y)
{
    UNUSED_BE;
    if (cols < 0 || f < 1) return ccfg_fail(CCFG_EINVAL, "nn geglu: invalid sizes");
    const double t0 = prof_begin();
    cpu_geglu(cols, f, x, y);
    prof_end(P_GEGLU, t0);
    return CCFG_OK;
}
static int op_upsample_nearest2x(const ccfg_backend *be, int batch, int c, int h, int w,
                                 const float *x, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_upsample_nearest2x(batch, c, h, w, x, y);
    prof_end(P_UP, t0);
    return CCFG_OK;
}
static int op_copy(const ccfg_backend *be, int64_t count, const float *x, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_copy(count, x, y);
    prof_end(P_COPY, t0);
    return CCFG_OK;
}
static int op_scale(const ccfg_backend *be, int64_t count, float a, float *x)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_scale(count, a, x);
    prof_end(P_SCALE, t0);
    return CCFG_OK;
}
static int op_nchw_to_cnhw(const ccfg_backend *be, int batch, int c, int hw, const float *x,
                           float mul, float add, float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_nchw_to_cnhw(batch, c, hw, x, mul, add, y);
    prof_end(P_LAYOUT, t0);
    return CCFG_OK;
}
static int op_cnhw_to_nchw(const ccfg_backend *be, int batch, int c, int hw, const float *x,
                           float *y)
{
    UNUSED_BE;
    const double t0 = prof_begin();
    cpu_cnhw_to_nchw(batch, c, hw, x, y);
    prof_end(P_LAYOUT, t0);
    return CCFG_OK;
}
#undef UNUSED_BE

static const ccfg_nn_ops cpu_ops = {
    .name = "cpu",
    .uses_scratch = 1,
    .begin = op_begin,
    .end = op_end,
    .conv2d = op_conv2d,
    .conv2d_packed_len = op_conv2d_packed_len,
    .conv2d_pack = op_conv2d_pack,
    .conv2d_packed = op_conv2d_packed,
    .group_norm_affine = op_group_norm_affine,
    .conv2d_packed_norm = op_conv2d_packed_norm,
    .group_norm = op_group_norm,
    .linear = op_linear,
    .silu = op_silu,
    .timestep_embedding = op_timestep_embedding,
    .embedding_add = op_embedding_add,
    .attention = op_attention,
    .attention_qkv = op_attention_qkv,
    .layer_norm = op_layer_norm,
    .geglu = op_geglu,
    .upsample_nearest2x = op_upsample_nearest2x,
    .copy = op_copy,
    .scale = op_scale,
    .nchw_to_cnhw = op_nchw_to_cnhw,
    .cnhw_to_nchw = op_cnhw_to_nchw,
};

const ccfg_nn_ops *ccfg_nn_ops_cpu(void) { return &cpu_ops; }
