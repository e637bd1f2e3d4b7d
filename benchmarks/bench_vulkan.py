"""The Vulkan backend next to the CPU backend, on every Vulkan device found (lavapipe here).

Three measurements per device, each a median of repeats after warm-up, in this process:
  (a) the sampling job of bench_sampling.py (exact mixture, DDIM 50 steps, CCFG, positive A,
      negative B) with ``device="vulkan:N"`` against ``device="cpu"``; the results must agree
      (relative error <= 1e-5) before anything is timed;
  (b) ``ccfg.guide`` (CCFG, N=64 x (4,64,64), one negative) with ``device="vulkan:N"`` against
      ``device="cpu"``: NumPy in and out, so the device pays an upload of the 3 inputs and a
      download of the result every call;
  (c) the device's memory bandwidth, measured by a copy shader (shaders/copy.comp): the bound for
      any pass over device-resident data, printed next to guide's achieved rate.
"""
from __future__ import annotations

import numpy as np

import ccfg
from ccfg import _core
from bench_common import Table, Timing, measure

STEPS, SCALE, TAU = 50, 3.0, 0.2
GUIDE_N, GUIDE_SHAPE = 64, (4, 64, 64)


def vulkan_devices():
    return [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d
            and d["available"]]


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def sampling_cases(full, emulated):
    """bench_sampling's cases; a CPU-type device (lavapipe: an emulator sharing the host's cores)
    gets a tenth of the samples so that `make bench` stays minutes."""
    if emulated and not full:
        return [("toy_2d n=10k", ccfg.models.GaussianMixture.toy_2d(), 10_000),
                ("high_dim d=64 n=1k", ccfg.models.GaussianMixture.high_dim(d=64), 1_000)]
    cases = [("toy_2d n=100k", ccfg.models.GaussianMixture.toy_2d(), 100_000),
             ("high_dim d=64 n=10k", ccfg.models.GaussianMixture.high_dim(d=64), 10_000)]
    if full:
        cases.append(("high_dim d=1024 n=10k", ccfg.models.GaussianMixture.high_dim(d=1024), 10_000))
    return cases


