/* fuzz/rules_fuzz.c — the guidance rule registry as csrc/python/py_guide.c drives it, with any
 * parameter names and values: a rule by name (registered or not), parameters set by name
 * (known or not; any double, NaN and infinities included), then ccfg_guide over a few steps on
 * small arrays that may hold NaN/Inf/huge values, with the rule's state (matching or not), and
 * ccfg_guide_observe for a rule that learns from transitions. The CPU backend throughout. */
#include "fuzz.h"
#include "rules/rule.h"

enum { MAX_ELEMS = 4096, MAX_NEG = 6 };

static const char *const common[] = {"scale", "negative_scale", "window_start", "window_stop"};

/* a NUL-terminated name of up to 15 bytes from the input */
static void fz_name(fz_in *in, char *out)
{
    const int len = fz_u8(in) % 16;
    for (int i = 0; i < len; i++) out[i] = (char)fz_u8(in);
    out[len] = '\0';
}

/* small values, with NaN, infinities and huge values where the bytes say */
static void fill(fz_in *in, float *x, int64_t count, uint32_t seed)
{
    static const float odd[] = {NAN, INFINITY, -INFINITY, 3e38f, -3e38f, 1e-45f, 0.0f, 1e20f};
    fz_fill(x, count, seed, 2.0f);
    const int k = fz_u8(in) % 4;
    for (int i = 0; i < k && count > 0; i++) {
        const uint32_t at = fz_u32(in);
        x[at % (uint64_t)count] = odd[fz_u8(in) % (sizeof odd / sizeof odd[0])];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    const ccfg_rule_impl *const *list = ccfg_rule_list();
    int n_rules = 0;
    while (list[n_rules]) n_rules++;
    const ccfg_rule_impl *impl;
    if (fz_u8(&in) < 240) {
        impl = list[fz_u8(&in) % n_rules];
    } else {
        char name[16];
        fz_name(&in, name);
        impl = ccfg_rule_find(name);
        if (!impl) return 0;
    }
    FZ_CHECK(ccfg_rule_find(ccfg_rule_name(impl)) == impl, "the registry lost %s",
             ccfg_rule_name(impl));

    ccfg_rule rule;
    ccfg_clear_error();
    int status = ccfg_rule_init(&rule, impl);
    if (status) {
        fz_check_error(status);
        return 0;
    }
    const char *const *own = ccfg_rule_param_names(impl);
    int n_own = 0;
    while (own[n_own]) n_own++;
    /* every parameter set (as the bindings require), then a few more sets by any name */
    for (int i = 0; i < 4; i++) ccfg_rule_set(&rule, common[i], fz_double(&in, 0.0, 1.0));
    for (int i = 0; i < n_own; i++) ccfg_rule_set(&rule, own[i], fz_double(&in, 0.0, 10.0));
    const int extra = fz_u8(&in) % 6;
    for (int i = 0; i < extra; i++) {
        char name[16];
        const uint8_t sel = fz_u8(&in);
        const char *key = name;
        if (sel < 100) key = common[sel % 4];
        else if (sel < 200 && n_own) key = own[sel % n_own];
        else fz_name(&in, name);
        int known = 0;
        for (int j = 0; j < 4; j++) known |= !strcmp(key, common[j]);
        for (int j = 0; j < n_own; j++) known |= !strcmp(key, own[j]);
        ccfg_clear_error();
        status = ccfg_rule_set(&rule, key, fz_double(&in, -10.0, 10.0));
        FZ_CHECK((status == 0) == known, "parameter %s of %s: status %d", key, ccfg_rule_name(impl),
                 status);
        if (status) fz_check_error(status);
    }

    /* sizes: typical ones run; others must be refused (or are too big to run here) */
    const int64_t n = fz_int(&in, 1, 4), dim = fz_int(&in, 1, 16);
    const int n_neg = fz_int(&in, 0, 3), steps = fz_int(&in, 1, 4);
    const int num_steps = fz_int(&in, 0, 8);
    const ccfg_backend *be = ccfg_backend_cpu();
    if (n < 0 || dim < 0 || n_neg < 0 || n_neg > CCFG_MAX_RULE_NEGATIVES) {
        float dummy[1] = {0};
        const float *negs[1] = {dummy};
        ccfg_clear_error();
        status = ccfg_guide(be, &rule, NULL, n, dim, dummy, NULL, n_neg, negs, 0, num_steps, 1,
                            dummy);
        FZ_CHECK(status, "ccfg_guide accepted n=%lld dim=%lld negatives=%d", (long long)n,
                 (long long)dim, n_neg);
        fz_check_error(status);
        return 0;
    }
    if (n > MAX_ELEMS || dim > MAX_ELEMS || n * dim > MAX_ELEMS || n_neg > MAX_NEG || steps < 1 || steps > 16) return 0;

    const int64_t count = n * dim;
    const size_t bytes = (size_t)(count ? count : 1) * sizeof(float);
    float *u = malloc(bytes), *p = malloc(bytes), *out = malloc(bytes), *xt = malloc(bytes),
          *xp = malloc(bytes);
    float *neg[MAX_NEG] = {0};
    int ok = u && p && out && xt && xp;
    for (int j = 0; j < n_neg; j++) ok = ok && (neg[j] = malloc(bytes));
    if (!ok) goto done;
    fill(&in, u, count, 1u);
    fill(&in, p, count, 2u);
    fill(&in, xt, count, 4u);
    fill(&in, xp, count, 5u);
    for (int j = 0; j < n_neg; j++) fill(&in, neg[j], count, 10u + j);
    const int with_positive = fz_u8(&in) % 4 != 0;

    ccfg_guide_state st, *sp = NULL;
    memset(&st, 0, sizeof st);
    if (ccfg_rule_stateful(&rule)) {
        /* the state of this batch, or (sometimes) of another one, which must be refused */
        const int other = fz_u8(&in) % 8 == 0;
        ccfg_clear_error();
        status = ccfg_guide_state_init(&st, be, &rule, other ? n + 1 : n, dim, n_neg);
        if (status) {
            fz_check_error(status);
            goto done;
        }
        sp = &st;
    }
    for (int s = 0; s < steps; s++) {
        const int step = fz_u8(&in) % 2 ? s : fz_int(&in, 0, 8);
        ccfg_rule_negative_active(&rule, step, num_steps);
        ccfg_rule_needs_null(&rule, with_positive, n_neg);
        ccfg_clear_error();
        status = ccfg_guide(be, &rule, sp, n, dim, u, with_positive ? p : NULL, n_neg,
                            (const float *const *)neg, step, num_steps, fz_u8(&in) % 4 != 0, out);
        if (status) {
            fz_check_error(status);
            break;
        }
        if (ccfg_rule_observes(&rule)) {
            const double ab = fz_double(&in, 0.0, 1.0), abp = fz_double(&in, 0.0, 1.0);
            ccfg_clear_error();
            status = ccfg_guide_observe(be, &rule, sp, n, dim, xt, xp, u, n_neg,
                                        (const float *const *)neg, ab, abp,
                                        fz_double(&in, 0.0, 1.0));
            if (status) fz_check_error(status);
        }
    }
    if (sp) ccfg_guide_state_free(sp);
done:
    free(u);
    free(p);
    free(out);
    free(xt);
    free(xp);
    for (int j = 0; j < MAX_NEG; j++) free(neg[j]);
    return 0;
}
