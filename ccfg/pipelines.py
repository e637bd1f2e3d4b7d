"""Text-to-image with negative guidance: a diffusers Stable Diffusion folder run by ccfg's sampler.

    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    images = pipe("a pair of boots", negative_prompt="sneakers", guidance=ccfg.CCFG(7.5),
                  steps=30, n=4, seed=0)                    # (4, H, W, 3) uint8

The folder is what ``StableDiffusionPipeline.save_pretrained`` writes (tokenizer, text_encoder,
unet, vae, scheduler). The text encoder and the VAE run through transformers/diffusers (PyTorch:
``pip install 'ccfg[pipelines]'``). The UNet runs natively in ccfg's C core (``unet="ccfg"``, the
default: CPU or Vulkan, the whole sampling loop in C) or through PyTorch (``unet="torch"``, called
back from the C loop each step; any torch device and dtype). ccfg runs the loop itself: the initial
noise (``ccfg.randn``, the same for every rule), the solver with the folder's scheduler config,
and any guidance rule with one positive and any number of negative prompts.
"""
from __future__ import annotations

import os

import numpy as np

from . import _validate as _v
from . import sampling
from .schedulers import SchedulerConfig

__all__ = ["StableDiffusion", "make_tiny_random"]


class _NativeText:
    """ccfg's native UNet2DConditionModel at the pipeline's latent size: conditions are the prompt
    embeddings themselves (the C model holds them for the run)."""

    _runs_in_c = True

    def __init__(self, unet, shape):
        self.unet, self.shape = unet, shape
        self.prediction_type = unet.prediction_type
        self.scheduler = unet.scheduler

    def _c_model(self, device, positive, negatives, null=None):
        return self.unet._c_model_text(device, positive, negatives, null, hw=self.shape[1:])


class _TextConditioned:
    """The UNet as a ccfg model whose conditions are prompt embeddings: condition id -1 is the
    empty prompt, 0 the positive, 1.. the negatives (the C sampler stacks them per step)."""

    _runs_in_c = False

    def __init__(self, pipe, shape, embeddings, null):
        self.pipe, self.shape = pipe, shape
        self.embeddings, self.null = embeddings, null
        self.prediction_type = pipe.scheduler.prediction_type
        self.scheduler = pipe.scheduler

    def _c_model(self, device, positive, negatives, null=None):
        from . import _core
        torch, unet = self.pipe._torch, self.pipe.unet
        table = np.concatenate([self.embeddings, self.null])       # null last: index -1
        shape = self.shape

        def call(x, t, alpha_bar, cond):
            rows = x.shape[0]
            with torch.no_grad():
                xt = torch.from_numpy(x.reshape((rows,) + shape)).to(self.pipe.torch_device,
                                                                       self.pipe.dtype)
                ctx = torch.from_numpy(table[cond]).to(self.pipe.torch_device, self.pipe.dtype)
                out = unet(xt, t, encoder_hidden_states=ctx, return_dict=False)[0]
            return out.float().cpu().numpy().reshape(rows, -1)

        return _core.python_model(call), 0, tuple(range(1, 1 + len(negatives)))


