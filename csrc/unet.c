/* unet.c — diffusers' UNet2DModel and UNet2DConditionModel forward, written once over the nn.h
 * op table.
 *
 * The structure follows diffusers' unet_2d.py / unet_2d_condition.py / unet_2d_blocks.py /
 * resnet.py / transformer_2d.py / attention.py:
 *   conv_in -> down blocks (resnets [+ attention], conv downsample) -> mid block (resnet,
 *   [attention], resnet) -> up blocks (skip concat, resnets [+ attention], nearest 2x + conv)
 *   -> GroupNorm, SiLU, conv_out,
 * with the time embedding (sinusoid, linear, SiLU, linear [+ class embedding]) fed to every resnet
 * through its own linear layer (added before norm2, or FiLM after it with scale_shift).
 * "Attention" after a resnet is either UNet2DModel's self-attention block or, in a text-conditioned
 * UNet, a Transformer2DModel:
 *   h = proj_in(GroupNorm(x))                                   (1x1 conv or linear: one GEMM)
 *   per BasicTransformerBlock:  h += attn1(LN1(h))               (self-attention over pixels)
 *                               h += attn2(LN2(h), context)      (keys, values from the condition)
 *                               h += W2 GEGLU(W1 LN3(h) + b1) + b2
 *   x += proj_out(h)
 * Activations are CNHW (nn.h): a token is a column, so every linear layer is a 1x1 convolution.
 * A batch runs in chunks of at most plan.chunk samples; every buffer is allocated by
 * ccfg_unet_plan, none during a forward. Between layers a forward checks for Ctrl-C
 * (ccfg_check_interrupt) and, on a device, has the recorded work run in pieces (checkpoint). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccfg.h"
#include "unet.h"

/* every op returns a status (nn.h); the first failure ends the forward */
#define TRY(call)                                                                                 \
    do {                                                                                          \
        int try_status_ = (call);                                                                 \
        if (try_status_) return try_status_;                                                      \
    } while (0)

/* a chunk holds about this many pixels (samples x h x w): bounded memory, and at one thread
 * activations that stay in cache between layers (16 samples of 32 x 32: 2 MiB per 32 channels;
 * 64 samples cost bench_unet.py's forward 4-9 % more CPU time, its convolutions' input reads
 * missing the cache). With more threads, 4x that: every op of a chunk is a fork/join, and on a
 * shared machine each one waits for a descheduled thread (16-sample chunks made the 2-thread
 * forward 3-6x slower at load 3). The chunking changes no result (every op is per sample or per
 * column). */
enum { CHUNK_PIXELS = 1 << 14, CHUNK_PIXELS_THREADED = 1 << 16 };
/* the most columns (samples x (pixels + condition tokens)) one chunk may hold, whatever chunk a
 * caller asks for: with the CCFG_UNET_MAX_* bounds every plan size stays far below int64 */
#define MAX_CHUNK_COLUMNS ((int64_t)1 << 28)

typedef struct {
    int cin, cout;
    const float *w, *b;
    const float *pk;                    /* the backend's packed form of w, or NULL */
    int k, stride, pad0, pad1;          /* the layer's shape (what the packed form depends on) */
    int64_t pk_len;                     /* floats of pk: conv2d_packed_len when it was packed */
} conv_p;

typedef struct {
    int cin, cout, temb_out;            /* temb_out = cout, or 2 cout with scale_shift */
    const float *norm1_w, *norm1_b;
    conv_p conv1;
    const float *temb_w, *temb_b;
    const float *norm2_w, *norm2_b;
    conv_p conv2;
    conv_p shortcut;                    /* w == NULL: identity */
    float out_scale;
} resnet_p;

typedef struct {
    int c, heads, head_dim, groups;     /* groups 0: no GroupNorm */
    const float *norm_w, *norm_b;
    conv_p qkv;                         /* (3 * heads * head_dim, c): to_q, to_k, to_v stacked */
    conv_p out;                         /* to_out.0: (c, heads * head_dim) */
    float out_scale;
} attn_p;

/* one BasicTransformerBlock (attention.py; norm_type "layer_norm", GEGLU feed-forward) */
typedef struct {
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b, *norm3_w, *norm3_b;
    conv_p qkv1;                        /* attn1 to_q, to_k, to_v stacked: (3 inner, inner), no bias */
    conv_p out1;                        /* attn1 to_out.0: (inner, inner) + bias */
    conv_p q2;                          /* attn2 to_q: (inner, inner), no bias */
    conv_p kv2;                         /* attn2 to_k, to_v stacked: (2 inner, D), no bias */
    conv_p out2;
    conv_p ff1;                         /* ff.net.0.proj: (8 inner, inner) + bias -> [h; gate] */
    conv_p ff2;                         /* ff.net.2: (inner, 4 inner) + bias */
} tblock_p;

/* one Transformer2DModel (continuous input): inner = heads * head_dim channels inside */
typedef struct {
    int c, heads, head_dim, inner, layers, groups;
    const float *norm_w, *norm_b;
    conv_p proj_in, proj_out;
    const tblock_p *blocks;             /* `layers` blocks in the UNet's tblocks array */
} xformer_p;

typedef struct {
    int64_t chunk;                      /* samples per chunk, 0 = no plan */
    int h, w, ctx_len;
    float *arena;                       /* memory of the UNet's backend */
    int64_t floats;
    float *xin, *yout;                  /* device backends: a chunk's NCHW input and output */
    float *x, *y, *p, *q, *a, *cat, *qkv, *o, *conv_scratch, *attn_scratch;
    float *ab;                          /* folded GroupNorms' (a, d) per sample and channel */
    int64_t conv_scratch_len, attn_scratch_len;
    float *tfreq, *e1, *emb, *emb_act, *temb, *lin_scratch;
    /* transformers: hidden tokens, the condition's keys and values, feed-forward, the condition
     * itself (CNHW: (D, chunk * ctx_len)) and its host copy, filled per chunk */
    float *th, *kv, *ff, *ffh, *ctx;
    float *ctx_host;                    /* host memory */
    float **skip;                       /* n_skips pointers into the arena */
} plan_t;

struct ccfg_unet {
    ccfg_unet_config cfg;
    const ccfg_nn_ops *ops;
    const ccfg_backend *be;             /* where params and activations live */
    float *params;                      /* memory of be */
    int64_t n_params;
    float *packed;                      /* memory of be: the convolutions' packed weights (nn.h
                                         * conv2d_pack: the CPU's Winograd filters, Vulkan's
                                         * float16 weights), one allocation for all */
    int n_tblocks;                      /* transformer blocks in tblocks */
    conv_p conv_in, conv_out;
    const float *t1_w, *t1_b, *t2_w, *t2_b, *class_table;
    resnet_p *down_res, *up_res, mid_res[2];
    attn_p *down_attn, *up_attn, mid_attn;
    xformer_p *down_tf, *up_tf, mid_tf;     /* where the block's attention is a transformer */
    tblock_p *tblocks;                      /* every transformer's blocks, in walk order */
    conv_p down_conv[CCFG_UNET_MAX_LEVELS], up_conv[CCFG_UNET_MAX_LEVELS];
    const float *out_norm_w, *out_norm_b;
    int n_skips;
    plan_t plan;
};

/* ------------------------------------------------------------------------- */
/* parameter walk: the same traversal counts the parameters and assigns the pointers */

typedef struct {
    const float *base;                  /* NULL: count only */
    int64_t off;
    tblock_p *blocks;                   /* NULL: count only */
    int n_blocks;                       /* transformer blocks walked so far */
} cursor;

static const float *take(cursor *c, int64_t n)
{
    const float *p = c->base ? c->base + c->off : NULL;
    c->off += n;
    return p;
}

static conv_p walk_conv(cursor *c, int cin, int cout, int k)
{
    /* stride 1, "same" padding: the resnets', attention's, conv_in/out, the upsamplers'; the
     * downsamplers set their own stride and padding */
    conv_p p = {cin, cout, NULL, NULL, NULL, k, 1, (k - 1) / 2, (k - 1) / 2, 0};
    p.w = take(c, (int64_t)cout * cin * k * k);
    p.b = take(c, cout);
    return p;
}

static resnet_p walk_resnet(cursor *c, const ccfg_unet_config *cfg, int cin, int cout, float scale)
{
    resnet_p r;
    memset(&r, 0, sizeof r);
    r.cin = cin;
    r.cout = cout;
    r.temb_out = cfg->scale_shift ? 2 * cout : cout;
    r.out_scale = scale;
    r.norm1_w = take(c, cin);
    r.norm1_b = take(c, cin);
    r.conv1 = walk_conv(c, cin, cout, 3);
    r.temb_w = take(c, (int64_t)r.temb_out * cfg->time_embed_dim);
    r.temb_b = take(c, r.temb_out);
    r.norm2_w = take(c, cout);
    r.norm2_b = take(c, cout);
    r.conv2 = walk_conv(c, cout, cout, 3);
    if (cin != cout) r.shortcut = walk_conv(c, cin, cout, 1);
    return r;
}

static attn_p walk_attn(cursor *c, const ccfg_unet_config *cfg, int ch, int groups, float scale)
{
    attn_p a;
    memset(&a, 0, sizeof a);
    a.c = ch;
    a.head_dim = cfg->head_dim > 0 ? cfg->head_dim : ch;
    a.heads = ch / a.head_dim;
    a.groups = groups;
    a.out_scale = scale;
    if (groups) {
        a.norm_w = take(c, ch);
        a.norm_b = take(c, ch);
    }
    const int inner = a.heads * a.head_dim;
    a.qkv = walk_conv(c, ch, 3 * inner, 1);
    a.out = walk_conv(c, inner, ch, 1);
    return a;
}

