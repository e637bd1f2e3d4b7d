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
#define _POSIX_C_SOURCE 200809L     /* mkstemp, fsync, fchmod */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/file.h>      /* flock: the save's lock (lock_path); absent: saves unlocked */
#endif

#include "vk_tune.h"
#include "vk_tune_file.h"

/* does [p, p + len) spell s */
static int spells(const char *s, const char *p, size_t len)
{
    return strlen(s) == len && !strncmp(s, p, len);
}

/* CCFG_VULKAN_TUNE_CANDIDATES: needs no device (the stub build parses it too). One list for
 * every family: a token applies to the family whose variant it names (the families' names are
 * disjoint: "2x2p" is a coop tile, "64x128db" a float32 one). */
int ccfg_vk_tune_candidates(const char *const *names, int count, const char *const *known,
                            int nknown, int *out)
{
    const char *v = getenv("CCFG_VULKAN_TUNE_CANDIDATES");
    for (int i = 0; i < count; i++) out[i] = !v || !*v;
    if (!v || !*v) return CCFG_OK;
    int any = 0;
    for (const char *p = v;;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < count && !found; i++)
            if (spells(names[i], p, len)) out[i] = found = any = 1;
        for (int i = 0; i < nknown && !found; i++) found = spells(known[i], p, len);
        if (!found) {
            char list[512] = "";
            for (int i = 0; i < nknown; i++) {
                const size_t at = strlen(list);
                snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", known[i]);
            }
            return ccfg_fail(CCFG_EINVAL, "CCFG_VULKAN_TUNE_CANDIDATES: '%.*s' is not a "
                             "candidate of any family (%s; comma-separated, no spaces)",
                             (int)len, p, list);
        }
        if (!e) break;
        p = e + 1;
    }
    /* another family's list: this family keeps its default, so nothing is timed for it */
    if (!any && count > 0) out[0] = 1;
    return CCFG_OK;
}

