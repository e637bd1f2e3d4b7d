/* unet.h — diffusers' UNet2DModel (positional time embedding, conv down/upsampling) in C.
 *
 * The Python layer (ccfg/unet.py) reads config.json and the safetensors file, checks every
 * tensor's name and shape and hands over ONE float32 vector holding all parameters in the order
 * ccfg_unet_create walks them (documented in ccfg/unet.py: _param_layout). The ops come from the
 * backend's nn table (be->nn), so the same walk runs on any backend. */
#ifndef CCFG_UNET_H
#define CCFG_UNET_H

#include <stdint.h>

#include "ccfg.h"
#include "nn.h"

enum { CCFG_UNET_MAX_LEVELS = 8 };

typedef struct {
    int in_channels, out_channels;
    int levels;                                 /* len(block_out_channels) */
    int channels[CCFG_UNET_MAX_LEVELS];         /* block_out_channels */
    int down_attention[CCFG_UNET_MAX_LEVELS];   /* level l is an AttnDownBlock2D */
    int up_attention[CCFG_UNET_MAX_LEVELS];     /* up block i (level levels-1-i) is an AttnUpBlock2D */
    int layers_per_block;                       /* resnets per down block; up blocks have one more */
    int mid_block;                              /* 0: no mid block, 1: UNetMidBlock2D */
    int mid_attention;                          /* add_attention */
    int mid_attention_groups;                   /* GroupNorm groups of the mid attention, 0 = no norm */
    int norm_groups;                            /* norm_num_groups */
    float norm_eps;
    int head_dim;                               /* attention_head_dim; 0 = one head of full width */
    int time_embed_dim;                         /* time_embedding_dim or 4 * channels[0] */
    int flip_sin_to_cos;
    float freq_shift;
    int scale_shift;                            /* resnet_time_scale_shift == "scale_shift" */
    int downsample_padding;
    int center_input_sample;
    int num_class_embeds;                       /* 0 = no class embedding */
    float mid_block_scale_factor;
} ccfg_unet_config;

typedef struct ccfg_unet ccfg_unet;

/* Number of float32 parameters the config needs (0 and an error if the config is invalid). */
int64_t ccfg_unet_param_count(const ccfg_unet_config *cfg);
/* Copies the parameters (a host array) to the backend `be` (NULL: the CPU), where the model's
 * weights and activations then live and its ops run (nn_cpu.c or nn_vk.c); n_params must equal
 * ccfg_unet_param_count(cfg). A device UNet is used under be->lock, like any device call. */
int ccfg_unet_create(const ccfg_unet_config *cfg, const float *params, int64_t n_params,
                     const ccfg_backend *be, ccfg_unet **out);
const ccfg_backend *ccfg_unet_backend(const ccfg_unet *u);
void ccfg_unet_free(ccfg_unet *u);
const ccfg_unet_config *ccfg_unet_get_config(const ccfg_unet *u);

/* Plans the activations for batches of up to max_batch samples of h x w (allocates only when the
 * current plan is too small; forward plans by itself, sampling plans once before the loop).
 * Work is done in chunks of at most `chunk` samples (0 = automatic). */
int ccfg_unet_plan(ccfg_unet *u, int64_t max_batch, int h, int w, int chunk);
/* Bytes held by the current plan (activations and scratch). */
int64_t ccfg_unet_plan_bytes(const ccfg_unet *u);

/* out (batch, out_channels, h, w) = UNet(x (batch, in_channels, h, w), t[b], class_labels[b]).
 * x, out, t and class_labels are host arrays on every backend. class_labels: NULL without class
 * embedding, else values in [0, num_class_embeds). */
int ccfg_unet_forward(ccfg_unet *u, int64_t batch, int h, int w, const float *x, const double *t,
                      const int32_t *class_labels, float *out);

/* ccfg_model.eval adaptor (on_backend = 1: x and out are memory of the UNet's backend, which
 * must be the sampler's): ctx is a ccfg_unet_model. Condition ids map to class labels: id c ->
 * class_of[c] (c < n_conditions), CCFG_UNCOND -> null_class (-1: the model has no class input). */
typedef struct {
    ccfg_unet *unet;
    int h, w;
    int null_class;
    int n_conditions;
    const int32_t *class_of;
    int32_t *labels;        /* scratch, planned rows */
    double *times;          /* scratch, planned rows */
    int64_t max_rows;
} ccfg_unet_model;

int ccfg_unet_model_init(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                         int n_conditions, const int32_t *class_of, int64_t max_rows);
void ccfg_unet_model_free(ccfg_unet_model *m);
int ccfg_unet_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                         const float *x, double timestep, double alpha_bar, const int32_t *cond,
                         float *out);
/* The UNet as a sampler model (begin = ccfg_unet_model_init for the run's rows on the UNet's own
 * backend, end = ccfg_unet_model_free); m and class_of must outlive the run. */
ccfg_model ccfg_unet_as_model(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                              int n_conditions, const int32_t *class_of);

#endif /* CCFG_UNET_H */
