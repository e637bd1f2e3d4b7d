"""diffusers' ``UNet2DModel`` run natively by ccfg's C core (csrc/unet.c), loaded from a diffusers
folder with ccfg's own safetensors reader: no torch at run time.

    unet = ccfg.models.UNet.from_pretrained("path/to/pipeline")      # or its unet/ subfolder
    eps = unet(x, t, class_labels)                                    # diffusers' forward
    x = ccfg.sample(unet, positive=3, negative=5, guidance=ccfg.CCFG(scale=3))

Here the config is checked (an unsupported value raises ``ValueError`` naming the field), every
tensor's name and shape is checked against what the config implies (legacy attention names
``query/key/value/proj_attn`` are accepted), and the weights are handed to C as one float32 vector
in the order ``_param_layout`` lists (the order csrc/unet.c walks).
"""
from __future__ import annotations

import math
import numbers
import os
import re

import numpy as np

from . import _core, _device, _tensors
from . import _validate as _v
from . import safetensors as _st
from .schedulers import SchedulerConfig

__all__ = ["UNet"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
# what follows each resnet of a block (csrc/unet.h: CCFG_UNET_*_ATTENTION, CCFG_UNET_TRANSFORMER)
SELF_ATTENTION, TRANSFORMER = 1, 2
DOWN_TYPES = {"DownBlock2D": 0, "AttnDownBlock2D": SELF_ATTENTION}
UP_TYPES = {"UpBlock2D": 0, "AttnUpBlock2D": SELF_ATTENTION}
COND_DOWN_TYPES = {"DownBlock2D": 0, "CrossAttnDownBlock2D": TRANSFORMER}
COND_UP_TYPES = {"UpBlock2D": 0, "CrossAttnUpBlock2D": TRANSFORMER}
_LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# Upper bounds on config values. A config.json is untrusted input and each of these sizes
# multiplies memory or work before a weight is checked (layers_per_block = 10**9 once meant
# enumerating 10**9 layers), so a value above its bound raises ValueError naming the field.
# Every bound is far above any published diffusers UNet (Stable Diffusion 1.x/2.x/XL: channels
# <= 1280, 2-3 resnets per block, <= 10 transformer layers, cross_attention_dim <= 2048, 1000
# classes at most in class-conditional models). docs/api.md lists them.
MAX_LEVELS = 8                    # len(block_out_channels)
MAX_CHANNELS = 16384              # block_out_channels, in/out_channels, norm groups, head sizes
MAX_TIME_EMBED_DIM = 65536        # time_embedding_dim
MAX_CROSS_ATTENTION_DIM = 16384   # cross_attention_dim (a condition token's width)
MAX_LAYERS_PER_BLOCK = 64         # layers_per_block (resnets per down block; up blocks have one more)
MAX_TRANSFORMER_LAYERS = 64       # transformer_layers_per_block
MAX_CLASS_EMBEDS = 1_000_000      # num_class_embeds
MAX_SAMPLE_SIZE = 16384           # sample_size (each side)
_LEGACY_RE = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")


def _is_int(v):
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _short(v):
    """repr for a message, cut when long (a config value may be huge)."""
    r = repr(v)
    return r if len(r) <= 80 else r[:60] + f"... ({len(r)} characters)"


def _check_int(v, name, low, high, what="an integer"):
    """``v`` as an int in [low, high], or a ValueError naming ``name``."""
    if not _is_int(v) or v < low or v > high:
        raise ValueError(f"{name}: expected {what} in [{low}, {high}], got {_short(v)}")
    return int(v)


def _field_int(cfg, name, default, low=0, high=MAX_CHANNELS):
    return _check_int(cfg.get(name, default), name, low, high)


def _field_opt_int(cfg, name, high, low=1):
    """An int in [low, high] or None (absent)."""
    v = cfg.get(name, None)
    return None if v is None else _check_int(v, name, low, high, "an integer or null")


def _field_real(cfg, name, default):
    v = cfg.get(name, default)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        f = float("inf")
    if not np.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {_short(v)}")
    return f


def _field_bool(cfg, name, default):
    v = cfg.get(name, default)
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name}: expected true or false, got {_short(v)}")
    return bool(v)


def _field_choice(cfg, name, default, choices):
    v = cfg.get(name, default)
    if not isinstance(v, (str, type(None))) or v not in choices:
        raise ValueError(f"{name}: {_short(v)} is not supported; supported: {list(choices)}")
    return v


def _c_config(cfg):
    """diffusers config dict -> the dict csrc/python/py_unet.c turns into ccfg_unet_config; the
    config's ``_class_name`` picks the model class. Every integer field is bounded (the MAX_*
    constants above); a bad field raises ValueError naming it."""
    if not isinstance(cfg, dict):
        raise TypeError(f"config: expected a dict, got {type(cfg).__name__}")
    bad = [k for k in cfg if not isinstance(k, str)]
    if bad:
        raise TypeError(f"config: field names must be strings, got {_short(bad[0])}")
    cls = cfg.get("_class_name", "UNet2DModel")
    if not isinstance(cls, str) or cls not in _CONFIGS:
        raise ValueError(f"_class_name: {_short(cls)} is not supported; supported: "
                         f"{list(_CONFIGS)}")
    c = _CONFIGS[cls](cfg)
    c["class_name"] = cls
    return c


def _as_numpy(value, argname):
    """A real array from an array-like or a torch tensor (any float dtype or device)."""
    a = _tensors.to_array(value, argname) if _tensors.is_tensor(value) else \
        _v.as_array(value, argname)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{argname}: expected real numbers, got dtype {a.dtype}")
    return a


