"""Fixtures shared by several test files."""
import pytest


@pytest.fixture
def save_tiny_fashion_unet():
    """save_tiny_fashion_unet(folder): a tiny random diffusers UNet2DModel shaped like the shipped
    Fashion-MNIST model (32x32, 1 channel, 15 class embeddings) saved into folder/unet; skips
    without torch + diffusers."""
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")

    def save(folder):
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(sample_size=32, in_channels=1, out_channels=1,
                                     block_out_channels=(8, 16), layers_per_block=1,
                                     norm_num_groups=4,
                                     down_block_types=("DownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=15)
        unet.save_pretrained(folder / "unet")
        return folder
    return save
