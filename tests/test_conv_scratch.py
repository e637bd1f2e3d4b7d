"""The CPU convolution's scratch sized for the real input (csrc/nn_cpu.c ccfg_nn_conv2d_scratch).

Before, the planners asked for the Winograd path's scratch of a w x w image and for im2col rows of
max(w, 256) *input* columns: a 1 x 4096 input got the scratch of a 4096 x 4096 image (GiBs; the
classifier fuzzer's out-of-memory), and a padding above (k - 1) / 2 makes an output row wider than
the input, so a valid classifier was refused ("one output row of im2col needs ...").

The expected sizes here are written from each path's definition (what it keeps per thread), not
taken from the function; the kernels are pinned to the baseline copy (CCFG_CPU_KERNELS=baseline:
Winograd tiles of 6 output channels and 16 columns, direct tiles of 6) in a child process, since
the copy is chosen once per process."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ccfg import _core

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
CACHE_TILE = 1 << 18        # floats of one im2col tile (nn_cpu.c CACHE_TILE_FLOATS)


def ceil_div(a, b):
    return -(-a // b)


def im2col_need(cin, w, k, stride, pad, threads):
    """im2col: per thread a tile of whole output rows of cin k k x wo floats, as many as fit in
    CACHE_TILE (at least one)"""
    wo = (w + 2 * pad - k) // stride + 1
    row = cin * k * k * wo
    return threads * (row if row >= CACHE_TILE else CACHE_TILE // row * row)


def direct_need(cin, cout, h, w, threads, co_tile=6):
    """the direct 3x3 kernel: per thread one sample's zero-padded planes (+64 floats of slack) and
    one tile of packed weights; the whole layer's packed weights once, shared"""
    tile = co_tile * cin * 9
    return ceil_div(cout, co_tile) * tile + threads * (cin * ((h + 2) * (w + 2) + 64) + tile)


def wino_need(cin, cout, h, w, threads, packed, co_tile=6, cb=16):
    """Winograd F(2x2,3x3): per thread the 4 polyphase planes of a group of g samples of
    (h/2 + 1) x (w/2 + 1) tiles (block-rounded, + one tile row, 16-aligned), one block of the
    16 transformed inputs and of the 16 products, 4 output rows + 32 floats of slack, one input
    plane (16-aligned) and 16 floats of alignment; the transformed weights once unless packed"""
    hq, wq = (h + 1) // 2 + 1, (w + 1) // 2 + 1
    hwq = hq * wq
    g0 = ceil_div(128, hwq)
    g = g0
    for kk in range(g0 + 1, g0 + 4):
        if kk * hwq > 1024:
            break
        waste_g = (ceil_div(g * hwq, cb) * cb - g * hwq) * kk
        waste_k = (ceil_div(kk * hwq, cb) * cb - kk * hwq) * g
        if waste_k < waste_g:
            g = kk
    pst = ceil_div(ceil_div(g * hwq, cb) * cb + wq + 1, 16) * 16
    per = (4 * cin * pst + 16 * cin * cb + 16 * co_tile * cb + 4 * cb + 32
           + ceil_div(h * w, 16) * 16 + 16)
    u = 0 if packed else 16 * ceil_div(cout, co_tile) * co_tile * cin
    return u + threads * per


def run_child(body, env=None, timeout=600):
    code = "import json, sys\nimport numpy as np\nfrom ccfg import _core\n" + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


# (cin, cout, h, w, k, stride, pad, packed, threads)
CASES = [
    (8, 8, 1, 4096, 3, 1, 1, 0, 1),       # 1 x W: direct (Winograd needs 2+ rows)
    (8, 8, 2, 4096, 3, 1, 1, 0, 2),       # 2 x W: Winograd, weights transformed per call
    (8, 8, 2, 4096, 3, 1, 1, 1, 3),       # and packed
    (8, 8, 4096, 1, 3, 1, 1, 0, 2),       # H x 1: im2col (under 8 columns)
    (8, 8, 1, 4096, 3, 2, 1, 0, 2),       # a stride-2 downsample: im2col
    (16, 4, 1, 4096, 1, 1, 5, 0, 1),      # 1x1 with padding: im2col, output rows wider than w
    (1024, 1, 1, 1, 1, 1, 128, 0, 1),     # a padding over (k - 1) / 2: one 257-wide output row
    (64, 64, 32, 32, 3, 1, 1, 1, 2),      # a square UNet level
    (2000, 8, 16, 16, 3, 1, 1, 0, 1),     # over WINO_MAX_CIN: direct
    (8, 8, 1, 4096, 1, 1, 0, 0, 4),       # pointwise: none
]