def _block_types(cfg, name, default, known, L):
    types = cfg.get(name, default)
    if not isinstance(types, (list, tuple)) or len(types) != L:
        raise ValueError(f"{name}: expected {L} block types (one per block_out_channels), "
                         f"got {_short(types)}")
    for t in types:
        if not isinstance(t, str) or t not in known:
            raise ValueError(f"{name}: {_short(t)} is not supported; supported: {list(known)}")
    return tuple(known[t] for t in types)


def _per_level(cfg, name, default, L, high):
    """An int, or a list of one int per level (diffusers broadcasts an int), each in [1, high]."""
    v = cfg.get(name, default)
    vals = [v] * L if _is_int(v) else v
    if not isinstance(vals, (list, tuple)) or len(vals) != L or not all(
            _is_int(x) and 1 <= x <= high for x in vals):
        raise ValueError(f"{name}: expected an integer in [1, {high}] or {L} of them (one per "
                         f"block_out_channels), got {_short(v)}")
    return tuple(int(x) for x in vals)


def _shared_fields(cfg, in_default, channels_default):
    """The fields UNet2DModel and UNet2DConditionModel read alike (level count, resnets, time
    embedding); the class-specific ones are added by the caller."""
    channels = cfg.get("block_out_channels", channels_default)
    if not isinstance(channels, (list, tuple)) or not channels or not all(
            _is_int(c) and 1 <= c <= MAX_CHANNELS for c in channels):
        raise ValueError(f"block_out_channels: expected a list of integers in [1, "
                         f"{MAX_CHANNELS}], got {_short(channels)}")
    if len(channels) > MAX_LEVELS:
        raise ValueError(f"block_out_channels: at most {MAX_LEVELS} levels supported, got "
                         f"{len(channels)}")
    _field_choice(cfg, "time_embedding_type", "positional", ("positional",))
    _field_choice(cfg, "act_fn", "silu", ("silu", "swish"))
    _field_choice(cfg, "class_embed_type", None, (None,))
    shift = _field_choice(cfg, "resnet_time_scale_shift", "default", ("default", "scale_shift"))
    groups = _field_int(cfg, "norm_num_groups", 32, low=1)
    n_class = _field_opt_int(cfg, "num_class_embeds", MAX_CLASS_EMBEDS)
    tdim = _field_opt_int(cfg, "time_embedding_dim", MAX_TIME_EMBED_DIM)
    pad = _field_int(cfg, "downsample_padding", 1, low=0, high=1)
    lpb = cfg.get("layers_per_block", 2)
    if not isinstance(lpb, (list, tuple)):      # (a list: UNet2DConditionModel, checked there)
        lpb = _check_int(lpb, "layers_per_block", 1, MAX_LAYERS_PER_BLOCK)
    # both reach C as float32: a value that rounds to 0 there (1e-46) divides by zero
    eps = _field_real(cfg, "norm_eps", 1e-5)
    if not 1e-30 <= eps <= 1.0:
        raise ValueError(f"norm_eps: expected a number in [1e-30, 1], got {eps!r}")
    mid_scale = _field_real(cfg, "mid_block_scale_factor", 1.0)
    if not 1e-6 <= abs(mid_scale) <= 1e6:
        raise ValueError(f"mid_block_scale_factor: expected a magnitude in [1e-6, 1e6], got "
                         f"{mid_scale!r}")
    L = len(channels)
    return {
        "in_channels": _field_int(cfg, "in_channels", in_default, low=1),
        "out_channels": _field_int(cfg, "out_channels", in_default, low=1),
        "levels": L,
        "channels": tuple(int(x) for x in channels),
        "layers_per_block": lpb,
        "norm_groups": groups,
        "norm_eps": eps,
        "time_embed_dim": int(tdim) if tdim is not None else 4 * int(channels[0]),
        "flip_sin_to_cos": int(_field_bool(cfg, "flip_sin_to_cos", True)),
        "freq_shift": _field_real(cfg, "freq_shift", 0),
        "scale_shift": int(shift == "scale_shift"),
        "downsample_padding": pad,
        "center_input_sample": int(_field_bool(cfg, "center_input_sample", False)),
        "num_class_embeds": 0 if n_class is None else int(n_class),
        "mid_block_scale_factor": mid_scale,
        # text conditioning: none unless the class says so
        "cross_attention_dim": 0,
        "heads": (0,) * L,
        "transformer_layers": (0,) * L,
        "use_linear_projection": False,
    }


def _finish(c):
    _check_groups(c)
    if c["freq_shift"] >= c["channels"][0] // 2:
        raise ValueError(f"freq_shift: must be below half of block_out_channels[0], got "
                         f"{c['freq_shift']}")
    return c


def _config_unet2d(cfg):
    """UNet2DModel (unet_2d.py): self-attention blocks, optional class embedding."""
    c = _shared_fields(cfg, 3, (224, 448, 672, 896))
    L = c["levels"]
    down = _block_types(cfg, "down_block_types", ("DownBlock2D",) + ("AttnDownBlock2D",) * 3,
                        DOWN_TYPES, L)
    up = _block_types(cfg, "up_block_types", ("AttnUpBlock2D",) * 3 + ("UpBlock2D",), UP_TYPES, L)
    mid = _field_choice(cfg, "mid_block_type", "UNetMidBlock2D", ("UNetMidBlock2D", None))
    _field_choice(cfg, "downsample_type", "conv", ("conv",))
    _field_choice(cfg, "upsample_type", "conv", ("conv",))
    head = cfg.get("attention_head_dim", 8)
    if head is not None:
        head = _check_int(head, "attention_head_dim", 1, MAX_CHANNELS, "an integer or null")
    attn_groups = _field_opt_int(cfg, "attn_norm_num_groups", MAX_CHANNELS)
    if isinstance(cfg.get("layers_per_block", 2), (list, tuple)):
        raise ValueError("layers_per_block: UNet2DModel takes one integer, got "
                         f"{_short(cfg['layers_per_block'])}")
    if attn_groups is None:     # UNetMidBlock2D: no GroupNorm in its attention under scale_shift
        attn_groups = c["norm_groups"] if not c["scale_shift"] else 0
    c.update({
        "down_attention": down,
        "up_attention": up,
        "mid_block": int(mid is not None),
        "mid_attention": SELF_ATTENTION if _field_bool(cfg, "add_attention", True) else 0,
        "mid_attention_groups": int(attn_groups),
        "head_dim": 0 if head is None else int(head),
    })
    return _finish(c)


