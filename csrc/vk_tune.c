/* vk_tune.c — the run-time autotuner (vk_tune.h): per device, a cache from (family, key) to the
 * fastest of several candidates that compute the same bits, filled the first time a key is met by
 * timing every candidate on the device with timestamp queries.
 *
 * Timing: the pending batch is flushed first (the tuner's runs get batches of their own, and the
 * real work recorded so far is not timed with them). One batch of WARMUP untimed runs of every
 * candidate, then RUNS rounds, a batch each, in which every candidate runs once between two
 * timestamps (every dispatch is followed by a full barrier, so consecutive timestamps bound
 * exactly that run's commands), interleaved; the median of its RUNS times is a candidate's
 * time. Pipelines are created when a dispatch is recorded (backend_vk.c get_pipe), on the
 * host, before the batch runs: a first-use compile is never between two timestamps (the warm-up
 * also brings the weights and the input into the caches, as in a forward). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_tune.h"

/* CCFG_VULKAN_TUNE_CANDIDATES: needs no device (the stub build parses it too) */
int ccfg_vk_tune_candidates(const char *const *names, int count, int *out)
{
    const char *v = getenv("CCFG_VULKAN_TUNE_CANDIDATES");
    for (int i = 0; i < count; i++) out[i] = !v || !*v;
    if (!v || !*v) return CCFG_OK;
    int any = 0;
    for (const char *p = v; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < count; i++)
            if (strlen(names[i]) == len && !strncmp(names[i], p, len)) {
                out[i] = found = any = 1;
                break;
            }
        if (!found) {
            char known[256] = "";
            for (int i = 0; i < count; i++) {
                const size_t at = strlen(known);
                snprintf(known + at, sizeof known - at, "%s%s", i ? ", " : "", names[i]);
            }
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_TUNE_CANDIDATES: '%.*s' is not a "
                             "candidate (%s; comma-separated, no spaces)", (int)len, p, known);
        }
        p += len + (e ? 1 : 0);
    }
    if (!any)
        return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_TUNE_CANDIDATES='%s' names no candidate", v);
    return CCFG_OK;
}

