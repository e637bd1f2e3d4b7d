"""Defects the libFuzzer targets (fuzz/) found in the C core that the public API reaches; each
test failed before its fix. The fuzzers' own reproducers live in fuzz/corpus/TARGET/regress-*
and are replayed by `make fuzz`."""
import numpy as np
import pytest

import ccfg
from ccfg.schedulers import SchedulerConfig, plan


def test_beta_below_double_precision_is_refused():
    # 1 - 1e-20 == 1: alphas_cumprod stayed 1, DDIM's noise variance was 0/0 = NaN and, with
    # eta = 0, 0 * NaN drew noise into a buffer that was never allocated: a segfault in sample
    cfg = SchedulerConfig(beta_start=1e-20, beta_end=1e-20)
    with pytest.raises(ValueError, match="beta.*adds no noise"):
        plan("ddim", 5, cfg)
    model = ccfg.models.GaussianMixture.toy_2d()
    with pytest.raises(ValueError, match="beta.*adds no noise"):
        ccfg.sample(model, positive="A", sampler="ddim", steps=5, n=4, progress=False,
                    scheduler=cfg, device="cpu")


def test_trained_betas_below_double_precision_are_refused():
    betas = np.full(10, 0.01)
    betas[3] = 1e-18
    with pytest.raises(ValueError, match=r"trained_betas\[3\]"):
        plan("euler", 5, SchedulerConfig(num_train_timesteps=10, trained_betas=betas))


def test_alphas_cumprod_underflow_is_refused():
    # before: the plan held NaN levels (82 of 322) and init_noise_sigma = inf, silently
    with pytest.raises(ValueError, match="alphas_cumprod"):    # by the config or the C plan
        plan("heun", 322, SchedulerConfig(num_train_timesteps=50115, beta_start=0.0003,
                                          beta_end=0.05))


def test_num_train_timesteps_is_bounded():
    # the schedule is held in full: 2**30 training steps asked for 8 GiB at once
    with pytest.raises(ValueError, match="num_train_timesteps"):
        plan("ddim", 10, SchedulerConfig(num_train_timesteps=2 ** 21))


def test_long_karras_schedules_still_match_the_scan():
    # sigma_to_t became a bisection (a scan made Karras plans O(steps x T)): the timesteps it
    # maps the Karras sigmas back to are those of diffusers' formula, here recomputed in NumPy
    cfg = SchedulerConfig(num_train_timesteps=4000, beta_schedule="scaled_linear",
                          beta_start=0.00085, beta_end=0.012)
    p = plan("euler", 37, cfg, karras=True)
    ac = np.asarray(p["alphas_cumprod"])
    log_sig = np.log(np.sqrt((1 - ac) / ac))
    for sigma, t in zip(p["sigmas"][:-1], p["timesteps"]):
        ls = np.log(max(sigma, 1e-10))
        low = min(int(np.nonzero(ls - log_sig >= 0)[0].max(initial=0)), len(ac) - 2)
        w = np.clip((log_sig[low] - ls) / (log_sig[low] - log_sig[low + 1]), 0, 1)
        assert t == pytest.approx(np.float32((1 - w) * low + w * (low + 1)), rel=1e-6)
