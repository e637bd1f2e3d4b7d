"""CPU attention op against PyTorch: ``_core.nn_op("cpu", "attention"/"attention_qkv")`` against
``torch.nn.functional.scaled_dot_product_attention`` on the same numbers and layout.

    .venv/bin/python benchmarks/bench_attention_cpu.py [--threads T] [--repeats 7]

Sizes: the self-attention of the text UNets of bench_unet_condition.py (sd15-reduced: 6 rows x
1024 tokens, 8 heads x 8; 6 x 256, 8 x 16; 6 x 64, 8 x 32), Stable Diffusion 1.5's top level
(2 x 4096 tokens, 8 heads x 40) and its cross-attention (2 x 4096 queries x 77 keys, 8 x 40),
sd15-reduced's cross-attention (6 x 1024 x 77, 8 x 8).

Threads: ccfg's OpenMP pool (``OMP_NUM_THREADS``, set from --threads before ccfg is imported)
and ``torch.set_num_threads(T)``. OpenBLAS runs at one thread inside ccfg's op as in a forward.
torch's input is laid out (batch, heads, tokens, head_dim) once, outside the timing (its
transposes are not counted: a diffusers forward makes them too, but they are cheap).

Outputs are checked first (max|a-b|/max|b| <= 1e-5, the op tests' bound). Timing: medians of
--repeats calls, ccfg and torch alternating; ratio = torch time / ccfg time (> 1: ccfg faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

CASES = [  # (name, batch, nq, nk, heads, head_dim, self)
    ("sd15r L0 self", 6, 1024, 1024, 8, 8, True),
    ("sd15r L1 self", 6, 256, 256, 8, 16, True),
    ("sd15r L2 self", 6, 64, 64, 8, 32, True),
    ("sd15r L0 cross", 6, 1024, 77, 8, 8, False),
    ("SD1.5 L0 self", 2, 4096, 4096, 8, 40, True),
    ("SD1.5 L0 cross", 2, 4096, 77, 8, 40, False),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default=None, help="substring of the case names to run")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from ccfg import _core
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    print(f"{'case':16} {'ccfg ms':>9} {'torch ms':>9} {'torch/ccfg':>10} {'err':>8}")
    for name, b, nq, nk, heads, hd, self_attn in CASES:
        if args.only and args.only not in name:
            continue
        rng = np.random.default_rng(0)
        inner = heads * hd
        q = rng.standard_normal((inner, b * nq), dtype=np.float32)
        k = rng.standard_normal((inner, b * nk), dtype=np.float32)
        v = rng.standard_normal((inner, b * nk), dtype=np.float32)
        out = [np.zeros(inner * b * nq, np.float32)]
        if self_attn:
            qkv = np.concatenate([q.ravel(), k.ravel(), v.ravel()])

            def run_ccfg():
                return _core.nn_op("cpu", "attention", [qkv], out, (b, nq, heads, hd), (), None,
                                   None)[0]
        else:
            def run_ccfg():
                return _core.nn_op("cpu", "attention_qkv", [q.ravel(), k.ravel(), v.ravel()], out,
                                   (b, nq, nk, heads, hd), (), None, None)[0]

        def split(a, n):
            return torch.from_numpy(a).reshape(heads, hd, b, n).permute(2, 0, 3, 1).contiguous()
        tq, tk, tv = split(q, nq), split(k, nk), split(v, nk)

        def run_torch():
            with torch.no_grad():
                return F.scaled_dot_product_attention(tq, tk, tv)
        got = run_ccfg().reshape(inner, b * nq)
        want = run_torch().permute(1, 3, 0, 2).reshape(inner, b * nq).numpy()
        err = float(np.abs(got - want).max() / np.abs(want).max())
        tc, tt = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run_ccfg()
            tc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_torch()
            tt.append(time.perf_counter() - t0)
        mc, mt = statistics.median(tc), statistics.median(tt)
        flag = "" if err <= 1e-5 else "  MISMATCH"
        print(f"{name:16} {mc * 1e3:9.2f} {mt * 1e3:9.2f} {mt / mc:10.2f} {err:8.1e}{flag}")


if __name__ == "__main__":
    main()
