"""UNet2DConditionModel (text-conditioned) on the CPU: ccfg's C forward against PyTorch's, on the
same weights, same threads.

    .venv/bin/python benchmarks/bench_unet_condition.py [--config tiny|sd15-reduced] [--n 2]
        [--steps 10] [--repeats 5] [--sample-repeats 3] [--threads T] [--device cpu|vulkan[:N]]

Models: diffusers ``UNet2DConditionModel`` with random weights (fixed torch seed), saved with
``save_pretrained`` and loaded by ``ccfg.unet.UNet.from_pretrained``; PyTorch runs the in-memory
diffusers module under ``torch.no_grad()``. Conditions are random (77, cross_attention_dim) token
arrays standing in for CLIP embeddings: one null (empty prompt), one positive, one negative.

- ``tiny``: 16x16x4 latents, block_out_channels (32, 64), layers_per_block 1,
  CrossAttnDownBlock2D + DownBlock2D / UpBlock2D + CrossAttnUpBlock2D, cross_attention_dim 32,
  attention_head_dim 2 (2 heads of 16 and 32 channels); 0.8M parameters.
- ``sd15-reduced``: Stable Diffusion 1.5's block layout (3 CrossAttnDownBlock2D + DownBlock2D,
  UpBlock2D + 3 CrossAttnUpBlock2D, cross-attention in the mid block, layers_per_block 2,
  attention_head_dim 8 (diffusers reads it as 8 heads), cross_attention_dim 768) at a fifth of
  its widths, block_out_channels (64, 128, 256, 256) instead of (320, 640, 1280, 1280), so heads
  of 8, 16 and 32 channels (SD 1.5: 40, 80, 160), on 32x32x4 latents (SD 1.5: 64x64x4): 1024
  tokens of self-attention at the top level. 37.5M parameters (SD 1.5's UNet: 860M).

1. Forward of 3n rows (null, positive, negative embeddings: one CCFG step's batch), L = 77 tokens.
2. A short CCFG sampling run: ``ccfg.sample`` (DDIM, ``--steps`` steps, n samples, one 3n-row
   forward per step, all in C) against the same loop in PyTorch: diffusers' DDIMScheduler with
   Stable Diffusion's schedule (scaled_linear 0.00085..0.012, set_alpha_to_one off, steps_offset
   1, clip_sample off) driving diffusers' model, CCFG written from docs/methods.md §3.1
   (``eps_u + w λ+ D_p - w λ- D_n``, ``λ+ = 2σ(τ‖D_p‖²)``, ``λ- = 2σ(-τ‖D_n‖²)``), w = 7.5,
   τ = 0.2 (ccfg's default). The loop is bench_unet.py's ``torch_ccfg_run`` with embeddings in
   place of class labels (bench_unet.py parses its arguments at import, so it is not imported).

Threads: torch.set_num_threads(T) with T = ccfg's OpenMP thread count (or --threads, which also
sets ccfg's through OMP_NUM_THREADS before ccfg is imported).

``--device vulkan`` (or ``vulkan:N``): ccfg runs on that Vulkan device (the whole sampling loop
stays there; the forward includes the upload of x and the download of the output); the peer is
PyTorch on CUDA when available (fp32, TF32 off, synchronised) else on the CPU. Skips (exit 0)
when there is no Vulkan device.

Timing: medians of ``--repeats`` (forward) and ``--sample-repeats`` (sampling) timed calls after
one untimed call of each; ccfg's and torch's calls alternate (a, b, a, b, ...) so that load from
other processes on the machine falls on both sides; ratios are torch time / ccfg time (> 1: ccfg
faster).

Outputs are compared before timing (forward: max|a-b|/max|b| <= 1e-4 on the CPU, 1e-3 on a
device; sampling <= 1e-3); a mismatch is printed and the exit status is 1. Nothing about time is
asserted. Also ``benchmarks/run.py --only unet_condition`` (both configs, CPU).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

CONFIG_NAMES = ("tiny", "sd15-reduced")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=CONFIG_NAMES, action="append",
                    help="model config (repeatable; default: both)")
    ap.add_argument("--n", type=int, default=2, help="samples (3n rows per forward; default 2)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps (default 10)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forward repeats (default 5)")
    ap.add_argument("--sample-repeats", type=int, default=3,
                    help="timed sampling runs each (default 3; the last one is also the check)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: ccfg's)")
    ap.add_argument("--device", default="cpu",
                    help="ccfg's device: cpu (default) or vulkan[:N] (peer: torch CUDA if "
                         "available, else torch CPU)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    # before ccfg is imported: its OpenMP pool reads OMP_NUM_THREADS once
    ARGS = parse()
    if ARGS.threads:
        os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

import ccfg  # noqa: E402
from ccfg.unet import UNet  # noqa: E402
from bench_common import Table, measure_pair, thread_report  # noqa: E402

SCALE, TAU, TOKENS = 7.5, 0.2, 77

CONFIGS = {
    "tiny": dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                 layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                 attention_head_dim=2, norm_num_groups=32),
    "sd15-reduced": dict(sample_size=32, in_channels=4, out_channels=4,
                         block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                         down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                         cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32),
}


def sd_scheduler():
    """Stable Diffusion 1.5's DDIM scheduler config (clip_sample off, as ccfg's schedules)."""
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def build(name):
    torch.manual_seed(0)
    model = UNet2DConditionModel(**CONFIGS[name]).eval()
    folder = tempfile.mkdtemp(prefix=f"ccfg_bench_unet_cond_{name}_")
    model.save_pretrained(folder)
    return model, UNet.from_pretrained(folder), folder


def embeddings(dim, seed=0):
    """null, positive, negative: (77, dim) float32 each (random stand-ins for CLIP outputs)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((TOKENS, dim)).astype(np.float32) for _ in range(3))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def sync(tdev):
    if tdev.type == "cuda":
        torch.cuda.synchronize()