static conv_p walk_linear_nobias(cursor *c, int cin, int cout)
{
    conv_p p = {cin, cout, NULL, NULL, NULL, 1, 1, 0, 0, 0};
    p.w = take(c, (int64_t)cout * cin);
    return p;
}

static void walk_norm(cursor *c, int ch, const float **w, const float **b)
{
    *w = take(c, ch);
    *b = take(c, ch);
}

/* a Transformer2DModel of `layers` blocks over ch channels with `heads` heads (diffusers:
 * head_dim = ch / heads, inner = heads * head_dim); proj_in/proj_out are the same GEMM whether
 * stored as 1x1 convolutions or linear layers (use_linear_projection) */
static xformer_p walk_transformer(cursor *c, const ccfg_unet_config *cfg, int ch, int heads,
                                  int layers)
{
    xformer_p t;
    memset(&t, 0, sizeof t);
    t.c = ch;
    t.heads = heads;
    t.head_dim = ch / heads;
    t.inner = t.heads * t.head_dim;
    t.layers = layers;
    t.groups = cfg->norm_groups;
    const int inner = t.inner, D = cfg->cross_attention_dim;
    walk_norm(c, ch, &t.norm_w, &t.norm_b);
    t.proj_in = walk_conv(c, ch, inner, 1);
    t.blocks = c->blocks ? c->blocks + c->n_blocks : NULL;
    for (int i = 0; i < layers; i++) {
        tblock_p b;
        walk_norm(c, inner, &b.norm1_w, &b.norm1_b);
        b.qkv1 = walk_linear_nobias(c, inner, 3 * inner);
        b.out1 = walk_conv(c, inner, inner, 1);
        walk_norm(c, inner, &b.norm2_w, &b.norm2_b);
        b.q2 = walk_linear_nobias(c, inner, inner);
        b.kv2 = walk_linear_nobias(c, D, 2 * inner);
        b.out2 = walk_conv(c, inner, inner, 1);
        walk_norm(c, inner, &b.norm3_w, &b.norm3_b);
        b.ff1 = walk_conv(c, inner, 8 * inner, 1);
        b.ff2 = walk_conv(c, 4 * inner, inner, 1);
        if (c->blocks) c->blocks[c->n_blocks] = b;
        c->n_blocks++;
    }
    t.proj_out = walk_conv(c, inner, ch, 1);
    return t;
}

/* down level l, up block i: the channel bookkeeping of diffusers' UNet2DModel.__init__ */
static int down_in(const ccfg_unet_config *cfg, int l) { return cfg->channels[l > 0 ? l - 1 : 0]; }

static int rev(const ccfg_unet_config *cfg, int i) { return cfg->channels[cfg->levels - 1 - i]; }

static int up_resnet_in(const ccfg_unet_config *cfg, int i, int j)
{
    const int L = cfg->levels, out = rev(cfg, i), prev = rev(cfg, i > 0 ? i - 1 : 0);
    const int in = rev(cfg, i + 1 < L ? i + 1 : L - 1);
    const int skip = j == cfg->layers_per_block ? in : out;
    return (j == 0 ? prev : out) + skip;
}

/* the parameter count; *n_blocks (if not NULL): the transformer blocks */
static int64_t walk(ccfg_unet *u, const ccfg_unet_config *cfg, const float *base, int *n_blocks)
{
    cursor c = {base, 0, u ? u->tblocks : NULL, 0};
    const int L = cfg->levels, lpb = cfg->layers_per_block, T = cfg->time_embed_dim;
    const int C0 = cfg->channels[0];
    conv_p cv = walk_conv(&c, cfg->in_channels, C0, 3);
    if (u) u->conv_in = cv;
    const float *t1w = take(&c, (int64_t)T * C0), *t1b = take(&c, T);
    const float *t2w = take(&c, (int64_t)T * T), *t2b = take(&c, T);
    const float *ct = cfg->num_class_embeds ? take(&c, (int64_t)cfg->num_class_embeds * T) : NULL;
    if (u) {
        u->t1_w = t1w; u->t1_b = t1b; u->t2_w = t2w; u->t2_b = t2b; u->class_table = ct;
    }
    for (int l = 0; l < L; l++) {
        const int out = cfg->channels[l];
        for (int j = 0; j < lpb; j++) {
            resnet_p r = walk_resnet(&c, cfg, j == 0 ? down_in(cfg, l) : out, out, 1.0f);
            if (u) u->down_res[l * lpb + j] = r;
            if (cfg->down_attention[l] == CCFG_UNET_SELF_ATTENTION) {
                attn_p a = walk_attn(&c, cfg, out, cfg->norm_groups, 1.0f);
                if (u) u->down_attn[l * lpb + j] = a;
            } else if (cfg->down_attention[l] == CCFG_UNET_TRANSFORMER) {
                xformer_p t = walk_transformer(&c, cfg, out, cfg->heads[l],
                                               cfg->transformer_layers[l]);
                if (u) u->down_tf[l * lpb + j] = t;
            }
        }
        if (l < L - 1) {
            cv = walk_conv(&c, out, out, 3);
            cv.stride = 2;
            cv.pad0 = cfg->downsample_padding;
            cv.pad1 = cfg->downsample_padding ? cfg->downsample_padding : 1;
            if (u) u->down_conv[l] = cv;
        }
    }
    if (cfg->mid_block) {
        const int ch = cfg->channels[L - 1];
        const float s = cfg->mid_block_scale_factor;
        resnet_p r0 = walk_resnet(&c, cfg, ch, ch, s);
        attn_p a;
        xformer_p t;
        memset(&a, 0, sizeof a);
        memset(&t, 0, sizeof t);
        if (cfg->mid_attention == CCFG_UNET_SELF_ATTENTION)
            a = walk_attn(&c, cfg, ch, cfg->mid_attention_groups, s);
        else if (cfg->mid_attention == CCFG_UNET_TRANSFORMER)   /* not scaled: diffusers' too */
            t = walk_transformer(&c, cfg, ch, cfg->heads[L - 1], cfg->transformer_layers[L - 1]);
        resnet_p r1 = walk_resnet(&c, cfg, ch, ch, s);
        if (u) {
            u->mid_res[0] = r0;
            u->mid_attn = a;
            u->mid_tf = t;
            u->mid_res[1] = r1;
        }
    }
    for (int i = 0; i < L; i++) {
        const int out = rev(cfg, i);
        for (int j = 0; j <= lpb; j++) {
            resnet_p r = walk_resnet(&c, cfg, up_resnet_in(cfg, i, j), out, 1.0f);
            if (u) u->up_res[i * (lpb + 1) + j] = r;
            if (cfg->up_attention[i] == CCFG_UNET_SELF_ATTENTION) {
                attn_p a = walk_attn(&c, cfg, out, cfg->norm_groups, 1.0f);
                if (u) u->up_attn[i * (lpb + 1) + j] = a;
            } else if (cfg->up_attention[i] == CCFG_UNET_TRANSFORMER) {
                xformer_p t = walk_transformer(&c, cfg, out, cfg->heads[L - 1 - i],
                                               cfg->transformer_layers[L - 1 - i]);
                if (u) u->up_tf[i * (lpb + 1) + j] = t;
            }
        }
        if (i < L - 1) {
            cv = walk_conv(&c, out, out, 3);
            if (u) u->up_conv[i] = cv;
        }
    }
    const float *nw = take(&c, C0), *nb = take(&c, C0);
    cv = walk_conv(&c, C0, cfg->out_channels, 3);
    if (u) {
        u->out_norm_w = nw;
        u->out_norm_b = nb;
        u->conv_out = cv;
    }
    if (n_blocks) *n_blocks = c.n_blocks;
    return c.off;
}

static int check_groups(int channels, int groups, const char *where)
{
    if (groups < 1 || channels % groups)
        return ccfg_fail(CCFG_EINVAL, "norm_num_groups: %d groups do not divide the %d channels of %s",
                         groups, channels, where);
    return CCFG_OK;
}

