"""Train the evaluation classifier for Fashion-MNIST samples (issue 5).

A small CNN built only from layers ccfg's C UNet already runs: Conv2d 3x3 (padding 1, stride 1 or
2), GroupNorm, SiLU, a spatial mean and one Linear. No BatchNorm, pooling or dropout, so a C runner
needs nothing new to evaluate it. Input: ccfg's image convention, (N, 1, 32, 32) in [-1, 1].

Writes <out>/model.safetensors (float32; tensor names `layers.<i>.weight|bias`) and
<out>/config.json: the ordered layer list (type, channels, stride, groups, eps, tensor name), the
index whose output is the penultimate feature vector (after the mean), class names and test
accuracy. torch comes from the dev extra.

    nice -n 10 python tools/train_classifier.py --epochs 6
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from ccfg import data  # noqa: E402

# (out_channels, stride) of each conv; each conv is followed by GroupNorm(groups) and SiLU
DEFAULT_CONVS = ((32, 1), (32, 2), (64, 1), (64, 2), (128, 1), (128, 2))
GROUPS = 8
EPS = 1e-5


class SpatialMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def layer_spec(convs=DEFAULT_CONVS, groups=GROUPS, in_channels=1, num_classes=10):
    """The layer list written to config.json; `build` makes the torch model from it."""
    spec, c = [], in_channels
    for out, stride in convs:
        spec.append(dict(type="conv2d", in_channels=c, out_channels=out, kernel_size=3,
                         stride=stride, padding=1))
        spec.append(dict(type="group_norm", num_channels=out, num_groups=groups, eps=EPS))
        spec.append(dict(type="silu"))
        c = out
    spec.append(dict(type="spatial_mean"))          # (N, C, H, W) -> (N, C): the features
    spec.append(dict(type="linear", in_features=c, out_features=num_classes))
    for i, layer in enumerate(spec):
        if layer["type"] in ("conv2d", "group_norm", "linear"):
            layer["weight"], layer["bias"] = f"layers.{i}.weight", f"layers.{i}.bias"
    return spec


def build(spec):
    mods = []
    for layer in spec:
        t = layer["type"]
        if t == "conv2d":
            mods.append(nn.Conv2d(layer["in_channels"], layer["out_channels"], layer["kernel_size"],
                                  layer["stride"], layer["padding"]))
        elif t == "group_norm":
            mods.append(nn.GroupNorm(layer["num_groups"], layer["num_channels"], eps=layer["eps"]))
        elif t == "silu":
            mods.append(nn.SiLU())
        elif t == "spatial_mean":
            mods.append(SpatialMean())
        elif t == "linear":
            mods.append(nn.Linear(layer["in_features"], layer["out_features"]))
        else:
            raise ValueError(f"unknown layer type {t!r}")
    model = nn.Module()
    model.layers = nn.Sequential(*mods)
    model.forward = model.layers.forward
    return model


def load(folder):
    """The shipped classifier as a torch module (for reference checks; ccfg runs it in C)."""
    from safetensors.torch import load_file
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = build(cfg["layers"])
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    return model.eval(), cfg


def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / x.shape[0]


def shift(x, gen, max_shift=2):
    """Random translation by up to max_shift pixels, filled with background (-1)."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(32).view(1, 32))            # (n, 32)
    cols = (dx.view(n, 1) + torch.arange(32).view(1, 32))
    idx_n = torch.arange(n).view(n, 1, 1)
    return padded[idx_n, 0, rows.view(n, 32, 1), cols.view(n, 1, 32)].unsqueeze(1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "ccfg", "weights", "classifier"))
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = (torch.from_numpy(a) for a in data.fashion_mnist("train", args.data))
    xte, yte = (torch.from_numpy(a) for a in data.fashion_mnist("test", args.data))
    spec = layer_spec()
    model = build(spec)
    n_params = sum(q.numel() for q in model.parameters())
    print(f"classifier: {n_params} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = xtr.shape[0] // args.batch
    total = args.epochs * steps_per_epoch
    t0 = time.perf_counter()
    step = 0
    log = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        run = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch]
            xb = shift(xtr[idx], gen)
            lr = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = nn.functional.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run += loss.item()
            step += 1
        acc = accuracy(model, xte, yte)
        log.append(dict(epoch=epoch + 1, loss=round(run / steps_per_epoch, 4), test_accuracy=acc,
                        seconds=round(time.perf_counter() - t0, 1)))
        print(log[-1], flush=True)

    from safetensors.torch import save_file
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out, "model.safetensors"))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, 10000, 1000)])
    per_class = [round((pred[yte == c] == c).float().mean().item(), 4) for c in range(10)]
    cfg = dict(
        architecture="ccfg-cnn-classifier", input_shape=[1, 32, 32], input_range=[-1.0, 1.0],
        input_note="ccfg image convention: 28x28 Fashion-MNIST padded by 2 px of background -1",
        layers=spec, features_layer=len(spec) - 2,
        features_note="the output of layer features_layer (the spatial mean) is the penultimate "
                      "feature vector used by Frechet distances",
        classes=list(data.CLASSES), parameters=n_params, dtype="float32",
        test_accuracy=log[-1]["test_accuracy"], test_accuracy_per_class=per_class,
        training=dict(vars(args), out=None, data=None, log=log,
                      wall_seconds=round(time.perf_counter() - t0, 1),
                      augmentation="random shift up to 2 px (background fill)",
                      label_smoothing=0.05, torch=torch.__version__))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    print(f"test accuracy {log[-1]['test_accuracy']:.4f}; saved to {args.out}", flush=True)


if __name__ == "__main__":
    main()
