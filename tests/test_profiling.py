"""The per-dispatch profile (ccfg.profiling, Vulkan timestamp queries), on whatever Vulkan device
there is (lavapipe in CI): the counts follow from the work recorded, times are positive."""
import numpy as np
import pytest

import ccfg
from ccfg import _core

VK = [d for d in _core.devices() if d["backend"] == "vulkan" and "index" in d and d["available"]]
pytestmark = pytest.mark.skipif(not VK, reason="no Vulkan device")
DEV = VK[0]["selector"] if VK else "vulkan:0"


def run(rule, steps=5, n=64):
    model = ccfg.models.GaussianMixture.toy_2d()
    return ccfg.sample(model, "A", "B", rule, steps=steps, n=n, progress=False, device=DEV)


def kinds(prof):
    out = {}
    for kind, calls, ms in prof.rows:
        out[kind.removesuffix("_f64")] = (calls, ms)
    return out


def test_profile_counts_the_dispatches_of_a_run():
    with ccfg.profiling.profile(DEV) as prof:
        x = run(ccfg.NegatedCFG(3.0), steps=5)
    assert np.isfinite(x).all()
    k = kinds(prof)
    # DDIM-5, one stacked model call and one fused rule pass per step
    assert k["gmm_eps"][0] >= 5 and k["combine"][0] == 5
    assert all(ms >= 0.0 for _, ms in k.values()) and prof.device_ms > 0.0
    assert prof.batches >= 1 and prof.wait_ms >= 0.0 and prof.unstamped == 0
    text = str(prof)
    assert "gmm_eps" in text and "submits" in text and DEV in text


def test_contrastive_rules_reduce_once_per_step():
    with ccfg.profiling.profile(DEV) as prof:
        run(ccfg.CCFG(3.0), steps=4)
    k = kinds(prof)
    assert k["dots"][0] == 4                       # ‖D_p‖², ‖D_n‖² per sample, each step
    assert prof.per(4).rows[0][1] == prof.rows[0][1] / 4


def submits(rule, steps=5):
    with ccfg.profiling.profile(DEV) as prof:
        run(rule, steps=steps)
    return prof.batches, kinds(prof)


def test_contrastive_rules_submit_no_more_than_negated_cfg():
    """issue 11: the coefficient tables of CCFG and Perp-Neg are computed on the device
    (shaders/coef.glsl), so a step waits for the device no more often than NegatedCFG's, whose
    table is constant (counts, not times)"""
    base, _ = submits(ccfg.NegatedCFG(3.0))
    for rule in (ccfg.CCFG(3.0), ccfg.CCFG(3.0, tau_reduce="mean", naive_positive=True),
                 ccfg.PerpNeg(3.0), ccfg.PerpNeg(3.0, batch_global=True)):
        got, k = submits(rule)
        assert got <= base, (rule, got, base)
        # the table is made on the device: stage 2 in the barrier-free build (coef_nb), and
        # only Perp-Neg's batch sums (stage 1) in the shader with barriers
        assert k["coef_nb"][0] == 5 and k["dots"][0] == 5
        assert k.get("coef", (0,))[0] == (5 if getattr(rule, "batch_global", False) else 0), k


def dng_submits(rule, negatives=("B", "B", "B"), steps=5):
    """submits and dispatch kinds of a DDPM run (the sampler DNG learns from, every step)"""
    m = ccfg.models.GaussianMixture.toy_2d()
    with ccfg.profiling.profile(DEV) as prof:
        ccfg.sample(m, "A", list(negatives), rule, sampler="ddpm", steps=steps, n=64,
                    progress=False, device=DEV)
    return prof.batches, kinds(prof)


def test_dng_submits_no_more_than_negated_cfg():
    """issue 11: DNG's posterior lives on the device (log p; its table and its update in
    shaders/coef.glsl), so neither its guide step nor its update reads anything back: a run
    submits no more often than NegatedCFG's with the same negatives and sampler"""
    base, _ = dng_submits(ccfg.NegatedCFG(3.0))
    got, k = dng_submits(ccfg.DNG(3.0))
    assert got <= base, (got, base)
    # the table every step (stage 2), the update after every transition but the last (stage 3)
    assert k["coef_nb"][0] == 5 + 4 and "coef" not in k and k["dots"][0] == 4 * 3


def test_dng_host_posterior_waits_once_per_transition():
    """the positive control of the test above: with CCFG_VULKAN_HOST_COEFFICIENTS=1 the
    posterior stays on the host and its update reads the reductions of every negative back in
    one submit per transition (not two per negative)"""
    code = f"""
import sys
sys.path.insert(0, "tests")
import ccfg, test_profiling as T
base, _ = T.dng_submits(ccfg.NegatedCFG(3.0))
got, k = T.dng_submits(ccfg.DNG(3.0))
assert "coef" not in k and "coef_nb" not in k, k
assert base + 4 <= got <= base + 5, (base, got)
print("ok")
"""
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, CCFG_VULKAN_HOST_COEFFICIENTS="1"),
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