def torch_ccfg_run(model, x_T, steps, n, embs, tdev):
    """the PyTorch peer: diffusers' DDIM loop, one 3n-row forward per step, CCFG in torch"""
    sched = sd_scheduler()
    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy()).to(tdev)
    ehs = torch.from_numpy(np.repeat(np.stack(embs), n, axis=0)).to(tdev)  # null, pos, neg rows
    with torch.no_grad():
        for t in sched.timesteps:
            u, p, ng = model(torch.cat([x, x, x]), t, encoder_hidden_states=ehs).sample.chunk(3)
            dp, dn = p - u, ng - u
            lam_p = 2 * torch.sigmoid(TAU * dp.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            lam_n = 2 * torch.sigmoid(-TAU * dn.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            eps = u + SCALE * lam_p * dp - SCALE * lam_n * dn
            x = sched.step(eps, t, x).prev_sample
    sync(tdev)
    return x.cpu().numpy()


def bench_config(name, failures, *, device, tdev, n, steps, repeats, sample_repeats, summary):
    model, unet, folder = build(name)
    shutil.rmtree(folder, ignore_errors=True)   # the saved weights were only needed to load ccfg's
    cfg = CONFIGS[name]
    print(f"\n[{name}] {unet!r}\n  block_out_channels {cfg['block_out_channels']}, "
          f"cross_attention_dim {cfg['cross_attention_dim']}, attention_head_dim "
          f"{cfg['attention_head_dim']}")
    peer_model = model.to(tdev)
    on_cpu = device == "cpu"
    ccfg_name = "ccfg C (OpenBLAS + OpenMP)" if on_cpu else f"ccfg {device}"
    peer_name = f"torch {tdev.type} (diffusers)"
    rows, size, dim = 3 * n, cfg["sample_size"], cfg["cross_attention_dim"]
    table = Table(f"{name}: UNet2DConditionModel {size}x{size}x4, {TOKENS} tokens x {dim}; "
                  f"forward of {rows} rows; CCFG DDIM {steps} steps, n = {n}")

    # ---------------------------------------------------------------- forward
    embs = embeddings(dim)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, 4, size, size)).astype(np.float32)
    ehs = np.repeat(np.stack(embs), n, axis=0)                    # (3n, 77, dim)
    tx, te = torch.from_numpy(x).to(tdev), torch.from_numpy(ehs).to(tdev)

    def torch_forward():
        with torch.no_grad():
            y = peer_model(tx, 500, encoder_hidden_states=te).sample
        sync(tdev)
        return y

    def ccfg_forward():
        return unet(x, 500, device=device, encoder_hidden_states=ehs)

    tol = 1e-4 if on_cpu else 1e-3
    err = rel_err(ccfg_forward(), torch_forward().cpu().numpy())
    status = "ok" if err <= tol else "MISMATCH"
    print(f"[{name}] forward check: max|ccfg - torch| / max|torch| = {err:.2e} "
          f"(tolerance {tol:g}) {status}")
    if status != "ok":
        failures.append(f"unet_condition {name} forward ({device})")
    t_ccfg, t_torch = measure_pair(ccfg_forward, torch_forward, repeats)
    case = f"{name} fwd {rows} rows"
    table.add(case, peer_name, t_torch)
    table.add(case, ccfg_name, t_ccfg, peer=peer_name)
    print(f"[{name}] forward: ccfg {t_ccfg.median * 1e3:.1f} ms, torch {t_torch.median * 1e3:.1f} "
          f"ms, torch/ccfg = {t_torch.median / t_ccfg.median:.2f}")

    # ---------------------------------------------------------------- sampling
    sched_cfg = ccfg.SchedulerConfig.from_config(dict(sd_scheduler().config))
    x_T = ccfg.randn(0, n, unet.shape)
    null, pos, neg = embs

    def ccfg_run():
        return ccfg.sample(unet, positive=pos, negative=[neg], null=null,
                           guidance=ccfg.CCFG(scale=SCALE, tau=TAU), sampler="ddim", steps=steps,
                           n=n, seed=0, progress=False, scheduler=sched_cfg, device=device)

    # every timed run also feeds the check; one untimed run first (plans, pools, device weights)
    results = {}
    s_ccfg, s_torch = measure_pair(
        lambda: results.__setitem__("ccfg", ccfg_run()),
        lambda: results.__setitem__("torch", torch_ccfg_run(peer_model, x_T, steps, n, embs,
                                                            tdev)), sample_repeats)
    err = rel_err(results["ccfg"], results["torch"])
    status = "ok" if err <= 1e-3 else "MISMATCH"
    print(f"[{name}] sampling check: max|ccfg - torch| / max|torch| = {err:.2e} "
          f"(tolerance 0.001) {status}")
    if status != "ok":
        failures.append(f"unet_condition {name} sampling ({device})")
    case = f"{name} CCFG DDIM {steps}, n={n}"
    table.add(case, f"torch {tdev.type} loop (DDIM + CCFG)", s_torch)
    table.add(case, f"ccfg.sample ({device})", s_ccfg,
              peer=f"torch {tdev.type} loop (DDIM + CCFG)")
    print(f"[{name}] sampling: ccfg {s_ccfg.median:.2f} s, torch {s_torch.median:.2f} s, "
          f"torch/ccfg = {s_torch.median / s_ccfg.median:.2f}")
    print()
    print(table.render())
    summary.append((f"{name} forward, {rows} rows", t_ccfg.median, t_torch.median))
    summary.append((f"{name} CCFG DDIM {steps} steps, n={n}", s_ccfg.median, s_torch.median))


