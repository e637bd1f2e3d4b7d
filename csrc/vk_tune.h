/* vk_tune.h — a run-time autotuner for Vulkan ops that have several structures computing the
 * same bits (the coop convolution's tiles, CCFG_VULKAN_COOP_TILE=auto), as
 * torch.backends.cudnn.benchmark: the first time a device meets a shape, each candidate runs on
 * it, timed with timestamp queries, and the fastest is kept for that shape from then on. Because
 * every candidate computes the same bits, tuning never changes a result, only the time.
 *
 * Per device (vk_dev.tune, freed with the device): a cache keyed by a family (a static string
 * naming the op and its precision, e.g. "conv2d coop8") and up to CCFG_VK_TUNE_KEY int64 fields
 * (the shape and the flags that change the work). Internal to csrc/; the caller holds the device
 * (its lock, py_run_enter). */
#ifndef CCFG_VK_TUNE_H
#define CCFG_VK_TUNE_H

#include <stdint.h>

#include "ccfg.h"

enum { CCFG_VK_TUNE_KEY = 16, CCFG_VK_TUNE_MAX_CANDIDATES = 16,
       /* per candidate: WARMUP untimed runs, then RUNS runs each between two timestamps (in
        * rounds that run every candidate once, interleaved); the median of the RUNS is its
        * time */
       CCFG_VK_TUNE_WARMUP = 1, CCFG_VK_TUNE_RUNS = 3 };

/* One run of candidate `id`: record its dispatches (into scratch outputs the caller set up in
 * ctx, never the real output: the accumulate and residual flags read y). Returns a CCFG_ status. */
typedef int (*ccfg_vk_tune_run_fn)(void *ctx, int id);

/* What a family's key fields are called (for the Python view): nkey static names. */
typedef struct {
    const char *family;                 /* static */
    const char *const *key_names;       /* static, nkey of them */
    int nkey;
} ccfg_vk_tune_kind;

/* The cached choice for (kind, key) on the device: 1 and *id when tuned, 0 when not. */
int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int *id);

/* A miss: flush the device's pending batch, then time each of the n candidates (ids[i], named
 * names[i], static strings) with `run` (WARMUP + RUNS runs, interleaved; the pipelines a run
 * needs are created while recording, before any of it runs, so a first-use compile is never
 * inside the timestamps), record every time, keep the lowest median and return its id in *id.
 * The profile (ccfg.profiling), if on, does not see the tuning runs. Refuses a device without
 * timestamps on its queue (naming `what`, the switch that asked for tuning). */
int ccfg_vk_tune_measure(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                         int n, const int *ids, const char *const *names, ccfg_vk_tune_run_fn run,
                         void *ctx, const char *what, int *id);

/* the decisions, for the Python view (ccfg.profiling.tuning) */
typedef struct {
    const char *family;
    const char *const *key_names;
    int nkey;
    int64_t key[CCFG_VK_TUNE_KEY];
    int n;                              /* candidates timed */
    const char *names[CCFG_VK_TUNE_MAX_CANDIDATES];
    double ms[CCFG_VK_TUNE_MAX_CANDIDATES][CCFG_VK_TUNE_RUNS];  /* each timed run */
    double median_ms[CCFG_VK_TUNE_MAX_CANDIDATES];
    int choice;                         /* index into names */
    int choice_id;                      /* the chosen candidate's id (what lookup returns) */
} ccfg_vk_tune_entry;
typedef struct {
    uint64_t tuned;                     /* shapes measured (misses) */
    uint64_t hits;                      /* lookups answered from the cache */
    uint64_t runs;                      /* candidate runs recorded, warm-ups included */
} ccfg_vk_tune_stats;

/* A copy of the device's cache (*out: malloc'd, *count entries; free() it) and its counters. */
int ccfg_vk_tune_snapshot(const ccfg_backend *be, ccfg_vk_tune_entry **out, int *count,
                          ccfg_vk_tune_stats *stats);
/* Forget every decision and zero the counters (a benchmark re-tunes). */
int ccfg_vk_tune_clear(const ccfg_backend *be);
/* Test hook: from now on the medians of a measure are replaced by times[i] for candidate i (the
 * candidates still run and are timed); n = 0 turns it off. Lets tests check the argmin on any
 * device. */
int ccfg_vk_tune_fake_times(const ccfg_backend *be, int n, const double *times_ms);

/* The comma-separated candidate list of CCFG_VULKAN_TUNE_CANDIDATES restricted to `names`
 * (count of them): out[i] = 1 where candidate i is listed; all 1 where the variable is unset or
 * empty. An unknown name raises, naming the variable. */
int ccfg_vk_tune_candidates(const char *const *names, int count, int *out);

#endif /* CCFG_VK_TUNE_H */
