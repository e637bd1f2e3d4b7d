/* classifier.c — the evaluation classifier (a sequential CNN) over the nn.h ops.
 *
 * Activations are CNHW like the UNet's (nn.h), two ping-pong buffers sized for the widest layer
 * plus the convolution scratch, planned once per chunk size. Every nn.h call goes through the
 * small op_* wrappers below, so a change of the op table's calling convention is edited there. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ccfg.h"
#include "classifier.h"

/* samples per pass: bounds the activations (32 channels of 32x32 at 256 samples = 32 MiB) */
enum { CLS_MAX_CHUNK = 256 };
/* bounds that keep every size and count far below int64 (and h * w below int) overflow, whatever
 * a config says: channels and features, kernel/stride/padding, pixels of every activation */
enum { CLS_MAX_WIDTH = 1 << 16, CLS_MAX_KERNEL = 1 << 10, CLS_MAX_PIXELS = 1 << 24 };

struct ccfg_classifier {
    const ccfg_nn_ops *ops;
    ccfg_cls_layer *layers;
    int n_layers, in_c, h, w, features_layer, outputs, feature_width;
    const float **weight, **bias;       /* per layer, into params (NULL where a layer has none) */
    float *params;
    /* the plan: for `planned` samples per chunk */
    int64_t planned, act_len, scratch_len;
    float *arena, *act[2], *scratch;
};

/* ---- the op table, in one place (CPU backend: NULL stands for ccfg_backend_cpu(), see nn.h) ---- */
static int op_conv2d(const ccfg_nn_ops *ops, int b, int cin, int h, int w, const float *x, int cout,
                     int k, int s, int pad, const float *wt, const float *bias, float *y,
                     float *scratch, int64_t scratch_len)
{
    return ops->conv2d(NULL, b, cin, h, w, x, cout, k, s, pad, pad, wt, bias, 0, y, scratch,
                       scratch_len);
}

static int op_group_norm(const ccfg_nn_ops *ops, int b, int c, int hw, int groups, float eps,
                         const float *gamma, const float *beta, int silu, float *x)
{
    return ops->group_norm(NULL, b, c, hw, groups, eps, x, NULL, gamma, beta, NULL, silu, x);
}

static int op_silu(const ccfg_nn_ops *ops, int64_t count, float *x)
{
    return ops->silu(NULL, count, x, x);
}

static int op_linear(const ccfg_nn_ops *ops, int rows, int in, int out, const float *x,
                     const float *wt, const float *bias, float *y)
{
    return ops->linear(NULL, rows, in, out, x, wt, bias, 0, y, NULL);
}

static int op_nchw_to_cnhw(const ccfg_nn_ops *ops, int b, int c, int hw, const float *x, float *y)
{
    return ops->nchw_to_cnhw(NULL, b, c, hw, x, 1.0f, 0.0f, y);
}

/* not in the op table: the mean over pixels, CNHW (c, b, hw) -> row-major (b, c), as the linear
 * layers after it want their rows */
static void spatial_mean(int b, int c, int hw, const float *x, float *y)
{
    for (int ch = 0; ch < c; ch++)
        for (int s = 0; s < b; s++) {
            const float *p = x + ((int64_t)ch * b + s) * hw;
            double acc = 0.0;
            for (int i = 0; i < hw; i++) acc += p[i];
            y[(int64_t)s * c + ch] = (float)(acc / hw);
        }
}

/* ---- the shape walk: checks the chain, counts parameters, finds the widest activation ---- */
typedef struct {
    int64_t params;
    int64_t widest;         /* floats per sample of the largest tensor (input included) */
    int64_t conv_scratch;   /* the largest conv2d needs, for `threads` threads */
    int outputs, feature_width;
} walk_result;