#ifdef CCFG_NO_VULKAN
/* built without Vulkan: nothing is ever tuned */
static const char no_tune[] = "no Vulkan device: Vulkan backend not built";
int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int n, const int *ids, const char *const *names, int *hit, int *id)
{
    (void)be; (void)kind; (void)key; (void)n; (void)names;
    *hit = 0;
    *id = n > 0 ? ids[0] : 0;
    return CCFG_OK;
}
int ccfg_vk_tune_identity(const ccfg_backend *be, char *out)
{
    (void)be;
    out[0] = 0;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
int ccfg_vk_tune_save(const ccfg_backend *be, const char *path, const char *what, int *count)
{
    (void)be; (void)path; (void)what;
    *count = 0;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
}
int ccfg_vk_tune_load(const ccfg_backend *be, const char *path, const char *what, int missing_ok,
                      int *applied, int *other)
{
    (void)be; (void)path; (void)what; (void)missing_ok;
    *applied = *other = 0;
    return ccfg_fail(CCFG_EINTERNAL, "%s", no_tune);
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

/* interned strings of loaded decisions (families, key names, candidate names): the entries point
 * at them, so they live until the device is freed; equal strings share one copy, so loading the
 * same file again adds nothing */
typedef struct tune_str {
    struct tune_str *next;
    char s[];
} tune_str;
/* an interned array of key names (a loaded entry's key_names) */
typedef struct tune_keys {
    struct tune_keys *next;
    int n;
    const char *names[CCFG_VK_TUNE_KEY];
} tune_keys;

/* the device's tuner: its decisions (a growing array, searched linearly: a model has tens of
 * convolution shapes, and a lookup is a few hundred integer compares against a dispatch), its
 * timestamp pool (made on first use), counters, identity and the strings of loaded decisions */
struct vk_tune {
    ccfg_vk_tune_entry *entries;
    int count, cap;
    VkQueryPool pool;
    ccfg_vk_tune_stats stats;
    int nfake;                          /* test hook: medians replaced (ccfg_vk_tune_fake_times) */
    double fake[CCFG_VK_TUNE_MAX_CANDIDATES];
    char id[CCFG_VK_TUNE_ID_LEN];       /* ccfg_vk_tune_identity */
    char *env_path;                     /* the CCFG_VULKAN_TUNE_CACHE file loaded (NULL: none) */
    tune_str *strings;
    tune_keys *keysets;
};

enum { STAMPS = CCFG_VK_TUNE_MAX_CANDIDATES + 1 };    /* a round's timestamps, at most */

static int tune_of(vk_dev *d, struct vk_tune **out)
{
    if (!d->tune) {
        struct vk_tune *t = calloc(1, sizeof *t);
        uint32_t vendor = 0, device = 0, driver = 0;
        uint8_t uuid[VK_UUID_SIZE];
        uint64_t shaders = 0;
        int status;
        if (!t) return ccfg_fail(CCFG_ENOMEM, "out of memory for the tuning cache");
        if ((status = vkb_device_identity(d, &vendor, &device, &driver, uuid, &shaders))) {
            free(t);
            return status;
        }
        char hex[2 * VK_UUID_SIZE + 1];
        for (int i = 0; i < (int)VK_UUID_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", uuid[i]);
        snprintf(t->id, sizeof t->id, "%04x:%04x:%08x:%s:%016llx", vendor, device, driver, hex,
                 (unsigned long long)shaders);
        d->tune = t;
    }
    *out = d->tune;
    return CCFG_OK;
}

void vkb_tune_free(vk_dev *d)
{
    if (!d->tune) return;
    vkb_timestamps_free(d, d->tune->pool);
    for (tune_str *s = d->tune->strings, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    for (tune_keys *k = d->tune->keysets, *next; k; k = next) {
        next = k->next;
        free(k);
    }
    free(d->tune->env_path);
    free(d->tune->entries);
    free(d->tune);
    d->tune = NULL;
}

int ccfg_vk_tune_identity(const ccfg_backend *be, char *out)
{
    struct vk_tune *t = NULL;
    const int status = tune_of(be->ctx, &t);
    snprintf(out, CCFG_VK_TUNE_ID_LEN, "%s", status ? "" : t->id);
    return status;
}

static const char *intern(struct vk_tune *t, const char *s)
{
    for (tune_str *p = t->strings; p; p = p->next)
        if (!strcmp(p->s, s)) return p->s;
    const size_t len = strlen(s);
    tune_str *p = malloc(sizeof *p + len + 1);
    if (!p) return NULL;
    memcpy(p->s, s, len + 1);
    p->next = t->strings;
    t->strings = p;
    return p->s;
}

/* names: already interned */
static const char *const *intern_keys(struct vk_tune *t, int n, const char *const *names)
{
    for (tune_keys *k = t->keysets; k; k = k->next)
        if (k->n == n && !memcmp(k->names, names, (size_t)n * sizeof names[0])) return k->names;
    tune_keys *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->n = n;
    memcpy(k->names, names, (size_t)n * sizeof names[0]);
    k->next = t->keysets;
    t->keysets = k;
    return k->names;
}

static int same_str(const char *a, const char *b) { return a == b || !strcmp(a, b); }

/* the same question: family, key (names and values) and candidates (names, in order) */
static int same_question(const ccfg_vk_tune_entry *e, const char *family,
                         const char *const *key_names, int nkey, const int64_t *key, int n,
                         const char *const *names)
{
    if (e->nkey != nkey || e->n != n || !same_str(e->family, family) ||
        memcmp(e->key, key, (size_t)nkey * sizeof key[0]))
        return 0;
    for (int i = 0; i < nkey; i++)
        if (!same_str(e->key_names[i], key_names[i])) return 0;
    for (int c = 0; c < n; c++)
        if (!same_str(e->names[c], names[c])) return 0;
    return 1;
}

static int load_env(vk_dev *d, struct vk_tune *t);

int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int n, const int *ids, const char *const *names, int *hit, int *id)
{
    vk_dev *d = be->ctx;
    const char *env = getenv("CCFG_VULKAN_TUNE_CACHE");
    struct vk_tune *t = d->tune;
    int status;
    *hit = 0;
    *id = n > 0 ? ids[0] : 0;
    if (env && *env) {
        if ((status = tune_of(d, &t)) || (status = load_env(d, t))) return status;
    }
    if (!t) return CCFG_OK;
    for (int i = 0; i < t->count; i++) {
        ccfg_vk_tune_entry *e = &t->entries[i];
        if (same_question(e, kind->family, kind->key_names, kind->nkey, key, n, names)) {
            /* a loaded decision names its choice; the caller's ids are this build's */
            e->choice_id = ids[e->choice];
            *id = e->choice_id;
            *hit = 1;
            t->stats.hits++;
            return CCFG_OK;
        }
    }
    return CCFG_OK;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int add_entry(struct vk_tune *t, const ccfg_vk_tune_entry *e)
{
    if (t->count == t->cap) {
        const int cap = t->cap ? 2 * t->cap : 16;
        ccfg_vk_tune_entry *grown = realloc(t->entries, (size_t)cap * sizeof *grown);
        if (!grown) return ccfg_fail(CCFG_ENOMEM, "out of memory for the tuning cache");
        t->entries = grown;
        t->cap = cap;
    }
    t->entries[t->count++] = *e;
    return CCFG_OK;
}

static int save(vk_dev *d, struct vk_tune *t, const char *path, const char *what, int *count);

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
    e.choice_id = ids[e.choice];
    if ((status = add_entry(t, &e))) return status;
    t->stats.tuned++;
    *id = ids[e.choice];
    /* CCFG_VULKAN_TUNE_CACHE: the file gets the new decision now, so a process that ends (or
     * fails) later keeps it */
    const char *env = getenv("CCFG_VULKAN_TUNE_CACHE");
    int written = 0;
    if (env && *env && !(status = load_env(d, t)))
        status = save(d, t, env, "CCFG_VULKAN_TUNE_CACHE", &written);
    return status;
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
    /* the strings stay interned (a snapshot may still point at them); the file named by
     * CCFG_VULKAN_TUNE_CACHE is not read again: the next lookups tune anew (and rewrite its
     * lines) */
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

/* ---- the file (CCFG_VULKAN_TUNE_CACHE, ccfg.profiling.save_tuning / load_tuning): its format,
 * parser and writer are in vk_tune_file.c (no device: the fuzz target drives them). Here: reading
 * it, applying this device's lines, and rewriting it under a lock. */

typedef ccfg_vk_tune_line tune_line;
typedef ccfg_vk_tune_file tune_file;

/* the file at path, read whole and parsed (a missing one: no lines, *missing) */
static int file_load(const char *path, const char *what, tune_file *f, int *missing)
{
    FILE *fp = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0;
    int status;
    *missing = 0;
    memset(f, 0, sizeof *f);
    if (!fp) {
        if (errno == ENOENT) {
            *missing = 1;
            return CCFG_OK;
        }
        return ccfg_fail(CCFG_EINVAL, "%s: cannot open the tuning cache '%s': %s", what, path,
                         strerror(errno));
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? 2 * cap : 65536;
            char *grown = cap > (size_t)CCFG_VK_TUNE_FILE_MAX + 4096 ? NULL
                                                                     : realloc(text, cap + 1);
            if (!grown) {
                fclose(fp);
                free(text);
                return ccfg_fail(cap > (size_t)CCFG_VK_TUNE_FILE_MAX + 4096 ? CCFG_EINVAL
                                                                            : CCFG_ENOMEM,
                                 "%s: the tuning cache '%s' is over %d MiB (not one of ours?) "
                                 "or out of memory reading it", what, path,
                                 CCFG_VK_TUNE_FILE_MAX >> 20);
            }
            text = grown;
        }
        const size_t got = fread(text + len, 1, cap - len, fp);
        len += got;
        if (got == 0) break;
    }
    const int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(text);
        return ccfg_fail(CCFG_EINVAL, "%s: reading the tuning cache '%s' failed", what, path);
    }
    if (len > (size_t)CCFG_VK_TUNE_FILE_MAX) {
        free(text);
        return ccfg_fail(CCFG_EINVAL, "%s: the tuning cache '%s' is over %d MiB (not one of "
                         "ours?)", what, path, CCFG_VK_TUNE_FILE_MAX >> 20);
    }
    status = ccfg_vk_tune_parse(f, text ? text : "", len, path, what);
    free(text);
    return status;
}

static int line_is(const tune_line *l, const ccfg_vk_tune_entry *e)
{
    return same_question(e, l->f[1], (const char *const *)l->key_names, l->nkey, l->key, l->n,
                         (const char *const *)l->names);
}

static int load(vk_dev *d, struct vk_tune *t, const char *path, const char *what, int missing_ok,
                int *applied, int *other)
{
    tune_file f = {0};
    int missing = 0, status;
    *applied = *other = 0;
    if ((status = file_load(path, what, &f, &missing))) return status;
    if (missing) {
        if (missing_ok) return CCFG_OK;
        return ccfg_fail(CCFG_EINVAL, "%s: no tuning cache '%s'", what, path);
    }
    /* every line parsed: now apply this device's */
    for (int i = 0; i < f.count && !status; i++) {
        const tune_line *l = &f.lines[i];
        int known = 0;
        if (strcmp(l->f[0], t->id)) {
            (*other)++;
            continue;
        }
        for (int j = 0; j < t->count && !known; j++) known = line_is(l, &t->entries[j]);
        if (known) continue;
        ccfg_vk_tune_entry e;
        const char *keys[CCFG_VK_TUNE_KEY];
        memset(&e, 0, sizeof e);
        e.family = intern(t, l->f[1]);
        int ok = e.family != NULL;
        for (int k = 0; k < l->nkey && ok; k++) ok = (keys[k] = intern(t, l->key_names[k])) != NULL;
        for (int c = 0; c < l->n && ok; c++) ok = (e.names[c] = intern(t, l->names[c])) != NULL;
        if (ok) ok = (e.key_names = intern_keys(t, l->nkey, keys)) != NULL;
        if (!ok) {
            status = ccfg_fail(CCFG_ENOMEM, "out of memory loading the tuning cache");
            break;
        }
        e.nkey = l->nkey;
        memcpy(e.key, l->key, (size_t)l->nkey * sizeof e.key[0]);
        e.n = l->n;
        memcpy(e.median_ms, l->median, sizeof l->median);
        memcpy(e.ms, l->ms, sizeof l->ms);
        e.choice = l->choice;
        e.choice_id = -1;               /* set by the lookup that uses it */
        e.loaded = 1;
        if (!(status = add_entry(t, &e))) {
            (*applied)++;
            t->stats.loaded++;
        }
    }
    (void)d;
    ccfg_vk_tune_file_free(&f);
    return status;
}

/* CCFG_VULKAN_TUNE_CACHE: its file loaded once per device and path (a missing file is an empty
 * cache: the first decision creates it) */
static int load_env(vk_dev *d, struct vk_tune *t)
{
    const char *env = getenv("CCFG_VULKAN_TUNE_CACHE");
    int applied = 0, other = 0, status;
    if (!env || !*env || (t->env_path && !strcmp(t->env_path, env))) return CCFG_OK;
    if ((status = load(d, t, env, "CCFG_VULKAN_TUNE_CACHE", 1, &applied, &other))) return status;
    char *copy = strdup(env);
    if (!copy) return ccfg_fail(CCFG_ENOMEM, "out of memory for CCFG_VULKAN_TUNE_CACHE");
    free(t->env_path);
    t->env_path = copy;
    return CCFG_OK;
}

/* The lock of `path`'s rewrite: an exclusive flock (waited for: it is held for one read, write
 * and fsync of a small file) on the side file PATH.lock, held from reading
 * the file to renaming the new one over it, so that two processes saving at once (each tuning its
 * own shapes) serialise their read-merge-write and both keep their lines; without it the later
 * rename drops the lines the earlier one added. The lock is on a side file because the rename
 * replaces the file's inode (a lock on the file itself would guard the old one); the side file
 * is left in place (removing it would race with a process about to lock it). Readers take no
 * lock: the file is only ever replaced whole. Advisory and best effort: where the side file
 * cannot be made or flock is refused (a file system without locks, a platform without flock)
 * the save goes on unlocked, as before — the file is still never half-written. *fd: the held
 * lock's descriptor, or -1. */
static int lock_path(const char *path, const char *what, int *fd)
{
    /* CCFG_VULKAN_TUNE_LOCK=0: the old unlocked rewrite (an A/B switch) */
    const char *env = getenv("CCFG_VULKAN_TUNE_LOCK");
    *fd = -1;
    if (env && *env && strcmp(env, "0") && strcmp(env, "1"))
        return ccfg_fail(CCFG_EINVAL, "%s: CCFG_VULKAN_TUNE_LOCK='%s' is neither 0 (save the "
                         "tuning cache without its lock) nor 1 (with it, the default)", what, env);
    if (env && !strcmp(env, "0")) return CCFG_OK;
#ifdef LOCK_EX
    const size_t plen = strlen(path);
    char *name = malloc(plen + 6);
    if (!name) return ccfg_fail(CCFG_ENOMEM, "out of memory saving the tuning cache");
    memcpy(name, path, plen);
    memcpy(name + plen, ".lock", 6);
    int lfd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    /* another user's lock file (a shared cache): flock needs no write access */
    if (lfd < 0 && errno == EACCES) lfd = open(name, O_RDONLY | O_CLOEXEC);
    free(name);
    if (lfd < 0) return CCFG_OK;        /* unlocked; the temporary file reports a real problem */
    int r;
    while ((r = flock(lfd, LOCK_EX)) != 0 && errno == EINTR) {
    }
    if (r != 0) {
        close(lfd);                     /* ENOLCK, EOPNOTSUPP...: unlocked */
        return CCFG_OK;
    }
    *fd = lfd;
#else
    (void)path;
#endif
    return CCFG_OK;
}

static void unlock_path(int fd)
{
    if (fd >= 0) close(fd);             /* closing the descriptor releases its flock */
}

static int save(vk_dev *d, struct vk_tune *t, const char *path, const char *what, int *count)
{
    tune_file f = {0};
    int missing = 0, status, fd = -1, lock = -1, bad = 0;
    char *tmp = NULL;
    FILE *fp = NULL;
    struct stat st;
    mode_t mode = 0644;
    *count = 0;
    (void)d;
    if ((status = lock_path(path, what, &lock))) return status;
    /* the lines already there, read under the lock (another process may have added some since
     * this one loaded the file): a file that does not parse is not ours to overwrite */
    if ((status = file_load(path, what, &f, &missing))) goto fail;
    if (!missing && !stat(path, &st)) mode = st.st_mode & 0777;
    const size_t plen = strlen(path);
    if (!(tmp = malloc(plen + 8))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory saving the tuning cache");
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".XXXXXX", 8);
    if ((fd = mkstemp(tmp)) < 0) {
        status = ccfg_fail(CCFG_EINVAL, "%s: cannot write next to '%s' (a temporary file for "
                           "an atomic rename): %s", what, path, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto fail;
    }
    if (fchmod(fd, mode) || !(fp = fdopen(fd, "w"))) {
        status = ccfg_fail(CCFG_EINVAL, "%s: cannot write '%s': %s", what, tmp, strerror(errno));
        goto fail;
    }
    fd = -1;                            /* fp owns it */
    bad |= ccfg_vk_tune_write_header(fp);
    /* the file's lines that no decision measured here replaces: other devices', ours for
     * questions this process has not answered, and ours that this process loaded (a file's line
     * wins over a loaded copy of a line: it may be another process's newer one) */
    for (int i = 0; i < f.count; i++) {
        const tune_line *l = &f.lines[i];
        int replaced = 0;
        if (!strcmp(l->f[0], t->id))
            for (int j = 0; j < t->count && !replaced; j++)
                replaced = !t->entries[j].loaded &&
                           ccfg_vk_tune_entry_writable(&t->entries[j]) &&
                           line_is(l, &t->entries[j]);
        if (replaced) continue;
        bad |= fwrite(l->raw, 1, l->raw_len, fp) != l->raw_len;
        bad |= fputc('\n', fp) == EOF;
    }
    /* the decisions measured here, and those loaded (from this file or another) that the file
     * does not hold */
    for (int j = 0; j < t->count; j++) {
        const ccfg_vk_tune_entry *e = &t->entries[j];
        int there = 0;
        if (!ccfg_vk_tune_entry_writable(e)) continue;
        if (e->loaded)
            for (int i = 0; i < f.count && !there; i++)
                there = !strcmp(f.lines[i].f[0], t->id) && line_is(&f.lines[i], e);
        if (!there) bad |= ccfg_vk_tune_write_entry(fp, t->id, e);
        (*count)++;
    }
    bad |= fflush(fp) != 0;
    bad |= fsync(fileno(fp)) != 0;
    bad |= fclose(fp) != 0;
    fp = NULL;
    if (bad) {
        status = ccfg_fail(CCFG_EINVAL, "%s: writing '%s' failed: %s", what, tmp,
                           strerror(errno));
        goto fail;
    }
    if (rename(tmp, path)) {
        status = ccfg_fail(CCFG_EINVAL, "%s: cannot rename '%s' to '%s': %s", what, tmp, path,
                           strerror(errno));
        goto fail;
    }
    free(tmp);
    ccfg_vk_tune_file_free(&f);
    unlock_path(lock);
    return CCFG_OK;
fail:
    if (fp) fclose(fp);
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    ccfg_vk_tune_file_free(&f);
    unlock_path(lock);
    *count = 0;
    return status;
}

int ccfg_vk_tune_save(const ccfg_backend *be, const char *path, const char *what, int *count)
{
    vk_dev *d = be->ctx;
    struct vk_tune *t = NULL;
    int status;
    *count = 0;
    if (!path || !*path) return ccfg_fail(CCFG_EINVAL, "%s: an empty path", what);
    if ((status = tune_of(d, &t))) return status;
    return save(d, t, path, what, count);
}

int ccfg_vk_tune_load(const ccfg_backend *be, const char *path, const char *what, int missing_ok,
                      int *applied, int *other)
{
    vk_dev *d = be->ctx;
    struct vk_tune *t = NULL;
    int status;
    *applied = *other = 0;
    if (!path || !*path) return ccfg_fail(CCFG_EINVAL, "%s: an empty path", what);
    if ((status = tune_of(d, &t))) return status;
    return load(d, t, path, what, missing_ok, applied, other);
}

#endif /* CCFG_NO_VULKAN */