static int check_config(const ccfg_unet_config *cfg)
{
    const int L = cfg->levels;
    if (L < 1 || L > CCFG_UNET_MAX_LEVELS)
        return ccfg_fail(CCFG_EINVAL, "block_out_channels: 1 to %d levels supported, got %d",
                         CCFG_UNET_MAX_LEVELS, L);
    const int W = CCFG_UNET_MAX_WIDTH, NL = CCFG_UNET_MAX_LAYERS;
    if (cfg->in_channels < 1 || cfg->out_channels < 1 || cfg->in_channels > W ||
        cfg->out_channels > W)
        return ccfg_fail(CCFG_EINVAL, "in_channels/out_channels must be in [1, %d], got %d and %d",
                         W, cfg->in_channels, cfg->out_channels);
    if (cfg->layers_per_block < 1 || cfg->layers_per_block > NL)
        return ccfg_fail(CCFG_EINVAL, "layers_per_block must be in [1, %d], got %d", NL,
                         cfg->layers_per_block);
    if (cfg->time_embed_dim < 1 || cfg->time_embed_dim > W)
        return ccfg_fail(CCFG_EINVAL, "time_embedding_dim must be in [1, %d], got %d", W,
                         cfg->time_embed_dim);
    if (cfg->num_class_embeds < 0)
        return ccfg_fail(CCFG_EINVAL, "num_class_embeds must be >= 0");
    if (cfg->head_dim < 0) return ccfg_fail(CCFG_EINVAL, "attention_head_dim must be >= 1");
    if (!(cfg->norm_eps > 0.0f)) return ccfg_fail(CCFG_EINVAL, "norm_eps must be > 0");
    if (cfg->downsample_padding < 0 || cfg->downsample_padding > 1)
        return ccfg_fail(CCFG_EINVAL, "downsample_padding: 0 or 1 supported, got %d",
                         cfg->downsample_padding);
    if (!(cfg->mid_block_scale_factor != 0.0f))
        return ccfg_fail(CCFG_EINVAL, "mid_block_scale_factor must be nonzero");
    if (cfg->cross_attention_dim < 0 || cfg->cross_attention_dim > W)
        return ccfg_fail(CCFG_EINVAL, "cross_attention_dim must be in [0, %d] (0: none), got %d",
                         W, cfg->cross_attention_dim);
    if (cfg->mid_attention < 0 || cfg->mid_attention > CCFG_UNET_TRANSFORMER)
        return ccfg_fail(CCFG_EINVAL, "mid_block_type: unknown attention kind %d", cfg->mid_attention);
    for (int l = 0; l < L; l++) {
        const int ch = cfg->channels[l];
        if (ch < 1 || ch > W)
            return ccfg_fail(CCFG_EINVAL, "block_out_channels must be in [1, %d], got %d", W, ch);
        int st = check_groups(ch, cfg->norm_groups, "a block");
        if (st) return st;
        const int kinds[3] = {cfg->down_attention[l], cfg->up_attention[L - 1 - l],
                              l == L - 1 && cfg->mid_block ? cfg->mid_attention : 0};
        int self_attention = 0, transformer = 0;
        for (int k = 0; k < 3; k++) {
            if (kinds[k] < 0 || kinds[k] > CCFG_UNET_TRANSFORMER)
                return ccfg_fail(CCFG_EINVAL, "block types: unknown attention kind %d", kinds[k]);
            self_attention |= kinds[k] == CCFG_UNET_SELF_ATTENTION;
            transformer |= kinds[k] == CCFG_UNET_TRANSFORMER;
        }
        if (transformer) {
            if (cfg->cross_attention_dim < 1)
                return ccfg_fail(CCFG_EINVAL, "cross_attention_dim: level %d has cross-attention "
                                 "blocks but no condition width", l);
            if (cfg->heads[l] < 1 || cfg->heads[l] > ch)
                return ccfg_fail(CCFG_EINVAL, "attention_head_dim: %d heads for the %d channels of "
                                 "level %d", cfg->heads[l], ch, l);
            if (cfg->transformer_layers[l] < 1 || cfg->transformer_layers[l] > NL)
                return ccfg_fail(CCFG_EINVAL, "transformer_layers_per_block: level %d has %d "
                                 "(1 to %d supported)", l, cfg->transformer_layers[l], NL);
        }
        if (self_attention && cfg->head_dim > ch)
            return ccfg_fail(CCFG_EINVAL, "attention_head_dim %d exceeds the %d channels of level %d",
                             cfg->head_dim, ch, l);
        if ((st = check_groups(down_in(cfg, l), cfg->norm_groups, "a down block input"))) return st;
    }
    for (int i = 0; i < L; i++)
        for (int j = 0; j <= cfg->layers_per_block; j++) {
            int st = check_groups(up_resnet_in(cfg, i, j), cfg->norm_groups, "an up block's concatenated input");
            if (st) return st;
        }
    if (cfg->mid_block && cfg->mid_attention && cfg->mid_attention_groups) {
        int st = check_groups(cfg->channels[L - 1], cfg->mid_attention_groups, "the mid attention");
        if (st) return st;
    }
    return CCFG_OK;
}

int64_t ccfg_unet_param_count(const ccfg_unet_config *cfg)
{
    if (check_config(cfg)) return 0;
    return walk(NULL, cfg, NULL, NULL);
}

const ccfg_unet_config *ccfg_unet_get_config(const ccfg_unet *u) { return &u->cfg; }

const ccfg_backend *ccfg_unet_backend(const ccfg_unet *u) { return u->be; }

static void plan_free(const ccfg_backend *be, plan_t *p)
{
    be->release(be, p->arena);
    free(p->skip);
    free(p->ctx_host);
    memset(p, 0, sizeof *p);
}

void ccfg_unet_free(ccfg_unet *u)
{
    if (!u) return;
    plan_free(u->be, &u->plan);
    u->be->release(u->be, u->params);
    if (u->packed) u->be->release(u->be, u->packed);
    free(u->down_res);
    free(u->up_res);
    free(u->down_attn);
    free(u->up_attn);
    free(u->down_tf);
    free(u->up_tf);
    free(u->tblocks);
    free(u);
}

/* fn(u, c, arg) for every convolution of the walk (and the transformers' linear layers, which run
 * as 1x1 convolutions), in walk order; absent ones (a resnet without shortcut, a block without
 * attention: w == NULL) are skipped. Stops at the first nonzero return and returns it. */
static int each_conv(ccfg_unet *u, int (*fn)(ccfg_unet *, conv_p *, void *), void *arg)
{
    const ccfg_unet_config *cfg = &u->cfg;
    const int L = cfg->levels, lpb = cfg->layers_per_block;
    int status = CCFG_OK;
#define VISIT(c) do { if ((c)->w && (status = fn(u, (c), arg))) return status; } while (0)
#define VISIT_RES(r) do { VISIT(&(r)->conv1); VISIT(&(r)->conv2); VISIT(&(r)->shortcut); } while (0)
#define VISIT_ATTN(a) do { VISIT(&(a)->qkv); VISIT(&(a)->out); } while (0)
#define VISIT_TF(t) do { VISIT(&(t)->proj_in); VISIT(&(t)->proj_out); } while (0)
    VISIT(&u->conv_in);
    VISIT(&u->conv_out);
    for (int i = 0; i < L * lpb; i++) {
        VISIT_RES(&u->down_res[i]);
        VISIT_ATTN(&u->down_attn[i]);
        VISIT_TF(&u->down_tf[i]);
    }
    for (int i = 0; i < L * (lpb + 1); i++) {
        VISIT_RES(&u->up_res[i]);
        VISIT_ATTN(&u->up_attn[i]);
        VISIT_TF(&u->up_tf[i]);
    }
    if (cfg->mid_block) {
        VISIT_RES(&u->mid_res[0]);
        VISIT_RES(&u->mid_res[1]);
        VISIT_ATTN(&u->mid_attn);
        VISIT_TF(&u->mid_tf);
    }
    for (int i = 0; i < u->n_tblocks; i++) {
        tblock_p *b = &u->tblocks[i];
        VISIT(&b->qkv1); VISIT(&b->out1); VISIT(&b->q2); VISIT(&b->kv2); VISIT(&b->out2);
        VISIT(&b->ff1); VISIT(&b->ff2);
    }
    for (int i = 0; i < L - 1; i++) {
        VISIT(&u->down_conv[i]);
        VISIT(&u->up_conv[i]);
    }
#undef VISIT_TF
#undef VISIT_ATTN
#undef VISIT_RES
#undef VISIT
    return status;
}

/* the floats of c's packed form on u's backend as it is configured now (0: none) */
static int64_t packed_len_now(const ccfg_unet *u, const conv_p *c)
{
    const ccfg_nn_ops *ops = u->ops;
    if (!ops->conv2d_packed_len || !ops->conv2d_pack || !ops->conv2d_packed) return 0;
    return ops->conv2d_packed_len(u->be, c->cin, c->cout, c->k, c->stride, c->pad0, c->pad1);
}

/* packing: pass 0 sums the (16-float aligned) lengths into *total, pass 1 packs at *off */
typedef struct { int pass; int64_t total, off; } pack_walk;

static int pack_one(ccfg_unet *u, conv_p *c, void *arg)
{
    pack_walk *pw = arg;
    const int64_t len = packed_len_now(u, c);
    if (pw->pass == 0) {
        c->pk = NULL;
        c->pk_len = len;
        pw->total += (len + 15) & ~(int64_t)15;
        return CCFG_OK;
    }
    if (!c->pk_len) return CCFG_OK;
    const int status = u->ops->conv2d_pack(u->be, c->cin, c->cout, c->k, c->stride, c->pad0,
                                           c->pad1, c->w, u->packed + pw->off);
    if (status) return status;
    c->pk = u->packed + pw->off;
    pw->off += (c->pk_len + 15) & ~(int64_t)15;
    return CCFG_OK;
}

static int clear_pack(ccfg_unet *u, conv_p *c, void *arg)
{
    (void)u;
    (void)arg;
    c->pk = NULL;
    c->pk_len = 0;
    return CCFG_OK;
}

/* The convolutions' weights packed once in the backend's layout (nn.h conv2d_pack: the CPU's
 * Winograd filters of the 3x3 layers; on Vulkan in half precision, every tiled layer's weights in
 * float16, so that no forward converts them), one allocation for all, kept with the placed model
 * and freed with it; nothing where the backend has no packed form. Any earlier packing is
 * dropped first (repack_if_stale). */
static int pack_convs(ccfg_unet *u)
{
    pack_walk pw = {0, 0, 0};
    if (u->packed) {
        u->be->release(u->be, u->packed);   /* after the batch that used it (device backends) */
        u->packed = NULL;
    }
    int status = each_conv(u, pack_one, &pw);
    if (!status && pw.total > 0) {
        if ((status = u->be->alloc(u->be, (size_t)pw.total * sizeof(float), &u->packed))) {
            u->packed = NULL;
        } else {
            pw.pass = 1;
            status = each_conv(u, pack_one, &pw);
        }
    }
    if (status) {
        each_conv(u, clear_pack, NULL);
        if (u->packed) u->be->release(u->be, u->packed);
        u->packed = NULL;
    }
    return status;
}

static int pack_is_stale(ccfg_unet *u, conv_p *c, void *arg)
{
    (void)arg;
    return packed_len_now(u, c) != c->pk_len;
}

/* Before every forward: the packed forms must be the ones the backend reads now. A packed form
 * depends on how the backend is configured (Vulkan: the device's precision, CCFG_VULKAN_PRECISION,
 * float16 weights in fp16 and coop, none in fp32), so a model placed under one configuration and
 * run under another would read stale weights, or none where the backend now expects them: then
 * everything is packed again, for the configuration in force (a host loop over the layers when
 * nothing changed). */
