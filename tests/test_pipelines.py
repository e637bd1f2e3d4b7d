"""ccfg.pipelines.StableDiffusion on a tiny random-weight pipeline folder built here with
diffusers/transformers: with CFG and with a negative prompt it equals diffusers' own
StableDiffusionPipeline given the same initial latents, with the native UNet (CPU and Vulkan) and
the torch one; CCFG with several negatives gives the same images with either UNet."""
import os

import numpy as np
import pytest

import ccfg

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")

STEPS, N = 4, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny SD-1.x-shaped pipeline with random weights (ccfg.pipelines.make_tiny_random)."""
    return ccfg.pipelines.make_tiny_random(str(tmp_path_factory.mktemp("tiny_sd") / "pipe"))


def diffusers_images(folder, latents, **kw):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=STEPS, output_type="np", num_images_per_prompt=1,
               latents=torch.from_numpy(latents), **kw)
    return out.images


def devices():
    return ["cpu"] + (["vulkan"] if ccfg.devices()[1:] else [])


@pytest.mark.parametrize("unet,device", [("torch", "cpu")] + [("ccfg", d) for d in devices()])
def test_cfg_equals_diffusers_pipeline(folder, unet, device):
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet=unet)
    got, lat = pipe("a red shoe", guidance=ccfg.CFG(4.0), steps=STEPS, n=N, seed=3,
                    output="float", progress=False, return_latents=True, device=device)
    assert got.shape == (N, 16, 16, 3) and got.dtype == np.float32
    x_T = ccfg.randn(3, N, (4, 8, 8))
    want = diffusers_images(folder, x_T, prompt=["a red shoe"] * N, guidance_scale=4.0)
    assert np.max(np.abs(got - want)) <= 1e-4
    assert got.std() > 0.01                                 # a picture, not a constant


@pytest.mark.parametrize("unet", ["ccfg", "torch"])
def test_negative_prompt_equals_diffusers_negative_prompt(folder, unet):
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet=unet)
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


@pytest.mark.parametrize("device", devices())
def test_native_unet_agrees_with_torch_unet(folder, device):
    """The same CCFG run (two negatives, DDIM) with the UNet in ccfg's C core and in torch."""
    kw = dict(negative_prompt=["sneakers", "sandals"], guidance=ccfg.CCFG(5.0), steps=STEPS, n=N,
              seed=2, output="float", progress=False, return_latents=True)
    native, lat_native = ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet="ccfg")(
        "boots", device=device, **kw)
    torch_img, lat_torch = ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet="torch")(
        "boots", **kw)
    assert np.max(np.abs(lat_native - lat_torch)) <= 1e-3 * np.max(np.abs(lat_torch))
    assert np.max(np.abs(native - torch_img)) <= 1e-3


def test_errors_name_the_argument(folder):
    with pytest.raises(ValueError, match="unet"):
        ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet="onnx")
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        ccfg.pipelines.StableDiffusion.from_pretrained(os.path.dirname(folder))
    pipe = ccfg.pipelines.StableDiffusion.from_pretrained(folder)
    with pytest.raises(TypeError, match="negative_prompt"):
        pipe("x", negative_prompt=3, steps=1, progress=False)
    with pytest.raises(ValueError, match="height"):
        pipe("x", height=15, steps=1, progress=False)