#ifdef CCFG_NO_VULKAN
/* built without Vulkan: nothing is ever tuned */
static const char no_tune[] = "no Vulkan device: Vulkan backend not built";
int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int *id)
{
    (void)be; (void)kind; (void)key;
    *id = 0;
    return 0;
}
int ccfg_vk_tune_measure(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                         int n, const int *ids, const char *const *names, ccfg_vk_tune_run_fn run,
                         void *ctx, const char *what, int *id)
{
    (void)be; (void)kind; (void)key; (void)n; (void)ids; (void)names; (void)run; (void)ctx;
    (void)what;
    *id = 0;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
int ccfg_vk_tune_snapshot(const ccfg_backend *be, ccfg_vk_tune_entry **out, int *count,
                          ccfg_vk_tune_stats *stats)
{
    (void)be;
    *out = NULL;
    *count = 0;
    memset(stats, 0, sizeof *stats);
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
int ccfg_vk_tune_clear(const ccfg_backend *be)
{
    (void)be;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
int ccfg_vk_tune_fake_times(const ccfg_backend *be, int n, const double *times_ms)
{
    (void)be; (void)n; (void)times_ms;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
#else

#include "vk_backend.h"

/* the device's tuner: its decisions (a growing array, searched linearly: a model has tens of
 * convolution shapes, and a lookup is a few hundred integer compares against a dispatch), its
 * timestamp pool (made on first use) and counters */
struct vk_tune {
    ccfg_vk_tune_entry *entries;
    int count, cap;
    VkQueryPool pool;
    ccfg_vk_tune_stats stats;
    int nfake;                          /* test hook: medians replaced (ccfg_vk_tune_fake_times) */
    double fake[CCFG_VK_TUNE_MAX_CANDIDATES];
};

enum { STAMPS = CCFG_VK_TUNE_MAX_CANDIDATES + 1 };    /* a round's timestamps, at most */

static int tune_of(vk_dev *d, struct vk_tune **out)
{
    if (!d->tune && !(d->tune = calloc(1, sizeof *d->tune)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory for the tuning cache");
    *out = d->tune;
    return CCFG_OK;
}

void vkb_tune_free(vk_dev *d)
{
    if (!d->tune) return;
    vkb_timestamps_free(d, d->tune->pool);
    free(d->tune->entries);
    free(d->tune);
    d->tune = NULL;
}

static int same_key(const ccfg_vk_tune_entry *e, const ccfg_vk_tune_kind *kind, const int64_t *key)
{
    return e->family == kind->family && e->nkey == kind->nkey &&
           !memcmp(e->key, key, (size_t)kind->nkey * sizeof key[0]);
}

int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int *id)
{
    vk_dev *d = be->ctx;
    *id = 0;
    if (!d->tune) return 0;
    for (int i = 0; i < d->tune->count; i++) {
        const ccfg_vk_tune_entry *e = &d->tune->entries[i];
        if (same_key(e, kind, key)) {
            *id = e->choice_id;
            d->tune->stats.hits++;
            return 1;
        }
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int ccfg_vk_tune_measure(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                         int n, const int *ids, const char *const *names, ccfg_vk_tune_run_fn run,
                         void *ctx, const char *what, int *id)
{
    vk_dev *d = be->ctx;
    struct vk_tune *t = NULL;
    ccfg_vk_tune_entry e;
    int status, profiling = d->profiling;
    *id = n > 0 ? ids[0] : 0;
    if (n < 1 || n > CCFG_VK_TUNE_MAX_CANDIDATES || kind->nkey < 0 ||
        kind->nkey > CCFG_VK_TUNE_KEY)
        return ccfg_fail(CCFG_EINTERNAL, "%s: tuning %s with %d candidates and %d key fields",
                         d->name, kind->family, n, kind->nkey);
    if ((status = tune_of(d, &t))) return status;
    if (!t->pool && (status = vkb_timestamps_new(d, STAMPS, &t->pool))) {
        char why[256];      /* a copy: ccfg_fail writes the message it would read */
        snprintf(why, sizeof why, "%s", ccfg_last_error());
        return ccfg_fail(status, "%s=auto times the candidates with timestamp queries: %s (set "
                         "%s to one of its values instead)", what, why, what);
    }
    memset(&e, 0, sizeof e);
    e.family = kind->family;
    e.key_names = kind->key_names;
    e.nkey = kind->nkey;
    memcpy(e.key, key, (size_t)kind->nkey * sizeof key[0]);
    e.n = n;
    /* the real work recorded so far runs first, outside the timestamps; the profile's batches
     * and stamps are off while the tuner's run (its totals are collected by the flush) */
    if ((status = vkb_flush(d))) return status;
    d->profiling = 0;
    /* the warm-ups, every candidate's, in a batch of their own (their pipelines are made while
     * they are recorded) */
    for (int c = 0; c < n && !status; c++) {
        e.names[c] = names[c];
        for (int r = 0; r < CCFG_VK_TUNE_WARMUP && !status; r++) {
            status = run(ctx, ids[c]);
            t->stats.runs++;
        }
    }
    if (!status) status = vkb_flush(d);
    /* RUNS rounds, a batch each: every candidate once, between consecutive timestamps, the order
     * rotated by one per round. Interleaved, a drift of the device's speed (clocks, other work
     * on the GPU or, on lavapipe, on the CPU) reaches every candidate alike rather than whichever
     * ran while it lasted; a batch per round keeps each round well within the descriptor pool,
     * so no submit falls between two timestamps. */
    for (int r = 0; r < CCFG_VK_TUNE_RUNS && !status; r++) {
        double ns[CCFG_VK_TUNE_MAX_CANDIDATES];
        status = vkb_timestamp(d, t->pool, (uint32_t)n + 1, 0);
        for (int j = 0; j < n && !status; j++) {
            if ((status = run(ctx, ids[(j + r) % n]))) break;
            t->stats.runs++;
            status = vkb_timestamp(d, t->pool, 0, (uint32_t)j + 1);
        }
        if (!status) status = vkb_flush(d);
        if (!status) status = vkb_timestamps_read(d, t->pool, (uint32_t)n + 1, ns);
        for (int j = 0; j < n && !status; j++) e.ms[(j + r) % n][r] = ns[j] * 1e-6;
    }
    for (int c = 0; c < n && !status; c++) {
        double sorted[CCFG_VK_TUNE_RUNS];
        memcpy(sorted, e.ms[c], sizeof sorted);
        qsort(sorted, CCFG_VK_TUNE_RUNS, sizeof sorted[0], cmp_double);
        e.median_ms[c] = sorted[CCFG_VK_TUNE_RUNS / 2];
        if (t->nfake) e.median_ms[c] = t->fake[c < t->nfake ? c : t->nfake - 1];
        /* strictly lower: a tie keeps the earlier candidate (the caller lists its default first) */
        if (e.median_ms[c] < e.median_ms[e.choice]) e.choice = c;
    }
    d->profiling = profiling;
    if (status) {
        /* a failed run leaves the device unusable (flush marks it lost) or the caller's error
         * (a candidate it could not record): nothing is cached */
        return status;
    }
    if (t->count == t->cap) {
        const int cap = t->cap ? 2 * t->cap : 16;
        ccfg_vk_tune_entry *grown = realloc(t->entries, (size_t)cap * sizeof *grown);
        if (!grown) return ccfg_fail(CCFG_ENOMEM, "out of memory for the tuning cache");
        t->entries = grown;
        t->cap = cap;
    }
    e.choice_id = ids[e.choice];
    t->entries[t->count++] = e;
    t->stats.tuned++;
    *id = ids[e.choice];
    return CCFG_OK;
}

int ccfg_vk_tune_snapshot(const ccfg_backend *be, ccfg_vk_tune_entry **out, int *count,
                          ccfg_vk_tune_stats *stats)
{
    vk_dev *d = be->ctx;
    *out = NULL;
    *count = 0;
    memset(stats, 0, sizeof *stats);
    if (!d->tune) return CCFG_OK;
    *stats = d->tune->stats;
    if (!d->tune->count) return CCFG_OK;
    if (!(*out = malloc((size_t)d->tune->count * sizeof **out)))
        return ccfg_fail(CCFG_ENOMEM, "out of memory for a copy of the tuning cache");
    memcpy(*out, d->tune->entries, (size_t)d->tune->count * sizeof **out);
    *count = d->tune->count;
    return CCFG_OK;
}

int ccfg_vk_tune_clear(const ccfg_backend *be)
{
    vk_dev *d = be->ctx;
    if (!d->tune) return CCFG_OK;
    d->tune->count = 0;
    memset(&d->tune->stats, 0, sizeof d->tune->stats);
    return CCFG_OK;
}

int ccfg_vk_tune_fake_times(const ccfg_backend *be, int n, const double *times_ms)
{
    vk_dev *d = be->ctx;
    struct vk_tune *t = NULL;
    int status;
    if (n < 0 || n > CCFG_VK_TUNE_MAX_CANDIDATES)
        return ccfg_fail(CCFG_EINVAL, "fake tuning times: %d of them, at most %d", n,
                         CCFG_VK_TUNE_MAX_CANDIDATES);
    if ((status = tune_of(d, &t))) return status;
    for (int i = 0; i < n; i++) t->fake[i] = times_ms[i];
    t->nfake = n;
    return CCFG_OK;
}

#endif /* CCFG_NO_VULKAN */
