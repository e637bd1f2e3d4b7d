/* classifier.h — a small sequential CNN (the evaluation classifier of ccfg/weights/classifier) run
 * over the nn.h ops, so scoring samples needs no torch.
 *
 * Layers come in order from the model's config.json; ccfg/metrics.py checks tensor names and
 * shapes and hands over ONE float32 vector holding, layer by layer, weight then bias (PyTorch
 * layouts: conv (cout, cin, k, k), linear (out, in), group norm gamma then beta). */
#ifndef CCFG_CLASSIFIER_H
#define CCFG_CLASSIFIER_H

#include <stdint.h>

#include "nn.h"

typedef enum {
    CCFG_CLS_CONV2D = 0,        /* in/out_channels, kernel, stride, padding (zeros, both sides) */
    CCFG_CLS_GROUP_NORM = 1,    /* in_channels (= out_channels), groups, eps */
    CCFG_CLS_SILU = 2,
    CCFG_CLS_SPATIAL_MEAN = 3,  /* (c, h, w) -> (c): mean over pixels; flat from here on */
    CCFG_CLS_LINEAR = 4,        /* in_channels -> out_channels, on a flat tensor */
} ccfg_cls_layer_type;

typedef struct {
    int type;                   /* ccfg_cls_layer_type */
    int in_channels, out_channels;
    int kernel, stride, padding;
    int groups;
    float eps;
} ccfg_cls_layer;

typedef struct ccfg_classifier ccfg_classifier;

/* Checks the layer chain for an input (in_channels, h, w), copies the parameters (n_params floats
 * must be exactly what the layers need) and returns the model in *out. features_layer: index of
 * the layer whose (flat) output `forward` also returns, -1 for none. The last layer's output must
 * be flat. */
int ccfg_classifier_create(const ccfg_cls_layer *layers, int n_layers, int in_channels, int h,
                           int w, int features_layer, const float *params, int64_t n_params,
                           ccfg_classifier **out);
void ccfg_classifier_free(ccfg_classifier *c);

/* floats of parameters the chain needs (0 and an error message if the chain is invalid) */
int64_t ccfg_classifier_param_count(const ccfg_cls_layer *layers, int n_layers, int in_channels,
                                    int h, int w);
int ccfg_classifier_outputs(const ccfg_classifier *c);      /* width of the last layer */
int ccfg_classifier_features(const ccfg_classifier *c);     /* width of the features, 0 if none */

/* x: (batch, in_channels, h, w) NCHW host floats. logits: (batch, outputs); features: (batch,
 * features) or NULL. Activations are planned for min(batch, a chunk) samples and kept until a
 * different size comes; not thread-safe (callers serialise per model). */
int ccfg_classifier_forward(ccfg_classifier *c, int64_t batch, const float *x, float *logits,
                            float *features);

#endif /* CCFG_CLASSIFIER_H */