COEF_DISPATCHES = """
import sys
import numpy as np, ccfg
sys.path.insert(0, "tests")
import test_profiling as T
rng = np.random.default_rng(0)
u = rng.standard_normal((6, 3000)).astype(np.float32)      # three partials per sample
p, n1, n2 = u + 0.5, u - 0.25, u + 0.125
out = {}
for name, rule in (("ccfg", ccfg.CCFG(3.0)), ("global", ccfg.PerpNeg(3.0, batch_global=True))):
    with ccfg.profiling.profile(T.DEV) as prof:
        ccfg.guide(u, p, [n1, n2], rule, device=T.DEV)
    k = T.kinds(prof)
    out[name] = (k.get("coef", (0,))[0], k.get("coef_nb", (0,))[0])
_, st = ccfg.guide(u, p, [n1, n2], ccfg.DNG(3.0), device=T.DEV)
with ccfg.profiling.profile(T.DEV) as prof:
    st.observe(u, p, u, [n1, n2], 0.5, 0.6)
k = T.kinds(prof)
out["dng_observe"] = (k.get("coef", (0,))[0], k.get("coef_nb", (0,))[0])
print(repr(out))
"""


@pytest.mark.parametrize("env,want", [
    # fused: stages 1-3 sum the partials themselves; 0, 2 and 3 in the barrier-free build
    ({}, {"ccfg": (0, 1), "global": (1, 1), "dng_observe": (0, 1)}),
    # stage 0 a dispatch of its own again (the barrier-free build)
    ({"CCFG_VULKAN_COEF_UNFUSED": "1"}, {"ccfg": (0, 2), "global": (1, 2), "dng_observe": (0, 2)}),
    # the old path: stage 0 of its own, every stage in the shader with barriers
    ({"CCFG_VULKAN_COEF_UNFUSED": "1", "CCFG_VULKAN_COEF_BARRIERS": "1"},
     {"ccfg": (2, 0), "global": (3, 0), "dng_observe": (2, 0)}),
], ids=["default", "unfused", "old"])
def test_coef_dispatches_with_several_partials_per_sample(env, want):
    """rows of 3000 elements have three partials per sample: fused, a guide call of CCFG
    records one coef dispatch (the table) and DNG's update one (stage 3), not two (stage 0
    first); (calls of the coef kind, of the coef_nb kind) per call"""
    import ast
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", COEF_DISPATCHES], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, **env),
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-3000:]
    assert ast.literal_eval(r.stdout.strip().splitlines()[-1]) == want


def test_profile_stops_at_the_end_of_the_block():
    with ccfg.profiling.profile(DEV) as prof:
        run(ccfg.CFG(2.0), steps=2)
    before = _core.vk_profile(DEV, "read")
    run(ccfg.CFG(2.0), steps=3)
    assert _core.vk_profile(DEV, "read") == before
    assert sum(c for _, c, _ in before["kinds"]) == sum(r[1] for r in prof.rows)


def test_staging_copies_are_profiled_as_transfers():
    code = f"""
import numpy as np, ccfg
x = np.ones((8, 1000), np.float32)
with ccfg.profiling.profile("{DEV}") as prof:
    ccfg.guide(x, x, None, ccfg.CFG(2.0), device="{DEV}")
kinds = {{k: c for k, c, _ in prof.rows}}
# eps_u, eps_p and the per-sample coefficient table go up; the result comes down
assert kinds["upload (staging copy)"] == 3 and kinds["download (staging copy)"] == 1, kinds
print("ok")
"""
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, CCFG_VULKAN_STAGING="1"))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def nn_dispatches(op, inputs, outputs, ints, floats=()):
    with ccfg.profiling.profile(DEV) as prof:
        _core.nn_op(DEV, op, inputs, outputs, ints, floats, None, None)
    out = {}
    for kind, calls, _ in prof.rows:
        if "staging" in kind:       # a discrete GPU's uploads and downloads of the arrays
            continue
        kind = kind.removesuffix("_sg")
        out[kind] = out.get(kind, 0) + calls
    return out


def test_group_norm_is_one_dispatch_when_a_group_fits_a_workgroup():
    """issue 11: a (sample, group) of at most 8192 values is normalised by one workgroup in one
    dispatch (statistics and normalisation); larger groups keep the three dispatches"""
    def gn(batch, c, hw, groups):
        x = np.ones(c * batch * hw, np.float32)
        g = np.ones(c, np.float32)
        return nn_dispatches("group_norm", [x, None, g, g, None], [np.zeros_like(x)],
                             (batch, c, hw, groups, True), (1e-5,))
    assert gn(2, 8, 2048, 2) == {"nn_group_norm": 1}
    assert gn(2, 8, 2049, 2) == {"nn_group_norm": 3}


def test_nn_copy_is_a_transfer_command():
    """the UNet's skip concatenations and residual copies: vkCmdCopyBuffer, not a shader"""
    x = np.arange(1000, dtype=np.float32)
    assert nn_dispatches("copy", [x], [np.zeros_like(x)], (1000,)) == {"copy (vkCmdCopyBuffer)": 1}


def test_only_vulkan_devices_are_profiled():
    with pytest.raises(ValueError, match="device"):
        with ccfg.profiling.profile("cpu"):
            pass
    with pytest.raises(ValueError, match="action"):
        _core.vk_profile(DEV, "go")
