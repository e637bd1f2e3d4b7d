"""ccfg's Vulkan path against PyTorch on the same GPU: the table of issue 11, in one command.

    python benchmarks/gpu_vs_torch.py [--device vulkan:N] [--profile]
    python benchmarks/gpu_vs_torch.py --smoke      # tiny sizes; lavapipe and torch CPU allowed

Rows (each a ratio measured in this process, same weights, same inputs; medians):
  1. host<->device round trip of one array (upload + download), GB/s, against torch .to()/.cpu()
  2. the copy shader's bandwidth against torch's device-to-device copy
  3. per-step cost of CCFG, Perp-Neg and DNG against NegatedCFG (exact toy mixture, same sampler),
     with submits per step (checked: CCFG and Perp-Neg no more than NegatedCFG)
  4. exact-mixture sampling, n = 1M, d = 2 and 64, CFG and CCFG, against ccfg's CPU backend
  5. a CIFAR-sized UNet2DModel forward (fp32; torch with TF32 off, TF32 on and bf16 autocast),
     then again in each half precision the device runs (CCFG_VULKAN_PRECISION=fp16 and coop, one
     subprocess each: the precision is read when a device opens), checked against torch fp32 at
     the precision contract (HALF_TOL, tests/test_vulkan_half.py) and timed against bf16 autocast
  6. a whole CCFG DDIM run on the shipped Fashion-MNIST model against a torch loop
     (diffusers UNet2DModel + DDIMScheduler + CCFG written in torch)
Outputs are compared before timing; a mismatch is printed and the exit status is 1. Without a
GPU Vulkan device and CUDA the script says why and exits 0 (--smoke runs anyway, on whatever
there is: its numbers only show that every row runs). --profile adds ccfg.profiling's per-kind
device time for one UNet forward, one CCFG step and one step of each mixture row. Nothing about
time is asserted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import ccfg  # noqa: E402
from bench_common import cifar_unet, measure  # noqa: E402

FULL = dict(bytes=256 << 20, toy_n=100_000, toy_steps=20, mix_n=1_000_000, mix_steps=10,
            unet_rows=48, unet_channels=(128, 256, 256, 256), unet_size=32, run_n=512,
            run_steps=20, repeats=5)
SMOKE = dict(bytes=4 << 20, toy_n=2_000, toy_steps=3, mix_n=4_000, mix_steps=2, unet_rows=4,
             unet_channels=(32, 64), unet_size=16, run_n=4, run_steps=2, repeats=2)


# the half-precision forward's contract against float32 (tests/test_vulkan_half.py FORWARD_TOL)
HALF_TOL = 3e-3


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


class Report:
    def __init__(self):
        self.rows, self.failures = [], []

    def row(self, what, ccfg_s, peer_s, peer, target, unit="s"):
        ratio = ccfg_s / peer_s if peer_s else float("nan")
        self.rows.append((what, ccfg_s, peer_s, peer, ratio, target, unit))
        # printed as measured too: a run stopped by a time limit (a lent GPU's) keeps its rows
        print("row: " + self.line(self.rows[-1]))

    @staticmethod
    def fmt(v, unit):
        if unit == "GB/s":
            return f"{v:9.2f} GB/s"
        return f"{v * 1e3:9.2f} ms" if v < 1 else f"{v:9.3f} s "

    def line(self, r):
        what, a, b, peer, ratio, target, unit = r
        return (f"{what:<46} {self.fmt(a, unit):>12} {self.fmt(b, unit):>12}  {ratio:7.2f}  "
                f"{peer:<30} {target}")

    def check(self, what, err, tol):
        ok = err <= tol
        print(f"check {what}: {err:.2e} (tolerance {tol:g}) {'ok' if ok else 'MISMATCH'}")
        if not ok:
            self.failures.append(what)

    def render(self):
        head = f"{'what':<46} {'ccfg':>12} {'peer':>12}  {'ratio':>7}  {'peer is':<30} target"
        return "\n".join([head, "-" * len(head)] + [self.line(r) for r in self.rows])


def pick_device(want, smoke):
    found = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d
             and d["available"]]
    if want:
        return ccfg._device.resolve(want)
    gpus = [d for d in found if d["type"] in ("discrete", "integrated")]
    if gpus:
        return gpus[0]["selector"]
    return found[0]["selector"] if (found and smoke) else None


def sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def transfers(rep, P, vk, torch, tdev):
    from ccfg import _core
    x = np.random.default_rng(0).standard_normal(P["bytes"] // 4).astype(np.float32)
    got = _core.vk_op(vk, "axpbypcz", (x, None, None), (1.0, 0.0, 0.0))
    rep.check("round trip bit-exact", float(np.max(np.abs(got - x))), 0.0)
    t = measure(lambda: _core.vk_op(vk, "axpbypcz", (x, None, None), (1.0, 0.0, 0.0)),
                repeats=P["repeats"]).median
    tx = torch.from_numpy(x)

    def peer():
        y = tx.to(tdev) * 1.0
        return y.cpu()
    tp = measure(peer, repeats=P["repeats"]).median
    gb = 2 * x.nbytes / 1e9
    rep.row(f"round trip {x.nbytes >> 20} MiB (up+down)", gb / t, gb / tp, f"torch .to()/.cpu() "
            f"{tdev.type}", ">= 10 GB/s (discrete GPU)", unit="GB/s")
    if tdev.type != "cuda":
        # no CUDA peer (--smoke): the copy benchmark's calls run once all the same, so that a
        # rehearsal exercises them before a GPU run depends on them
        for mode, what in ((0, "copy shader"), (1, "vkCmdCopyBuffer")):
            sec = _core.vk_copy_bench(vk, x.nbytes, 2, mode)
            print(f"{what} {x.nbytes >> 20} MiB: {2 * x.nbytes / 1e9 / sec:.2f} GB/s (no peer)")
    else:
        # device time on both sides: ccfg's from Vulkan timestamps around 50 copies recorded back
        # to back (vk_copy_bench), torch's from CUDA events around 50 copies (host submit and
        # wait excluded on both sides; a 64 MiB copy is ~30 us on an H200)
        a = torch.empty(x.size, device=tdev)
        b = torch.empty_like(a)

        def tcopy():
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(50):
                b.copy_(a)
            e1.record()
            torch.cuda.synchronize()
            return e0.elapsed_time(e1) * 1e-3 / 50
        tcopy()
        tc = float(np.median([tcopy() for _ in range(5)]))
        for mode, what in ((0, "copy shader"), (1, "vkCmdCopyBuffer")):
            _core.vk_copy_bench(vk, x.nbytes, 2, mode)
            sec = float(np.median([_core.vk_copy_bench(vk, x.nbytes, 50, mode) for _ in range(5)]))
            rep.row(f"{what} {x.nbytes >> 20} MiB", 2 * x.nbytes / 1e9 / sec,
                    2 * x.nbytes / 1e9 / tc, "torch device-to-device copy (CUDA events)",
                    ">= 0.7x torch", unit="GB/s")


def rules(rep, P, vk, profile):
    toy = ccfg.models.GaussianMixture.toy_2d()
    kw = dict(sampler="ddim", steps=P["toy_steps"], n=P["toy_n"], seed=0, progress=False)
    times, outs = {}, {}
    rules_ = {"NegatedCFG": ccfg.NegatedCFG(3.0), "CCFG": ccfg.CCFG(3.0),
              "PerpNeg": ccfg.PerpNeg(3.0), "DNG": ccfg.DNG(3.0)}
    submits = {}
    for name, rule in rules_.items():
        outs[name] = ccfg.sample(toy, "A", "B", rule, device=vk, **kw)
        cpu = ccfg.sample(toy, "A", "B", rule, device="cpu", **kw)
        rep.check(f"toy {name} {vk} vs cpu", rel_err(outs[name], cpu), 1e-4)
        times[name] = measure(lambda: ccfg.sample(toy, "A", "B", rule, device=vk, **kw),
                              repeats=P["repeats"]).median / P["toy_steps"]
        # every run is profiled once: submits per step tell whether the step waits for the host
        with ccfg.profiling.profile(vk) as prof:
            ccfg.sample(toy, "A", "B", rule, device=vk, **kw)
        per = prof.per(P["toy_steps"])
        submits[name] = per.batches
        print(f"toy_2d {name}: {per.batches:.2f} submits per step, coefficient tables on the "
              f"device: {any(k.startswith('coef') for k, _, _ in prof.rows)}")
        if profile:
            print(f"\nprofile, toy_2d {name}, per step:\n{per}\n")
    # CCFG's and Perp-Neg's tables and DNG's posterior are made on the device (no host round trip
    # per step), unless CCFG_VULKAN_HOST_COEFFICIENTS=1 asks for the host path
    if os.environ.get("CCFG_VULKAN_HOST_COEFFICIENTS", "") in ("", "0"):
        for name in ("CCFG", "PerpNeg", "DNG"):
            rep.check(f"toy {name} submits per step above NegatedCFG's",
                      max(0.0, submits[name] - submits["NegatedCFG"]), 0.0)
    for name in ("CCFG", "PerpNeg", "DNG"):
        rep.row(f"toy_2d n={P['toy_n']} {name} per step", times[name], times["NegatedCFG"],
                "NegatedCFG, same device", "<= 1.1x")


def mixtures(rep, P, vk, profile):
    # CFG (two conditions) and CCFG (three), as in the table; --profile: where a step's
    # device time goes (gmm_eps dispatches per step: one per call since the near-memory path)
    for d, model in ((2, ccfg.models.GaussianMixture.toy_2d()),
                     (64, ccfg.models.GaussianMixture.high_dim(d=64))):
        pos, neg = model.concept_names[0], model.concept_names[1]
        for name, rule, conds in (("CFG", ccfg.CFG(3.0), (pos,)), ("CCFG", ccfg.CCFG(3.0),
                                                                    (pos, neg))):
            kw = dict(guidance=rule, steps=P["mix_steps"], n=P["mix_n"], seed=0, progress=False)
            a = ccfg.sample(model, *conds, device=vk, **kw)
            b = ccfg.sample(model, *conds, device="cpu", **kw)
            rep.check(f"mixture {name} d={d} {vk} vs cpu", rel_err(a, b), 1e-4)
            tv = measure(lambda: ccfg.sample(model, *conds, device=vk, **kw), repeats=3).median
            tc = measure(lambda: ccfg.sample(model, *conds, device="cpu", **kw),
                         repeats=3).median
            rep.row(f"mixture {name} d={d} n={P['mix_n']} ({P['mix_steps']} steps)", tv, tc,
                    "ccfg CPU backend, same machine", "<= 0.1x")
            if profile:
                with ccfg.profiling.profile(vk) as prof:
                    ccfg.sample(model, *conds, device=vk, **kw)
                print(f"\nprofile, mixture {name} d={d} n={P['mix_n']}, per step:\n"
                      f"{prof.per(P['mix_steps'])}\n")


def unet_forward(rep, P, vk, torch, tdev, profile):
    ch = P["unet_channels"]
    model, folder = cifar_unet(ch, sample_size=P["unet_size"])
    unet = ccfg.models.UNet.from_pretrained(folder)
    n = P["unet_rows"]
    x = np.random.default_rng(0).standard_normal((n, 3, P["unet_size"], P["unet_size"])) \
        .astype(np.float32)
    tm, tx = model.to(tdev), torch.from_numpy(x).to(tdev)

    def peer(precision):
        def run():
            with torch.no_grad():
                if precision == "bf16":
                    with torch.autocast(tdev.type, dtype=torch.bfloat16):
                        y = tm(tx, 500).sample
                else:
                    y = tm(tx, 500).sample
            sync(torch, tdev)
            return y
        return run

    tf32 = tdev.type == "cuda"
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    ref = peer("fp32")().float().cpu().numpy()
    # CCFG_VULKAN_PRECISION (fp32 unless set): the half precisions are held to their contract
    prec = os.environ.get("CCFG_VULKAN_PRECISION") or "fp32"
    half = prec != "fp32"
    rep.check(f"UNet forward {vk} {prec} vs torch fp32", rel_err(unet(x, 500, device=vk), ref),
              HALF_TOL if half else 1e-3)
    if half:
        bf = peer("bf16")().float().cpu().numpy()
        print(f"for comparison, torch {tdev.type} bf16 autocast vs torch fp32: "
              f"{rel_err(bf, ref):.2e}")
    tv = measure(lambda: unet(x, 500, device=vk), repeats=P["repeats"]).median
    name = f"UNet {ch} forward, {n} rows"
    if half:
        # fp16/coop against bf16 autocast (the target), and fp32 for scale
        rep.row(f"{name} {prec} (torch bf16)", tv,
                measure(peer("bf16"), repeats=P["repeats"]).median,
                f"torch {tdev.type} bf16 autocast", "<= 1.0x")
        rep.row(f"{name} {prec} (torch fp32)", tv,
                measure(peer("fp32"), repeats=P["repeats"]).median,
                f"torch {tdev.type} fp32, TF32 off", "reference")
        if profile:
            with ccfg.profiling.profile(vk) as prof:
                unet(x, 500, device=vk)
            print(f"\nprofile, one UNet forward of {n} rows, {prec}:\n{prof}\n")
        return
    rep.row(name + " fp32", tv, measure(peer("fp32"), repeats=P["repeats"]).median,
            f"torch {tdev.type} fp32, TF32 off", "<= 1.0x")
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        rep.row(name + " (torch TF32)", tv, measure(peer("fp32"), repeats=P["repeats"]).median,
                "torch cuda TF32 (its default)", "reference")
    rep.row(name + " (torch bf16)", tv, measure(peer("bf16"), repeats=P["repeats"]).median,
            f"torch {tdev.type} bf16 autocast", "reference (fp16, coop below)")
    if profile:
        with ccfg.profiling.profile(vk) as prof:
            unet(x, 500, device=vk)
        print(f"\nprofile, one UNet forward of {n} rows:\n{prof}\n")


def unet_half(args, vk):
    """The UNet section again in each half precision of --precisions that the device runs
    (ccfg.devices()' 'precisions'), each in a subprocess with CCFG_VULKAN_PRECISION set; their
    tables print as they come. Returns the number of runs that failed."""
    info = next(d for d in ccfg.devices() if d.get("selector") == vk)
    have = info.get("precisions", ["fp32"])
    failed = 0
    for prec in args.precisions:
        if prec not in have:
            print(f"\nUNet {prec}: skipped, {vk} runs only {have}")
            continue
        print(f"\n== UNet forward with CCFG_VULKAN_PRECISION={prec}")
        cmd = [sys.executable, os.path.abspath(__file__), "--only", "unet", "--device", vk,
               "--precisions", ""] + (["--smoke"] if args.smoke else []) + \
            (["--profile"] if args.profile else [])
        r = subprocess.run(cmd, env=dict(os.environ, CCFG_VULKAN_PRECISION=prec))
        if r.returncode:
            print(f"UNet {prec}: the run failed (exit status {r.returncode})")
            failed += 1
    return failed


def ccfg_torch_loop(torch, tdev, model, sched, n, steps, pos, neg, null, scale, tau, x_T):
    """The reference loop on the GPU: diffusers' UNet and DDIM scheduler, CCFG in torch
    (docs/methods.md §3: tau on the summed squared norm, negative_scale = scale)."""
    sched.set_timesteps(steps)
    labels = torch.tensor([null] * n + [pos] * n + [neg] * n, device=tdev)
    x = torch.from_numpy(x_T).to(tdev)

    def two_sigmoid(z):
        return 2.0 * torch.sigmoid(z)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = model(torch.cat([x, x, x]), t, labels).sample
            u, p, ng = eps.chunk(3)
            dp, dn = p - u, ng - u
            lp = two_sigmoid(tau * dp.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            ln = two_sigmoid(-tau * dn.pow(2).sum(dim=(1, 2, 3), keepdim=True))
            guided = u + scale * lp * dp - scale * ln * dn
            x = sched.step(guided, t, x).prev_sample
    sync(torch, tdev)
    return x.cpu().numpy()


def whole_run(rep, P, vk, torch, tdev):
    from diffusers import DDIMScheduler, UNet2DModel
    from ccfg.models import FASHION_MNIST_DIR
    unet = ccfg.models.load("fashion-mnist")
    model = UNet2DModel.from_pretrained(os.path.join(FASHION_MNIST_DIR, "unet"),
                                        low_cpu_mem_usage=False).to(tdev).eval()
    sched = DDIMScheduler.from_pretrained(os.path.join(FASHION_MNIST_DIR, "scheduler"))
    n, steps, scale, tau = P["run_n"], P["run_steps"], 3.0, 0.2
    pos = unet._condition_id("footwear", "positive")
    neg = unet._condition_id("sneaker", "negative")
    x_T = ccfg.randn(0, n, unet.shape)
    kw = dict(guidance=ccfg.CCFG(scale, tau=tau), sampler="ddim", steps=steps, n=n, seed=0,
              x_T=x_T, progress=False)
    ours = ccfg.sample(unet, "footwear", "sneaker", device=vk, **kw)

    def peer():
        return ccfg_torch_loop(torch, tdev, model, sched, n, steps, pos, neg, unet.null_class,
                               scale, tau, x_T)
    rep.check(f"CCFG run {vk} vs torch loop", rel_err(ours, peer()), 1e-2)
    tv = measure(lambda: ccfg.sample(unet, "footwear", "sneaker", device=vk, **kw),
                 repeats=P["repeats"]).median
    rep.row(f"Fashion-MNIST CCFG DDIM-{steps}, n={n}", tv,
            measure(peer, repeats=P["repeats"]).median,
            f"torch {tdev.type} loop (diffusers + CCFG)", "<= 1.0x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", help="the Vulkan device (default: the first GPU)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes; run on lavapipe and torch CPU when there is no GPU")
    ap.add_argument("--profile", action="store_true", help="print per-kind device time")
    ap.add_argument("--only", choices=["transfers", "rules", "mixtures", "unet", "run"],
                    action="append", help="run only these sections (repeatable)")
    ap.add_argument("--precisions", default="fp16,coop",
                    type=lambda v: [p for p in v.split(",") if p],
                    help="after the fp32 rows, the UNet section again with each of these "
                         "CCFG_VULKAN_PRECISION values the device runs (comma-separated; '' none; "
                         "default fp16,coop)")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    P = SMOKE if args.smoke else FULL
    vk = pick_device(args.device, args.smoke)
    try:
        import torch
    except ImportError:
        print("skipped: torch is not installed")
        return 0
    cuda = torch.cuda.is_available()
    if vk is None or not (cuda or args.smoke):
        print(f"skipped: needs a GPU Vulkan device ({vk or 'none'}) and PyTorch CUDA "
              f"({'yes' if cuda else 'no'}); --smoke runs on whatever there is")
        return 0
    tdev = torch.device("cuda" if cuda else "cpu")
    import diffusers
    diffusers.utils.logging.set_verbosity_error()
    info = next(d for d in ccfg.devices() if d.get("selector") == vk)
    print(f"ccfg {ccfg.__version__} on {vk} {info['name']} ({info['type']}, driver "
          f"{info.get('driver_info', '?')}); torch {torch.__version__} on "
          f"{torch.cuda.get_device_name() if cuda else 'cpu'}"
          + ("  [smoke sizes]" if args.smoke else ""))
    rep = Report()
    want = set(args.only or ["transfers", "rules", "mixtures", "unet", "run"])
    if "transfers" in want:
        transfers(rep, P, vk, torch, tdev)
    if "rules" in want:
        rules(rep, P, vk, args.profile)
    if "mixtures" in want:
        mixtures(rep, P, vk, args.profile)
    if "unet" in want:
        unet_forward(rep, P, vk, torch, tdev, args.profile)
    if "run" in want:
        whole_run(rep, P, vk, torch, tdev)
    print()
    print(rep.render())
    half_failed = 0
    if "unet" in want and not os.environ.get("CCFG_VULKAN_PRECISION"):
        half_failed = unet_half(args, vk)
    if rep.failures:
        print("MISMATCH in: " + ", ".join(rep.failures))
        return 1
    return 1 if half_failed else 0


if __name__ == "__main__":
    sys.exit(main())