def run(failures, *, configs=CONFIG_NAMES, device="cpu", n=2, steps=10, repeats=5,
        sample_repeats=3):
    """Benchmark each config; appends failed checks to ``failures`` (benchmarks/run.py's group
    "unet_condition"). Returns False (and prints why) when ``device`` is absent."""
    diffusers_logging.set_verbosity_error()
    threads = ccfg.devices()[0]["threads"]
    torch.set_num_threads(threads)
    if device != "cpu":
        vk = [d for d in ccfg.devices() if d.get("backend") == "vulkan" and "index" in d
              and d.get("available", True)]
        if not vk:
            why = next((d.get("note") for d in ccfg.devices() if d.get("backend") == "vulkan"),
                       "")
            print(f"skipped: no Vulkan device ({why})")
            return False
        device = ccfg._device.resolve(device)
        info = next(d for d in vk if d.get("selector") == device)
        print(f"ccfg device: {device} {info['name']} ({info.get('type', '?')})")
    cuda = device != "cpu" and torch.cuda.is_available()
    tdev = torch.device("cuda" if cuda else "cpu")
    if cuda:          # fp32 like ccfg's shaders
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"UNet2DConditionModel benchmark: ccfg {ccfg.__version__}, torch {torch.__version__} "
          f"on {torch.cuda.get_device_name() if cuda else 'cpu'}")
    print(f"threads: ccfg OpenMP {threads}, torch.set_num_threads({threads}) "
          f"-> torch.get_num_threads() = {torch.get_num_threads()}")
    summary = []
    for name in configs:
        bench_config(name, failures, device=device, tdev=tdev, n=n, steps=steps,
                     repeats=repeats, sample_repeats=sample_repeats, summary=summary)
    print(f"\nsummary (medians; ratio = torch time / ccfg time, > 1: ccfg faster), ccfg on "
          f"{device}, torch on {tdev.type}, {threads} threads:")
    for what, c, t in summary:
        print(f"  {what:<44} ccfg {c * 1e3:10.1f} ms  torch {t * 1e3:10.1f} ms  "
              f"torch/ccfg {t / c:5.2f}")
    return True


def main():
    sys.stdout.reconfigure(line_buffering=True)
    print(f"ccfg {ccfg.__version__} UNet2DConditionModel benchmark ({ccfg.__file__})")
    for line in thread_report():
        print(line)
    failures = []
    run(failures, configs=ARGS.config or CONFIG_NAMES, device=ARGS.device, n=ARGS.n,
        steps=ARGS.steps, repeats=ARGS.repeats, sample_repeats=ARGS.sample_repeats)
    if failures:
        print("MISMATCH in: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
