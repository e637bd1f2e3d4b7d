/* fuzz/tune_cache_fuzz.c — the Vulkan autotuner's saved cache (CCFG_VULKAN_TUNE_CACHE,
 * ccfg.profiling.load_tuning / save_tuning; csrc/vk_tune_file.c): the bytes are the file's text,
 * given to ccfg_vk_tune_parse as vk_tune.c's load and save give it a file they read. The parser
 * needs no device (this build has no Vulkan), so it is driven directly. Promises checked:
 *  - a refusal is CCFG_EINVAL (CCFG_ENOMEM when out of memory) with a message naming the
 *    argument and the file, and leaves nothing allocated in the result;
 *  - every accepted line is in range (candidates, choice, key fields, finite times >= 0) and
 *    writable by the writer (ccfg_vk_tune_entry_writable: whatever load takes, save can write);
 *  - an accepted file re-serialised by the writer (header + ccfg_vk_tune_write_entry per line)
 *    parses again to the same entries, and serialising that gives the same text (times are
 *    written with 9 significant digits: the first writing rounds them, the second changes
 *    nothing);
 *  - save's other way of keeping a line, its raw text plus a newline after the header, parses
 *    to the same entries too. */
#include "fuzz.h"
#include "vk_tune_file.h"

static const char PATH[] = "fuzz-input", WHAT[] = "path";

/* the two parses' line i hold the same decision (times compared by the caller, via the text) */
static void check_same(const ccfg_vk_tune_line *a, const ccfg_vk_tune_line *b, int exact_times)
{
    FZ_CHECK(!strcmp(a->f[0], b->f[0]), "device %s != %s", a->f[0], b->f[0]);
    FZ_CHECK(!strcmp(a->f[1], b->f[1]), "family '%s' != '%s'", a->f[1], b->f[1]);
    FZ_CHECK(a->nkey == b->nkey, "%d != %d key fields", a->nkey, b->nkey);
    for (int k = 0; k < a->nkey; k++) {
        FZ_CHECK(!strcmp(a->key_names[k], b->key_names[k]), "key name %d differs", k);
        FZ_CHECK(a->key[k] == b->key[k], "key %d: %lld != %lld", k, (long long)a->key[k],
                 (long long)b->key[k]);
    }
    FZ_CHECK(a->n == b->n, "%d != %d candidates", a->n, b->n);
    for (int c = 0; c < a->n; c++)
        FZ_CHECK(!strcmp(a->names[c], b->names[c]), "candidate %d differs", c);
    FZ_CHECK(a->choice == b->choice, "choice %d != %d", a->choice, b->choice);
    if (exact_times)
        FZ_CHECK(!memcmp(a->median, b->median, sizeof a->median) &&
                 !memcmp(a->ms, b->ms, sizeof a->ms), "the times differ");
}

/* header + every line through the writer: malloc'd text, *len */
static char *serialise(const ccfg_vk_tune_file *f, size_t *len)
{
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, len);
    FZ_CHECK(fp != NULL, "open_memstream");
    int bad = ccfg_vk_tune_write_header(fp);
    for (int i = 0; i < f->count; i++) {
        const char *keys[CCFG_VK_TUNE_KEY];
        ccfg_vk_tune_entry e;
        ccfg_vk_tune_line_entry(&f->lines[i], keys, &e);
        FZ_CHECK(ccfg_vk_tune_entry_writable(&e), "line %d was accepted but is not writable",
                 f->lines[i].lineno);
        bad |= ccfg_vk_tune_write_entry(fp, f->lines[i].f[0], &e);
    }
    FZ_CHECK(!bad && !fclose(fp), "writing to memory failed");
    return buf;
}

