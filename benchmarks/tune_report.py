"""The autotuner's decisions for a CIFAR-sized UNet2DModel forward, and what tuning costs and
gains against the family's default, in one process. --family coop (default): the coop tiles
(CCFG_VULKAN_COOP_TILE=auto against 2x2, needs CCFG_VULKAN_PRECISION=coop); --family fp32: the
float32 SIMT variants (CCFG_VULKAN_CONV_TILE=auto against 64x128, CCFG_VULKAN_PRECISION unset or
fp32). Steps:

  1. a forward with the default (the model placed, its pipelines made), then one more timed;
  2. the tuning cache cleared, `auto` set: the first forward (it times every candidate of every
     convolution shape: its wall time less a default forward is the cost of tuning) and its bits
     against the default's (they must be equal: exit status 1 otherwise);
  3. ccfg.profiling.tuning(): per shape, each candidate's median device time and the choice;
  4. --rounds rounds of a default forward and a tuned `auto` forward, alternated (the order flips
     every round), medians of the per-round ratios auto / default of the wall time and of the
     tuned convolutions' device time (ccfg.profiling).

    CCFG_VULKAN_PRECISION=coop build/toolchain/lavapipe-run .venv/bin/python \\
        benchmarks/tune_report.py [--rows 48] [--channels 64,128,128,128] [--rounds 3] \\
        [--candidates 2x2,2x2p,...]
    .venv/bin/python benchmarks/tune_report.py --family fp32 [--rows 8] [--rounds 3]

On a GPU, the issue's CIFAR-sized model: --channels 128,256,256,256 (its 143 MB of float32
weights exceed lavapipe's 128 MiB maxStorageBufferRange, hence the half-width default).

--candidates sets CCFG_VULKAN_TUNE_CANDIDATES (default: every variant that fits the device).
--cache PATH sets CCFG_VULKAN_TUNE_CACHE: the first `auto` forward then reads PATH's decisions
for this device (a second run of the report shows what a saved cache saves: 0 candidate runs)
and writes the new ones. On lavapipe every number is a lavapipe number (a CPU running the
shaders), never a GPU's. Set LP_NUM_THREADS=1 on lavapipe for steadier numbers on a loaded
machine.
"""
import argparse
import os
import sys
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--channels", default="64,128,128,128",
                    help="block_out_channels (128,256,256,256: the issue's CIFAR-sized 35.7M "
                         "parameters, past lavapipe's 128 MiB maxStorageBufferRange)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--candidates", default="",
                    help="CCFG_VULKAN_TUNE_CANDIDATES (comma-separated tiles; default: all)")
    ap.add_argument("--family", choices=("coop", "fp32"), default="coop",
                    help="coop: CCFG_VULKAN_COOP_TILE (needs CCFG_VULKAN_PRECISION=coop); fp32: "
                         "CCFG_VULKAN_CONV_TILE (the float32 SIMT variants)")
    ap.add_argument("--cache", default="",
                    help="CCFG_VULKAN_TUNE_CACHE: a tuning cache file read before tuning and "
                         "rewritten after (default: none)")
    args = ap.parse_args(argv)
    if args.rounds < 0 or args.rows < 1:
        ap.error("--rounds must be >= 0 and --rows >= 1")
    import torch
    from bench_common import cifar_unet, coop_device
    import ccfg
    from ccfg import _core
    torch.set_num_threads(1)
    if args.family == "coop":
        vk = coop_device()
        switch, default = "CCFG_VULKAN_COOP_TILE", "2x2"

        def tuned_kind(k):
            return k.startswith("nn_conv2d_coop")
    else:
        vks = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d]
        vk = vks[0] if vks else None
        if vk is None or os.environ.get("CCFG_VULKAN_PRECISION", "fp32") != "fp32":
            print("--family fp32 needs a Vulkan device and CCFG_VULKAN_PRECISION unset or fp32")
            return 1
        switch, default = "CCFG_VULKAN_CONV_TILE", "64x128"

        def tuned_kind(k):    # the float32 tiled variants and split-K's reduce
            return k in ("nn_conv2d", "nn_conv2d_t64db", "nn_conv2d_t128", "nn_conv2d_t128db",
                         "nn_conv2d_reduce")
    if vk is None:
        return 1
    os.environ["CCFG_VULKAN_TUNE_CANDIDATES"] = args.candidates
    os.environ["CCFG_VULKAN_TUNE_CACHE"] = args.cache
    os.environ.pop("CCFG_VULKAN_COOP_SINGLE_BUFFER", None)
    os.environ.pop("CCFG_VULKAN_COOP_TILE" if args.family == "fp32" else "CCFG_VULKAN_CONV_TILE",
                   None)
    dev = vk["selector"]
    ch = tuple(map(int, args.channels.split(",")))
    m, d = cifar_unet(ch)
    unet = ccfg.models.UNet.from_pretrained(d)
    x = np.random.default_rng(0).standard_normal((args.rows, 3, 32, 32)).astype(np.float32)
    print(f"{dev} {vk['name']} {vk.get('driver_info', '')}; family {args.family} ({switch}); "
          f"{args.rows} rows, channels {ch}; candidates {args.candidates or 'all that fit'}; "
          f"cache {args.cache or 'none'}; LP_NUM_THREADS="
          f"{os.environ.get('LP_NUM_THREADS', 'unset')}; load {os.getloadavg()[0]:.1f}")

    def forward(tile):
        os.environ[switch] = tile
        with ccfg.profiling.profile(dev) as prof:
            t0 = time.perf_counter()
            out = unet(x, 500, device=dev)
            wall = time.perf_counter() - t0
        conv = sum(ms for k, _, ms in prof.rows if tuned_kind(k))
        return out, wall, conv

    ref, w0, _ = forward(default)
    _, w_def, c_def = forward(default)
    print(f"{default}: first forward {w0:.2f} s (places the model, makes {default}'s pipelines), "
          f"then {w_def:.2f} s (tuned kinds' convolutions {c_def:.0f} ms device)")
    ccfg.profiling.clear_tuning(dev)
    out, w_first, _ = forward("auto")
    t = ccfg.profiling.tuning(dev)
    same = bool(np.array_equal(out, ref))
    print(f"auto: first forward {w_first:.2f} s: tuning cost {w_first - w_def:.2f} s over a "
          f"{default} forward ({t.tuned} shapes x candidates x 4 runs = {t.runs} candidate runs; "
          f"{t.loaded} decisions loaded from the cache; includes making the other variants' "
          f"pipelines); bits {'equal to' if same else 'DIFFERENT from'} {default}'s")
    print(t)
    # per shape: the chosen variant's median against the default's
    gain = [(e["key"], dict((n, ms) for n, ms, _ in e["candidates"]), e["choice"])
            for e in t.entries]
    tot_def = sum(c[default] for _, c, _ in gain if default in c)
    tot_best = sum(c[ch_] for _, c, ch_ in gain if default in c)
    if tot_def:
        print(f"sum over the tuned shapes (each once): {default} {tot_def:.2f} ms, chosen "
              f"{tot_best:.2f} ms: {tot_best / tot_def:.3f}")
    walls, convs = [], []
    for r in range(args.rounds):
        order = [default, "auto"] if r % 2 == 0 else ["auto", default]
        res = {tile: forward(tile) for tile in order}
        same = same and all(np.array_equal(res[k][0], ref) for k in res)
        walls.append(res["auto"][1] / res[default][1])
        convs.append(res["auto"][2] / res[default][2])
        print(f"round {r}: {default} {res[default][1] * 1e3:.0f} ms (convolutions "
              f"{res[default][2]:.0f} ms device), auto {res['auto'][1] * 1e3:.0f} ms "
              f"({res['auto'][2]:.0f}): {walls[-1]:.3f}, {convs[-1]:.3f}; load "
              f"{os.getloadavg()[0]:.1f}")
    t2 = ccfg.profiling.tuning(dev)
    if args.rounds:
        print(f"median ratio auto / {default}: forward {np.median(walls):.3f}, tuned "
              f"convolutions' device time {np.median(convs):.3f} (rounds {args.rounds}); tuned "
              f"forwards added {t2.runs - t.runs} candidate runs; load "
              f"{os.getloadavg()[0]:.1f}")
    print("bits: " + (f"every auto forward equal to {default}'s" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