static int walk(const ccfg_cls_layer *L, int n, int c, int h, int w, int features_layer,
                int threads, walk_result *r)
{
    memset(r, 0, sizeof *r);
    if (n < 1 || n > 1024) return ccfg_fail(CCFG_EINVAL, "classifier: %d layers (1 to 1024)", n);
    if (c < 1 || h < 1 || w < 1 || c > CLS_MAX_WIDTH || (int64_t)h * w > CLS_MAX_PIXELS)
        return ccfg_fail(CCFG_EINVAL, "classifier: input (%d, %d, %d) must be positive, with at "
                         "most %d channels and %d pixels", c, h, w, CLS_MAX_WIDTH, CLS_MAX_PIXELS);
    if (features_layer < -1 || features_layer >= n)
        return ccfg_fail(CCFG_EINVAL, "classifier: features_layer %d is not a layer index",
                         features_layer);
    int flat = 0;
    r->widest = (int64_t)c * h * w;
    for (int i = 0; i < n; i++) {
        const ccfg_cls_layer *l = &L[i];
        switch (l->type) {
        case CCFG_CLS_CONV2D: {
            if (flat)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: conv2d after the spatial "
                                 "mean", i);
            if (l->in_channels != c || l->out_channels < 1 || l->kernel < 1 || l->stride < 1 ||
                l->padding < 0 || l->out_channels > CLS_MAX_WIDTH || l->kernel > CLS_MAX_KERNEL ||
                l->stride > CLS_MAX_KERNEL || l->padding > CLS_MAX_KERNEL)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: conv2d %d->%d k%d s%d p%d on "
                                 "%d channels (at most %d channels; kernel, stride, padding at "
                                 "most %d)", i, l->in_channels, l->out_channels, l->kernel,
                                 l->stride, l->padding, c, CLS_MAX_WIDTH, CLS_MAX_KERNEL);
            if (h + 2 * l->padding < l->kernel || w + 2 * l->padding < l->kernel)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: kernel %d larger than the "
                                 "padded %dx%d input", i, l->kernel, h, w);
            const int ho = (h + 2 * l->padding - l->kernel) / l->stride + 1;
            const int wo = (w + 2 * l->padding - l->kernel) / l->stride + 1;
            if ((int64_t)ho * wo > CLS_MAX_PIXELS)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: a %dx%d output is more than "
                                 "the %d pixels supported", i, ho, wo, CLS_MAX_PIXELS);
            /* for this input's h x w (the weights are not packed: op_conv2d) */
            const int64_t s = ccfg_nn_conv2d_scratch(c, l->out_channels, h, w, l->kernel,
                                                     l->stride, l->padding, l->padding, 0, threads);
            if (s > r->conv_scratch) r->conv_scratch = s;
            r->params += (int64_t)l->out_channels * c * l->kernel * l->kernel + l->out_channels;
            c = l->out_channels;
            h = ho;
            w = wo;
            break;
        }
        case CCFG_CLS_GROUP_NORM:
            if (flat)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: group_norm after the spatial "
                                 "mean", i);
            if (l->in_channels != c || l->groups < 1 || c % l->groups || !(l->eps > 0.0f))
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: group_norm of %d channels in "
                                 "%d groups (eps %g) on %d channels", i, l->in_channels, l->groups,
                                 (double)l->eps, c);
            r->params += 2 * (int64_t)c;
            break;
        case CCFG_CLS_SILU:
            break;
        case CCFG_CLS_SPATIAL_MEAN:
            if (flat) return ccfg_fail(CCFG_EINVAL, "classifier layer %d: second spatial mean", i);
            flat = 1;
            h = w = 1;
            break;
        case CCFG_CLS_LINEAR:
            if (!flat || l->in_channels != c || l->out_channels < 1 ||
                l->out_channels > CLS_MAX_WIDTH)
                return ccfg_fail(CCFG_EINVAL, "classifier layer %d: linear %d->%d needs a flat "
                                 "input of %d features", i, l->in_channels, l->out_channels, c);
            r->params += (int64_t)l->out_channels * c + l->out_channels;
            c = l->out_channels;
            break;
        default:
            return ccfg_fail(CCFG_EINVAL, "classifier layer %d: unknown type %d", i, l->type);
        }
        if ((int64_t)c * h * w > r->widest) r->widest = (int64_t)c * h * w;
        if (i == features_layer) {
            if (!flat)
                return ccfg_fail(CCFG_EINVAL, "classifier: features_layer %d is not flat (it must "
                                 "come at or after the spatial mean)", i);
            r->feature_width = c;
        }
    }
    if (!flat) return ccfg_fail(CCFG_EINVAL, "classifier: the last layer's output is not flat");
    r->outputs = c;
    return CCFG_OK;
}