def bench_sampling(table, sel, failures, full, emulated):
    rule = ccfg.CCFG(scale=SCALE, tau=TAU)
    out = []
    for label, model, n in sampling_cases(full, emulated):
        x_T = ccfg.randn(0, n, model.shape)

        def run(device):
            return ccfg.sample(model, positive="A", negative="B", guidance=rule, sampler="ddim",
                               steps=STEPS, n=n, seed=0, x_T=x_T, progress=False, device=device)

        err = rel(run(sel), run("cpu"))
        ok = err <= 1e-5
        print(f"agreement {label} {sel} vs cpu: relative error {err:.1e} -> "
              f"{'OK' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(f"vulkan sampling {label}: {sel} disagrees with cpu ({err:.2e})")
        t_cpu = measure(lambda: run("cpu"), repeats=3, warmup=0)
        t_vk = measure(lambda: run(sel), repeats=3, warmup=0)
        rows = 3 * n * STEPS
        table.add(label, f"ccfg.sample device={sel}", t_vk,
                  f"{rows / t_vk.median / 1e6:6.2f} M model rows/s",
                  peer="ccfg.sample device=cpu")
        table.add(label, "ccfg.sample device=cpu", t_cpu,
                  f"{rows / t_cpu.median / 1e6:6.2f} M model rows/s")
        out.append((label, t_vk, t_cpu))
    return out


def guide_inputs(seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((GUIDE_N,) + GUIDE_SHAPE, dtype=np.float32)
    p = u + 0.01 * rng.standard_normal(u.shape, dtype=np.float32)
    n = u + 0.01 * rng.standard_normal(u.shape, dtype=np.float32)
    return u, p, n


def bench_guide(table, sel, info, failures):
    rule = ccfg.CCFG(scale=7.5, tau=TAU)
    u, p, n = guide_inputs()
    err = rel(ccfg.guide(u, p, n, rule, device=sel), ccfg.guide(u, p, n, rule, device="cpu"))
    ok = err <= 1e-5
    print(f"agreement guide {sel} vs cpu: relative error {err:.1e} -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        failures.append(f"vulkan guide: {sel} disagrees with cpu ({err:.2e})")
    moved = 4 * u.nbytes
    case = f"guide N={GUIDE_N} {GUIDE_SHAPE}"
    t_vk = measure(lambda: ccfg.guide(u, p, n, rule, device=sel), repeats=9, warmup=2,
                   min_time=0.05)
    t_cpu = measure(lambda: ccfg.guide(u, p, n, rule, device="cpu"), repeats=9, warmup=2,
                    min_time=0.05)
    gbs = lambda t: moved / t.median / 1e9
    table.add(case, f"ccfg.guide device={sel}", t_vk,
              f"{gbs(t_vk):6.2f} GB/s incl. upload/download", peer="ccfg.guide device=cpu")
    table.add(case, "ccfg.guide device=cpu", t_cpu, f"{gbs(t_cpu):6.2f} GB/s")
    # the device's own bandwidth: a copy shader over device-resident buffers
    nbytes = min(64 << 20, info["max_storage_buffer_range"]) & ~15
    idx = f"vulkan:{info['index']}"          # the copy bench opens the device by name
    _core.vk_copy_bench(idx, nbytes, 2)                      # warm-up (pipeline, memory)
    # each repeat: seconds per copy of 10 recorded back to back and submitted once (device time
    # from timestamps where the queue has them)
    t_copy = Timing([_core.vk_copy_bench(idx, nbytes, 10) for _ in range(5)])
    bw = 2 * nbytes / t_copy.median / 1e9
    table.add(case, f"copy shader {nbytes >> 20} MiB on {sel}", t_copy,
              f"{bw:6.2f} GB/s device memory (read + write)")
    # the driver's own copy (vkCmdCopyBuffer, what nn copies use): the bound for the shader
    _core.vk_copy_bench(idx, nbytes, 2, 1)
    t_xfer = Timing([_core.vk_copy_bench(idx, nbytes, 10, 1) for _ in range(5)])
    table.add(case, f"vkCmdCopyBuffer {nbytes >> 20} MiB on {sel}", t_xfer,
              f"{2 * nbytes / t_xfer.median / 1e9:6.2f} GB/s device memory (read + write)")
    return t_vk, t_cpu, bw, gbs(t_vk)


def run(failures, full=False):
    devs = vulkan_devices()
    if not devs:
        why = next((d.get("note") for d in ccfg.devices() if d["backend"] == "vulkan"), "")
        print(f"Vulkan: no device ({why}); nothing to compare")
        return None
    for d in devs:
        sel = d["selector"]
        print(f"Vulkan device {d}: driver {d['driver']} {d['driver_info']}, "
              f"{d['device_local_bytes'] / 2**30:.1f} GiB device-local, float64 shaders "
              f"{'yes' if d['float64'] else 'no'}")
        table = Table(f"{sel} {d['name']} vs the CPU backend (medians; ratio < 1: the device is "
                      "faster)")
        samp = bench_sampling(table, sel, failures, full, d["type"] == "cpu")
        t_vk, t_cpu, bw, guide_bw = bench_guide(table, sel, d, failures)
        print(table.render())
        for label, tv, tc in samp:
            print(f"summary {label}: {sel} takes {tv.median / tc.median:.2f}x the CPU backend's "
                  f"time ({tv.median:.3f} s vs {tc.median:.3f} s)")
        print(f"summary guide: {sel} takes {t_vk.median / t_cpu.median:.2f}x the CPU backend's "
              f"time; it reaches {guide_bw:.2f} GB/s including transfers, against {bw:.2f} GB/s "
              f"of the device's copy shader")
