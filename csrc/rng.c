/* rng.c — counter-based normals (Philox-4x32-10 + Box–Muller).
 *
 * Why counter-based: element j of sample i in stream k is a pure function of (seed, i, j, k), so a
 * sample gets the same noise whatever the batch size, chunking or device.
 * Counter (j/4, i, k, 0), key (seed low, seed high); one block gives 4 normals. */
#include <math.h>

#include "ccfg.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void ccfg_philox4x32(const uint32_t c[4], const uint32_t k[2], uint32_t out[4])
{
    uint32_t x0 = c[0], x1 = c[1], x2 = c[2], x3 = c[3];
    uint32_t k0 = k[0], k1 = k[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * x0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * x2;
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        uint32_t y1 = (uint32_t)p1;
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        uint32_t y3 = (uint32_t)p0;
        x0 = y0; x1 = y1; x2 = y2; x3 = y3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = x0; out[1] = x1; out[2] = x2; out[3] = x3;
}

/* uniform in the open interval (0, 1) */
static double to_unit(uint32_t u) { return ((double)u + 0.5) * (1.0 / 4294967296.0); }

static void normals4(uint64_t seed, int64_t sample, int64_t block, uint64_t stream, float z[4])
{
    const uint32_t c[4] = {(uint32_t)block, (uint32_t)sample, (uint32_t)stream, 0u};
    const uint32_t k[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t u[4];
    ccfg_philox4x32(c, k, u);
    const double two_pi = 6.283185307179586476925;
    for (int h = 0; h < 2; h++) {
        double r = sqrt(-2.0 * log(to_unit(u[2 * h])));
        double th = two_pi * to_unit(u[2 * h + 1]);
        z[2 * h] = (float)(r * cos(th));
        z[2 * h + 1] = (float)(r * sin(th));
    }
}

void ccfg_randn_host(int64_t n, int64_t dim, uint64_t seed, uint64_t stream, int64_t first,
                     float *out)
{
    #pragma omp parallel for schedule(static) if (n * dim > (1 << 18))
    for (int64_t i = 0; i < n; i++) {
        float *row = out + i * dim;
        for (int64_t j = 0; j < dim; j += 4) {
            float z[4];
            normals4(seed, first + i, j / 4, stream, z);
            for (int64_t q = 0; q < 4 && j + q < dim; q++) row[j + q] = z[q];
        }
    }
}
