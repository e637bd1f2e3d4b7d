"""ccfg.pipelines.StableDiffusion on a tiny random-weight pipeline folder built here with
diffusers/transformers: with CFG and with a negative prompt it equals diffusers' own
StableDiffusionPipeline given the same initial latents; CCFG with several negatives runs."""
import json
import os

import numpy as np
import pytest

import ccfg

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")

STEPS, N = 4, 2


def _bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny SD-1.x-shaped pipeline: a character-level CLIP tokenizer (no merges), a 2-layer
    text encoder, a 2-level UNet2DConditionModel with cross-attention, a 2-level VAE."""
    out = tmp_path_factory.mktemp("tiny_sd")
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tok_dir = out / "_vocab"
    tok_dir.mkdir()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                                     model_max_length=16)
    torch.manual_seed(0)
    te = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32, sample_size=16)
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                    beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                                    steps_offset=1)
    diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False).save_pretrained(str(out / "pipe"))
    return str(out / "pipe")


def diffusers_images(folder, latents, **kw):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=STEPS, output_type="np", num_images_per_prompt=1,
               latents=torch.from_numpy(latents), **kw)
    return out.images


def test_cfg_equals_diffusers_pipeline(folder):
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    got, lat = pipe("a red shoe", guidance=ccfg.CFG(4.0), steps=STEPS, n=N, seed=3,
                    output="float", progress=False, return_latents=True)
    assert got.shape == (N, 16, 16, 3) and got.dtype == np.float32
    x_T = ccfg.randn(3, N, (4, 8, 8))
    want = diffusers_images(folder, x_T, prompt=["a red shoe"] * N, guidance_scale=4.0)
    assert np.max(np.abs(got - want)) <= 1e-4
    assert got.std() > 0.01                                 # a picture, not a constant


def test_negative_prompt_equals_diffusers_negative_prompt(folder):
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    got = pipe("a red shoe", negative_prompt="a sneaker", guidance=ccfg.NegativePrompt(4.0),
               steps=STEPS, n=N, seed=5, output="float", progress=False)
    want = diffusers_images(folder, ccfg.randn(5, N, (4, 8, 8)), prompt=["a red shoe"] * N,
                            negative_prompt=["a sneaker"] * N, guidance_scale=4.0)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_ccfg_with_several_negatives(folder):
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    kw = dict(steps=STEPS, n=N, seed=1, progress=False)
    a = pipe("boots", negative_prompt=["sneakers", "sandals"], guidance=ccfg.CCFG(5.0), **kw)
    assert a.shape == (N, 16, 16, 3) and a.dtype == np.uint8
    b = pipe("boots", negative_prompt=["sneakers", "sandals"], guidance=ccfg.CCFG(5.0), **kw)
    assert np.array_equal(a, b)                              # same seed, same images
    c = pipe("boots", guidance=ccfg.CFG(5.0), **kw)
    assert not np.array_equal(a, c)


def test_errors_name_the_argument(folder):
    with pytest.raises(NotImplementedError, match="unet='ccfg'"):
        ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet="ccfg")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        ccfg.pipelines.StableDiffusion.from_pretrained(os.path.dirname(folder))
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    with pytest.raises(TypeError, match="negative_prompt"):
        pipe("x", negative_prompt=3, steps=1, progress=False)
    with pytest.raises(ValueError, match="height"):
        pipe("x", height=15, steps=1, progress=False)