static int repack_if_stale(ccfg_unet *u)
{
    if (!each_conv(u, pack_is_stale, NULL)) return CCFG_OK;
    return pack_convs(u);
}

int ccfg_unet_create(const ccfg_unet_config *cfg, const float *params, int64_t n_params,
                     const ccfg_backend *be, ccfg_unet **out)
{
    int status;
    *out = NULL;
    if ((status = check_config(cfg))) return status;
    int n_blocks = 0;
    const int64_t need = walk(NULL, cfg, NULL, &n_blocks);
    if (n_params != need)
        return ccfg_fail(CCFG_EINVAL, "the config needs %lld parameters, got %lld",
                         (long long)need, (long long)n_params);
    ccfg_unet *u = calloc(1, sizeof *u);
    if (!u) return ccfg_fail(CCFG_ENOMEM, "out of memory for the UNet");
    const int L = cfg->levels, lpb = cfg->layers_per_block;
    u->cfg = *cfg;
    u->be = be ? be : ccfg_backend_cpu();
    u->ops = u->be->nn;
    u->n_params = need;
    if ((status = u->be->alloc(u->be, (size_t)(need ? need : 1) * sizeof(float), &u->params))) {
        u->params = NULL;
        goto fail;
    }
    u->down_res = calloc((size_t)(L * lpb), sizeof *u->down_res);
    u->down_attn = calloc((size_t)(L * lpb), sizeof *u->down_attn);
    u->up_res = calloc((size_t)(L * (lpb + 1)), sizeof *u->up_res);
    u->up_attn = calloc((size_t)(L * (lpb + 1)), sizeof *u->up_attn);
    u->down_tf = calloc((size_t)(L * lpb), sizeof *u->down_tf);
    u->up_tf = calloc((size_t)(L * (lpb + 1)), sizeof *u->up_tf);
    u->tblocks = calloc((size_t)(n_blocks ? n_blocks : 1), sizeof *u->tblocks);
    if (!u->params || !u->down_res || !u->down_attn || !u->up_res || !u->up_attn || !u->down_tf ||
        !u->up_tf || !u->tblocks) {
        status = ccfg_fail(CCFG_ENOMEM, "out of memory for %lld UNet parameters", (long long)need);
        goto fail;
    }
    if ((status = u->be->upload(u->be, u->params, params, (size_t)need * sizeof(float)))) goto fail;
    walk(u, cfg, u->params, NULL);     /* pointer arithmetic works on device addresses too */
    u->n_tblocks = n_blocks;
    u->n_skips = 1 + L * lpb + (L - 1);
    if ((status = pack_convs(u))) goto fail;
    *out = u;
    return CCFG_OK;
fail:
    ccfg_unet_free(u);
    return status;
}

/* ------------------------------------------------------------------------- */
/* planning */

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

int64_t ccfg_unet_plan_bytes(const ccfg_unet *u) { return u->plan.floats * (int64_t)sizeof(float); }

/* the largest buffer each role needs, in floats, walking the forward */
typedef struct {
    int64_t act, norm, cat, qkv, o, attn_thread;   /* attn_thread: per thread */
    int64_t ch_max;     /* the most channels in or out of any layer: the GroupNorm affine's slot */
    int64_t th, kv, ff, ffh;
    int64_t conv_scratch;           /* the largest conv2d's scratch, all threads */
    int threads;                    /* the threads conv2d splits its scratch between (0: none) */
} plan_sizes;

/* the scratch conv c takes on an h x w input (nn.h ccfg_nn_conv2d_scratch: its path's own need
 * for this shape; packed when the layer's weights are) */
static void need_conv(plan_sizes *z, const conv_p *c, int h, int w)
{
    if (!c->w || !z->threads) return;
    z->conv_scratch = max64(z->conv_scratch,
                            ccfg_nn_conv2d_scratch(c->cin, c->cout, h, w, c->k, c->stride,
                                                   c->pad0, c->pad1, c->pk != NULL, z->threads));
}

static void need_resnet(plan_sizes *z, const resnet_p *r, int h, int w)
{
    need_conv(z, &r->conv1, h, w);
    need_conv(z, &r->conv2, h, w);
    need_conv(z, &r->shortcut, h, w);
}

static void need_attention(plan_sizes *z, const attn_p *a, int64_t n)
{
    const int64_t inner = (int64_t)a->heads * a->head_dim;
    z->qkv = max64(z->qkv, 3 * inner * n);
    z->o = max64(z->o, inner * n);
    z->attn_thread = max64(z->attn_thread, ccfg_nn_attention_scratch(a->head_dim));
}

static void need_transformer(plan_sizes *z, const xformer_p *t, int64_t n, int64_t bc,
                             int ctx_len)
{
    const int64_t inner = t->inner;
    z->norm = max64(z->norm, max64(t->c, inner) * n);   /* GroupNorm, then each LayerNorm */
    z->th = max64(z->th, inner * n);
    z->qkv = max64(z->qkv, 3 * inner * n);
    z->o = max64(z->o, inner * n);
    z->kv = max64(z->kv, 2 * inner * bc * ctx_len);
    z->ff = max64(z->ff, 8 * inner * n);
    z->ffh = max64(z->ffh, 4 * inner * n);
    z->attn_thread = max64(z->attn_thread, ccfg_nn_attention_scratch(t->head_dim));
}

