/* vk_tune_file.h — the text of the autotuner's saved cache (CCFG_VULKAN_TUNE_CACHE,
 * ccfg.profiling.save_tuning / load_tuning): parsing and writing, with no device, so the stub
 * build and the fuzz target (fuzz/tune_cache_fuzz.c) reach the same code as vk_tune.c's load and
 * save. Internal to csrc/.
 *
 * Text, one decision per line, so a researcher can read it and diff it:
 *     ccfg-tune-cache 1
 *     # comments
 *     DEVICE <tab> FAMILY <tab> KEY <tab> CANDIDATES <tab> CHOICE <tab> TIMES
 * DEVICE  vendor:device:driverVersion:pipelineCacheUUID:shader hash (hex; ccfg_vk_tune_identity)
 * FAMILY  e.g. "conv2d fp32" (printable, no tab)
 * KEY     name=value,... (integers; "-" for none)
 * CANDIDATES  the names timed, comma-separated, in the order the caller lists them
 * CHOICE  one of them
 * TIMES   per candidate median/run/run/run in ms, comma-separated, in CANDIDATES' order
 * A decision answers (DEVICE, FAMILY, KEY, CANDIDATES): only this device's lines apply, and only
 * to that exact question. The format's number changes with what a line holds (e.g. the number
 * of timed runs); a file of another format is refused, never half-read. */
#ifndef CCFG_VK_TUNE_FILE_H
#define CCFG_VK_TUNE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vk_tune.h"

#define CCFG_VK_TUNE_HEADER "ccfg-tune-cache 1"
enum { CCFG_VK_TUNE_FILE_MAX = 64 << 20, CCFG_VK_TUNE_NAME_MAX = 64 };

/* one decision line, its fields pointing into the parse copy (ccfg_vk_tune_file.copy) */
typedef struct {
    char *f[6];                         /* the fields, NUL-terminated in the parse copy */
    const char *raw;                    /* the line in the file's text (for rewriting) */
    size_t raw_len;
    int lineno;                         /* 1-based, in the file */
    int nkey, n, choice;
    char *key_names[CCFG_VK_TUNE_KEY];
    int64_t key[CCFG_VK_TUNE_KEY];
    char *names[CCFG_VK_TUNE_MAX_CANDIDATES];
    double median[CCFG_VK_TUNE_MAX_CANDIDATES];
    double ms[CCFG_VK_TUNE_MAX_CANDIDATES][CCFG_VK_TUNE_RUNS];
} ccfg_vk_tune_line;

typedef struct {
    char *text;                         /* the file's text (a copy, NUL-terminated) */
    char *copy;                         /* the same, split into fields */
    ccfg_vk_tune_line *lines;
    int count;
} ccfg_vk_tune_file;

/* Parse the whole text (len bytes, copied into f; f zeroed first): the header first (blank lines
 * and # comments anywhere; an empty text has no lines), then one decision per line. A NUL byte,
 * another header or a malformed line fails (CCFG_EINVAL) with a message naming `what`, `path`
 * and, for a line, its number and what is wrong with it; f then holds nothing. Free with
 * ccfg_vk_tune_file_free (also after a failure: harmless). */
int ccfg_vk_tune_parse(ccfg_vk_tune_file *f, const char *text, size_t len, const char *path,
                       const char *what);
void ccfg_vk_tune_file_free(ccfg_vk_tune_file *f);

/* A parsed line as an entry (family, key names and candidate names point into the line, so into
 * f; keys: the entry's key_names array, CCFG_VK_TUNE_KEY of them, the caller's). loaded = 1,
 * choice_id = -1. */
void ccfg_vk_tune_line_entry(const ccfg_vk_tune_line *l, const char **keys,
                             ccfg_vk_tune_entry *e);

/* Writing: the header (and its two comment lines), and an entry as one line for device `id`.
 * An entry the format cannot hold (names outside their alphabet, times not finite and >= 0) is
 * not writable: callers skip it. Both return nonzero when a write failed. */
int ccfg_vk_tune_entry_writable(const ccfg_vk_tune_entry *e);
int ccfg_vk_tune_write_header(FILE *fp);
int ccfg_vk_tune_write_entry(FILE *fp, const char *id, const ccfg_vk_tune_entry *e);

#endif /* CCFG_VK_TUNE_FILE_H */
