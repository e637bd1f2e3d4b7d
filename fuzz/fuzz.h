/* fuzz/fuzz.h — reading typed values from libFuzzer's bytes (shared by the targets).
 *
 * Every value is drawn the same way: a selector byte picks a "typical" value in the range a
 * loader would pass (most of the time, so the fuzzer reaches deep code), one of a few extreme
 * values, or raw bits. Exhausted input reads as zeros, so every byte string is a valid input. */
#ifndef CCFG_FUZZ_H
#define CCFG_FUZZ_H

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"

typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

static inline uint8_t fz_u8(fz_in *in)
{
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

static inline uint32_t fz_u32(fz_in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)fz_u8(in) << (8 * i);
    return v;
}

static inline uint64_t fz_u64(fz_in *in)
{
    uint64_t lo = fz_u32(in);
    return lo | (uint64_t)fz_u32(in) << 32;
}

/* an int: typical values in [lo, hi], else an extreme or any int32 */
static inline int fz_int(fz_in *in, int lo, int hi)
{
    static const int extremes[] = {0, -1, 1, 2, INT_MAX, INT_MIN, INT_MAX / 2 + 1, 1 << 16,
                                   (1 << 16) + 1, 1 << 20, 1 << 24, 1 << 30, -(1 << 30), 65535};
    const uint8_t sel = fz_u8(in);
    if (sel < 224) {
        const uint32_t span = (uint32_t)((int64_t)hi - lo + 1);
        return (int)((int64_t)lo + (span ? fz_u8(in) % span : 0));
    }
    if (sel < 248) return extremes[fz_u8(in) % (sizeof extremes / sizeof extremes[0])];
    return (int)fz_u32(in);
}

/* a double: typical values in [lo, hi], else a special value or any bit pattern */
static inline double fz_double(fz_in *in, double lo, double hi)
{
    static const double special[] = {0.0, -0.0, 1.0, -1.0, NAN, INFINITY, -INFINITY, 1e300,
                                     -1e300, DBL_MIN, 4.9e-324, 1e-300, 2147483648.0,
                                     9.3e18, -9.3e18, 0.5, 1e39, FLT_MAX, 1e-8};
    const uint8_t sel = fz_u8(in);
    if (sel < 208) return lo + (hi - lo) * (fz_u8(in) / 255.0);
    if (sel < 248) return special[fz_u8(in) % (sizeof special / sizeof special[0])];
    double d;
    uint64_t bits = fz_u64(in);
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* small deterministic floats (weights, inputs): a hash of the index, in [-scale, scale] */
static inline void fz_fill(float *x, int64_t n, uint32_t seed, float scale)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
}

/* A finding that is not a sanitizer report: print it and abort, so libFuzzer saves the input. */
#define FZ_CHECK(cond, ...)                                                                       \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz check failed: %s (%s:%d): ", #cond, __FILE__, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                                         \
            fprintf(stderr, "\nlast error: %s\n", ccfg_last_error());                             \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* every failure must say why */
static inline void fz_check_error(int status)
{
    const char *e = ccfg_last_error();
    FZ_CHECK(status >= CCFG_EINVAL && status <= CCFG_EINTERNAL, "unknown status %d", status);
    FZ_CHECK(e && e[0], "status %d without a message", status);
}

#endif /* CCFG_FUZZ_H */
