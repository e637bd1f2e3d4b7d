/* fuzz/classifier_fuzz.c — the classifier entry points ccfg/classifier.py reaches, on any layer
 * chain: ccfg_classifier_param_count, ccfg_classifier_create (a wrong count refused, the right one
 * accepted), ccfg_classifier_forward on a few samples when the model is small. Layers and the
 * input shape come from the bytes (typical values most of the time, extremes and raw bits
 * otherwise). */
#include "classifier.h"
#include "fuzz.h"

enum {
    MAX_LAYERS = 12,
    MAX_CREATE_PARAMS = 1 << 18,
    MAX_FORWARD_FLOATS = 1 << 16,   /* widest activation x batch when run */
    MAX_FORWARD_WORK = 1 << 22,     /* and about this many multiply-adds */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    ccfg_cls_layer layers[MAX_LAYERS];
    memset(layers, 0, sizeof layers);
    const int n = fz_int(&in, 1, MAX_LAYERS);
    const int cin = fz_int(&in, 1, 3), h = fz_int(&in, 1, 12), w = fz_int(&in, 1, 12);
    const int features = fz_int(&in, -1, MAX_LAYERS - 1);
    /* a plausible chain: channels follow from layer to layer unless the bytes say otherwise */
    int c = cin;
    for (int i = 0; i < MAX_LAYERS; i++) {
        ccfg_cls_layer *l = &layers[i];
        l->type = fz_int(&in, 0, 4);
        l->in_channels = fz_u8(&in) < 240 ? c : fz_int(&in, 1, 8);
        l->out_channels = l->type == CCFG_CLS_CONV2D || l->type == CCFG_CLS_LINEAR
                              ? fz_int(&in, 1, 8) : l->in_channels;
        l->kernel = fz_int(&in, 1, 3);
        l->stride = fz_int(&in, 1, 2);
        l->padding = fz_int(&in, 0, 1);
        l->groups = fz_int(&in, 1, 4);
        l->eps = (float)fz_double(&in, 1e-6, 1e-3);
        c = l->out_channels;
    }
    if (n < 0 || n > MAX_LAYERS) {      /* the layer count itself is checked by the core */
        ccfg_clear_error();
        FZ_CHECK(ccfg_classifier_param_count(layers, n < 0 ? n : 0, cin, h, w) == 0,
                 "a chain of %d layers was counted", n);
        fz_check_error(CCFG_EINVAL);
        return 0;
    }

    if (getenv("FUZZ_VERBOSE")) {      /* replaying one input: say what it is */
        fprintf(stderr, "input (%d, %d, %d), features_layer %d\n", cin, h, w, features);
        for (int i = 0; i < n; i++)
            fprintf(stderr, "layer %d: type %d %d->%d k%d s%d p%d groups %d eps %g\n", i,
                    layers[i].type, layers[i].in_channels, layers[i].out_channels,
                    layers[i].kernel, layers[i].stride, layers[i].padding, layers[i].groups,
                    (double)layers[i].eps);
    }
    ccfg_clear_error();
    const int64_t count = ccfg_classifier_param_count(layers, n, cin, h, w);
    FZ_CHECK(count >= 0, "negative parameter count %lld", (long long)count);
    /* 0 with a message: invalid; 0 without one: a valid chain of no parameters (a mean alone) */
    if (count == 0 && ccfg_last_error()[0]) return 0;
    if (count > MAX_CREATE_PARAMS) return 0;
    float *params = malloc((size_t)(count ? count : 1) * sizeof(float));
    if (!params) return 0;
    fz_fill(params, count, (uint32_t)count, 0.1f);
    ccfg_classifier *m = NULL;
    ccfg_clear_error();
    int status = ccfg_classifier_create(layers, n, cin, h, w, features, params, count + 1, &m);
    FZ_CHECK(status && !m, "a wrong parameter count was accepted");
    fz_check_error(status);
    status = ccfg_classifier_create(layers, n, cin, h, w, features, params, count, &m);
    free(params);
    if (status) {       /* only features_layer is checked beyond the count */
        fz_check_error(status);
        return 0;
    }

    const int batch = fz_int(&in, 1, 3);
    /* the widest activation, following the (valid) chain in doubles */
    double widest = (double)cin * h * w, hh = h, ww = w, ch = cin, work = 0.0;
    /* the convolutions' scratch needs no gate of its own: ccfg_nn_conv2d_scratch sizes each
     * layer for its input (linear in its size; a short, wide input once asked for the Winograd
     * planes of a w x w image, GiBs: fuzz/corpus/classifier/regress-oom-wide-conv-scratch), so
     * the activations and the work bound it */
    for (int i = 0; i < n; i++) {
        const ccfg_cls_layer *l = &layers[i];
        if (l->type == CCFG_CLS_CONV2D) {
            hh = floor((hh + 2.0 * l->padding - l->kernel) / l->stride) + 1;
            ww = floor((ww + 2.0 * l->padding - l->kernel) / l->stride) + 1;
            /* im2col and the GEMM: a big padding on a small input costs far more than its
             * output suggests */
            work += ch * l->kernel * l->kernel * hh * ww * (l->out_channels + 1.0);
            ch = l->out_channels;
        } else if (l->type == CCFG_CLS_SPATIAL_MEAN) {
            hh = ww = 1;
        } else if (l->type == CCFG_CLS_LINEAR) {
            ch = l->out_channels;
        }
        if (ch * hh * ww > widest) widest = ch * hh * ww;
    }
    if (batch >= 1 && batch <= 3 && widest * batch <= MAX_FORWARD_FLOATS &&
        work * batch <= MAX_FORWARD_WORK) {
        const int outs = ccfg_classifier_outputs(m), feats = ccfg_classifier_features(m);
        float *x = malloc((size_t)batch * cin * h * w * sizeof(float));
        float *logits = malloc((size_t)batch * outs * sizeof(float));
        float *f = feats ? malloc((size_t)batch * feats * sizeof(float)) : NULL;
        if (x && logits && (!feats || f)) {
            fz_fill(x, (int64_t)batch * cin * h * w, 3u, 1.0f);
            ccfg_clear_error();
            status = ccfg_classifier_forward(m, batch, x, logits, f);
            if (status) fz_check_error(status);
        }
        free(x);
        free(logits);
        free(f);
    }
    ccfg_classifier_free(m);
    return 0;
}