int ccfg_unet_plan(ccfg_unet *u, int64_t max_batch, int h, int w, int ctx_len, int chunk)
{
    const ccfg_unet_config *cfg = &u->cfg;
    const int L = cfg->levels, lpb = cfg->layers_per_block, T = cfg->time_embed_dim;
    const int D = cfg->cross_attention_dim;
    const int div = 1 << (L - 1);
    if (h < 1 || w < 1 || h % div || w % div)
        return ccfg_fail(CCFG_EINVAL, "sample: height and width must be multiples of %d (2 to the "
                         "number of downsamplings), got %d x %d", div, h, w);
    if ((int64_t)h * w > CCFG_UNET_MAX_PIXELS)
        return ccfg_fail(CCFG_EINVAL, "sample: %d x %d is more than the %d pixels supported", h, w,
                         CCFG_UNET_MAX_PIXELS);
    if (max_batch < 1) return ccfg_fail(CCFG_EINVAL, "batch must be >= 1");
    if (D ? ctx_len < 1 : ctx_len != 0)
        return ccfg_fail(CCFG_EINVAL, D ? "encoder_hidden_states: the condition needs >= 1 token"
                                        : "encoder_hidden_states: the UNet has no cross-attention");
    if (ctx_len > CCFG_UNET_MAX_TOKENS)
        return ccfg_fail(CCFG_EINVAL, "encoder_hidden_states: %d tokens, at most %d supported",
                         ctx_len, CCFG_UNET_MAX_TOKENS);
    const int64_t chunk_px = omp_get_max_threads() > 1 ? CHUNK_PIXELS_THREADED : CHUNK_PIXELS;
    int64_t bc = chunk > 0 ? chunk : max64(1, chunk_px / ((int64_t)h * w));
    if (bc > max_batch) bc = max_batch;
    /* "at most chunk samples": a chunk of columns (pixels and tokens) every size below fits */
    const int64_t cols = (int64_t)h * w + ctx_len;
    if (bc * cols > MAX_CHUNK_COLUMNS) bc = max64(1, MAX_CHUNK_COLUMNS / cols);
    plan_t *p = &u->plan;
    if (p->chunk >= bc && p->h == h && p->w == w && p->ctx_len == ctx_len)
        return CCFG_OK;     /* the current plan suffices */
    plan_free(u->be, p);

    plan_sizes z;
    memset(&z, 0, sizeof z);
    /* a device backend needs no scratch (its kernels tile on their own) */
    z.threads = !u->ops->uses_scratch ? 0 : omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    int hl = h, wl = w;         /* the current level's size */
    int64_t skip_total = 0;
    int64_t *skip_size = malloc((size_t)u->n_skips * sizeof *skip_size);
    if (!skip_size) return ccfg_fail(CCFG_ENOMEM, "out of memory planning the UNet");
    int ns = 0;
    int64_t n = bc * h * w;     /* columns at the current level */
    skip_size[ns++] = (int64_t)cfg->channels[0] * n;
    z.ch_max = max64(z.ch_max, cfg->in_channels);
    need_conv(&z, &u->conv_in, hl, wl);
    for (int l = 0; l < L; l++) {
        const int ch = cfg->channels[l];
        for (int j = 0; j < lpb; j++) {
            const resnet_p *r = &u->down_res[l * lpb + j];
            z.norm = max64(z.norm, (int64_t)max64(r->cin, r->cout) * n);
            z.ch_max = max64(z.ch_max, max64(r->cin, r->cout));
            need_resnet(&z, r, hl, wl);
            skip_size[ns++] = (int64_t)ch * n;
            if (cfg->down_attention[l] == CCFG_UNET_SELF_ATTENTION)
                need_attention(&z, &u->down_attn[l * lpb + j], n);
            else if (cfg->down_attention[l] == CCFG_UNET_TRANSFORMER)
                need_transformer(&z, &u->down_tf[l * lpb + j], n, bc, ctx_len);
        }
        if (l < L - 1) {
            z.ch_max = max64(z.ch_max, ch);
            need_conv(&z, &u->down_conv[l], hl, wl);
            hl /= 2;
            wl /= 2;
            n /= 4;
            skip_size[ns++] = (int64_t)ch * n;
        }
    }
    /* n: columns at the lowest level */
    if (cfg->mid_block) {
        const int ch = cfg->channels[L - 1];
        z.act = max64(z.act, (int64_t)ch * n);
        z.norm = max64(z.norm, (int64_t)ch * n);
        z.ch_max = max64(z.ch_max, ch);
        need_resnet(&z, &u->mid_res[0], hl, wl);
        need_resnet(&z, &u->mid_res[1], hl, wl);
        if (cfg->mid_attention == CCFG_UNET_SELF_ATTENTION)
            need_attention(&z, &u->mid_attn, n);
        else if (cfg->mid_attention == CCFG_UNET_TRANSFORMER)
            need_transformer(&z, &u->mid_tf, n, bc, ctx_len);
    }
    for (int i = 0; i < L; i++) {
        for (int j = 0; j <= lpb; j++) {
            const resnet_p *r = &u->up_res[i * (lpb + 1) + j];
            z.cat = max64(z.cat, (int64_t)r->cin * n);
            z.norm = max64(z.norm, (int64_t)max64(r->cin, r->cout) * n);
            z.act = max64(z.act, (int64_t)r->cout * n);
            z.ch_max = max64(z.ch_max, max64(r->cin, r->cout));
            need_resnet(&z, r, hl, wl);
            if (cfg->up_attention[i] == CCFG_UNET_SELF_ATTENTION)
                need_attention(&z, &u->up_attn[i * (lpb + 1) + j], n);
            else if (cfg->up_attention[i] == CCFG_UNET_TRANSFORMER)
                need_transformer(&z, &u->up_tf[i * (lpb + 1) + j], n, bc, ctx_len);
        }
        if (i < L - 1) {
            const int ch = rev(cfg, i);
            n *= 4;
            hl *= 2;
            wl *= 2;
            z.norm = max64(z.norm, (int64_t)ch * n);    /* the upsampled tensor lives in `a` */
            z.act = max64(z.act, (int64_t)ch * n);
            z.ch_max = max64(z.ch_max, ch);
            need_conv(&z, &u->up_conv[i], hl, wl);
        }
    }
    z.norm = max64(z.norm, (int64_t)cfg->channels[0] * n);
    z.ch_max = max64(z.ch_max, cfg->channels[0]);
    need_conv(&z, &u->conv_out, hl, wl);
    for (int s = 0; s < u->n_skips; s++) skip_total += skip_size[s];

    /* a device backend needs staging for host inputs and outputs (and no scratch: z.threads 0);
     * conv2d's scratch is each layer's need on its level's h x w, for all threads */
    const int staged = !u->be->host_memory;
    const int64_t attn_scratch = z.attn_thread * z.threads;
    const int64_t tmax = max64(T, 2 * (int64_t)cfg->channels[0]);
    const int64_t ctx = (int64_t)D * bc * ctx_len;
    int64_t tproj = 0;
    for (int l = 0; l < L; l++) tproj = max64(tproj, 2 * (int64_t)cfg->channels[l]);
    const int64_t sizes[] = {
        (int64_t)cfg->in_channels * bc * h * w, (int64_t)cfg->out_channels * bc * h * w, z.act,
        z.act, z.norm, z.cat, z.qkv, z.o, z.conv_scratch, attn_scratch,
        bc * cfg->channels[0], bc * T, bc * T, bc * T, bc * tproj, bc * tmax,
        staged ? (int64_t)cfg->in_channels * bc * h * w : 0,
        staged ? (int64_t)cfg->out_channels * bc * h * w : 0,
        z.th, z.kv, z.ff, z.ffh, ctx, 2 * bc * z.ch_max, skip_total,
    };
    float **slots[] = {&p->x, &p->y, &p->p, &p->q, &p->a, &p->cat, &p->qkv, &p->o,
                       &p->conv_scratch, &p->attn_scratch, &p->tfreq, &p->e1, &p->emb,
                       &p->emb_act, &p->temb, &p->lin_scratch, &p->xin, &p->yout,
                       &p->th, &p->kv, &p->ff, &p->ffh, &p->ctx, &p->ab, NULL};
    const int nslots = (int)(sizeof sizes / sizeof sizes[0]);
    int64_t total = 0;
    for (int s = 0; s < nslots; s++) total += (sizes[s] + 15) & ~(int64_t)15;   /* 64-byte aligned */
    int status = u->be->alloc(u->be, (size_t)total * sizeof(float), &p->arena);
    p->skip = malloc((size_t)u->n_skips * sizeof *p->skip);
    p->ctx_host = ctx ? malloc((size_t)ctx * sizeof *p->ctx_host) : NULL;
    if (status) {
        free(skip_size);
        plan_free(u->be, p);
        return status;
    }
    if (!p->skip || (ctx && !p->ctx_host)) {
        free(skip_size);
        plan_free(u->be, p);
        return ccfg_fail(CCFG_ENOMEM, "out of memory for the UNet activations (%lld MiB for "
                         "chunks of %lld samples of %d x %d)", (long long)(total >> 18),
                         (long long)bc, h, w);
    }
    int64_t off = 0;
    for (int s = 0; s < nslots; s++) {
        if (slots[s]) *slots[s] = p->arena + off;
        else    /* the last slot: every skip tensor, one after the other */
            for (int64_t k = 0, at = 0; k < u->n_skips; k++) {
                p->skip[k] = p->arena + off + at;
                at += skip_size[k];
            }
        off += (sizes[s] + 15) & ~(int64_t)15;
    }
    free(skip_size);
    p->floats = total;
    p->conv_scratch_len = z.conv_scratch;
    p->attn_scratch_len = attn_scratch;
    p->chunk = bc;
    p->h = h;
    p->w = w;
    p->ctx_len = ctx_len;
    return CCFG_OK;
}

/* ------------------------------------------------------------------------- */
/* forward */

/* How a forward on a device that only records work (be->synchronous == 0) is paced: at each
 * checkpoint (between layers) the recorded work is submitted once it would take about
 * PACE_SECONDS to run, so that Ctrl-C, checked at every checkpoint, lands within about a layer
 * instead of after the whole forward. The time per checkpoint is learnt from the submits of this
 * forward (the largest seen; the first checkpoint submits to measure): a GPU then submits a few
 * times per forward, a slow device (lavapipe) at every checkpoint. After the first, a device with
 * be->submit waits only for the piece before (at most two pieces between Ctrl-C and its stop). */
#define PACE_SECONDS 0.05
typedef struct {
    double per_checkpoint;      /* seconds, < 0 until measured */
    int since;                  /* checkpoints since the last submit */
} pace_t;

typedef struct {
    const ccfg_nn_ops *ops;
    const ccfg_backend *be;
    const ccfg_unet_config *cfg;
    plan_t *p;
    int bc;                     /* samples in this chunk */
    int ctx_len;                /* tokens per condition (p->ctx holds the chunk's) */
    pace_t *pace;
} run_t;

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* between layers: submit the recorded work if it is due (see pace_t), then check for Ctrl-C */
static int checkpoint(const run_t *r)
{
    pace_t *pc = r->pace;
    if (!r->be->synchronous) {
        pc->since++;
        if (pc->per_checkpoint < 0.0 || pc->since * pc->per_checkpoint >= PACE_SECONDS) {
            const double t0 = seconds_now();
            /* once measured, a backend that can start work without waiting for it (be->submit)
             * keeps running the submitted piece while the next is recorded */
            if (pc->per_checkpoint >= 0.0 && r->be->submit) TRY(r->be->submit(r->be));
            else TRY(r->be->sync(r->be));
            const double per = (seconds_now() - t0) / pc->since;
            if (per > pc->per_checkpoint) pc->per_checkpoint = per;
            pc->since = 0;
        }
    }
    return ccfg_check_interrupt();
}

/* y = conv(x) (+ y) with c's shape over an h x w input (1x1 layers over columns: h = columns per
 * sample, w = 1), from its packed weights where the backend packed them; scratch: whether the op
 * gets the plan's convolution scratch (the GEMM-only 1x1 calls never had it) */
static int conv_run(const run_t *r, const conv_p *c, int h, int w, const float *x, int accumulate,
                    float *y, int scratch_on)
{
    plan_t *p = r->p;
    float *scratch = scratch_on ? p->conv_scratch : NULL;
    const int64_t scratch_len = scratch_on ? p->conv_scratch_len : 0;
    if (c->pk)
        return r->ops->conv2d_packed(r->be, r->bc, c->cin, h, w, x, c->cout, c->k, c->stride,
                                     c->pad0, c->pad1, c->w, c->pk, c->b, accumulate, y, scratch,
                                     scratch_len);
    return r->ops->conv2d(r->be, r->bc, c->cin, h, w, x, c->cout, c->k, c->stride, c->pad0,
                          c->pad1, c->w, c->b, accumulate, y, scratch, scratch_len);
}

static int conv3(const run_t *r, const conv_p *c, int h, int w, const float *x, int accumulate,
                 float *y)
{
    return conv_run(r, c, h, w, x, accumulate, y, 1);
}

/* *fold: whether conv c (over an h x w input) reads the GroupNorm(+SiLU) before it folded in
 * (nn.h conv2d_packed_norm), so that the caller computes (a, d) instead of the normalised tensor.
 * A backend whose ops tile on their own (Vulkan) decides by the shape alone and is asked with
 * batch 0 (nothing recorded), so no (a, d) is computed for a layer it declines; the CPU fuses
 * only packed layers and decides at the call (then falls back: done = 0). */
static int norm_folds(const run_t *r, const conv_p *c, int h, int w, int *fold)
{
    const ccfg_nn_ops *ops = r->ops;
    *fold = 0;
    if (!ops->group_norm_affine || !ops->conv2d_packed_norm) return CCFG_OK;
    if (ops->uses_scratch) {
        *fold = c->pk != NULL;
        return CCFG_OK;
    }
    return ops->conv2d_packed_norm(r->be, 0, c->cin, h, w, NULL, NULL, 1, c->cout, c->k,
                                   c->stride, c->pad0, c->pad1, c->w, c->pk, c->b, NULL, 0, NULL,
                                   NULL, 0, fold);
}