int64_t ccfg_classifier_param_count(const ccfg_cls_layer *layers, int n_layers, int in_channels,
                                    int h, int w)
{
    walk_result r;
    if (walk(layers, n_layers, in_channels, h, w, -1, 1, &r)) return 0;
    return r.params;
}

int ccfg_classifier_create(const ccfg_cls_layer *layers, int n_layers, int in_channels, int h,
                           int w, int features_layer, const float *params, int64_t n_params,
                           ccfg_classifier **out)
{
    walk_result r;
    ccfg_classifier *c = NULL;
    int status = walk(layers, n_layers, in_channels, h, w, features_layer, 1, &r);
    *out = NULL;
    if (status) return status;
    if (n_params != r.params)
        return ccfg_fail(CCFG_EINVAL, "classifier: %lld parameters given, the layers need %lld",
                         (long long)n_params, (long long)r.params);
    c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->ops = ccfg_backend_cpu()->nn;
    c->n_layers = n_layers;
    c->in_c = in_channels;
    c->h = h;
    c->w = w;
    c->features_layer = features_layer;
    c->outputs = r.outputs;
    c->feature_width = r.feature_width;
    c->layers = malloc((size_t)n_layers * sizeof *c->layers);
    c->weight = calloc((size_t)n_layers, sizeof *c->weight);
    c->bias = calloc((size_t)n_layers, sizeof *c->bias);
    c->params = malloc((size_t)(n_params > 0 ? n_params : 1) * sizeof(float));
    if (!c->layers || !c->weight || !c->bias || !c->params) goto nomem;
    memcpy(c->layers, layers, (size_t)n_layers * sizeof *layers);
    memcpy(c->params, params, (size_t)n_params * sizeof(float));
    /* the parameter vector, layer by layer: weight then bias */
    const float *p = c->params;
    int ch = in_channels;
    for (int i = 0; i < n_layers; i++) {
        const ccfg_cls_layer *l = &layers[i];
        if (l->type == CCFG_CLS_CONV2D || l->type == CCFG_CLS_LINEAR) {
            const int k = l->type == CCFG_CLS_CONV2D ? l->kernel : 1;
            c->weight[i] = p;
            p += (int64_t)l->out_channels * ch * k * k;
            c->bias[i] = p;
            p += l->out_channels;
            ch = l->out_channels;
        } else if (l->type == CCFG_CLS_GROUP_NORM) {
            c->weight[i] = p;
            p += ch;
            c->bias[i] = p;
            p += ch;
        }
    }
    *out = c;
    return CCFG_OK;
nomem:
    ccfg_classifier_free(c);
    return ccfg_fail(CCFG_ENOMEM, "classifier: out of memory for %lld parameters",
                     (long long)n_params);
}

void ccfg_classifier_free(ccfg_classifier *c)
{
    if (!c) return;
    free(c->arena);
    free(c->layers);
    free(c->weight);
    free(c->bias);
    free(c->params);
    free(c);
}

int ccfg_classifier_outputs(const ccfg_classifier *c) { return c->outputs; }
int ccfg_classifier_features(const ccfg_classifier *c) { return c->feature_width; }

/* activations for `chunk` samples: two ping-pong tensors and the conv2d scratch of all threads */
static int plan(ccfg_classifier *c, int64_t chunk)
{
    if (c->planned == chunk) return CCFG_OK;
    walk_result r;
    const int threads = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    int status = walk(c->layers, c->n_layers, c->in_c, c->h, c->w, c->features_layer, threads,
                      &r);
    if (status) return status;
    const int64_t act = (r.widest * chunk + 15) & ~(int64_t)15;    /* 64-byte aligned slots */
    const int64_t scratch = r.conv_scratch;
    free(c->arena);
    c->planned = 0;
    c->arena = malloc((size_t)(2 * act + scratch + 1) * sizeof(float));
    if (!c->arena)
        return ccfg_fail(CCFG_ENOMEM, "classifier: out of memory planning %lld samples",
                         (long long)chunk);
    c->act[0] = c->arena;
    c->act[1] = c->arena + act;
    c->scratch = c->arena + 2 * act;
    c->act_len = act;
    c->scratch_len = scratch;
    c->planned = chunk;
    return CCFG_OK;
}