static void check_lines(const ccfg_vk_tune_file *f)
{
    int prev = 0;
    for (int i = 0; i < f->count; i++) {
        const ccfg_vk_tune_line *l = &f->lines[i];
        FZ_CHECK(l->lineno > prev, "line numbers not increasing");
        prev = l->lineno;
        FZ_CHECK(l->n >= 1 && l->n <= CCFG_VK_TUNE_MAX_CANDIDATES, "%d candidates", l->n);
        FZ_CHECK(l->choice >= 0 && l->choice < l->n, "choice %d of %d", l->choice, l->n);
        FZ_CHECK(l->nkey >= 0 && l->nkey <= CCFG_VK_TUNE_KEY, "%d key fields", l->nkey);
        FZ_CHECK(l->raw >= f->text && l->raw + l->raw_len <= f->text + strlen(f->text),
                 "the raw line is outside the text");
        FZ_CHECK(!memchr(l->raw, '\n', l->raw_len), "the raw line holds a newline");
        for (int c = 0; c < l->n; c++) {
            FZ_CHECK(isfinite(l->median[c]) && l->median[c] >= 0, "median %g", l->median[c]);
            for (int r = 0; r < CCFG_VK_TUNE_RUNS; r++)
                FZ_CHECK(isfinite(l->ms[c][r]) && l->ms[c][r] >= 0, "run %g", l->ms[c][r]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ccfg_vk_tune_file f, g, h;
    /* a file over the size load reads is refused before parsing: not this target's input */
    if (size > (1u << 20)) return 0;
    ccfg_clear_error();
    int status = ccfg_vk_tune_parse(&f, (const char *)data, size, PATH, WHAT);
    if (status) {
        fz_check_error(status);
        FZ_CHECK(status == CCFG_EINVAL || status == CCFG_ENOMEM, "status %d", status);
        const char *e = ccfg_last_error();
        FZ_CHECK(status == CCFG_ENOMEM || (!strncmp(e, "path: ", 6) && strstr(e, PATH)),
                 "the refusal does not name the argument and the file: %s", e);
        FZ_CHECK(!f.text && !f.copy && !f.lines && !f.count, "a refusal left a result");
        ccfg_vk_tune_file_free(&f);
        return 0;
    }
    check_lines(&f);

    /* the writer's text parses to the same entries, and is a fixed point */
    size_t len1 = 0, len2 = 0;
    char *text1 = serialise(&f, &len1);
    ccfg_clear_error();
    status = ccfg_vk_tune_parse(&g, text1, len1, PATH, WHAT);
    FZ_CHECK(status == CCFG_OK, "the writer's text of an accepted file is refused");
    check_lines(&g);
    FZ_CHECK(g.count == f.count, "%d lines re-parsed from %d", g.count, f.count);
    for (int i = 0; i < f.count; i++) check_same(&f.lines[i], &g.lines[i], 0);
    char *text2 = serialise(&g, &len2);
    FZ_CHECK(len1 == len2 && !memcmp(text1, text2, len1), "writing is not a fixed point");

    /* save's kept lines: the raw text of each, after the header */
    char *buf = NULL;
    size_t len3 = 0;
    FILE *fp = open_memstream(&buf, &len3);
    FZ_CHECK(fp != NULL, "open_memstream");
    int bad = ccfg_vk_tune_write_header(fp);
    for (int i = 0; i < f.count; i++) {
        bad |= fwrite(f.lines[i].raw, 1, f.lines[i].raw_len, fp) != f.lines[i].raw_len;
        bad |= fputc('\n', fp) == EOF;
    }
    FZ_CHECK(!bad && !fclose(fp), "writing to memory failed");
    status = ccfg_vk_tune_parse(&h, buf, len3, PATH, WHAT);
    FZ_CHECK(status == CCFG_OK, "the kept raw lines of an accepted file are refused");
    FZ_CHECK(h.count == f.count, "%d raw lines re-parsed from %d", h.count, f.count);
    for (int i = 0; i < f.count; i++) check_same(&f.lines[i], &h.lines[i], 1);

    free(buf);
    free(text1);
    free(text2);
    ccfg_vk_tune_file_free(&f);
    ccfg_vk_tune_file_free(&g);
    ccfg_vk_tune_file_free(&h);
    return 0;
}