/* y = resnet(x); x and y distinct; uses p->a and p->temb */
static int resnet_fwd(const run_t *r, const resnet_p *rs, int h, int w, const float *x, float *y)
{
    const ccfg_nn_ops *ops = r->ops;
    const ccfg_backend *be = r->be;
    const ccfg_unet_config *cfg = r->cfg;
    plan_t *p = r->p;
    const int hw = h * w, G = cfg->norm_groups;
    const float *in_bias = cfg->scale_shift ? NULL : p->temb;
    const float *film = cfg->scale_shift ? p->temb : NULL;
    /* GroupNorm+SiLU folded into the convolution after it where the backend can (nn.h
     * conv2d_packed_norm): conv1's output h then lives in p->a, the normalised tensors are never
     * written; else norm1 into p->a and h in y, as diffusers' order */
    int fold1 = 0, fold2 = 0;
    TRY(norm_folds(r, &rs->conv1, h, w, &fold1));
    float *hb = y;
    int done = 0;
    if (fold1) {
        TRY(ops->group_norm_affine(be, r->bc, rs->cin, hw, G, cfg->norm_eps, x, NULL, rs->norm1_w,
                                   rs->norm1_b, NULL, p->ab));
        TRY(ops->conv2d_packed_norm(be, r->bc, rs->cin, h, w, x, p->ab, 1, rs->cout, 3, 1, 1, 1,
                                    rs->conv1.w, rs->conv1.pk, rs->conv1.b, NULL, 0, p->a,
                                    p->conv_scratch, p->conv_scratch_len, &done));
        if (done) hb = p->a;
    }
    if (!done) {
        TRY(ops->group_norm(be, r->bc, rs->cin, hw, G, cfg->norm_eps, x, NULL, rs->norm1_w,
                            rs->norm1_b, NULL, 1, p->a));
        TRY(conv3(r, &rs->conv1, h, w, p->a, 0, y));
    }
    TRY(checkpoint(r));
    TRY(ops->linear(be, r->bc, cfg->time_embed_dim, rs->temb_out, p->emb_act, rs->temb_w,
                    rs->temb_b, 0, p->temb, NULL));
    const int64_t count = (int64_t)rs->cout * r->bc * hw;
    done = 0;
    if (hb == p->a) {
        /* h in p->a: y is free for the shortcut, conv2 reads h through norm2 */
        TRY(norm_folds(r, &rs->conv2, h, w, &fold2));
        if (fold2)
            TRY(ops->group_norm_affine(be, r->bc, rs->cout, hw, G, cfg->norm_eps, p->a, in_bias,
                                       rs->norm2_w, rs->norm2_b, film, p->ab));
        else    /* norm2 in place */
            TRY(ops->group_norm(be, r->bc, rs->cout, hw, G, cfg->norm_eps, p->a, in_bias,
                                rs->norm2_w, rs->norm2_b, film, 1, p->a));
    } else {
        TRY(ops->group_norm(be, r->bc, rs->cout, hw, G, cfg->norm_eps, y, in_bias, rs->norm2_w,
                            rs->norm2_b, film, 1, p->a));
    }
    /* The skip connection: the shortcut's output in y, onto which conv2 accumulates; without a
     * shortcut, x itself, added by conv2's epilogue where the backend can (nn.h conv2d_residual,
     * and conv2d_packed_norm's residual where norm2 is folded in: no copy of x into y), else
     * copied into y first (the CPU, whose folded conv2 then accumulates onto y). */
    const int residual_in_conv = !rs->shortcut.w && ops->conv2d_residual;
    if (rs->shortcut.w)
        TRY(conv_run(r, &rs->shortcut, h, w, x, 0, y, 1));
    else if (!residual_in_conv)
        TRY(ops->copy(be, count, x, y));
    if (fold2) {
        TRY(ops->conv2d_packed_norm(be, r->bc, rs->cout, h, w, p->a, p->ab, 1, rs->cout, 3, 1, 1,
                                    1, rs->conv2.w, rs->conv2.pk, rs->conv2.b,
                                    residual_in_conv ? x : NULL, residual_in_conv ? 0 : 1, y,
                                    p->conv_scratch, p->conv_scratch_len, &done));
        if (!done)      /* not fused after all: norm2 in place, then conv2 */
            TRY(ops->group_norm(be, r->bc, rs->cout, hw, G, cfg->norm_eps, p->a, in_bias,
                                rs->norm2_w, rs->norm2_b, film, 1, p->a));
    }
    if (!done && residual_in_conv)
        TRY(ops->conv2d_residual(be, r->bc, rs->cout, h, w, p->a, rs->cout, 3, 1, 1, 1,
                                 rs->conv2.w, rs->conv2.pk, rs->conv2.b, x, y, p->conv_scratch,
                                 p->conv_scratch_len));
    else if (!done)
        TRY(conv3(r, &rs->conv2, h, w, p->a, 1, y));
    if (rs->out_scale != 1.0f) TRY(ops->scale(be, count, 1.0f / rs->out_scale, y));
    return checkpoint(r);
}

/* y = attention(y) + y, in place; uses p->a, p->qkv, p->o */
static int attn_fwd(const run_t *r, const attn_p *at, int hw, float *y)
{
    const ccfg_nn_ops *ops = r->ops;
    const ccfg_backend *be = r->be;
    plan_t *p = r->p;
    const float *src = y;
    if (at->groups) {
        TRY(ops->group_norm(be, r->bc, at->c, hw, at->groups, r->cfg->norm_eps, y, NULL, at->norm_w,
                            at->norm_b, NULL, 0, p->a));
        src = p->a;
    }
    TRY(conv_run(r, &at->qkv, hw, 1, src, 0, p->qkv, 0));
    TRY(ops->attention(be, r->bc, hw, at->heads, at->head_dim, p->qkv, p->o, p->attn_scratch,
                       p->attn_scratch_len));
    TRY(conv_run(r, &at->out, hw, 1, p->o, 1, y, 0));
    if (at->out_scale != 1.0f) TRY(ops->scale(be, (int64_t)at->c * r->bc * hw, 1.0f / at->out_scale,
                                              y));
    return checkpoint(r);
}

/* a 1x1 convolution over the `cols` columns of x (cin, cols): y = W x + b (+ y) */
static int pointwise(const run_t *r, int64_t cols, const conv_p *c, const float *x, int accumulate,
                     float *y)
{
    /* conv2d over bc "images" of cols/bc x 1 pixels: the one GEMM, no scratch */
    return conv_run(r, c, (int)(cols / r->bc), 1, x, accumulate, y, 0);
}

/* y = Transformer2DModel(y) + y in place (hw pixels per sample); uses p->a, th, qkv, o, kv, ff,
 * ffh and the chunk's condition tokens p->ctx. diffusers' fixed epsilons: GroupNorm 1e-6,
 * LayerNorm 1e-5. Dropout is the identity at inference. */
static int transformer_fwd(const run_t *r, const xformer_p *tf, int hw, float *y)
{
    const ccfg_nn_ops *ops = r->ops;
    const ccfg_backend *be = r->be;
    plan_t *p = r->p;
    const int64_t n = (int64_t)r->bc * hw, nctx = (int64_t)r->bc * r->ctx_len;
    const int inner = tf->inner;
    TRY(ops->group_norm(be, r->bc, tf->c, hw, tf->groups, 1e-6f, y, NULL, tf->norm_w, tf->norm_b,
                        NULL, 0, p->a));
    TRY(pointwise(r, n, &tf->proj_in, p->a, 0, p->th));
    for (int i = 0; i < tf->layers; i++) {
        const tblock_p *b = &tf->blocks[i];
        /* self-attention over the pixels of each sample */
        TRY(ops->layer_norm(be, n, inner, 1e-5f, p->th, b->norm1_w, b->norm1_b, p->a));
        TRY(pointwise(r, n, &b->qkv1, p->a, 0, p->qkv));
        TRY(ops->attention(be, r->bc, hw, tf->heads, tf->head_dim, p->qkv, p->o, p->attn_scratch,
                           p->attn_scratch_len));
        TRY(pointwise(r, n, &b->out1, p->o, 1, p->th));
        /* cross-attention: queries from the pixels, keys and values from the condition tokens */
        TRY(ops->layer_norm(be, n, inner, 1e-5f, p->th, b->norm2_w, b->norm2_b, p->a));
        TRY(pointwise(r, n, &b->q2, p->a, 0, p->qkv));
        TRY(pointwise(r, nctx, &b->kv2, p->ctx, 0, p->kv));
        TRY(ops->attention_qkv(be, r->bc, hw, r->ctx_len, tf->heads, tf->head_dim, p->qkv, p->kv,
                               p->kv + (int64_t)inner * nctx, p->o, p->attn_scratch,
                               p->attn_scratch_len));
        TRY(pointwise(r, n, &b->out2, p->o, 1, p->th));
        /* feed-forward: GEGLU to 4 inner, back to inner */
        TRY(ops->layer_norm(be, n, inner, 1e-5f, p->th, b->norm3_w, b->norm3_b, p->a));
        TRY(pointwise(r, n, &b->ff1, p->a, 0, p->ff));
        TRY(ops->geglu(be, n, 4 * inner, p->ff, p->ffh));
        TRY(pointwise(r, n, &b->ff2, p->ffh, 1, p->th));
        TRY(checkpoint(r));
    }
    return pointwise(r, n, &tf->proj_out, p->th, 1, y);
}

/* whatever follows resnet j of a block: nothing, self-attention or a transformer */
static int block_attention_fwd(const run_t *r, int kind, const attn_p *a, const xformer_p *t, int hw,
                               float *y)
{
    if (kind == CCFG_UNET_SELF_ATTENTION) return attn_fwd(r, a, hw, y);
    if (kind == CCFG_UNET_TRANSFORMER) return transformer_fwd(r, t, hw, y);
    return CCFG_OK;
}

