/* vk_tune.h — a run-time autotuner for Vulkan ops that have several structures computing the
 * same bits (the coop convolution's tiles, CCFG_VULKAN_COOP_TILE=auto), as
 * torch.backends.cudnn.benchmark: the first time a device meets a shape, each candidate runs on
 * it, timed with timestamp queries, and the fastest is kept for that shape from then on. Because
 * every candidate computes the same bits, tuning never changes a result, only the time.
 *
 * Per device (vk_dev.tune, freed with the device): a cache keyed by a family (a static string
 * naming the op and its precision, e.g. "conv2d coop8"), up to CCFG_VK_TUNE_KEY int64 fields
 * (the shape and the flags that change the work) and the candidates' names (a decision answers
 * only the question it was measured for). Decisions can be saved to a text file and loaded in
 * another process (CCFG_VULKAN_TUNE_CACHE, ccfg.profiling.save_tuning / load_tuning): each line
 * names the device it was measured on (vendor and device ids, driver version,
 * pipelineCacheUUID, a hash of the compiled shaders), and a line of another device is never
 * applied, only kept when the file is rewritten. Internal to csrc/; the caller holds the device
 * (its lock, py_run_enter). */
#ifndef CCFG_VK_TUNE_H
#define CCFG_VK_TUNE_H

#include <stdint.h>

#include "ccfg.h"

enum { CCFG_VK_TUNE_KEY = 20, CCFG_VK_TUNE_MAX_CANDIDATES = 16,
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

/* The cached choice for (kind, key) among the n candidates (ids[i], named names[i]) on the
 * device: *hit 1 and *id when a decision for exactly these candidates is cached (measured in this
 * process, or loaded from a file), else *hit 0. With CCFG_VULKAN_TUNE_CACHE set, the file is
 * loaded first (once per device and path). Returns a CCFG_ status (a malformed file raises,
 * naming the variable). */
int ccfg_vk_tune_lookup(const ccfg_backend *be, const ccfg_vk_tune_kind *kind, const int64_t *key,
                        int n, const int *ids, const char *const *names, int *hit, int *id);

/* A miss: flush the device's pending batch, then time each of the n candidates (ids[i], named
 * names[i], static strings) with `run` (WARMUP + RUNS runs, interleaved; the pipelines a run
 * needs are created while recording, before any of it runs, so a first-use compile is never
 * inside the timestamps), record every time, keep the lowest median and return its id in *id.
 * The profile (ccfg.profiling), if on, does not see the tuning runs. Refuses a device without
 * timestamps on its queue (naming `what`, the switch that asked for tuning). With
 * CCFG_VULKAN_TUNE_CACHE set, the file is rewritten with the new decision (ccfg_vk_tune_save). */
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
    int choice_id;                      /* the chosen candidate's id (measured entries; a loaded
                                         * one maps its choice's name to the caller's id) */
    int loaded;                         /* read from a file, not measured in this process */
} ccfg_vk_tune_entry;
typedef struct {
    uint64_t tuned;                     /* shapes measured (misses) */
    uint64_t hits;                      /* lookups answered from the cache */
    uint64_t runs;                      /* candidate runs recorded, warm-ups included */
    uint64_t loaded;                    /* decisions loaded from files for this device */
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

/* The device's identity as the cache file writes it (vendor:device:driverVersion:
 * pipelineCacheUUID:shader hash, hex), into out (at least CCFG_VK_TUNE_ID_LEN bytes). */
enum { CCFG_VK_TUNE_ID_LEN = 96 };
int ccfg_vk_tune_identity(const ccfg_backend *be, char *out);

/* Save the device's decisions to `path`: the file's lines for other devices (and this device's
 * for questions not in the cache, or answered only by a decision loaded from a file) are kept,
 * this device's measured decisions replace their own lines; read, merged and written to a
 * temporary file in the same folder, then renamed over `path`, all under an exclusive flock of
 * PATH.lock (best effort; CCFG_VULKAN_TUNE_LOCK=0: none), so concurrent savers keep each
 * other's lines. A file that exists and does not parse is left alone and raises, naming `what`.
 * *count: the cache's decisions the file holds afterwards (written, or a loaded one already
 * there). The text's format, parser and writer: vk_tune_file.h. */
int ccfg_vk_tune_save(const ccfg_backend *be, const char *path, const char *what, int *count);
/* Load the decisions of this device from `path` (the whole file parsed first: a malformed one
 * raises naming `what` and applies nothing); a decision already in the cache (the same family,
 * key and candidates) is kept. *applied: the decisions added; *other: lines for other devices or
 * shader builds (not applied). A missing file raises unless missing_ok. */
int ccfg_vk_tune_load(const ccfg_backend *be, const char *path, const char *what, int missing_ok,
                      int *applied, int *other);

/* CCFG_VULKAN_TUNE_CANDIDATES for one family. `names` (count of them, the family's default
 * first) are the family's variants, `known` (nknown) every variant of every family that reads the
 * variable. out[i] = 1 where variant i is listed; all 1 where the variable is unset or empty;
 * only the default (out[0]) where the list names no variant of this family (it is another
 * family's list). A token that names no variant of any family raises, naming the variable. */
int ccfg_vk_tune_candidates(const char *const *names, int count, const char *const *known,
                            int nknown, int *out);

#endif /* CCFG_VK_TUNE_H */
