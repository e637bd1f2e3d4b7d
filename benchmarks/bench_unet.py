"""UNet2DModel on the CPU: ccfg's C forward against PyTorch's, on the same weights, same threads.

    .venv/bin/python benchmarks/bench_unet.py [--steps 50] [--n 64] [--repeats 5] [--threads T]

Model: a Fashion-MNIST-sized diffusers UNet2DModel (32x32, 1 channel, block_out_channels
(32, 64, 128), layers_per_block 2, attention at the 8x8 level, 11 class embeddings = 10 classes +
the null class), randomly initialised with a fixed torch seed, saved with ``save_pretrained`` and
loaded by ``ccfg.models.UNet.from_pretrained``; PyTorch runs the in-memory diffusers module under
``torch.no_grad()``.

1. Forward of 3n rows (null, positive and negative labels: one CCFG step's batch).
2. A whole CCFG sampling run: ``ccfg.sample`` (DDIM, ``--steps`` steps, n samples, one 3n-row
   forward per step, all in C) against the same loop in PyTorch: diffusers' DDIMScheduler
   (clip_sample off, as ccfg's schedules) driving diffusers' model, with CCFG written from
   docs/methods.md §3.1 (``eps_u + w λ+ D_p - w λ- D_n``, ``λ+ = 2σ(τ‖D_p‖²)``, ``λ- = 2σ(-τ‖D_n‖²)``).

Threads: torch.set_num_threads(T) with T = ccfg's OpenMP thread count (or --threads, which also
sets ccfg's through OMP_NUM_THREADS before import). Outputs are compared before timing (forward:
max|a-b|/max|b| <= 1e-4, sampling <= 1e-3); a mismatch is printed and the exit status is 1.
Nothing about time is asserted. The forwards of ccfg and torch alternate (a, b, a, b, ...) so
that load from other processes falls on both sides. ``--profile K`` (default 3; 0: off) then
prints ccfg's forward time per op kind (convolutions, GroupNorm, attention, linear, elementwise,
copies; ``_core.nn_profile``, which costs nothing when off) over K more forwards.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50, help="sampling steps (default 50; 0: the forward only)")
    ap.add_argument("--n", type=int, default=64, help="samples per run (3n rows per forward)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forward repeats")
    ap.add_argument("--sample-repeats", type=int, default=1,
                    help="timed sampling runs each (>= 1; the last one is also the check)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: ccfg's)")
    ap.add_argument("--layers", type=int, default=2, help="layers_per_block")
    ap.add_argument("--profile", type=int, default=3, metavar="K",
                    help="print ccfg's forward time per op kind over K forwards (0: off; "
                         "default 3)")
    return ap.parse_args(argv)


if __name__ == "__main__":      # run.py and scaling.py import this module: no parsing there
    ARGS = parse()
    if ARGS.threads:
        os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDIMScheduler, UNet2DModel  # noqa: E402

import ccfg  # noqa: E402
from bench_common import Table, measure_pair, profile_forward, thread_report  # noqa: E402

SCALE, TAU, POS, NEG, NULL = 3.0, 0.5, 1, 2, 10


def build(layers):
    cfg = dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
               layers_per_block=layers, down_block_types=("DownBlock2D", "DownBlock2D",
                                                          "AttnDownBlock2D"),
               up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32,
               norm_num_groups=32, num_class_embeds=11)
    torch.manual_seed(0)
    model = UNet2DModel(**cfg).eval()
    folder = tempfile.mkdtemp(prefix="ccfg_bench_unet_")
    model.save_pretrained(folder)
    return model, ccfg.models.UNet.from_pretrained(folder), folder


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def torch_ccfg_run(model, x_T, steps, n):
    """the PyTorch peer: diffusers' DDIM loop, one 3n-row forward per step, CCFG in torch"""
    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(steps)
    x = torch.from_numpy(x_T.copy())
    labels = torch.tensor([NULL] * n + [POS] * n + [NEG] * n)
    with torch.no_grad():
        for t in sched.timesteps:
            u, p, ng = model(torch.cat([x, x, x]), t, labels).sample.chunk(3)
            dp, dn = p - u, ng - u
            lam_p = 2 * torch.sigmoid(TAU * dp.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            lam_n = 2 * torch.sigmoid(-TAU * dn.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            eps = u + SCALE * lam_p * dp - SCALE * lam_n * dn
            x = sched.step(eps, t, x).prev_sample
    return x.numpy()


def set_threads():
    """torch.set_num_threads(ccfg's OpenMP thread count); prints and returns that count"""
    threads = ccfg.devices()[0]["threads"]
    torch.set_num_threads(threads)
    print(f"threads: ccfg OpenMP {threads}, torch.set_num_threads({threads}) "
          f"-> torch.get_num_threads() = {torch.get_num_threads()}")
    return threads


def main():
    sys.stdout.reconfigure(line_buffering=True)
    print(f"ccfg {ccfg.__version__} UNet benchmark ({ccfg.__file__}), torch {torch.__version__}")
    for line in thread_report():
        print(line)
    set_threads()
    failures = []
    run(failures, n=ARGS.n, steps=ARGS.steps, repeats=ARGS.repeats,
        sample_repeats=ARGS.sample_repeats, layers=ARGS.layers, profile=ARGS.profile)
    if failures:
        print("MISMATCH in: " + ", ".join(failures))
    return 1 if failures else 0


def run(failures, n=64, steps=50, repeats=5, sample_repeats=1, layers=2, profile=3):
    """Forward of 3n rows and a CCFG DDIM run of n samples, ccfg against torch (threads as set by
    the caller): prints the checks, the op-kind profile and the table; returns a dict of Timings
    (forward_ccfg, forward_torch, sample_ccfg, sample_torch) and the profile text. A check that
    fails is appended to ``failures``."""
    model, unet, folder = build(layers)
    shutil.rmtree(folder, ignore_errors=True)   # the saved weights were only needed to load ccfg's
    print(f"model: {unet!r}")
    rows = 3 * n
    table = Table(f"UNet2DModel 32x32x1, batch {rows} forward; CCFG DDIM {steps} steps, "
                  f"n = {n}")

    # ---------------------------------------------------------------- forward
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 1, 32, 32)).astype(np.float32)
    labels = np.repeat(np.array([NULL, POS, NEG]), n)
    tx, tl = torch.from_numpy(x), torch.from_numpy(labels)

    def torch_forward():
        with torch.no_grad():
            return model(tx, 500, tl).sample

    err = rel_err(unet(x, 500, labels), torch_forward().numpy())
    status = "ok" if err <= 1e-4 else "MISMATCH"
    print(f"forward check: max|ccfg - torch| / max|torch| = {err:.2e} ({status})")
    if status != "ok":
        failures.append(f"UNet forward, {rows} rows: ccfg differs from torch ({err:.2e})")
    t_ccfg, t_torch = measure_pair(lambda: unet(x, 500, labels), torch_forward, repeats)
    case = f"forward, {rows} rows"
    table.add(case, "torch (diffusers UNet2DModel)", t_torch)
    table.add(case, "ccfg C (OpenBLAS + OpenMP)", t_ccfg, peer="torch (diffusers UNet2DModel)")
    print(f"forward: ccfg {t_ccfg.median:.3f} s, torch {t_torch.median:.3f} s, "
          f"ratio ccfg/torch = {t_ccfg.median / t_torch.median:.2f}; activations planned: "
          f"{unet.plan_bytes / 2**20:.0f} MiB")
    prof = ""
    if profile > 0:
        print(f"ccfg forward of {rows} rows by op kind (mean of {profile}; load "
              f"{os.getloadavg()[0]:.1f}):")
        prof = profile_forward(lambda: unet(x, 500, labels), profile)
        print(prof)

    if steps == 0:             # --steps 0: the forward alone
        print()
        print(table.render())
        return dict(forward_ccfg=t_ccfg, forward_torch=t_torch, sample_ccfg=None,
                    sample_torch=None, profile=prof)

    # ---------------------------------------------------------------- sampling
    x_T = ccfg.randn(0, n, unet.shape)
    rule = ccfg.CCFG(scale=SCALE, tau=TAU)

    def ccfg_run():
        return ccfg.sample(unet, positive=POS, negative=NEG, guidance=rule, sampler="ddim",
                           steps=steps, n=n, seed=0, progress=False,
                           scheduler=ccfg.SchedulerConfig())

    # every timed run also feeds the check (a 50-step run takes minutes on 2 cores); the runs
    # alternate, as the forwards do
    results = {}
    s_ccfg, s_torch = measure_pair(
        lambda: results.__setitem__("ccfg", ccfg_run()),
        lambda: results.__setitem__("torch", torch_ccfg_run(model, x_T, steps, n)),
        sample_repeats, warmup=0)
    err = rel_err(results["ccfg"], results["torch"])
    status = "ok" if err <= 1e-3 else "MISMATCH"
    print(f"sampling check: max|ccfg - torch| / max|torch| = {err:.2e} ({status})")
    if status != "ok":
        failures.append(f"UNet CCFG DDIM {steps} steps, n={n}: ccfg differs from torch "
                        f"({err:.2e})")
    case = f"CCFG DDIM {steps} steps, n={n}"
    table.add(case, "torch loop (diffusers DDIM + CCFG)", s_torch)
    table.add(case, "ccfg.sample (all in C)", s_ccfg, peer="torch loop (diffusers DDIM + CCFG)")
    print(f"sampling: ccfg {s_ccfg.median:.1f} s, torch {s_torch.median:.1f} s, "
          f"ratio ccfg/torch = {s_ccfg.median / s_torch.median:.2f}")
    print()
    print(table.render())
    return dict(forward_ccfg=t_ccfg, forward_torch=t_torch, sample_ccfg=s_ccfg,
                sample_torch=s_torch, profile=prof)


if __name__ == "__main__":
    sys.exit(main())