static int forward_chunk(ccfg_unet *u, int bc, int h, int w, const float *x, const double *t,
                         const int32_t *labels, float *out, pace_t *pace)
{
    const ccfg_nn_ops *ops = u->ops;
    const ccfg_backend *be = u->be;
    const ccfg_unet_config *cfg = &u->cfg;
    plan_t *p = &u->plan;
    const run_t r = {ops, be, cfg, p, bc, p->ctx_len, pace};
    const int L = cfg->levels, lpb = cfg->layers_per_block, T = cfg->time_embed_dim;
    const int C0 = cfg->channels[0];

    TRY(ops->nchw_to_cnhw(be, bc, cfg->in_channels, h * w, x,
                          cfg->center_input_sample ? 2.0f : 1.0f,
                          cfg->center_input_sample ? -1.0f : 0.0f, p->x));
    /* time (and class) embedding, and its SiLU that every resnet's projection reads */
    TRY(ops->timestep_embedding(be, bc, C0, t, cfg->flip_sin_to_cos, cfg->freq_shift, p->tfreq));
    TRY(ops->linear(be, bc, C0, T, p->tfreq, u->t1_w, u->t1_b, 0, p->e1, NULL));
    TRY(ops->linear(be, bc, T, T, p->e1, u->t2_w, u->t2_b, 1, p->emb, p->lin_scratch));
    if (u->class_table) TRY(ops->embedding_add(be, bc, T, u->class_table, labels, p->emb));
    TRY(ops->silu(be, (int64_t)bc * T, p->emb, p->emb_act));

    int ns = 0;
    TRY(conv3(&r, &u->conv_in, h, w, p->x, 0, p->skip[ns]));
    float *cur = p->skip[ns++];
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < lpb; j++) {
            float *y = p->skip[ns++];
            TRY(resnet_fwd(&r, &u->down_res[l * lpb + j], h, w, cur, y));
            TRY(block_attention_fwd(&r, cfg->down_attention[l], &u->down_attn[l * lpb + j],
                                    &u->down_tf[l * lpb + j], h * w, y));
            cur = y;
        }
        if (l < L - 1) {
            float *y = p->skip[ns++];
            /* stride 2, padding downsample_padding (or (0, 1): walk) */
            TRY(conv_run(&r, &u->down_conv[l], h, w, cur, 0, y, 1));
            TRY(checkpoint(&r));
            cur = y;
            h /= 2;
            w /= 2;
        }
    }
    if (cfg->mid_block) {
        TRY(resnet_fwd(&r, &u->mid_res[0], h, w, cur, p->p));
        TRY(block_attention_fwd(&r, cfg->mid_attention, &u->mid_attn, &u->mid_tf, h * w, p->p));
        TRY(resnet_fwd(&r, &u->mid_res[1], h, w, p->p, p->q));
        cur = p->q;
    }
    const int64_t n = (int64_t)bc * h * w;
    int64_t cols = n;
    int cur_c = cfg->channels[L - 1];
    for (int i = 0; i < L; i++) {
        for (int j = 0; j <= lpb; j++) {
            const resnet_p *rs = &u->up_res[i * (lpb + 1) + j];
            const float *skip = p->skip[--ns];
            const int skip_c = rs->cin - cur_c;
            TRY(ops->copy(be, (int64_t)cur_c * cols, cur, p->cat));
            TRY(ops->copy(be, (int64_t)skip_c * cols, skip, p->cat + (int64_t)cur_c * cols));
            float *y = cur == p->p ? p->q : p->p;
            TRY(resnet_fwd(&r, rs, h, w, p->cat, y));
            TRY(block_attention_fwd(&r, cfg->up_attention[i], &u->up_attn[i * (lpb + 1) + j],
                                    &u->up_tf[i * (lpb + 1) + j], h * w, y));
            cur = y;
            cur_c = rs->cout;
        }
        if (i < L - 1) {
            TRY(ops->upsample_nearest2x(be, bc, cur_c, h, w, cur, p->a));
            h *= 2;
            w *= 2;
            cols *= 4;
            float *y = cur == p->p ? p->q : p->p;
            TRY(conv3(&r, &u->up_conv[i], h, w, p->a, 0, y));
            TRY(checkpoint(&r));
            cur = y;
        }
    }
    int done = 0, fold = 0;
    TRY(norm_folds(&r, &u->conv_out, h, w, &fold));
    if (fold) {
        TRY(ops->group_norm_affine(be, bc, C0, h * w, cfg->norm_groups, cfg->norm_eps, cur, NULL,
                                   u->out_norm_w, u->out_norm_b, NULL, p->ab));
        TRY(ops->conv2d_packed_norm(be, bc, C0, h, w, cur, p->ab, 1, cfg->out_channels, 3, 1, 1, 1,
                                    u->conv_out.w, u->conv_out.pk, u->conv_out.b, NULL, 0, p->y,
                                    p->conv_scratch, p->conv_scratch_len, &done));
    }
    if (!done) {
        TRY(ops->group_norm(be, bc, C0, h * w, cfg->norm_groups, cfg->norm_eps, cur, NULL,
                            u->out_norm_w, u->out_norm_b, NULL, 1, p->a));
        TRY(conv3(&r, &u->conv_out, h, w, p->a, 0, p->y));
    }
    TRY(ops->cnhw_to_nchw(be, bc, cfg->out_channels, h * w, p->y, out));
    return CCFG_OK;
}

/* the chunk's condition tokens into p->ctx, CNHW (D, bc * ctx_len): token j of sample b is
 * column b * ctx_len + j (transposed on the host from each sample's (ctx_len, D) array) */
static int load_context(ccfg_unet *u, int bc, const float *const *rows)
{
    plan_t *p = &u->plan;
    const int D = u->cfg.cross_attention_dim, Lc = p->ctx_len;
    const int64_t cols = (int64_t)bc * Lc;
    for (int b = 0; b < bc; b++)
        for (int j = 0; j < Lc; j++) {
            const float *tok = rows[b] + (int64_t)j * D;
            float *col = p->ctx_host + (int64_t)b * Lc + j;
            for (int d = 0; d < D; d++) col[(int64_t)d * cols] = tok[d];
        }
    return u->be->upload(u->be, p->ctx, p->ctx_host, (size_t)(D * cols) * sizeof(float));
}

/* io_on_backend: x and out are memory of u->be (model evaluation inside a device sampling run);
 * else host arrays, which a device backend stages through the plan's xin/yout per chunk.
 * ctx_rows: per sample, its condition's (ctx_len, D) host array (NULL without cross-attention) */
static int forward(ccfg_unet *u, int64_t batch, int h, int w, const float *x, const double *t,
                   const int32_t *class_labels, const float *const *ctx_rows, int ctx_len,
                   float *out, int io_on_backend)
{
    const ccfg_unet_config *cfg = &u->cfg;
    const ccfg_backend *be = u->be;
    if (cfg->num_class_embeds) {
        if (!class_labels)
            return ccfg_fail(CCFG_EINVAL, "class_labels: the model is class-conditional "
                             "(num_class_embeds = %d)", cfg->num_class_embeds);
        for (int64_t b = 0; b < batch; b++)
            if (class_labels[b] < 0 || class_labels[b] >= cfg->num_class_embeds)
                return ccfg_fail(CCFG_EINVAL, "class_labels[%lld] = %d is outside [0, %d)",
                                 (long long)b, class_labels[b], cfg->num_class_embeds);
    }
    if (cfg->cross_attention_dim && !ctx_rows)
        return ccfg_fail(CCFG_EINVAL, "encoder_hidden_states: the UNet is text-conditioned "
                         "(cross_attention_dim = %d); pass the condition tokens",
                         cfg->cross_attention_dim);
    if (!cfg->cross_attention_dim && ctx_rows)
        return ccfg_fail(CCFG_EINVAL, "encoder_hidden_states: the UNet has no cross-attention");
    for (int64_t b = 0; b < batch; b++)
        if (!isfinite(t[b])) return ccfg_fail(CCFG_EINVAL, "timestep[%lld] is not finite", (long long)b);
    int status = ccfg_unet_plan(u, batch, h, w, ctx_rows ? ctx_len : 0, 0);
    if (status || (status = repack_if_stale(u))) return status;
    const int64_t chunk = u->plan.chunk;
    const int staged = !be->host_memory && !io_on_backend;
    if (u->ops->begin && (status = u->ops->begin(be))) return status;
    pace_t pace = {-1.0, 0};
    const int64_t in_per = (int64_t)cfg->in_channels * h * w, out_per = (int64_t)cfg->out_channels * h * w;
    for (int64_t b0 = 0; b0 < batch && !status; b0 += chunk) {
        const int bc = (int)(batch - b0 < chunk ? batch - b0 : chunk);
        const float *xc = x + b0 * in_per;
        float *oc = out + b0 * out_per;
        if (staged) {
            status = be->upload(be, u->plan.xin, xc, (size_t)(bc * in_per) * sizeof(float));
            xc = u->plan.xin;
            oc = u->plan.yout;
        }
        if (!status && ctx_rows) status = load_context(u, bc, ctx_rows + b0);
        if (!status)
            status = forward_chunk(u, bc, h, w, xc, t + b0, class_labels ? class_labels + b0 : NULL,
                                   oc, &pace);
        if (!status && staged)
            status = be->download(be, out + b0 * out_per, u->plan.yout,
                                  (size_t)(bc * out_per) * sizeof(float));
    }
    if (u->ops->end) {
        const int st = u->ops->end(be);
        if (!status) status = st;
    }
    return status;
}