# UNet2DConditionModel fields whose only supported value is the default, and why it matters
_CONDITION_FIXED = {
    "only_cross_attention": False, "dual_cross_attention": False, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "addition_embed_type": None, "time_embedding_act_fn": None,
    "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "projection_class_embeddings_input_dim": None,
    "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None,
    "reverse_transformer_layers_per_block": None, "num_attention_heads": None,
}


def _config_condition(cfg):
    """UNet2DConditionModel (unet_2d_condition.py): Transformer2DModel blocks attending to
    condition tokens (a text encoder's hidden states). diffusers calls the per-level head COUNT
    ``attention_head_dim`` in this class (its own naming bug, kept for compatibility)."""
    for name, value in _CONDITION_FIXED.items():
        got = cfg.get(name, value)
        same = (type(got) is type(value) and got == value) or (
            isinstance(got, (list, tuple)) and value is False
            and all(isinstance(g, bool) and not g for g in got))
        if not same:
            raise ValueError(f"{name}: {_short(got)} is not supported (only {value!r})")
    c = _shared_fields(cfg, 4, (320, 640, 1280, 1280))
    L = c["levels"]
    down = _block_types(cfg, "down_block_types",
                        ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), COND_DOWN_TYPES, L)
    up = _block_types(cfg, "up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                      COND_UP_TYPES, L)
    mid = _field_choice(cfg, "mid_block_type", "UNetMidBlock2DCrossAttn",
                        ("UNetMidBlock2DCrossAttn", None))
    lpb = cfg.get("layers_per_block", 2)
    if isinstance(lpb, (list, tuple)):      # one per block: ccfg supports equal counts
        if len(lpb) != L or not all(_is_int(x) for x in lpb) or len(set(lpb)) != 1:
            raise ValueError(f"layers_per_block: one count for every block supported, got "
                             f"{_short(lpb)}")
        c["layers_per_block"] = _check_int(lpb[0], "layers_per_block", 1, MAX_LAYERS_PER_BLOCK)
    xdim = cfg.get("cross_attention_dim", 1280)
    if isinstance(xdim, (list, tuple)) and xdim and all(_is_int(x) for x in xdim) and \
            len(set(xdim)) == 1:
        xdim = xdim[0]
    xdim = _check_int(xdim, "cross_attention_dim", 1, MAX_CROSS_ATTENTION_DIM,
                      "an integer (one for every block)")
    tl = cfg.get("transformer_layers_per_block", 1)
    if isinstance(tl, (list, tuple)) and any(isinstance(x, (list, tuple)) for x in tl):
        raise ValueError(f"transformer_layers_per_block: per-layer lists are not supported, got "
                         f"{_short(tl)}")
    c.update({
        "down_attention": down,
        "up_attention": up,
        "mid_block": int(mid is not None),
        "mid_attention": TRANSFORMER if mid is not None else 0,
        "mid_attention_groups": 0,
        "head_dim": 0,
        "cross_attention_dim": xdim,
        "heads": _per_level(cfg, "attention_head_dim", 8, L, MAX_CHANNELS),
        "transformer_layers": _per_level(cfg, "transformer_layers_per_block", 1, L,
                                         MAX_TRANSFORMER_LAYERS),
        "use_linear_projection": _field_bool(cfg, "use_linear_projection", False),
    })
    for l, (ch, h) in enumerate(zip(c["channels"], c["heads"])):
        if h > ch:
            raise ValueError(f"attention_head_dim: {h} heads for the {ch} channels of level {l}")
    # upcast_attention: diffusers computes attention scores in float32 under it; ccfg always
    # does, so both values are honoured. dropout is the identity at inference.
    _field_bool(cfg, "upcast_attention", False)
    return _finish(c)


_CONFIGS = {"UNet2DModel": _config_unet2d, "UNet2DConditionModel": _config_condition}


def _check_groups(c):
    """GroupNorm needs groups dividing every normalised channel count (torch would refuse)."""
    g, L, chs = c["norm_groups"], c["levels"], c["channels"]
    counts = set(chs)
    for i in range(L):
        counts |= {_up_in(c, i, j) for j in range(c["layers_per_block"] + 1)}
    for n in sorted(counts):
        if n % g:
            raise ValueError(f"norm_num_groups: {g} does not divide {n} channels "
                             f"(block_out_channels {list(chs)})")
    ag = c["mid_attention_groups"]
    if c["mid_block"] and c["mid_attention"] and ag and chs[-1] % ag:
        raise ValueError(f"attn_norm_num_groups: {ag} does not divide {chs[-1]} channels")
    hd = c["head_dim"]
    for i in range(L):
        attn = SELF_ATTENTION in (c["down_attention"][i], c["up_attention"][L - 1 - i]) or (
            i == L - 1 and c["mid_block"] and c["mid_attention"] == SELF_ATTENTION)
        if attn and hd > chs[i]:
            raise ValueError(f"attention_head_dim: {hd} exceeds the {chs[i]} channels of level {i}")


def _up_in(c, i, j):
    """Input channels of resnet j of up block i (diffusers' UNet2DModel.__init__ bookkeeping)."""
    rev = c["channels"][::-1]
    L = c["levels"]
    out, prev, inp = rev[i], rev[max(i - 1, 0)], rev[min(i + 1, L - 1)]
    skip = inp if j == c["layers_per_block"] else out
    return (prev if j == 0 else out) + skip


def _param_layout(c):
    """Yield (names, shape) in the order csrc/unet.c walks the parameters. ``names`` is one tensor
    name, or for attention q/k/v three names whose tensors are stacked along axis 0. A generator:
    a caller stops at the first tensor that is missing (a config may imply far more layers than
    the weights hold; _flatten_params checks the count first, _param_count)."""
    T, C0 = c["time_embed_dim"], c["channels"][0]

    def conv(prefix, cin, cout, k):
        yield prefix + ".weight", (cout, cin, k, k)
        yield prefix + ".bias", (cout,)

    def linear(prefix, cin, cout):
        yield prefix + ".weight", (cout, cin)
        yield prefix + ".bias", (cout,)

    def norm(prefix, ch):
        yield prefix + ".weight", (ch,)
        yield prefix + ".bias", (ch,)

    def resnet(prefix, cin, cout):
        yield from norm(prefix + ".norm1", cin)
        yield from conv(prefix + ".conv1", cin, cout, 3)
        yield from linear(prefix + ".time_emb_proj", T, 2 * cout if c["scale_shift"] else cout)
        yield from norm(prefix + ".norm2", cout)
        yield from conv(prefix + ".conv2", cout, cout, 3)
        if cin != cout:
            yield from conv(prefix + ".conv_shortcut", cin, cout, 1)

    def attention(prefix, ch, with_norm):
        hd = c["head_dim"] or ch
        inner = (ch // hd) * hd
        if with_norm:
            yield from norm(prefix + ".group_norm", ch)
        qkv = tuple(f"{prefix}.{k}" for k in ("to_q", "to_k", "to_v"))
        yield tuple(n + ".weight" for n in qkv), (inner, ch)
        yield tuple(n + ".bias" for n in qkv), (inner,)
        yield from linear(prefix + ".to_out.0", inner, ch)

    def transformer(prefix, ch, heads, layers):
        # Transformer2DModel: proj_in/proj_out are Linear (use_linear_projection) or 1x1 Conv2d
        inner = heads * (ch // heads)
        D = c["cross_attention_dim"]
        lin = c["use_linear_projection"]
        yield from norm(prefix + ".norm", ch)
        yield prefix + ".proj_in.weight", (inner, ch) if lin else (inner, ch, 1, 1)
        yield prefix + ".proj_in.bias", (inner,)
        for b in range(layers):
            blk = f"{prefix}.transformer_blocks.{b}"
            yield from norm(blk + ".norm1", inner)
            yield (tuple(f"{blk}.attn1.{k}.weight" for k in ("to_q", "to_k", "to_v")),
                   (inner, inner))
            yield from linear(blk + ".attn1.to_out.0", inner, inner)
            yield from norm(blk + ".norm2", inner)
            yield blk + ".attn2.to_q.weight", (inner, inner)
            yield tuple(f"{blk}.attn2.{k}.weight" for k in ("to_k", "to_v")), (inner, D)
            yield from linear(blk + ".attn2.to_out.0", inner, inner)
            yield from norm(blk + ".norm3", inner)
            yield from linear(blk + ".ff.net.0.proj", inner, 8 * inner)
            yield from linear(blk + ".ff.net.2", 4 * inner, inner)
        yield prefix + ".proj_out.weight", (ch, inner) if lin else (ch, inner, 1, 1)
        yield prefix + ".proj_out.bias", (ch,)

    def block_attention(kind, prefix, ch, level):
        if kind == SELF_ATTENTION:
            yield from attention(prefix, ch, True)
        elif kind == TRANSFORMER:
            yield from transformer(prefix, ch, c["heads"][level], c["transformer_layers"][level])

    L, lpb, chs = c["levels"], c["layers_per_block"], c["channels"]
    yield from conv("conv_in", c["in_channels"], C0, 3)
    yield from linear("time_embedding.linear_1", C0, T)
    yield from linear("time_embedding.linear_2", T, T)
    if c["num_class_embeds"]:
        yield "class_embedding.weight", (c["num_class_embeds"], T)
    for l in range(L):
        for j in range(lpb):
            cin = chs[max(l - 1, 0)] if j == 0 else chs[l]
            yield from resnet(f"down_blocks.{l}.resnets.{j}", cin, chs[l])
            yield from block_attention(c["down_attention"][l], f"down_blocks.{l}.attentions.{j}",
                                       chs[l], l)
        if l < L - 1:
            yield from conv(f"down_blocks.{l}.downsamplers.0.conv", chs[l], chs[l], 3)
    if c["mid_block"]:
        yield from resnet("mid_block.resnets.0", chs[-1], chs[-1])
        if c["mid_attention"] == SELF_ATTENTION:
            yield from attention("mid_block.attentions.0", chs[-1], bool(c["mid_attention_groups"]))
        elif c["mid_attention"] == TRANSFORMER:
            yield from block_attention(TRANSFORMER, "mid_block.attentions.0", chs[-1], L - 1)
        yield from resnet("mid_block.resnets.1", chs[-1], chs[-1])
    for i in range(L):
        ch = chs[L - 1 - i]
        for j in range(lpb + 1):
            yield from resnet(f"up_blocks.{i}.resnets.{j}", _up_in(c, i, j), ch)
            yield from block_attention(c["up_attention"][i], f"up_blocks.{i}.attentions.{j}", ch,
                                       L - 1 - i)
        if i < L - 1:
            yield from conv(f"up_blocks.{i}.upsamplers.0.conv", ch, ch, 3)
    yield from norm("conv_norm_out", C0)
    yield from conv("conv_out", C0, c["out_channels"], 3)


def _param_count(c):
    """The number of parameter values the config implies (the size of everything _param_layout
    lists), by arithmetic: O(levels x layers_per_block), whatever the transformer depth."""
    T, C0 = c["time_embed_dim"], c["channels"][0]
    D = c["cross_attention_dim"]

    def resnet(cin, cout):
        tout = 2 * cout if c["scale_shift"] else cout
        n = 2 * cin + (9 * cin * cout + cout) + (T * tout + tout) + 2 * cout + (9 * cout * cout
                                                                                  + cout)
        return n + (cin * cout + cout if cin != cout else 0)

    def attention(ch, with_norm):
        hd = c["head_dim"] or ch
        inner = (ch // hd) * hd
        return (2 * ch if with_norm else 0) + 3 * inner * ch + 3 * inner + inner * ch + ch

    def transformer(ch, heads, layers):
        i = heads * (ch // heads)
        # norm1, q/k/v, out, norm2, q, k/v, out, norm3, ff in (GEGLU: 8i), ff out
        block = (2 * i + 3 * i * i + (i * i + i) + 2 * i + i * i + 2 * i * D + (i * i + i)
                 + 2 * i + (8 * i * i + 8 * i) + (4 * i * i + i))
        return 2 * ch + (i * ch + i) + layers * block + (ch * i + ch)

    def block_attention(kind, ch, level):
        if kind == SELF_ATTENTION:
            return attention(ch, True)
        if kind == TRANSFORMER:
            return transformer(ch, c["heads"][level], c["transformer_layers"][level])
        return 0

    L, lpb, chs = c["levels"], c["layers_per_block"], c["channels"]
    n = (9 * c["in_channels"] * C0 + C0) + (C0 * T + T) + (T * T + T)
    n += c["num_class_embeds"] * T
    for l in range(L):
        for j in range(lpb):
            cin = chs[max(l - 1, 0)] if j == 0 else chs[l]
            n += resnet(cin, chs[l]) + block_attention(c["down_attention"][l], chs[l], l)
        if l < L - 1:
            n += 9 * chs[l] * chs[l] + chs[l]
    if c["mid_block"]:
        n += 2 * resnet(chs[-1], chs[-1])
        if c["mid_attention"] == SELF_ATTENTION:
            n += attention(chs[-1], bool(c["mid_attention_groups"]))
        elif c["mid_attention"] == TRANSFORMER:
            n += block_attention(TRANSFORMER, chs[-1], L - 1)
    for i in range(L):
        ch = chs[L - 1 - i]
        for j in range(lpb + 1):
            n += resnet(_up_in(c, i, j), ch) + block_attention(c["up_attention"][i], ch,
                                                               L - 1 - i)
        if i < L - 1:
            n += 9 * ch * ch + ch
    n += 2 * C0 + (9 * C0 * c["out_channels"] + c["out_channels"])
    return n


def _rename_legacy(names):
    """file name -> canonical name (legacy attention names mapped to to_q/to_k/to_v/to_out.0)."""
    out = {}
    for n in names:
        m = _LEGACY_RE.match(n)
        canon = f"{m.group(1)}.{_LEGACY[m.group(2)]}.{m.group(3)}" if m else n
        if canon in out:
            raise ValueError(f"tensor {n!r}: both {out[canon]!r} and {n!r} give {canon!r}")
        out[canon] = n
    return out


def _flatten_params(c, tensors):
    """The float32 parameter vector from name -> array (canonical or legacy names).

    The count of values the config implies (_param_count, arithmetic) is compared with the count
    the weights hold before anything is copied: when they differ, the layout is walked only as
    far as the first tensor that is missing or misshapen (each step of the walk uses up a tensor
    that is there, so the walk is bounded by the weights, not by the config) to name it."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors: expected a dict name -> array, got {type(tensors).__name__}")
    for name, a in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensors: names must be strings, got {_short(name)}")
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(f"tensor {name!r}: expected an array, got {type(a).__name__}")
    canon = _rename_legacy(tensors)
    present = sum(math.prod(tuple(a.shape)) for a in tensors.values())
    implied = _param_count(c)
    counts = "" if implied == present else (
        f" (the config implies {implied} parameter values, the weights hold {present})")
    used, parts = set(), []

    def get(name, shape):
        if name not in canon:
            raise ValueError(f"tensor {name!r} is missing from the weights{counts}")
        a = tensors[canon[name]]
        used.add(name)
        if tuple(a.shape) != shape:
            # legacy checkpoints may store a linear layer as a 1x1 convolution
            if len(shape) == 2 and tuple(a.shape) == shape + (1, 1):
                a = a.reshape(shape)
            else:
                raise ValueError(f"tensor {canon[name]!r}: shape {tuple(a.shape)} does not match "
                                 f"the config, expected {shape}{counts}")
        if counts:              # this walk only names the fault: copy nothing
            return None
        a = _as_numpy(a, f"tensor {canon[name]!r}")
        a = np.asarray(a, dtype=np.float32).ravel()
        if not _v.all_finite(a):
            raise ValueError(f"tensor {canon[name]!r}: contains NaN or Inf (or values beyond "
                             "the float32 range)")
        return a

    for names, shape in _param_layout(c):
        if isinstance(names, tuple):
            parts.extend(get(n, shape) for n in names)
        else:
            parts.append(get(names, shape))
    extra = sorted(set(canon) - used)
    if extra:
        raise ValueError(f"tensor {canon[extra[0]]!r} is not part of this {c['class_name']} config "
                         f"({len(extra)} unexpected tensor{'s' if len(extra) > 1 else ''}){counts}")
    if counts:                  # cannot happen while _param_count matches _param_layout
        raise ValueError(f"weights: the config implies {implied} parameter values, the weights "
                         f"hold {present}")
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _find_folder(path):
    """(model folder, scheduler_config.json or None) for a model folder or a pipeline folder."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"path: {path!r} is not a folder")
    if os.path.isfile(os.path.join(path, CONFIG_NAME)) and not os.path.isdir(
            os.path.join(path, "unet")):
        model = path
        sched = os.path.join(os.path.dirname(os.path.abspath(path)), "scheduler",
                             "scheduler_config.json")
    elif os.path.isfile(os.path.join(path, "unet", CONFIG_NAME)):
        model = os.path.join(path, "unet")
        sched = os.path.join(path, "scheduler", "scheduler_config.json")
    else:
        raise ValueError(f"path: {path!r} holds neither {CONFIG_NAME} nor unet/{CONFIG_NAME}")
    return model, (sched if os.path.isfile(sched) else None)


def _shard_path(index, folder, tensor, shard):
    """The file of a weight_map entry, refused (ValueError naming the entry) unless it is a
    relative path that stays inside the model folder once every symlink is resolved."""
    entry = f"{index}: weight_map entry {tensor!r} -> {shard!r}"
    if not isinstance(shard, str) or not shard or "\0" in shard:
        raise ValueError(f"{entry}: expected a file name")
    if os.path.isabs(shard) or os.path.splitdrive(shard)[0]:
        raise ValueError(f"{entry}: an absolute path is refused (shards live in the model folder)")
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, shard))
    if os.path.commonpath([root, path]) != root or path == root:
        raise ValueError(f"{entry}: the file is outside the model folder {folder!r} (refused)")
    if not os.path.isfile(path):
        raise ValueError(f"{entry}: no such file in the model folder")
    return path


def _load_weights(folder, variant=None):
    if variant is not None and (not isinstance(variant, str) or not variant or
                                os.sep in variant or "/" in variant or "\0" in variant):
        raise ValueError(f"variant: expected a name such as 'fp16', got {_short(variant)}")
    base = WEIGHTS_NAME if variant is None else WEIGHTS_NAME.replace(
        ".safetensors", f".{variant}.safetensors")
    single = os.path.join(folder, base)
    if os.path.isfile(single):
        return _st.load(single)
    index = single + ".index.json"
    if os.path.isfile(index):
        name = os.path.basename(index)
        data = _v.json_file(index, name)
        if not isinstance(data, dict):
            raise ValueError(f"{name}: expected a JSON object holding a weight_map, got "
                             f"{type(data).__name__}")
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{name}: weight_map missing or not an object of tensor -> file "
                             f"(got {type(weight_map).__name__})")
        shards = {}         # file -> (its resolved path, the tensors it holds)
        for tensor, shard in weight_map.items():
            if not isinstance(shard, str) or shard not in shards:
                shards[shard] = (_shard_path(name, folder, tensor, shard), [])
            shards[shard][1].append(tensor)
        out = {}
        for shard in sorted(shards):
            path, names = shards[shard]
            out.update(_st.load(path, names))
        return out
    raise ValueError(f"path: no {base} (nor its .index.json) in {folder!r}; ccfg reads "
                     f"safetensors weights only")


class UNet:
    """A diffusers ``UNet2DModel`` running in ccfg's C core.

    Build it with :meth:`from_pretrained` (or from a config dict and a name -> array dict).
    ``unet(sample, timestep, class_labels=None)`` is diffusers' forward (raw model output, float32
    NumPy). As a ccfg model: ``shape`` = (in_channels, H, W) from ``sample_size``,
    ``prediction_type`` and ``scheduler`` from the scheduler config; conditions are class indices or
    ``concepts`` names; the unconditional branch uses ``null_class`` (default: the last class when
    the model has class embeddings, the usual "num_classes + 1" training convention).
    """

    def __init__(self, config, tensors, *, scheduler=None, null_class=None, concepts=None,
                 sample_size=None, prediction_type=None):
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict, got {type(config).__name__}")
        self.config = dict(config)
        self._c = _c_config(self.config)
        params = _flatten_params(self._c, tensors)
        self._handle = _core.unet_new(self._c, params)
        # the weights are copied to a Vulkan device the first time a call asks for it (one C
        # model per device, kept); the host parameter vector stays for that
        self._params = params
        self._device_handles = {}
        self.num_parameters = int(params.size)

        self.scheduler = None
        if scheduler is not None:
            self.scheduler = scheduler if isinstance(scheduler, SchedulerConfig) \
                else SchedulerConfig.from_config(scheduler)
        if prediction_type is None:
            prediction_type = self.scheduler.prediction_type if self.scheduler else "epsilon"
        prediction_type = _v.name(prediction_type, "prediction_type",
                                  ("epsilon", "v_prediction", "sample"))
        self.prediction_type = prediction_type

        size = self.config.get("sample_size") if sample_size is None else sample_size
        if size is None:
            self.shape = None
        else:
            hw = (size, size) if _is_int(size) else size
            if not isinstance(hw, (list, tuple)) or len(hw) != 2 or not all(
                    _is_int(s) and 1 <= s <= MAX_SAMPLE_SIZE for s in hw):
                raise ValueError(f"sample_size: expected an int or (height, width), each in "
                                 f"[1, {MAX_SAMPLE_SIZE}], got {_short(size)}")
            div = 2 ** (self._c["levels"] - 1)
            if hw[0] % div or hw[1] % div:
                raise ValueError(f"sample_size: {hw} is not a multiple of {div} (2 to the number of "
                                 f"downsamplings)")
            self.shape = (self._c["in_channels"], int(hw[0]), int(hw[1]))
        self.dim = None if self.shape is None else int(np.prod(self.shape))

        k = self._c["num_class_embeds"]
        self.num_class_embeds = k
        self.class_name = self._c["class_name"]
        # text conditioning: the width of a condition token (0: none)
        self.cross_attention_dim = self._c["cross_attention_dim"]
        if k:
            null_class = k - 1 if null_class is None else null_class
            if not _is_int(null_class) or not 0 <= null_class < k:
                raise ValueError(f"null_class: expected a class index in [0, {k}), got "
                                 f"{null_class!r}")
            self.null_class = int(null_class)
        else:
            if null_class is not None:
                raise ValueError("null_class: the model has no class embedding "
                                 "(num_class_embeds is None)")
            self.null_class = None
        self.concepts = self._concept_table(concepts)
        self.concept_names = list(self.concepts)

    def _concept_table(self, concepts):
        k = self.num_class_embeds
        if concepts is None:
            return {}
        if not k:
            raise ValueError("concepts: the model has no class embedding to map concepts to")
        if isinstance(concepts, dict):
            items = list(concepts.items())
        elif isinstance(concepts, (list, tuple)):
            items = [(name, i) for i, name in enumerate(concepts)]
        else:
            raise TypeError("concepts: expected a list of names (index = class) or a dict "
                            "name -> class index")
        table = {}
        for name, idx in items:
            if not isinstance(name, str):
                raise TypeError(f"concepts: names must be strings, got {name!r}")
            if not _is_int(idx) or not 0 <= idx < k:
                raise ValueError(f"concepts[{name!r}]: class index {idx!r} outside [0, {k})")
            table[name] = int(idx)
        return table

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path, *, variant=None, null_class=None, concepts=None,
                        sample_size=None, scheduler=None):
        """Load a diffusers ``UNet2DModel`` folder (``config.json`` +
        ``diffusion_pytorch_model.safetensors``, F32/F16/BF16, sharded or not) or a pipeline folder
        holding ``unet/``; a ``scheduler/scheduler_config.json`` next to it sets ``scheduler`` and
        ``prediction_type`` (pass ``scheduler=`` to override)."""
        folder, sched = _find_folder(path)
        config = _v.json_file(os.path.join(folder, CONFIG_NAME), CONFIG_NAME)
        tensors = _load_weights(folder, variant)
        if scheduler is None and sched is not None:
            scheduler = SchedulerConfig.from_config(sched)
        return cls(config, tensors, scheduler=scheduler, null_class=null_class, concepts=concepts,
                   sample_size=sample_size)

    # ------------------------------------------------------------------ forward
    def __call__(self, sample, timestep, class_labels=None, device="cpu", *,
                 encoder_hidden_states=None):
        """diffusers' ``forward(sample, timestep, ...).sample`` as float32 NumPy: ``sample``
        (B, in_channels, H, W); ``timestep`` a number or one per sample; ``class_labels`` for a
        class-conditional model; ``encoder_hidden_states`` (B, L, cross_attention_dim) (or one
        (L, D) / (1, L, D) condition for every sample) for a text-conditioned
        ``UNet2DConditionModel``. Arrays of any real dtype and torch tensors are accepted."""
        handle = self._handle_for(_device.resolve(device if device is not None else "cpu"))
        x = _v.as_array(sample, "sample")
        if x.dtype.kind not in "fiu":
            raise TypeError(f"sample: expected a real array, got dtype {x.dtype}")
        if x.ndim != 4 or x.shape[1] != self._c["in_channels"]:
            raise ValueError(f"sample: expected shape (B, {self._c['in_channels']}, H, W), got "
                             f"{x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise ValueError("sample: contains NaN or Inf")
        B = x.shape[0]
        t = _v.as_array(timestep, "timestep")
        if t.dtype.kind not in "fiu":
            raise TypeError(f"timestep: expected numbers, got dtype {t.dtype}")
        t = t.astype(np.float64)
        if not np.all(np.isfinite(t)):
            raise ValueError("timestep: contains NaN or Inf")
        if t.ndim == 0:
            t = np.full(B, float(t))
        elif t.shape == (1,):
            t = np.full(B, float(t[0]))
        elif t.shape != (B,):
            raise ValueError(f"timestep: expected a number or {B} values, got shape {t.shape}")
        labels = None
        if self.num_class_embeds:
            if class_labels is None:
                raise ValueError("class_labels: the model is class-conditional (num_class_embeds "
                                 f"= {self.num_class_embeds}); pass one label per sample")
            labels = _v.as_array(class_labels, "class_labels")
            if labels.dtype.kind not in "iu":
                raise TypeError(f"class_labels: expected integers, got dtype {labels.dtype}")
            labels = np.broadcast_to(labels, (B,)) if labels.ndim == 0 else labels
            if labels.shape != (B,):
                raise ValueError(f"class_labels: expected {B} labels, got shape {labels.shape}")
            if np.any((labels < 0) | (labels >= self.num_class_embeds)):
                raise ValueError(f"class_labels: values must lie in [0, {self.num_class_embeds})")
            labels = np.ascontiguousarray(labels, dtype=np.int32)
        elif class_labels is not None:
            raise ValueError("class_labels: the model has no class embedding")
        ctx = None
        if self.cross_attention_dim:
            if encoder_hidden_states is None:
                raise ValueError(f"encoder_hidden_states: the UNet is text-conditioned "
                                 f"(cross_attention_dim = {self.cross_attention_dim}); pass the "
                                 f"condition tokens, (B, L, {self.cross_attention_dim})")
            ctx = self._tokens(encoder_hidden_states, "encoder_hidden_states", batch=B)
        elif encoder_hidden_states is not None:
            raise ValueError("encoder_hidden_states: the model has no cross-attention")
        out = _core.unet_forward(handle, x, t, labels, ctx)
        if not _v.all_finite(out):
            # finite weights and inputs (both checked): the activations overflowed float32
            raise FloatingPointError("the UNet's forward gave NaN or Inf from finite sample, "
                                     "timestep and weights (its activations overflowed float32)")
        return out

    def _tokens(self, value, argname, batch=None):
        """A condition's tokens as float32 (n, L, D): (L, D) is one condition; (n, L, D) is n
        (``batch``: n must be 1 or ``batch``). Torch tensors are read through NumPy."""
        D = self.cross_attention_dim
        a = _as_numpy(value, argname)
        given = tuple(a.shape)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[2] != D or a.shape[1] < 1:
            raise ValueError(f"{argname}: expected condition tokens of shape (L, {D}) or "
                             f"(n, L, {D}), got {given}")
        if batch is not None and a.shape[0] not in (1, batch):
            raise ValueError(f"{argname}: {a.shape[0]} conditions for {batch} samples (give 1 "
                             f"or one per sample)")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{argname}: contains NaN or Inf")
        return a

    def _handle_for(self, dev):
        """The C model whose weights live on device ``dev`` ("cpu" or "vulkan:N")."""
        if dev == "cpu":
            return self._handle
        if dev not in self._device_handles:
            self._device_handles[dev] = _core.unet_new(self._c, self._params, dev)
        return self._device_handles[dev]

    # ------------------------------------------------------------------ as a ccfg model
    def _condition_id(self, value, argname):  # class-conditional models
        """Class index of a concept name or class index (the condition id the C core receives)."""
        k = self.num_class_embeds
        if not k:
            raise ValueError(f"{argname}: the model has no class embedding, so no conditions")
        if isinstance(value, str):
            name = _v.canonical(value, self.concept_names)   # exact, else case-insensitive
            if name is None:
                raise ValueError(f"{argname}: unknown concept {value!r}; known concepts: "
                                 f"{self.concept_names}")
            return self.concepts[name]
        if _is_int(value):
            if 0 <= int(value) < k:
                return int(value)
            raise ValueError(f"{argname}: class index {int(value)} outside [0, {k})")
        raise TypeError(f"{argname}: expected a class index (int) or concept name (str), got "
                        f"{type(value).__name__}")

    # the model handle ccfg.sample hands to C (see CONTRIBUTING.md, "A model kind")
    _runs_in_c = True

    def _c_model(self, device, positive, negatives, null=None):
        """(C model, positive id, negative ids) for one ccfg.sample run on ``device``; ``null``
        (a class index or concept name) replaces ``null_class`` for this run. For a
        text-conditioned UNet every condition, ``null`` included, is an array of tokens."""
        if self.shape is None:
            raise ValueError("sample_size: the model's config has none; pass "
                             "from_pretrained(..., sample_size=)")
        if self._c["in_channels"] != self._c["out_channels"]:
            raise ValueError("the UNet's out_channels differ from in_channels: it cannot be "
                             "sampled as a denoiser")
        if self.cross_attention_dim:
            return self._c_model_text(device, positive, negatives, null)
        pos = -1 if positive is None else self._condition_id(positive, "positive")
        ids = tuple(self._condition_id(v, "negative") for v in negatives)
        class_of = np.arange(self.num_class_embeds, dtype=np.int32)
        if null is not None:
            if not self.num_class_embeds:
                raise ValueError("null: the model has no class embedding, so no null class")
            null = self._condition_id(null, "null")
        else:
            null = -1 if self.null_class is None else self.null_class
        handle = _core.unet_model(self._handle_for(device), self.shape[1], self.shape[2], null,
                                  class_of)
        return handle, pos, ids

    def _c_model_text(self, device, positive, negatives, null, hw=None):
        """Conditions as token arrays: the positive is id 0, the negatives 1.. Each is (L, D) (or
        (1, L, D)): the same for every sample, or (n, L, D): one per sample of the run (the C
        model checks n). Every condition, the null included, has the same token count L.
        ``hw``: latent (height, width) other than ``shape``'s."""
        if self.num_class_embeds:
            raise ValueError("num_class_embeds: sampling a UNet conditioned on both text and "
                             "classes is not supported; call the UNet's forward directly")
        conds = ([] if positive is None else [("positive", positive)]) + [
            (f"negative[{i}]" if len(negatives) > 1 else "negative", v)
            for i, v in enumerate(negatives)]
        arrays = [(name, self._tokens(v, name)) for name, v in conds]
        null_tokens = None if null is None else self._tokens(null, "null")
        if not arrays and null_tokens is None:
            raise ValueError("null: a run without conditions samples the unconditional branch; "
                             "pass null= (e.g. an empty prompt's embedding)")
        named = arrays + ([] if null_tokens is None else [("null", null_tokens)])
        lengths = {a.shape[1] for _, a in named}
        if len(lengths) > 1:
            raise ValueError(", ".join(n for n, _ in named) + ": every condition needs the same "
                             f"token count (pad the prompts alike), got "
                             + ", ".join(f"{n} {a.shape[1]}" for n, a in named))
        counts = np.array([a.shape[0] for _, a in arrays], dtype=np.int32)
        contexts = np.concatenate([a for _, a in arrays]) if arrays else None
        h, w = self.shape[1:] if hw is None else hw
        handle = _core.unet_model(self._handle_for(device), h, w, -1, np.zeros(0, np.int32),
                                  contexts, counts if arrays else None, null_tokens)
        pos = -1 if positive is None else 0
        ids = tuple(range(1 if positive is not None else 0, len(arrays)))
        return handle, pos, ids

    @property
    def plan_bytes(self):
        """Bytes of activations currently planned (for the last batch size and image size)."""
        return _core.unet_plan_bytes(self._handle)

    def __repr__(self):
        c = self._c
        return (f"UNet(channels={list(c['channels'])}, layers_per_block={c['layers_per_block']}, "
                f"in={c['in_channels']}, out={c['out_channels']}, shape={self.shape}, "
                f"classes={self.num_class_embeds or None}, prediction_type="
                f"{self.prediction_type!r}, parameters={self.num_parameters})")