static int forward_chunk(ccfg_classifier *c, int bc, const float *x, float *logits, float *features)
{
    const ccfg_nn_ops *ops = c->ops;
    int ch = c->in_c, h = c->h, w = c->w, cur = 0, status;
    if ((status = op_nchw_to_cnhw(ops, bc, ch, h * w, x, c->act[0]))) return status;
    for (int i = 0; i < c->n_layers; i++) {
        const ccfg_cls_layer *l = &c->layers[i];
        float *in = c->act[cur], *other = c->act[1 - cur];
        switch (l->type) {
        case CCFG_CLS_CONV2D: {
            const int ho = (h + 2 * l->padding - l->kernel) / l->stride + 1;
            const int wo = (w + 2 * l->padding - l->kernel) / l->stride + 1;
            status = op_conv2d(ops, bc, ch, h, w, in, l->out_channels, l->kernel, l->stride,
                               l->padding, c->weight[i], c->bias[i], other, c->scratch,
                               c->scratch_len);
            ch = l->out_channels;
            h = ho;
            w = wo;
            cur = 1 - cur;
            break;
        }
        case CCFG_CLS_GROUP_NORM: {
            /* a SiLU right after is fused into the norm (one pass), unless its input is the
             * features layer (never: features are flat, checked in walk) */
            const int fuse = i + 1 < c->n_layers && c->layers[i + 1].type == CCFG_CLS_SILU &&
                             c->features_layer != i;
            status = op_group_norm(ops, bc, ch, h * w, l->groups, l->eps, c->weight[i],
                                   c->bias[i], fuse, in);
            if (fuse) i++;
            break;
        }
        case CCFG_CLS_SILU:
            status = op_silu(ops, (int64_t)ch * bc * h * w, in);
            break;
        case CCFG_CLS_SPATIAL_MEAN:
            spatial_mean(bc, ch, h * w, in, other);
            h = w = 1;
            cur = 1 - cur;
            break;
        case CCFG_CLS_LINEAR:
            status = op_linear(ops, bc, ch, l->out_channels, in, c->weight[i], c->bias[i], other);
            ch = l->out_channels;
            cur = 1 - cur;
            break;
        default:
            status = ccfg_fail(CCFG_EINVAL, "classifier layer %d: unknown type %d", i, l->type);
        }
        if (status || (status = ccfg_check_interrupt())) return status;   /* Ctrl-C: a layer */
        if (i == c->features_layer && features)     /* flat: rows (bc, ch) */
            memcpy(features, c->act[cur], (size_t)bc * ch * sizeof(float));
    }
    memcpy(logits, c->act[cur], (size_t)bc * c->outputs * sizeof(float));
    return CCFG_OK;
}

int ccfg_classifier_forward(ccfg_classifier *c, int64_t batch, const float *x, float *logits,
                            float *features)
{
    if (batch < 0) return ccfg_fail(CCFG_EINVAL, "classifier: batch %lld", (long long)batch);
    if (batch == 0) return CCFG_OK;
    const int64_t chunk = batch < CLS_MAX_CHUNK ? batch : CLS_MAX_CHUNK;
    int status = plan(c, chunk);
    if (status) return status;
    const int64_t per = (int64_t)c->in_c * c->h * c->w;
    if (c->ops->begin && (status = c->ops->begin(NULL))) return status;
    for (int64_t b0 = 0; b0 < batch && !status; b0 += chunk) {
        const int bc = (int)(batch - b0 < chunk ? batch - b0 : chunk);
        status = forward_chunk(c, bc, x + b0 * per, logits + b0 * c->outputs,
                               features ? features + b0 * c->feature_width : NULL);
    }
    if (c->ops->end) {
        int end_status = c->ops->end(NULL);
        if (!status) status = end_status;
    }
    return status;
}
