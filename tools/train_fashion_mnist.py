"""Train the shipped concept-conditional Fashion-MNIST diffusion model (issue 5).

A diffusers `UNet2DModel` (32x32, 1 channel, one class embedding per concept of
`ccfg.data.CONCEPTS` plus the null concept, last) trained with the DDPM objective: linear betas
1e-4..0.02 over 1000 steps, epsilon prediction, MSE. Each image is conditioned on a concept drawn
uniformly among the concepts that contain its class, or on null with probability `--p-null`, so the
model learns p(x | concept) for every concept and p(x) for the unconditional branch of guidance.

Writes a diffusers pipeline-style folder: <out>/unet/ (config.json + fp16 safetensors of the EMA
weights) and <out>/scheduler/scheduler_config.json (DDIMScheduler, clip_sample off, so the schedule
is exactly what ccfg's samplers implement). The folder is rewritten at every checkpoint so an
interrupted run still leaves a usable model. The loss curve goes to <log-csv>; a full training state
(for --resume) to <state>.

torch + diffusers come from the dev extra; ccfg does not need them at run time.

    nice -n 10 python tools/train_fashion_mnist.py --steps 12000        # from the repository root
    python tools/train_fashion_mnist.py --bench 20                        # time 20 steps and exit
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
from diffusers import DDIMScheduler, UNet2DModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from ccfg import data  # noqa: E402


def build_unet(channels=(32, 64, 128), layers_per_block=1, head_dim=32, groups=8):
    """The shipped architecture: attention only at the lowest resolution and in the mid block."""
    n = len(channels)
    down = ("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)
    return UNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=tuple(channels),
        layers_per_block=layers_per_block, down_block_types=down, up_block_types=up,
        mid_block_type="UNetMidBlock2D", attention_head_dim=head_dim, norm_num_groups=groups,
        act_fn="silu", time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,
        num_class_embeds=data.NUM_CLASS_EMBEDS)


def make_scheduler():
    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                         beta_schedule="linear", prediction_type="epsilon", clip_sample=False,
                         set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")


def concept_table():
    """(10, K) table of concept ids containing each class, and how many there are per class."""
    lists = [data.concepts_containing(c) for c in range(len(data.CLASSES))]
    k = max(len(l) for l in lists)
    table = torch.full((len(lists), k), -1, dtype=torch.long)
    for c, l in enumerate(lists):
        table[c, :len(l)] = torch.tensor(l)
    return table, torch.tensor([len(l) for l in lists])


def draw_concepts(labels, table, counts, p_null, gen):
    """One concept per image: uniform among those containing its class; null with prob p_null."""
    u = torch.rand(labels.shape[0], generator=gen)
    pick = (u * counts[labels]).long().clamp_max(counts[labels] - 1)
    ids = table[labels, pick]
    null = torch.rand(labels.shape[0], generator=gen) < p_null
    return torch.where(null, torch.full_like(ids, data.NULL_ID), ids)


def lr_at(step, args, elapsed=0.0):
    """Linear warm-up, then cosine decay to lr_min. With --max-minutes the decay follows whichever
    is further along, steps or wall time, so a run cut short by the clock (a shared machine) still
    ends at the low learning rate instead of stopping mid-schedule."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    if args.max_minutes:
        frac = max(frac, elapsed / (60 * args.max_minutes))
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(1.0, frac)))


def save_model(ema, scheduler, out, meta):
    half = copy.deepcopy(ema).to(torch.float16)
    half.save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
    scheduler.save_pretrained(os.path.join(out, "scheduler"))
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-min", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--p-null", type=float, default=0.1)
    p.add_argument("--channels", default="32,64,128")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (and save) after this much wall time even if --steps is not reached")
    p.add_argument("--out", default=os.path.join(ROOT, "ccfg", "weights", "fashion-mnist"))
    p.add_argument("--log-csv", default=os.path.join(ROOT, "docs", "training_loss.csv"))
    p.add_argument("--state", default=os.path.join(ROOT, "build", "fmnist_train_state.pt"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--bench", type=int, default=0, help="time this many steps, print, exit")
    p.add_argument("--data", default=None, help="Fashion-MNIST directory (default: CCFG_DATA / Debian)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    images, labels = data.fashion_mnist("train", args.data)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    table, counts = concept_table()

    channels = tuple(int(c) for c in args.channels.split(","))
    model = build_unet(channels, args.layers_per_block, args.head_dim, args.groups)
    ema = copy.deepcopy(model).requires_grad_(False)
    scheduler = make_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"UNet2DModel {channels} lpb={args.layers_per_block}: {n_params} parameters "
          f"({2 * n_params / 2**20:.2f} MiB fp16)", flush=True)

    start, history, elapsed0 = 0, [], 0.0
    if args.resume and os.path.exists(args.state):
        st = torch.load(args.state, weights_only=False)
        model.load_state_dict(st["model"]), ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"]), gen.set_state(st["gen"]), torch.set_rng_state(st["rng"])
        start, history, elapsed0 = st["step"], st["history"], st["elapsed"]
        print(f"resumed at step {start}", flush=True)

    def train_step(step, elapsed=0.0):
        idx = torch.randint(0, images.shape[0], (args.batch,), generator=gen)
        x0, y = images[idx], labels[idx]
        cond = draw_concepts(y, table, counts, args.p_null, gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args, elapsed)
        pred = model(xt, t, class_labels=cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))      # warm-up of the EMA decay
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        return loss.item()

    if args.bench:
        train_step(0)
        t0 = time.perf_counter()
        for s in range(args.bench):
            train_step(s + 1)
        dt = (time.perf_counter() - t0) / args.bench
        print(f"{dt:.3f} s/step at batch {args.batch} on {args.threads} threads", flush=True)
        return

    os.makedirs(os.path.dirname(args.state), exist_ok=True)
    os.makedirs(os.path.dirname(args.log_csv), exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("bench", "resume")}
    settings.update(parameters=n_params, concepts=list(data.concepts(include_null=True)))
    t0 = time.perf_counter() - elapsed0
    acc, nacc = 0.0, 0
    step = start
    while step < args.steps:
        acc += train_step(step, time.perf_counter() - t0)
        nacc += 1
        step += 1
        if step % args.log_every == 0:
            now = time.perf_counter() - t0
            lr = opt.param_groups[0]["lr"]
            history.append((step, acc / nacc, lr, now))
            print(f"step {step} loss {acc / nacc:.4f} lr {lr:.2e} {now:.0f}s", flush=True)
            acc, nacc = 0.0, 0
        out_of_time = args.max_minutes and time.perf_counter() - t0 > 60 * args.max_minutes
        if step % args.checkpoint_every == 0 or step == args.steps or out_of_time:
            elapsed = time.perf_counter() - t0
            meta = dict(settings, steps_done=step, wall_seconds=round(elapsed, 1),
                        final_loss=history[-1][1] if history else None)
            save_model(ema, scheduler, args.out, meta)
            with open(args.log_csv, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["step", "loss", "lr", "seconds"])
                w.writerows([(s, f"{l:.5f}", f"{r:.3e}", f"{sec:.1f}") for s, l, r, sec in history])
            torch.save(dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                            gen=gen.get_state(), rng=torch.get_rng_state(), step=step,
                            history=history, elapsed=elapsed), args.state)
            print(f"checkpoint at step {step} ({elapsed:.0f}s)", flush=True)
        if out_of_time:
            print("time limit reached", flush=True)
            break


if __name__ == "__main__":
    main()
