/* fuzz/unet_fuzz.c — the UNet entry points ccfg/unet.py reaches, on any config.
 *
 * A ccfg_unet_config is filled from the bytes (typical values most of the time, extremes and raw
 * bits otherwise: the C must hold whatever the Python loader lets through, and more), then
 *   ccfg_unet_param_count            (config validation and the parameter walk),
 *   ccfg_unet_create                 (a wrong count must be refused; the right one accepted),
 *   ccfg_unet_plan, twice            (sizes from the bytes: re-planning included),
 *   ccfg_unet_forward                (tiny models and inputs: labels, timesteps, conditions
 *                                     from the bytes, valid or not).
 * Sanitizers catch memory errors and undefined behaviour; FZ_CHECK the API's own promises (a
 * failure has a status and a message, a valid count creates a model). */
#include "fuzz.h"
#include "unet.h"

enum {
    MAX_CREATE_PARAMS = 1 << 18,    /* create a model when it needs at most this many floats */
    MAX_FORWARD_PARAMS = 1 << 14,   /* run it when this small ... */
    MAX_FORWARD_PIXELS = 128,       /* ... on batch * h * w at most this */
};
#define MAX_PLAN_FLOATS (32.0 * 1024 * 1024)

/* an upper bound of the floats ccfg_unet_plan allocates (generous: only to keep a run small) */
static double plan_estimate(const ccfg_unet_config *c, int64_t batch, int h, int w, int ctx_len)
{
    double m = c->in_channels > c->out_channels ? c->in_channels : c->out_channels;
    for (int l = 0; l < c->levels && l < CCFG_UNET_MAX_LEVELS; l++)
        if (2.0 * c->channels[l] > m) m = 2.0 * c->channels[l];
    if (c->time_embed_dim > m) m = c->time_embed_dim;
    if (c->cross_attention_dim > m) m = c->cross_attention_dim;
    const double px = (double)batch * h * w, hw = (double)h * w;
    const double skips = 2.0 + (double)c->levels * (c->layers_per_block + 1.0);
    return (64.0 + skips) * m * px + 2.0 * hw * (hw + ctx_len) + m * (double)batch * ctx_len * 4.0 +
           64.0 * m * w + 1024.0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    ccfg_unet_config c;
    memset(&c, 0, sizeof c);
    c.levels = fz_int(&in, 1, 4);
    c.in_channels = fz_int(&in, 1, 4);
    c.out_channels = fz_int(&in, 1, 4);
    for (int l = 0; l < CCFG_UNET_MAX_LEVELS; l++) {
        c.channels[l] = fz_int(&in, 1, 16);
        c.down_attention[l] = fz_int(&in, 0, 2);
        c.up_attention[l] = fz_int(&in, 0, 2);
        c.heads[l] = fz_int(&in, 1, 4);
        c.transformer_layers[l] = fz_int(&in, 1, 2);
    }
    c.layers_per_block = fz_int(&in, 1, 2);
    c.mid_block = fz_int(&in, 0, 1);
    c.mid_attention = fz_int(&in, 0, 2);
    c.mid_attention_groups = fz_int(&in, 0, 4);
    c.norm_groups = fz_int(&in, 1, 4);
    c.norm_eps = (float)fz_double(&in, 1e-6, 1e-3);
    c.head_dim = fz_int(&in, 0, 8);
    c.time_embed_dim = fz_int(&in, 1, 32);
    c.flip_sin_to_cos = fz_int(&in, 0, 1);
    c.freq_shift = (float)fz_double(&in, 0.0, 1.0);
    c.scale_shift = fz_int(&in, 0, 1);
    c.downsample_padding = fz_int(&in, 0, 1);
    c.center_input_sample = fz_int(&in, 0, 1);
    c.num_class_embeds = fz_int(&in, 0, 4);
    c.mid_block_scale_factor = (float)fz_double(&in, 0.5, 2.0);
    c.cross_attention_dim = fz_int(&in, 0, 8);

    ccfg_clear_error();
    const int64_t count = ccfg_unet_param_count(&c);
    FZ_CHECK(count >= 0, "negative parameter count %lld", (long long)count);
    if (count == 0) {
        fz_check_error(CCFG_EINVAL);
        return 0;
    }
    if (count > MAX_CREATE_PARAMS) return 0;

    float *params = malloc((size_t)count * sizeof(float));
    if (!params) return 0;
    fz_fill(params, count, (uint32_t)count, 0.05f);
    ccfg_unet *u = NULL;
    ccfg_clear_error();
    int status = ccfg_unet_create(&c, params, count - 1, NULL, &u);
    FZ_CHECK(status && !u, "a wrong parameter count was accepted");
    fz_check_error(status);
    status = ccfg_unet_create(&c, params, count, NULL, &u);
    free(params);       /* create copies */
    FZ_CHECK(!status || status == CCFG_ENOMEM, "a counted config was refused (%d)", status);
    if (status) return 0;

    /* plan twice (the second call re-plans or keeps the plan) */
    int h = 0, w = 0, ctx_len = 0;
    int64_t batch = 0;
    for (int k = 0; k < 2; k++) {
        batch = fz_int(&in, 1, 3);
        h = fz_int(&in, 1, 16);
        w = fz_int(&in, 1, 16);
        ctx_len = fz_int(&in, 0, 4);
        const int chunk = fz_int(&in, 0, 3);
        /* sizes outside what the UNet supports must be refused before anything is allocated;
         * supported ones are planned when the plan stays small (a plan is allocated at once) */
        const int unsupported = batch < 1 || h < 1 || w < 1 || ctx_len < 0 ||
                                (int64_t)h * w > CCFG_UNET_MAX_PIXELS ||
                                ctx_len > CCFG_UNET_MAX_TOKENS ||
                                (c.cross_attention_dim > 0) != (ctx_len > 0);
        if (!unsupported && plan_estimate(&c, batch, h, w, ctx_len) > MAX_PLAN_FLOATS) continue;
        ccfg_clear_error();
        status = ccfg_unet_plan(u, batch, h, w, ctx_len, chunk);
        if (unsupported) FZ_CHECK(status, "unsupported sizes planned: %lld x %d x %d, %d tokens",
                                  (long long)batch, h, w, ctx_len);
        if (status) fz_check_error(status);
        else FZ_CHECK(ccfg_unet_plan_bytes(u) > 0, "an empty plan");
    }

    /* forward on a tiny model */
    if (count <= MAX_FORWARD_PARAMS && batch >= 1 && batch <= 3 && h >= 1 && w >= 1 &&
        (int64_t)h * w * batch <= MAX_FORWARD_PIXELS && ctx_len >= 0 && ctx_len <= 8 &&
        plan_estimate(&c, batch, h, w, ctx_len) <= MAX_PLAN_FLOATS) {
        const int64_t nx = batch * c.in_channels * h * w, ny = batch * c.out_channels * h * w;
        const int D = c.cross_attention_dim;
        const int64_t nctx = D > 0 ? batch * ctx_len * (int64_t)D : 0;
        float *x = malloc((size_t)nx * sizeof(float)), *y = malloc((size_t)ny * sizeof(float));
        float *ctx = nctx ? malloc((size_t)nctx * sizeof(float)) : NULL;
        double t[3];
        int32_t labels[3];
        for (int b = 0; b < batch; b++) {
            t[b] = fz_double(&in, 0.0, 999.0);
            labels[b] = fz_int(&in, 0, c.num_class_embeds > 0 ? c.num_class_embeds - 1 : 0);
        }
        const int with_labels = fz_u8(&in) % 4 != 0;
        const int64_t ctx_batch = fz_u8(&in) % 2 ? batch : 1;
        if (x && y && (!nctx || ctx)) {
            fz_fill(x, nx, 7u, 1.0f);
            if (ctx) fz_fill(ctx, nctx, 11u, 1.0f);
            ccfg_clear_error();
            status = ccfg_unet_forward(u, batch, h, w, x, t, with_labels ? labels : NULL, ctx,
                                       ctx ? ctx_batch : 0, ctx ? ctx_len : 0, y);
            if (status) fz_check_error(status);
        }
        free(x);
        free(y);
        free(ctx);

        /* as a sampler model (ccfg_unet_model_init + eval, what ccfg.sample runs): conditions
         * mapped to classes or to token arrays, one shared or one per sample, rows in blocks of n */
        const int64_t n = 1 + fz_u8(&in) % 2, max_rows = n * (1 + fz_u8(&in) % 3);
        const int n_cond = fz_int(&in, 0, 2), null_class = fz_int(&in, -1, 3);
        int32_t class_of[2], ctx_count[2], rows_cond[6];
        int64_t arrays = 0;
        for (int k = 0; k < 2; k++) {
            class_of[k] = fz_int(&in, 0, 3);
            ctx_count[k] = fz_u8(&in) % 2 ? 1 : fz_int(&in, 1, 2);
            if (ctx_count[k] >= 1 && ctx_count[k] <= 2) arrays += ctx_count[k];
        }
        const int null_count = fz_u8(&in) % 2 ? 1 : fz_int(&in, 0, 2);
        const int with_null = fz_u8(&in) % 4 != 0;
        const int64_t per = D > 0 && ctx_len > 0 ? (int64_t)ctx_len * D : 0;
        float *contexts = per ? malloc((size_t)(arrays ? arrays : 1) * per * sizeof(float)) : NULL;
        float *null_ctx = per ? malloc((size_t)2 * per * sizeof(float)) : NULL;
        const int64_t dim = (int64_t)c.in_channels * h * w;
        float *xs = malloc((size_t)max_rows * dim * sizeof(float));
        float *ys = malloc((size_t)max_rows * dim * sizeof(float));
        if (n_cond >= 0 && n_cond <= 2 && xs && ys && (!per || (contexts && null_ctx)) &&
            max_rows * (int64_t)h * w <= 3 * MAX_FORWARD_PIXELS) {
            if (per) {
                fz_fill(contexts, (arrays ? arrays : 1) * per, 13u, 1.0f);
                fz_fill(null_ctx, 2 * per, 17u, 1.0f);
            }
            fz_fill(xs, max_rows * dim, 19u, 1.0f);
            ccfg_unet_model m;
            ccfg_clear_error();
            status = ccfg_unet_model_init(&m, u, h, w, null_class, n_cond, class_of,
                                          per ? contexts : NULL, ctx_count,
                                          per && with_null ? null_ctx : NULL, null_count,
                                          per ? ctx_len : 0, n, max_rows);
            if (status) {
                fz_check_error(status);
            } else {
                const int64_t rows = n * (1 + fz_u8(&in) % (max_rows / n));
                for (int64_t r = 0; r < rows; r++) rows_cond[r] = fz_int(&in, -1, 1);
                ccfg_clear_error();
                status = ccfg_unet_model_eval(&m, ccfg_backend_cpu(), rows, dim, xs,
                                              fz_double(&in, 0.0, 999.0), 0.5, rows_cond, ys);
                if (status) fz_check_error(status);
                ccfg_unet_model_free(&m);
            }
        }
        free(contexts);
        free(null_ctx);
        free(xs);
        free(ys);
    }
    ccfg_unet_free(u);
    return 0;
}