int ccfg_unet_forward(ccfg_unet *u, int64_t batch, int h, int w, const float *x, const double *t,
                      const int32_t *class_labels, const float *context, int64_t context_batch,
                      int ctx_len, float *out)
{
    if (!context) return forward(u, batch, h, w, x, t, class_labels, NULL, 0, out, 0);
    if (context_batch != 1 && context_batch != batch)
        return ccfg_fail(CCFG_EINVAL, "encoder_hidden_states: %lld conditions for %lld samples "
                         "(give 1 or one per sample)", (long long)context_batch, (long long)batch);
    const float **rows = malloc((size_t)(batch > 0 ? batch : 1) * sizeof *rows);
    if (!rows) return ccfg_fail(CCFG_ENOMEM, "out of memory for %lld conditions", (long long)batch);
    const int64_t per = (int64_t)ctx_len * u->cfg.cross_attention_dim;
    for (int64_t b = 0; b < batch; b++) rows[b] = context + (context_batch == 1 ? 0 : b * per);
    const int status = forward(u, batch, h, w, x, t, class_labels, rows, ctx_len, out, 0);
    free(rows);
    return status;
}

/* ------------------------------------------------------------------------- */
/* as a ccfg_model */

/* a condition's token arrays: one shared, or one per sample of the run */
static int check_count(int count, int64_t n, int c)     /* c: the condition, -1 the null */
{
    if (count == 1 || count == n) return CCFG_OK;
    if (c < 0)
        return ccfg_fail(CCFG_EINVAL, "null: %d embeddings for n = %lld samples (give one, or one "
                         "per sample)", count, (long long)n);
    return ccfg_fail(CCFG_EINVAL, "condition %d: %d embeddings for n = %lld samples (give one, or "
                     "one per sample)", c, count, (long long)n);
}

int ccfg_unet_model_init(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                         int n_conditions, const int32_t *class_of, const float *contexts,
                         const int32_t *ctx_count, const float *null_context, int null_count,
                         int ctx_len, int64_t n, int64_t max_rows)
{
    memset(m, 0, sizeof *m);
    const int classes = u->cfg.num_class_embeds, text = u->cfg.cross_attention_dim > 0;
    if (n < 1 || max_rows < n)
        return ccfg_fail(CCFG_EINVAL, "the UNet model needs n >= 1 samples and rows >= n");
    if (text && classes)
        return ccfg_fail(CCFG_EINVAL, "num_class_embeds: sampling a UNet conditioned on both text "
                         "and classes is not supported (call its forward directly)");
    if (text) {
        if (ctx_len < 1 || (n_conditions && (!contexts || !ctx_count)))
            return ccfg_fail(CCFG_EINVAL, "the text-conditioned UNet needs its conditions' tokens");
        int status;
        for (int c = 0; c < n_conditions; c++)
            if ((status = check_count(ctx_count[c], n, c))) return status;
        if (null_context && (status = check_count(null_count, n, -1))) return status;
    } else if (contexts || null_context) {
        return ccfg_fail(CCFG_EINVAL, "encoder_hidden_states: the UNet has no cross-attention");
    }
    if (classes && (null_class < 0 || null_class >= classes))
        return ccfg_fail(CCFG_EINVAL, "null_class: %d is outside [0, %d)", null_class, classes);
    if (!text)
        for (int c = 0; c < n_conditions; c++)
            if (!classes || class_of[c] < 0 || class_of[c] >= classes)
                return ccfg_fail(CCFG_EINVAL, "condition %d maps to class %d, outside [0, %d)", c,
                                 class_of[c], classes);
    m->unet = u;
    m->h = h;
    m->w = w;
    m->null_class = classes ? null_class : -1;
    m->n_conditions = n_conditions;
    m->class_of = class_of;
    m->contexts = contexts;
    m->ctx_count = ctx_count;
    m->null_context = null_context;
    m->null_count = null_count;
    m->ctx_len = text ? ctx_len : 0;
    m->n = n;
    m->max_rows = max_rows;
    const size_t rows = (size_t)(max_rows > 0 ? max_rows : 1);
    m->labels = malloc(rows * sizeof *m->labels);
    m->times = malloc(rows * sizeof *m->times);
    m->row_context = malloc(rows * sizeof *m->row_context);
    m->ctx_first = malloc((size_t)(n_conditions > 0 ? n_conditions : 1) * sizeof *m->ctx_first);
    if (!m->labels || !m->times || !m->row_context || !m->ctx_first) {
        ccfg_unet_model_free(m);
        return ccfg_fail(CCFG_ENOMEM, "out of memory for %lld rows", (long long)max_rows);
    }
    for (int c = 0, first = 0; text && c < n_conditions; first += ctx_count[c], c++)
        m->ctx_first[c] = first;
    int status = ccfg_unet_plan(u, max_rows, h, w, m->ctx_len, 0);
    if (status) ccfg_unet_model_free(m);
    return status;
}

void ccfg_unet_model_free(ccfg_unet_model *m)
{
    free(m->labels);
    free(m->times);
    free(m->row_context);
    free(m->ctx_first);
    m->labels = NULL;
    m->times = NULL;
    m->row_context = NULL;
    m->ctx_first = NULL;
}

int ccfg_unet_model_eval(void *ctx, const ccfg_backend *be, int64_t rows, int64_t dim,
                         const float *x, double timestep, double alpha_bar, const int32_t *cond,
                         float *out)
{
    ccfg_unet_model *m = ctx;
    const ccfg_unet_config *cfg = &m->unet->cfg;
    if (be != m->unet->be)
        return ccfg_fail(CCFG_EINVAL, "the UNet lives on %s, the sampler runs on %s",
                         m->unet->be->name, be->name);
    (void)alpha_bar;
    if (rows > m->max_rows)
        return ccfg_fail(CCFG_EINTERNAL, "the UNet was planned for %lld rows, got %lld",
                         (long long)m->max_rows, (long long)rows);
    if (dim != (int64_t)cfg->in_channels * m->h * m->w || cfg->in_channels != cfg->out_channels)
        return ccfg_fail(CCFG_EINVAL, "the UNet maps %d x %d x %d samples, got %lld values per row",
                         cfg->in_channels, m->h, m->w, (long long)dim);
    const int64_t per = (int64_t)m->ctx_len * cfg->cross_attention_dim;
    for (int64_t r = 0; r < rows; r++) {
        m->times[r] = timestep;
        m->labels[r] = 0;
        if (m->ctx_len) {           /* text-conditioned: condition -> its tokens (sample r % n) */
            const int64_t sample = r % m->n;
            if (cond[r] == CCFG_UNCOND) {
                if (!m->null_context)
                    return ccfg_fail(CCFG_EINVAL, "null: the rule needs the unconditional branch; "
                                     "pass null= (e.g. an empty prompt's embedding)");
                m->row_context[r] = m->null_context + (m->null_count > 1 ? sample : 0) * per;
            } else if (cond[r] >= 0 && cond[r] < m->n_conditions) {
                const int64_t k = m->ctx_first[cond[r]] + (m->ctx_count[cond[r]] > 1 ? sample : 0);
                m->row_context[r] = m->contexts + k * per;
            } else {
                return ccfg_fail(CCFG_EINVAL, "condition id %d has no embedding", cond[r]);
            }
        } else if (m->null_class < 0) {
            if (cond[r] != CCFG_UNCOND)
                return ccfg_fail(CCFG_EINVAL, "the UNet has no class input, got condition %d",
                                 cond[r]);
        } else if (cond[r] == CCFG_UNCOND) {
            m->labels[r] = m->null_class;
        } else if (cond[r] >= 0 && cond[r] < m->n_conditions) {
            m->labels[r] = m->class_of[cond[r]];
        } else {
            return ccfg_fail(CCFG_EINVAL, "condition id %d has no class", cond[r]);
        }
    }
    /* the sampler hands over memory of the UNet's backend (on_backend = 1) */
    return forward(m->unet, rows, m->h, m->w, x, m->times, m->null_class < 0 ? NULL : m->labels,
                   m->ctx_len ? m->row_context : NULL, m->ctx_len, out, 1);
}

/* as the sampler's model: the run's backend must be the UNet's; activations are planned once for
 * the largest stacked batch at begin */
static int unet_begin(void *ctx, const ccfg_backend *be, int64_t n, int64_t max_rows)
{
    ccfg_unet_model *m = ctx;
    if (be != m->unet->be)
        return ccfg_fail(CCFG_EINVAL, "device: the UNet's weights are on %s, the run asks for %s",
                         m->unet->be->name, be->name);
    const ccfg_unet_model args = *m;
    return ccfg_unet_model_init(m, args.unet, args.h, args.w, args.null_class, args.n_conditions,
                                args.class_of, args.contexts, args.ctx_count, args.null_context,
                                args.null_count, args.ctx_len, n, max_rows);
}

static void unet_end(void *ctx) { ccfg_unet_model_free(ctx); }

ccfg_model ccfg_unet_as_model(ccfg_unet_model *m, ccfg_unet *u, int h, int w, int null_class,
                              int n_conditions, const int32_t *class_of, const float *contexts,
                              const int32_t *ctx_count, const float *null_context, int null_count,
                              int ctx_len)
{
    memset(m, 0, sizeof *m);
    m->unet = u;
    m->h = h;
    m->w = w;
    m->null_class = null_class;
    m->n_conditions = n_conditions;
    m->class_of = class_of;
    m->contexts = contexts;
    m->ctx_count = ctx_count;
    m->null_context = null_context;
    m->null_count = null_count;
    m->ctx_len = ctx_len;
    return (ccfg_model){.eval = ccfg_unet_model_eval, .begin = unet_begin, .end = unet_end,
                        .ctx = m, .on_backend = 1,
                        .dim = (int64_t)u->cfg.in_channels * h * w};
}
