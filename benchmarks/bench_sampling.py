"""Exact-mixture sampling: ``ccfg.sample`` (DDIM, 50 steps, CCFG, positive "A", negative "B": three
conditions per step) against the same loop written in vectorised NumPy, measured in one process.

The NumPy peer is written from the formulas, not from ccfg:
  - schedule: diffusers' DDIMScheduler defaults, linear betas 1e-4..0.02 (float32, as diffusers),
    T = 1000, "leading" timesteps ``arange(0, S) * (T // S)`` reversed, ``set_alpha_to_one``; checked
    against ``ccfg.schedulers.plan("ddim", 50)`` and then shared;
  - exact noise prediction: ``x_t | k ~ N(sqrt(ā) μ_k, c_k I)``, ``c_k = ā σ_k² + 1 - ā`` (isotropic
    components), ``eps = -sqrt(1-ā) ∇ log p_t = sqrt(1-ā) Σ_k r_k (x - sqrt(ā) μ_k) / c_k`` with
    responsibilities ``r_k`` renormalised within the condition's components; the component
    log-likelihoods are computed once per step (BLAS ``x @ μᵀ``) and shared by the 3 conditions;
  - CCFG: ``eps_u + w λ+ D_p - w λ- D_n``, ``λ+ = 2σ(τ‖D_p‖²)``, ``λ- = 2σ(-τ‖D_n‖²)``;
  - DDIM (eta = 0): ``x0 = (x - sqrt(1-ā) eps) / sqrt(ā)``, ``x' = sqrt(ā') x0 + sqrt(1-ā') eps``.
Both start from the same x_T = ``ccfg.randn(0, n, shape)``; NumPy works in float64. NumPy is
timed with its default BLAS threads and again with one (``numpy_blas_threads``); the summary's
ratio is against the faster of the two.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time

import numpy as np

import ccfg
from bench_common import Table, measure

STEPS, SCALE, TAU = 50, 3.0, 0.2


# ---------------------------------------------------------------------- the NumPy peer
def diffusers_ddim_schedule(steps, T=1000, beta_start=1e-4, beta_end=0.02):
    """(timesteps, alpha_bar at each timestep, alpha_bar of the next (less noisy) level)."""
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float32)      # torch.linspace float32
    alphas_cumprod = np.cumprod((1.0 - betas).astype(np.float32), dtype=np.float32)
    ratio = T // steps
    timesteps = (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64)   # "leading", offset 0
    ab = alphas_cumprod[timesteps].astype(np.float64)
    prev = timesteps - ratio
    ab_next = np.where(prev >= 0, alphas_cumprod[np.maximum(prev, 0)], 1.0).astype(np.float64)
    return timesteps, ab, ab_next, alphas_cumprod


class NumpyGMM:
    """Exact eps of an isotropic Gaussian mixture for several conditions at once (float64)."""

    def __init__(self, model):
        covs = model.covariances                                  # (K, D, D), public
        var = np.einsum("kii->ki", covs)
        off = covs.copy()
        idx = np.arange(model.dim)
        off[:, idx, idx] = 0.0
        if np.any(off) or not np.allclose(var, var[:, :1]):
            raise ValueError("the NumPy peer handles isotropic components only")
        self.var = var[:, 0].copy()                                # (K,)
        self.mu = np.ascontiguousarray(model.means, dtype=np.float64)   # (K, D)
        self.mm = np.einsum("kd,kd->k", self.mu, self.mu)
        self.logw = np.log(np.asarray(model.weights, dtype=np.float64))
        self.D = model.dim
        self.concepts = {name: np.asarray(ix) for name, ix in model.concepts.items()}

    def eps(self, x, ab, conditions):
        """[eps for c in conditions] at level ab; a condition is None (whole mixture) or a concept."""
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        c = ab * self.var + (1.0 - ab)                                   # (K,)
        xx = np.einsum("nd,nd->n", x, x)
        xm = x @ self.mu.T                                               # (n, K)
        sq = xx[:, None] - (2.0 * a) * xm + ab * self.mm
        ll = self.logw - 0.5 * self.D * np.log(c) - 0.5 * sq / c        # (n, K), 2π dropped
        out = []
        for cond in conditions:
            ks = slice(None) if cond is None else self.concepts[cond]
            l = ll[:, ks]
            r = np.exp(l - l.max(axis=1, keepdims=True))
            r /= r.sum(axis=1, keepdims=True)
            rc = r / c[ks]                                               # r_k / c_k
            out.append(s * (x * rc.sum(axis=1, keepdims=True) - a * (rc @ self.mu[ks])))
        return out


def two_sigmoid(z):
    """2σ(z) without overflow."""
    return 2.0 * np.exp(-np.logaddexp(0.0, -z))


def numpy_sample(gmm, x_T, ab, ab_next, positive, negative, w=SCALE, tau=TAU):
    x = np.array(x_T, dtype=np.float64).reshape(x_T.shape[0], -1)
    for t in range(len(ab)):
        e_u, e_p, e_n = gmm.eps(x, ab[t], (None, positive, negative))
        dp, dn = e_p - e_u, e_n - e_u
        lam_p = two_sigmoid(tau * np.einsum("nd,nd->n", dp, dp))
        lam_n = two_sigmoid(-tau * np.einsum("nd,nd->n", dn, dn))
        e = e_u + (w * lam_p)[:, None] * dp - (w * lam_n)[:, None] * dn
        x0 = (x - math.sqrt(1.0 - ab[t]) * e) / math.sqrt(ab[t])
        x = math.sqrt(ab_next[t]) * x0 + math.sqrt(1.0 - ab_next[t]) * e
    return x.reshape(x_T.shape)


def numpy_sample_unguided(gmm, x_T, ab, ab_next):
    """Unguided DDIM (eta = 0) on the whole mixture: one GEMM (x @ μᵀ) per step, float64."""
    x = np.array(x_T, dtype=np.float64).reshape(x_T.shape[0], -1)
    for t in range(len(ab)):
        (e,) = gmm.eps(x, ab[t], (None,))
        x0 = (x - math.sqrt(1.0 - ab[t]) * e) / math.sqrt(ab[t])
        x = math.sqrt(ab_next[t]) * x0 + math.sqrt(1.0 - ab_next[t]) * e
    return x.reshape(x_T.shape)


def isotropic_k8(d=64, K=8, seed=0):
    """Issue 16's unguided case: K = 8 isotropic components in d = 64, means ~ N(0, 0.25 I),
    variances 0.05..0.2, equal weights."""
    rng = np.random.default_rng(seed)
    means = 0.5 * rng.standard_normal((K, d))
    return ccfg.models.GaussianMixture(means, np.linspace(0.05, 0.2, K))


def phase_profile(label, model, n, ab, guided):
    """ccfg's time per step split by phase, each timed on its own at a mid-run level: the
    mixture's eps on the stacked rows (3 conditions guided, 1 unguided: responsibilities, exp,
    eps; the C call alone), the CCFG rule on n rows (ccfg.guide), and the rest
    of a step (solver, stacking, NaN watch, Python) as the difference to a whole run / steps."""
    x = ccfg.randn(1, n, model.shape).reshape(n, -1)
    mid = float(ab[len(ab) // 2])
    if guided:
        xs = np.concatenate([x, x, x])
        conds = [None] * n + ["A"] * n + ["B"] * n
    else:
        xs, conds = x, None
    from ccfg import _core          # private entry point: the C call without Python checks
    spec = model._c_spec()
    ids = model._row_ids(conds, xs.shape[0])
    xs = np.ascontiguousarray(xs, dtype=np.float32)
    t_eps = measure(lambda: _core.gmm_eps(spec, xs, mid, ids), repeats=5, warmup=1).median
    t_guide = 0.0
    if guided:
        e = model.eps(x, mid)
        rule = ccfg.CCFG(scale=SCALE, tau=TAU)
        t_guide = measure(lambda: ccfg.guide(e, e + 0.01, e - 0.01, rule), repeats=5,
                          warmup=1).median
    return t_eps, t_guide


@contextlib.contextmanager
def numpy_blas_threads(n):
    """NumPy's OpenBLAS (scipy-openblas, its own thread pool) at n threads inside the block, via
    its set_num_threads entry point (ctypes; nothing else changes). Yields False when no such
    library or entry point is found. Under load NumPy's default pool (a spinning second
    thread) made its d=64 loop 5-20x slower than one thread: the 1-thread NumPy is the fair
    peer there (docs/PERFORMANCE.md)."""
    from bench_common import _loaded_libraries
    lib = None
    for path in _loaded_libraries():
        base = os.path.basename(path)
        if "openblas" in base and "scipy_openblas" in base:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                lib = None
            break
    get = set_ = None
    if lib is not None:
        for g, st in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                      ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                      ("openblas_get_num_threads", "openblas_set_num_threads")):
            if getattr(lib, g, None) is not None and getattr(lib, st, None) is not None:
                get, set_ = getattr(lib, g), getattr(lib, st)
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                break
    if get is None:
        yield False
        return
    old = get()
    set_(n)
    try:
        yield True
    finally:
        set_(old)


def numpy_one_thread(table, label, run_numpy, rows, first, max_repeats=7):
    """The NumPy peer again with one BLAS thread (a row of its own; None if not settable)."""
    with numpy_blas_threads(1) as ok:
        if not ok:
            print(f"  ({label}: NumPy's BLAS thread count is not settable here; 1-thread row skipped)")
            return None
        run_numpy()
        t = measure(run_numpy, repeats=max_repeats if first < 1.0 else 3, warmup=0)
    table.add(label, "numpy, 1 BLAS thread", t,
              f"{rows / t.median / 1e6:6.2f} M model rows/s (float64, OpenBLAS at 1 thread)")
    return t


# ---------------------------------------------------------------------- checks and timing
def check_schedule(failures):
    plan = ccfg.schedulers.plan("ddim", STEPS)
    ts, ab, ab_next, acp = diffusers_ddim_schedule(STEPS)
    ok = (np.array_equal(np.asarray(plan["timesteps"]).astype(np.int64), ts)
          and np.allclose(plan["alphas_cumprod"], acp, rtol=1e-6, atol=0)
          and np.allclose(plan["alpha_bars"], ab, rtol=1e-6, atol=0)
          and np.allclose(plan["alpha_bars_next"], ab_next, rtol=1e-6, atol=0))
    print(f"schedule: diffusers-style leading timesteps {ts[0]}..{ts[-1]} (step {ts[0] - ts[1]}), "
          f"alpha_bar {ab[0]:.3e}..{ab[-1]:.6f}; ccfg.schedulers.plan agrees: "
          f"{'OK' if ok else 'MISMATCH'}")
    if not ok:
        failures.append("sampling: ccfg.schedulers.plan('ddim', 50) differs from the diffusers "
                        "leading schedule")
    return np.asarray(plan["alpha_bars"], np.float64), np.asarray(plan["alpha_bars_next"], np.float64)


def compare(label, x_c, x_n, model, failures, atol):
    x_c64 = x_c.astype(np.float64)
    diff = np.abs(x_c64 - x_n).reshape(x_c.shape[0], -1).max(axis=1)
    q = np.quantile(diff, [0.5, 0.999])
    frac = float(np.mean(diff > atol))
    mean_shift = float(np.max(np.abs(x_c64.mean(0) - x_n.mean(0))))
    std_rel = float(np.max(np.abs(x_c64.std(0) / x_n.std(0) - 1.0)))
    arg_c = np.argmax(model.posterior(x_c64), 1)
    arg_n = np.argmax(model.posterior(x_n), 1)
    same_comp = float(np.mean(arg_c == arg_n))
    ok = frac <= 1e-3 and same_comp >= 0.999
    print(f"agreement {label}: per-sample max|ccfg - numpy|: median {q[0]:.1e}, 99.9% {q[1]:.1e}, "
          f"max {diff.max():.1e}; {100 * frac:.3f}% of samples > {atol:g}; "
          f"means differ by {mean_shift:.1e}, stds by {100 * std_rel:.3f}%; "
          f"same nearest component {100 * same_comp:.3f}% -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        failures.append(f"sampling {label}: ccfg.sample disagrees with the NumPy DDIM/CCFG loop")


def bench_case(table, label, model, n, ab, ab_next, failures, atol=1e-4, max_repeats=7):
    rule = ccfg.CCFG(scale=SCALE, tau=TAU)
    gmm = NumpyGMM(model)
    x_T = ccfg.randn(0, n, model.shape)

    def run_ccfg():
        return ccfg.sample(model, positive="A", negative="B", guidance=rule, sampler="ddim",
                           steps=STEPS, n=n, seed=0, x_T=x_T, progress=False)

    def run_numpy():
        return numpy_sample(gmm, x_T, ab, ab_next, "A", "B")

    # the checked runs double as warm-up and decide the repeats (3 when one run takes > 1 s)
    t0 = time.perf_counter()
    x_c = run_ccfg()
    first_c = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_n = run_numpy()
    first_n = time.perf_counter() - t0
    compare(label, x_c, x_n, model, failures, atol)

    reps = lambda first: max_repeats if first < 1.0 else 3
    t_c = measure(run_ccfg, repeats=reps(first_c), warmup=0)
    t_n = measure(run_numpy, repeats=reps(first_n), warmup=0)
    print(f"timed {label}: ccfg.sample median {t_c.median:.3f} s ({t_c.repeats} reps), "
          f"numpy median {t_n.median:.3f} s ({t_n.repeats} reps)")
    rows = 3 * n * STEPS
    table.add(label, "ccfg.sample (C core)", t_c,
              f"{rows / t_c.median / 1e6:6.2f} M model rows/s", peer="numpy")
    table.add(label, "numpy", t_n,
              f"{rows / t_n.median / 1e6:6.2f} M model rows/s (float64, loglik shared by 3 conds)")
    t_1 = numpy_one_thread(table, label, run_numpy, rows, first_n, max_repeats)
    return t_c, best_peer(t_n, t_1)


def run(failures, full=False):
    ab, ab_next = check_schedule(failures)
    table = Table(f"exact-mixture sampling: DDIM {STEPS} steps, CCFG(scale={SCALE}, tau={TAU}), "
                  "positive A, negative B (3 conditions/step)")
    results = []
    cases = [("toy_2d n=100k", ccfg.models.GaussianMixture.toy_2d(), 100_000, 1e-4)]
    cases.append(("high_dim d=64 n=10k", ccfg.models.GaussianMixture.high_dim(d=64), 10_000, 1e-4))
    if full:    # minutes on 2 cores: both sides are memory-bound on (n, 1024) float64 arrays
        cases.append(("high_dim d=1024 n=10k", ccfg.models.GaussianMixture.high_dim(d=1024),
                      10_000, 1e-4))
    for label, model, n, atol in cases:
        results.append((label,) + bench_case(table, label, model, n, ab, ab_next, failures, atol)
                       + (model, n, True))
    label = "isotropic d=64 K=8 n=10k unguided"
    model = isotropic_k8()
    results.append((label,) + bench_unguided(table, label, model, 10_000, ab, ab_next, failures)
                   + (model, 10_000, False))
    print(table.render())
    table.phases = {}       # label -> (step, eps, guide) seconds, for run.py's issue-16 table
    for label, t_c, t_n, model, n, guided in results:
        print(f"summary {label}: ccfg.sample is {t_n.median / t_c.median:.2f}x the speed of NumPy "
              f"({t_c.median:.3f} s vs {t_n.median:.3f} s, medians; NumPy at the faster of its "
              "default and 1 BLAS thread)")
        t_eps, t_guide = phase_profile(label, model, n, ab, guided)
        step = t_c.median / STEPS
        table.phases[label] = (step, t_eps, t_guide)
        print(f"  profile per step ({1e3 * step:.2f} ms): mixture eps {1e3 * t_eps:.2f} ms "
              f"(responsibilities, exp, eps; {'3 conditions' if guided else '1 condition'}), "
              f"guidance {1e3 * t_guide:.2f} ms, solver/stacking/NaN watch/Python "
              f"{1e3 * max(step - t_eps - t_guide, 0.0):.2f} ms")
    return table


def bench_unguided(table, label, model, n, ab, ab_next, failures, atol=1e-4):
    gmm = NumpyGMM(model)
    x_T = ccfg.randn(0, n, model.shape)

    def run_ccfg():
        return ccfg.sample(model, guidance=None, sampler="ddim", steps=STEPS, n=n, seed=0,
                           x_T=x_T, progress=False)

    def run_numpy():
        return numpy_sample_unguided(gmm, x_T, ab, ab_next)

    x_c, x_n = run_ccfg(), run_numpy()
    compare(label, x_c, x_n, model, failures, atol)
    t_c = measure(run_ccfg, repeats=5, warmup=0)
    t_n = measure(run_numpy, repeats=5, warmup=0)
    rows = n * STEPS
    table.add(label, "ccfg.sample (C core)", t_c,
              f"{rows / t_c.median / 1e6:6.2f} M model rows/s", peer="numpy")
    table.add(label, "numpy", t_n, f"{rows / t_n.median / 1e6:6.2f} M model rows/s (float64, "
              "one GEMM per step)")
    t_1 = numpy_one_thread(table, label, run_numpy, rows, t_n.median, 5)
    return t_c, best_peer(t_n, t_1)


def best_peer(t_default, t_one):
    """The faster of NumPy with its default BLAS threads and with one: the summary's peer."""
    return t_default if t_one is None or t_default.median <= t_one.median else t_one