def expected(cin, cout, h, w, k, stride, pad, packed, threads):
    if k == 1 and stride == 1 and pad == 0:
        return 0
    if k == 3 and stride == 1 and pad == 1 and w >= 8:
        return (wino_need(cin, cout, h, w, threads, packed) if h >= 2 and cin <= 1024
                else direct_need(cin, cout, h, w, threads))
    return im2col_need(cin, w, k, stride, pad, threads)


def test_scratch_is_what_each_path_keeps():
    got = run_child(f"""
    print(json.dumps([_core.nn_conv2d_scratch(*c[:6], c[6], c[6], *c[7:]) for c in {CASES!r}]))
    """, env={"CCFG_CPU_KERNELS": "baseline"})
    want = [expected(*c) for c in CASES]
    assert got == want, list(zip(CASES, got, want))


def test_winograd_switched_off_sizes_the_direct_kernel():
    case = (64, 64, 32, 32, 3, 1, 1, 1, 2)
    got = run_child(f"""
    print(json.dumps(_core.nn_conv2d_scratch(*{case[:6]!r}, 1, 1, 1, 2)))
    """, env={"CCFG_CPU_KERNELS": "baseline", "CCFG_CPU_WINOGRAD": "0"})
    assert got == direct_need(64, 64, 32, 32, 2)


@pytest.mark.parametrize("shape", ["1xW", "2xW", "Hx1"])
def test_scratch_grows_linearly_with_the_long_side(shape):
    # O(W): at most a few floats per input value plus the fixed blocks (the old sizing of a
    # 1 x 65536 image was the Winograd planes of 65536 x 65536: about 4 cin 2**30 floats)
    cin = 16
    for n in (256, 4096, 65536):
        h, w = {"1xW": (1, n), "2xW": (2, n), "Hx1": (n, 1)}[shape]
        s = _core.nn_conv2d_scratch(cin, cin, h, w, 3, 1, 1, 1, 0, 1)
        assert s <= 8 * cin * h * w + 16 * 9 * cin * 64 + CACHE_TILE, (shape, n, s)


def test_scratch_arguments_are_checked():
    with pytest.raises(ValueError, match="threads"):
        _core.nn_conv2d_scratch(1, 1, 8, 8, 3, 1, 1, 1, 0, 0)
    with pytest.raises(ValueError, match="kernel"):
        _core.nn_conv2d_scratch(1, 1, 2, 2, 7, 1, 0, 0, 0, 1)


# ---- the classifier on inputs the old sizing handled badly, against torch ----

def _classifier(tmp_path, input_shape, layers, features_layer=-1, seed=0):
    spec = importlib_build()
    model = spec(layers).eval()
    torch.manual_seed(seed)
    tensors = {}
    from ccfg import safetensors as st
    for i, layer in enumerate(layers):
        if "weight" not in layer:
            continue
        mod = model.layers[i]
        with torch.no_grad():
            mod.weight.copy_(torch.randn_like(mod.weight) * 0.3)
            mod.bias.copy_(torch.randn_like(mod.bias) * 0.3)
        tensors[layer["weight"]] = mod.weight.detach().numpy().copy()
        tensors[layer["bias"]] = mod.bias.detach().numpy().copy()
    st.save(str(tmp_path / "model.safetensors"), tensors)
    (tmp_path / "config.json").write_text(json.dumps(
        {"input_shape": list(input_shape), "layers": layers, "features_layer": features_layer}))
    return model


