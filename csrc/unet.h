/* unet.h — diffusers' UNet2DModel and UNet2DConditionModel (positional time embedding, conv
 * down/upsampling, self-attention blocks or Transformer2DModel cross-attention blocks) in C.
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
/* Bounds that keep every count and size below int64 overflow and the config walk short, whatever
 * an (untrusted) config says: channel widths (in/out, block_out_channels, time embedding,
 * cross-attention), resnets per block and transformer blocks per level, pixels per sample
 * (h * w) and condition tokens. */
enum {
    CCFG_UNET_MAX_WIDTH = 1 << 16,
    CCFG_UNET_MAX_LAYERS = 64,
    CCFG_UNET_MAX_PIXELS = 1 << 24,
    CCFG_UNET_MAX_TOKENS = 1 << 20,
};

/* what follows each resnet of a block (down_attention, up_attention, mid_attention) */
enum {
    CCFG_UNET_NO_ATTENTION = 0,
    CCFG_UNET_SELF_ATTENTION = 1,   /* UNet2DModel's Attention: GroupNorm, one head set, residual */
    CCFG_UNET_TRANSFORMER = 2,      /* Transformer2DModel: BasicTransformerBlocks with cross-attention */
};

typedef struct {
    int in_channels, out_channels;
    int levels;                                 /* len(block_out_channels) */
    int channels[CCFG_UNET_MAX_LEVELS];         /* block_out_channels */
    int down_attention[CCFG_UNET_MAX_LEVELS];   /* CCFG_UNET_*: AttnDownBlock2D, CrossAttnDownBlock2D */
    int up_attention[CCFG_UNET_MAX_LEVELS];     /* up block i (level levels-1-i), likewise */
    int layers_per_block;                       /* resnets per down block; up blocks have one more */
    int mid_block;                              /* 0: no mid block, 1: UNetMidBlock2D */
    int mid_attention;                          /* CCFG_UNET_*: add_attention, UNetMidBlock2DCrossAttn */
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
    /* text conditioning (UNet2DConditionModel): the transformers attend to condition tokens of
     * cross_attention_dim channels (0: no transformer blocks). Level l's transformers have
     * heads[l] heads of channels[l] / heads[l] (diffusers' attention_head_dim of this class, which
     * is a head count) and transformer_layers[l] BasicTransformerBlocks; up block i uses level
     * levels-1-i's, the mid block the last level's. */
    int cross_attention_dim;
    int heads[CCFG_UNET_MAX_LEVELS];
    int transformer_layers[CCFG_UNET_MAX_LEVELS];
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

/* Plans the activations for batches of up to max_batch samples of h x w with conditions of
 * ctx_len tokens (0 without cross-attention) (allocates only when the current plan is too small;
 * forward plans by itself, sampling plans once before the loop). Work is done in chunks of at
 * most `chunk` samples (0 = automatic). */
int ccfg_unet_plan(ccfg_unet *u, int64_t max_batch, int h, int w, int ctx_len, int chunk);
/* Bytes held by the current plan (activations and scratch). */
int64_t ccfg_unet_plan_bytes(const ccfg_unet *u);

/* out (batch, out_channels, h, w) = UNet(x (batch, in_channels, h, w), t[b], class_labels[b],
 * context[b]). x, out, t, class_labels and context are host arrays on every backend.
 * class_labels: NULL without class embedding, else values in [0, num_class_embeds).
 * context: NULL without cross-attention, else `context_batch` (1 or batch) conditions of ctx_len
 * tokens of cross_attention_dim floats (diffusers' encoder_hidden_states, (B, L, D) row-major);
 * one condition is shared by every sample. */
int ccfg_unet_forward(ccfg_unet *u, int64_t batch, int h, int w, const float *x, const double *t,
                      const int32_t *class_labels, const float *context, int64_t context_batch,
                      int ctx_len, float *out);

/* ccfg_model.eval adaptor (on_backend = 1: x and out are memory of the UNet's backend, which
 * must be the sampler's): ctx is a ccfg_unet_model. A class-conditional UNet maps condition ids
 * to class labels: id c -> class_of[c] (c < n_conditions), CCFG_UNCOND -> null_class (-1: the
 * model has no class input). A text-conditioned UNet (cross_attention_dim > 0) maps them to
 * condition token arrays instead. Condition c holds ctx_count[c] token arrays of (ctx_len, D),
 * one after the other in `contexts` (condition 0 first): 1 (every sample the same) or n (one per
 * sample: row r, sample r % n, takes array r % n). CCFG_UNCOND takes null_context, null_count
 * arrays likewise (NULL: a run that needs the unconditional branch fails, naming `null`). */
typedef struct {
    ccfg_unet *unet;
    int h, w;
    int null_class;
    int n_conditions;
    const int32_t *class_of;
    const float *contexts;          /* (sum of ctx_count, ctx_len, D) host, or NULL */
    const int32_t *ctx_count;       /* (n_conditions) */
    const float *null_context;      /* (null_count, ctx_len, D) host, or NULL */
    int null_count;
    int ctx_len;
    int64_t n;                      /* samples of the run (rows are blocks of n) */
    int64_t *ctx_first;             /* scratch: condition c's first array */
    int32_t *labels;                /* scratch, planned rows */
    double *times;                  /* scratch, planned rows */
    const float **row_context;      /* scratch, planned rows */
    int64_t max_rows;
} ccfg_unet_model;

int ccfg_unet_model_init(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                         int n_conditions, const int32_t *class_of, const float *contexts,
                         const int32_t *ctx_count, const float *null_context, int null_count,
                         int ctx_len, int64_t n, int64_t max_rows);
void ccfg_unet_model_free(ccfg_unet_model *m);
int ccfg_unet_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                         const float *x, double timestep, double alpha_bar, const int32_t *cond,
                         float *out);
/* The UNet as a sampler model (begin = ccfg_unet_model_init for the run's rows on the UNet's own
 * backend, end = ccfg_unet_model_free); m, class_of and the contexts must outlive the run. */
ccfg_model ccfg_unet_as_model(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                              int n_conditions, const int32_t *class_of, const float *contexts,
                              const int32_t *ctx_count, const float *null_context, int null_count,
                              int ctx_len);

#endif /* CCFG_UNET_H */