class StableDiffusion:
    """A Stable Diffusion 1.x/2.x pipeline folder with ccfg's sampler and rules (module doc)."""

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler, torch_device="cpu",
                 dtype=None):
        import torch
        self._torch = torch
        self.tokenizer, self.text_encoder, self.vae, self.unet = tokenizer, text_encoder, vae, unet
        self.scheduler = scheduler
        # the UNet: ccfg's (ccfg.models.UNet, a dict config) or diffusers' (torch)
        from .unet import UNet
        self.native_unet = isinstance(unet, UNet)
        ucfg = unet.config if self.native_unet else dict(unet.config)
        self.latent_channels = ucfg.get("in_channels", 4)
        self.latent_size = ucfg.get("sample_size", None)
        self.torch_device = torch.device(torch_device)
        self.dtype = dtype or torch.float32
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, folder, unet="ccfg", torch_device="cpu", dtype=None):
        """Load a pipeline folder. ``unet``: "ccfg" (native, ccfg.models.UNet) or "torch"
        (diffusers' UNet2DConditionModel); ``torch_device`` and ``dtype`` place the torch modules
        (the text encoder, the VAE and a torch UNet; e.g. "cuda", torch.float16)."""
        if unet not in ("torch", "ccfg"):
            raise ValueError(f"unet must be 'ccfg' or 'torch', got {unet!r}")
        if not os.path.isfile(os.path.join(folder, "model_index.json")):
            raise FileNotFoundError(f"folder: no model_index.json in {folder!r} (a folder written "
                                    "by StableDiffusionPipeline.save_pretrained)")
        try:
            import torch
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:
            raise ImportError("ccfg.pipelines needs torch, diffusers and transformers: "
                              "pip install 'ccfg[pipelines]'") from exc
        dtype = dtype or torch.float32

        def load(kind, sub, **kw):
            # safetensors only: never unpickle a checkpoint's .bin files (SECURITY.md)
            return kind.from_pretrained(os.path.join(folder, sub), use_safetensors=True,
                                        **kw).to(torch_device, dtype).eval()
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
        scheduler = SchedulerConfig.from_config(os.path.join(folder, "scheduler"))
        if unet == "ccfg":
            from .unet import UNet
            unet_model = UNet.from_pretrained(folder, scheduler=scheduler)
        else:
            # low_cpu_mem_usage=False: diffusers' default wants `accelerate`, and warns without it
            unet_model = load(UNet2DConditionModel, "unet", low_cpu_mem_usage=False)
        return cls(tokenizer, load(CLIPTextModel, "text_encoder"),
                   load(AutoencoderKL, "vae", low_cpu_mem_usage=False), unet_model, scheduler,
                   torch_device, dtype)

    def encode(self, prompts):
        """Text-encoder hidden states of each prompt, float32 (k, tokens, width), as diffusers'
        pipeline encodes them (padded to the tokenizer's maximum length)."""
        torch = self._torch
        ids = self.tokenizer(list(prompts), padding="max_length",
                             max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(self.torch_device)
        with torch.no_grad():
            out = self.text_encoder(ids)[0]
        return out.float().cpu().numpy()

    def decode(self, latents):
        """Images in [0, 1], float32 (n, H, W, 3), from latents (n, c, h, w)."""
        torch = self._torch
        with torch.no_grad():
            z = torch.from_numpy(np.ascontiguousarray(latents)).to(self.torch_device, self.dtype)
            img = self.vae.decode(z / self.vae.config.scaling_factor, return_dict=False)[0]
        img = (img.float() / 2 + 0.5).clamp(0, 1)
        return img.permute(0, 2, 3, 1).cpu().numpy()

    def __call__(self, prompt, negative_prompt=None, guidance=None, *, sampler="ddim", steps=50,
                 n=1, seed=0, height=None, width=None, eta=0.0, output="uint8", progress=True,
                 device="cpu", return_latents=False):
        """Images for one ``prompt``: uint8 (n, H, W, 3) (``output="float"``: [0, 1] float32),
        with ``latents`` too when ``return_latents``. ``negative_prompt``: None, a string or a
        list; ``guidance``: any ccfg rule (None: the plain conditional prediction); the sampler
        and the C loop run on ``device`` ("cpu" or a Vulkan device: the native UNet runs there
        too; a torch UNet is called back on the host). The initial noise is
        ``ccfg.randn(seed, n, latent shape)``."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if negative_prompt is None:
            negatives = []
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt]
        elif isinstance(negative_prompt, (list, tuple)) and all(isinstance(s, str)
                                                                for s in negative_prompt):
            negatives = list(negative_prompt)
        else:
            raise TypeError("negative_prompt must be None, a string or a list of strings")
        if output not in ("uint8", "float"):
            raise ValueError(f"output must be 'uint8' or 'float', got {output!r}")
        size = self.latent_size
        if isinstance(size, int):
            size = (size, size)
        if (height is None or width is None) and not (isinstance(size, (list, tuple))
                                                      and len(size) == 2):
            raise ValueError(f"height, width: the UNet's config has no usable sample_size "
                             f"({self.latent_size!r}); pass both")
        height = size[0] * self.vae_scale if height is None else _v.integer(height, "height",
                                                                            low=1)
        width = size[1] * self.vae_scale if width is None else _v.integer(width, "width", low=1)
        for name, v in (("height", height), ("width", width)):
            if v % self.vae_scale:
                raise ValueError(f"{name} must be a multiple of {self.vae_scale}, got {v}")
        shape = (self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        emb = self.encode([prompt] + negatives)
        null = self.encode([""])
        if self.native_unet:
            model = _NativeText(self.unet, shape)
            positive, negative, null_arg = emb[0], list(emb[1:]) or None, null[0]
        else:
            model = _TextConditioned(self, shape, emb, null)
            positive, negative, null_arg = prompt, negatives or None, None
        latents = sampling.sample(model, positive=positive, negative=negative, guidance=guidance,
                                  sampler=sampler, steps=steps, n=n, seed=seed, eta=eta,
                                  progress=progress, device=device, null=null_arg)
        images = self.decode(latents)
        if output == "uint8":
            images = (images * 255.0).round().astype(np.uint8)
        return (images, latents) if return_latents else images


def _bytes_to_unicode():
    """CLIP's byte -> printable character table (the base alphabet of its BPE vocabulary)"""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def make_tiny_random(folder, seed=0):
    """Write a tiny Stable-Diffusion-shaped pipeline folder with random weights to ``folder`` and
    return its path: a character-level CLIP tokenizer (no merges, 16 tokens), a 2-layer text
    encoder of width 32, a 2-level UNet2DConditionModel with cross-attention (8x8 latents), a
    2-level VAE (16x16 images) and an SD-style DDIM scheduler. For tests and tutorials where no
    model hub can be reached; its pictures mean nothing."""
    import json

    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok_dir = os.path.join(folder, "_vocab")
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    tok = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                        model_max_length=16)
    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=16)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder
