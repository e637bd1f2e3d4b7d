/* vk_tune_file.c — the saved tuning cache's text (vk_tune_file.h): parsing and writing, no
 * device. vk_tune.c reads and writes the file (under its lock) with these; the fuzz target
 * fuzz/tune_cache_fuzz.c drives them directly. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vk_tune_file.h"

static int name_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z') ||
              (s[n] >= '0' && s[n] <= '9') || strchr("_.+-", s[n])))
            return 0;
    return n > 0 && n < CCFG_VK_TUNE_NAME_MAX;
}

static int family_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (s[n] < 0x20 || s[n] > 0x7e) return 0;
    return n > 0 && n < CCFG_VK_TUNE_NAME_MAX;
}

static int device_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') || s[n] == ':'))
            return 0;
    return n > 0 && n < CCFG_VK_TUNE_ID_LEN;
}

/* split s at sep into at most max pieces (in place): the count, or -1 when there are more */
static int split(char *s, char sep, char **out, int max)
{
    int n = 0;
    for (char *p = s;; n++) {
        if (n == max) return -1;
        out[n] = p;
        char *e = strchr(p, sep);
        if (!e) return n + 1;
        *e = 0;
        p = e + 1;
    }
}

static int parse_i64(const char *s, int64_t *v)
{
    char *end = NULL;
    errno = 0;
    const long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno) return 0;
    *v = (int64_t)x;
    return 1;
}

static int parse_ms(const char *s, double *v)
{
    char *end = NULL;
    errno = 0;
    const double x = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(x) || x < 0) return 0;
    *v = x;
    return 1;
}

/* one entry line (in place); the reason it is malformed, or NULL */
static const char *parse_line(char *s, ccfg_vk_tune_line *l)
{
    char *part[CCFG_VK_TUNE_MAX_CANDIDATES + 1];
    if (split(s, '\t', l->f, 6) != 6) return "not 6 tab-separated fields";
    if (!device_ok(l->f[0])) return "the device is not hex digits and colons";
    if (!family_ok(l->f[1])) return "the family is empty, too long or not printable";
    if (!strcmp(l->f[2], "-")) {
        l->nkey = 0;
    } else {
        char *kv[CCFG_VK_TUNE_KEY];
        if ((l->nkey = split(l->f[2], ',', kv, CCFG_VK_TUNE_KEY)) < 0)
            return "more key fields than a key holds";
        for (int i = 0; i < l->nkey; i++) {
            char *eq = strchr(kv[i], '=');
            if (!eq) return "a key field without '='";
            *eq = 0;
            l->key_names[i] = kv[i];
            if (!name_ok(kv[i]) || !parse_i64(eq + 1, &l->key[i]))
                return "a key field is not name=integer";
        }
    }
    if ((l->n = split(l->f[3], ',', l->names, CCFG_VK_TUNE_MAX_CANDIDATES)) < 0)
        return "more candidates than the tuner times";
    l->choice = -1;
    for (int c = 0; c < l->n; c++) {
        if (!name_ok(l->names[c])) return "a candidate's name is empty or not [A-Za-z0-9_.+-]";
        for (int j = 0; j < c; j++)
            if (!strcmp(l->names[j], l->names[c])) return "a candidate is listed twice";
        if (!strcmp(l->names[c], l->f[4])) l->choice = c;
    }
    if (l->choice < 0) return "the choice is not one of the candidates";
    if (split(l->f[5], ',', part, CCFG_VK_TUNE_MAX_CANDIDATES + 1) != l->n)
        return "not one group of times per candidate";
    for (int c = 0; c < l->n; c++) {
        char *t[CCFG_VK_TUNE_RUNS + 2];
        if (split(part[c], '/', t, CCFG_VK_TUNE_RUNS + 2) != CCFG_VK_TUNE_RUNS + 1)
            return "a candidate's times are not median/run/run/run";
        if (!parse_ms(t[0], &l->median[c])) return "a median is not a number >= 0";
        for (int r = 0; r < CCFG_VK_TUNE_RUNS; r++)
            if (!parse_ms(t[r + 1], &l->ms[c][r])) return "a run's time is not a number >= 0";
    }
    return NULL;
}

void ccfg_vk_tune_file_free(ccfg_vk_tune_file *f)
{
    free(f->text);
    free(f->copy);
    free(f->lines);
    memset(f, 0, sizeof *f);
}

int ccfg_vk_tune_parse(ccfg_vk_tune_file *f, const char *text, size_t len, const char *path,
                       const char *what)
{
    int cap = 0, header = 0, lineno = 0, status = CCFG_OK;
    memset(f, 0, sizeof *f);
    if (len && memchr(text, 0, len))
        return ccfg_fail(CCFG_EINVAL, "%s: the tuning cache '%s' holds a NUL byte (not a text "
                         "file)", what, path);
    /* the lines point into both copies: raw into text (rewritten as it was), fields into copy */
    if (!(f->text = malloc(len + 1)) || !(f->copy = malloc(len + 1))) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory parsing the tuning cache");
        goto fail;
    }
    memcpy(f->text, text, len);
    f->text[len] = 0;
    memcpy(f->copy, text, len);
    f->copy[len] = 0;
    for (size_t at = 0; at < len;) {
        char *s = f->copy + at, *nl = strchr(s, '\n');
        const size_t n = nl ? (size_t)(nl - s) : strlen(s);
        const char *raw = f->text + at;
        at += n + (nl ? 1 : 0);
        lineno++;
        s[n] = 0;
        if (n && s[n - 1] == '\r') s[n - 1] = 0;
        if (!*s || *s == '#') continue;
        if (!header) {
            if (strcmp(s, CCFG_VK_TUNE_HEADER)) {
                status = ccfg_fail(CCFG_EINVAL, "%s: '%s' is not a ccfg tuning cache of this "
                                   "version (its first line is not '" CCFG_VK_TUNE_HEADER "'): "
                                   "delete it or name another file", what, path);
                goto fail;
            }
            header = 1;
            continue;
        }
        if (f->count == cap) {
            /* a line is at least 11 bytes and the text at most 64 MiB: cap stays an int */
            cap = cap ? 2 * cap : 64;
            ccfg_vk_tune_line *grown = realloc(f->lines, (size_t)cap * sizeof *grown);
            if (!grown) {
                status = ccfg_fail(CCFG_ENOMEM, "out of memory parsing the tuning cache");
                goto fail;
            }
            f->lines = grown;
        }
        ccfg_vk_tune_line *l = &f->lines[f->count];
        memset(l, 0, sizeof *l);
        l->raw = raw;
        l->raw_len = n;
        l->lineno = lineno;
        const char *why = parse_line(s, l);
        if (why) {
            status = ccfg_fail(CCFG_EINVAL, "%s: the tuning cache '%s' is malformed at line %d: "
                               "%s", what, path, lineno, why);
            goto fail;
        }
        f->count++;
    }
    return CCFG_OK;
fail:
    ccfg_vk_tune_file_free(f);
    return status;
}

void ccfg_vk_tune_line_entry(const ccfg_vk_tune_line *l, const char **keys, ccfg_vk_tune_entry *e)
{
    memset(e, 0, sizeof *e);
    e->family = l->f[1];
    for (int k = 0; k < l->nkey; k++) keys[k] = l->key_names[k];
    e->key_names = keys;
    e->nkey = l->nkey;
    memcpy(e->key, l->key, (size_t)l->nkey * sizeof e->key[0]);
    e->n = l->n;
    for (int c = 0; c < l->n; c++) e->names[c] = l->names[c];
    memcpy(e->median_ms, l->median, sizeof l->median);
    memcpy(e->ms, l->ms, sizeof l->ms);
    e->choice = l->choice;
    e->choice_id = -1;
    e->loaded = 1;
}

int ccfg_vk_tune_entry_writable(const ccfg_vk_tune_entry *e)
{
    if (!e->family || !family_ok(e->family)) return 0;
    if (e->nkey < 0 || e->nkey > CCFG_VK_TUNE_KEY || e->n < 1 ||
        e->n > CCFG_VK_TUNE_MAX_CANDIDATES || e->choice < 0 || e->choice >= e->n)
        return 0;
    for (int k = 0; k < e->nkey; k++)
        if (!name_ok(e->key_names[k])) return 0;
    for (int c = 0; c < e->n; c++)
        if (!name_ok(e->names[c])) return 0;
    for (int c = 0; c < e->n; c++) {
        if (!isfinite(e->median_ms[c]) || e->median_ms[c] < 0) return 0;
        for (int r = 0; r < CCFG_VK_TUNE_RUNS; r++)
            if (!isfinite(e->ms[c][r]) || e->ms[c][r] < 0) return 0;
    }
    return 1;
}

int ccfg_vk_tune_write_header(FILE *fp)
{
    return fputs(CCFG_VK_TUNE_HEADER "\n# ccfg's Vulkan autotuner (CCFG_VULKAN_TUNE_CACHE, "
                 "ccfg.profiling.save_tuning): one decision per line,\n# device family key "
                 "candidates choice times(median/run/run/run ms), tab-separated\n", fp) < 0;
}

int ccfg_vk_tune_write_entry(FILE *fp, const char *id, const ccfg_vk_tune_entry *e)
{
    int bad = fprintf(fp, "%s\t%s\t", id, e->family) < 0;
    for (int k = 0; k < e->nkey; k++)
        bad |= fprintf(fp, "%s%s=%lld", k ? "," : "", e->key_names[k], (long long)e->key[k]) < 0;
    if (!e->nkey) bad |= fputs("-", fp) < 0;
    bad |= fputc('\t', fp) == EOF;
    for (int c = 0; c < e->n; c++) bad |= fprintf(fp, "%s%s", c ? "," : "", e->names[c]) < 0;
    bad |= fprintf(fp, "\t%s\t", e->names[e->choice]) < 0;
    for (int c = 0; c < e->n; c++) {
        bad |= fprintf(fp, "%s%.9g", c ? "," : "", e->median_ms[c]) < 0;
        for (int r = 0; r < CCFG_VK_TUNE_RUNS; r++) bad |= fprintf(fp, "/%.9g", e->ms[c][r]) < 0;
    }
    bad |= fputc('\n', fp) == EOF;
    return bad;
}
