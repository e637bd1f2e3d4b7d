"""UNet2DModel on Vulkan devices: ccfg's shaders (nn_vk.c) against ccfg's CPU backend and PyTorch
CPU, on the same weights, in one process.

    .venv/bin/python benchmarks/bench_unet_vulkan.py [--n 4] [--steps 10] [--repeats 3]

Model: the Fashion-MNIST-sized UNet of bench_unet.py (32x32, 1 channel, block_out_channels
(32, 64, 128), layers_per_block 2, attention at the 8x8 level, 11 class embeddings), random
weights with a fixed torch seed, saved with ``save_pretrained``.

1. Forward of 3n rows (null, positive, negative labels: one CCFG step's batch) on each backend;
   the device forward includes the upload of x and the download of the output.
2. A CCFG DDIM run of ``--steps`` steps, n samples: ``ccfg.sample(device=...)`` (on a device the
   whole loop stays there) against the CPU backend.

With ``--profile`` it instead profiles one forward per shader kind (``ccfg.profiling``) of the
shipped Fashion-MNIST UNet (3 x ``--n`` rows) and of a CIFAR-sized UNet2DModel with random weights
(block_out_channels (128, 256, 256, 256), attention heads of 32 at 16x16 and below, as
benchmarks/gpu_vs_torch.py; ``--cifar-rows`` rows), each after a check against the CPU backend,
and times the forward on the device and on the CPU backend (medians of ``--repeats``). The CIFAR
model's layers_per_block is ``--cifar-layers``, 1 by default: with 2 (38.4M parameters) the
parameters exceed lavapipe's 128 MiB maxStorageBufferRange; with 1 (25.9M) every convolution and
attention shape of the model is still there, once. Run it with ``PYTHONPATH=.`` from the
repository root to measure the extension built there.

Outputs are compared before timing (forward against torch: max|a-b|/max|b| <= 1e-3; sampling
device against CPU <= 1e-3); a mismatch is printed and the exit status is 1. Skips (exit 0) when
there is no Vulkan device. Nothing about time is asserted. Defaults are small: lavapipe (a CPU
Vulkan driver) is slow; on a GPU pass --n 64 --steps 50 as bench_unet.py does.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import ccfg  # noqa: E402
from bench_common import CIFAR_CHANNELS, Table, cifar_unet, measure  # noqa: E402

SCALE, TAU, POS, NEG, NULL = 3.0, 0.5, 1, 2, 10


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="samples (3n rows per forward)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps")
    ap.add_argument("--repeats", type=int, default=3, help="timed forward repeats")
    ap.add_argument("--profile", action="store_true",
                    help="per-kind device time of one forward (shipped and CIFAR-sized UNets)")
    ap.add_argument("--cifar-rows", type=int, default=2, help="rows of the CIFAR-sized forward")
    ap.add_argument("--cifar-layers", type=int, default=1,
                    help="layers_per_block of the CIFAR-sized model (2 needs > 128 MiB buffers)")
    return ap.parse_args()


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def profile_forwards(args, sel):
    """--profile: per-kind device time of one forward of the shipped model and of a CIFAR-sized
    one on device `sel`, each checked against the CPU backend first."""
    failures = []
    ch = CIFAR_CHANNELS
    cifar, folder = cifar_unet(ch, layers_per_block=args.cifar_layers)
    params = sum(p.numel() for p in cifar.parameters())
    del cifar
    rng = np.random.default_rng(0)
    shipped = ccfg.models.load("fashion-mnist")
    cases = [("shipped Fashion-MNIST UNet", shipped,
              rng.standard_normal((3 * args.n, 1, 32, 32)).astype(np.float32),
              np.repeat(np.array([0, 1, 2]), args.n)),
             (f"CIFAR-sized UNet2DModel {ch} ({params / 1e6:.1f}M params)",
              ccfg.models.UNet.from_pretrained(folder),
              rng.standard_normal((args.cifar_rows, 3, 32, 32)).astype(np.float32), None)]
    for name, unet, x, labels in cases:
        def fwd(device):
            if labels is None:
                return unet(x, 500, device=device)
            return unet(x, 500, labels, device=device)
        ref = fwd("cpu")
        err = rel_err(fwd(sel), ref)
        ok = err <= 1e-3
        print(f"{name}, {len(x)} rows: max|{sel} - cpu| / max|cpu| = {err:.2e} "
              f"({'ok' if ok else 'MISMATCH'})")
        if not ok:
            failures.append(name)
        with ccfg.profiling.profile(sel) as prof:
            fwd(sel)
        print(f"profile, one forward of {len(x)} rows:\n{prof}")
        t_dev = measure(lambda: fwd(sel), repeats=args.repeats).median
        t_cpu = measure(lambda: fwd("cpu"), repeats=args.repeats).median
        print(f"forward median: {sel} {1e3 * t_dev:.1f} ms, ccfg cpu {1e3 * t_cpu:.1f} ms "
              f"(ratio {t_dev / t_cpu:.2f})\n")
    if failures:
        print("MISMATCH in: " + ", ".join(failures))
    return 1 if failures else 0


def main():
    args = parse()
    sys.stdout.reconfigure(line_buffering=True)
    devices = [d for d in ccfg.devices() if d.get("backend") == "vulkan" and "index" in d
               and d.get("available", True)]
    if not devices:
        why = next((d.get("note") for d in ccfg.devices() if d.get("backend") == "vulkan"), "")
        print(f"skipped: no Vulkan device ({why})")
        return 0
    if args.profile:
        return profile_forwards(args, f"vulkan:{devices[0]['index']}")
    import torch
    from diffusers import UNet2DModel

    threads = ccfg.devices()[0]["threads"]
    torch.set_num_threads(threads)
    cfg = dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
               layers_per_block=2, down_block_types=("DownBlock2D", "DownBlock2D",
                                                     "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32,
               norm_num_groups=32, num_class_embeds=11)
    torch.manual_seed(0)
    model = UNet2DModel(**cfg).eval()
    folder = tempfile.mkdtemp(prefix="ccfg_bench_unet_vk_")
    model.save_pretrained(folder)
    unet = ccfg.models.UNet.from_pretrained(folder)
    print(f"ccfg {ccfg.__version__} ({ccfg.__file__}), torch {torch.__version__}, "
          f"{threads} threads\nmodel: {unet!r}")
    n, rows = args.n, 3 * args.n
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 1, 32, 32)).astype(np.float32)
    labels = np.repeat(np.array([NULL, POS, NEG]), n)
    tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

    def torch_forward():
        with torch.no_grad():
            return model(tx, 500, tl).sample.numpy()

    ref = torch_forward()
    failures = []
    table = Table(f"UNet2DModel 32x32x1: forward of {rows} rows; CCFG DDIM {args.steps} steps, "
                  f"n = {n}")
    fwd = f"forward, {rows} rows"
    table.add(fwd, "torch CPU", measure(torch_forward, repeats=args.repeats))
    table.add(fwd, "ccfg cpu", measure(lambda: unet(x, 500, labels), repeats=args.repeats),
              peer="torch CPU")

    def run(device):
        return ccfg.sample(unet, positive=POS, negative=NEG,
                           guidance=ccfg.CCFG(scale=SCALE, tau=TAU), sampler="ddim",
                           steps=args.steps, n=n, seed=0, progress=False, device=device)

    results = {}
    samp = f"CCFG DDIM {args.steps} steps, n={n}"
    table.add(samp, "ccfg cpu", measure(lambda: results.__setitem__("cpu", run("cpu")),
                                        repeats=1, warmup=0))
    for d in devices:
        sel = f"vulkan:{d['index']}"
        name = f"ccfg {sel} ({d['name']})"
        err = rel_err(unet(x, 500, labels, device=sel), ref)
        ok = err <= 1e-3
        print(f"{sel} forward check: max|ccfg - torch| / max|torch| = {err:.2e} "
              f"({'ok' if ok else 'MISMATCH'})")
        if not ok:
            failures.append(f"{sel} forward")
        table.add(fwd, name, measure(lambda: unet(x, 500, labels, device=sel),
                                     repeats=args.repeats), peer="torch CPU")
        table.add(samp, name, measure(lambda: results.__setitem__(sel, run(sel)), repeats=1,
                                      warmup=1), peer="ccfg cpu")
        err = rel_err(results[sel], results["cpu"])
        ok = err <= 1e-3
        print(f"{sel} sampling check: max|device - cpu| / max|cpu| = {err:.2e} "
              f"({'ok' if ok else 'MISMATCH'})")
        if not ok:
            failures.append(f"{sel} sampling")
    print()
    print(table.render())
    if failures:
        print("MISMATCH in: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