def importlib_build():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "train_classifier", os.path.join(ROOT, "tools", "train_classifier.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build


def conv(i, cin, cout, k, s, p):
    return {"type": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": k,
            "stride": s, "padding": p, "weight": f"c{i}.w", "bias": f"c{i}.b"}


def gn(i, c, g):
    return {"type": "group_norm", "num_channels": c, "num_groups": g, "eps": 1e-5,
            "weight": f"g{i}.w", "bias": f"g{i}.b"}


def head(i, cin, cout):
    return [{"type": "silu"}, {"type": "spatial_mean"},
            {"type": "linear", "in_features": cin, "out_features": cout, "weight": f"l{i}.w",
             "bias": f"l{i}.b"}]


CLS_SCRIPT = """
import ccfg.metrics as metrics
x = np.load(sys.argv[1])
clf = metrics.Classifier(sys.argv[2])
np.save(sys.argv[1].replace(".npy", "_out.npy"), clf.logits(x))
print(json.dumps("ok"))
"""


def _run_classifier(tmp_path, x, threads):
    xs = str(tmp_path / "x.npy")
    np.save(xs, x)
    r = subprocess.run([sys.executable, "-c", "import json, sys\nimport numpy as np\n" + CLS_SCRIPT,
                        xs, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(xs.replace(".npy", "_out.npy"))


def _torch_logits(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("threads", [1, 2])
def test_classifier_padding_wider_than_the_kernel(tmp_path, threads):
    # a 5x5 convolution padded by 64 (the loader's most) on 48 channels of 1 x 134: output rows
    # of 258 columns, one im2col row 48 x 25 x 258 = 309600 floats, more than the old planner's
    # max(2**18, 48 x 25 x max(134, 256)) = 307200 per thread (refused with EINVAL at one
    # thread); then a 3x3 stride-2 one with padding 2 > (3 - 1) / 2
    layers = [conv(0, 48, 3, 5, 1, 64), conv(1, 3, 4, 3, 2, 2), gn(0, 4, 2)] + head(0, 4, 3)
    model = _classifier(tmp_path, (48, 1, 134), layers)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 48, 1, 134)).astype(np.float32)
    assert _rel(_run_classifier(tmp_path, x, threads), _torch_logits(model, x)) <= 1e-4


@pytest.mark.parametrize("h,w", [(2, 4096), (1, 4096), (4096, 1), (3, 2048)])
def test_classifier_short_wide_input(tmp_path, h, w):
    # 3x3 padding 1 (Winograd from 2 rows and 8 columns up, the direct kernel on one row, im2col
    # on one column), a stride-2 one, a norm that mixes every pixel
    layers = [conv(0, 3, 8, 3, 1, 1), gn(0, 8, 4), {"type": "silu"}, conv(1, 8, 8, 3, 1, 1),
              conv(2, 8, 6, 3, 2, 1), gn(1, 6, 3)] + head(0, 6, 5)
    model = _classifier(tmp_path, (3, h, w), layers)
    x = np.random.default_rng(2).uniform(-1, 1, (3, 3, h, w)).astype(np.float32)
    assert _rel(_run_classifier(tmp_path, x, 2), _torch_logits(model, x)) <= 1e-4


# ---- the UNet on non-square inputs (each level's layers sized for their own h x w), against
# diffusers ----

@pytest.fixture(scope="module")
def small_unet(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    m = diffusers.UNet2DModel(sample_size=16, in_channels=2, out_channels=2,
                              block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                              attention_head_dim=8, down_block_types=("DownBlock2D",
                                                                      "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D")).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("nonsquare")
    m.save_pretrained(d)
    import ccfg
    return m, ccfg.models.UNet.from_pretrained(str(d))


# 8 x 64: Winograd at both levels; 64 x 8: im2col at the 32 x 4 level; 2 x 96: Winograd, then
# the direct kernel on 1 x 48; 96 x 2: im2col at both (under 8 columns)
@pytest.mark.parametrize("hw", [(8, 64), (64, 8), (2, 96), (96, 2)])
def test_unet_non_square_matches_diffusers(small_unet, hw):
    model, unet = small_unet
    x = np.random.default_rng(4).standard_normal((2, 2) + hw).astype(np.float32)
    t = np.array([10, 700])
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    assert _rel(unet(x, t), ref) <= 1e-4
