"""ccfg.guiders: ccfg's rules behind diffusers' guider interface (issue 12, item 4b), driven the
way a diffusers loop drives a guider (set_state, prepare_inputs, one UNet call per batch,
__call__), compared with ccfg.guide on the same predictions and with ccfg's own pipeline."""
import numpy as np
import pytest

import ccfg

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")

from test_pipelines import STEPS, folder  # noqa: E402,F401  (the tiny pipeline fixture)


def guided_loop(pipe, guider, prompt, negative, x_T, record=None, bind=False):
    """a diffusers-style denoising loop with a guider, on the pipeline's torch modules; ``bind``:
    the guider reads ā_t from the loop's scheduler (record then also holds each step's t)"""
    sched = diffusers.DDIMScheduler.from_pretrained(pipe_folder(pipe), subfolder="scheduler")
    sched.set_timesteps(STEPS)
    if bind:
        guider.set_scheduler(sched)
    emb = {k: torch.from_numpy(pipe.encode([p])).repeat(x_T.shape[0], 1, 1)
           for k, p in (("c", prompt), ("u", ""), ("n", negative))}
    x = torch.from_numpy(x_T)
    for i, t in enumerate(sched.timesteps):
        guider.set_state(step=i, num_inference_steps=STEPS, timestep=t)
        batches = guider.prepare_inputs({"encoder_hidden_states": (emb["c"], emb["u"], emb["n"])})
        with torch.no_grad():
            for b in batches:
                b.noise_pred = pipe.unet(x, t, encoder_hidden_states=b.encoder_hidden_states).sample
        out = guider(batches)
        if record is not None:
            record.append(([b.noise_pred for b in batches], out.pred) + ((int(t),) if bind else ()))
        x = sched.step(out.pred, t, x).prev_sample
    return x.numpy()


def pipe_folder(pipe):
    return pipe._folder


@pytest.fixture(scope="module")
def pipe(folder):
    p = ccfg.pipelines.StableDiffusion.from_pretrained(folder, unet="torch")   # torch modules
    p._folder = folder
    return p


@pytest.mark.parametrize("make,rule", [
    (lambda: ccfg.guiders.CCFGGuidance(guidance_scale=5.0, tau=0.3), ccfg.CCFG(5.0, tau=0.3)),
    (lambda: ccfg.guiders.NegatedCFGGuidance(guidance_scale=4.0, negative_scale=2.0),
     ccfg.NegatedCFG(4.0, negative_scale=2.0)),
    (lambda: ccfg.guiders.PerpNegGuidance(guidance_scale=4.0), ccfg.PerpNeg(4.0)),
    (lambda: ccfg.guiders.APGGuidance(guidance_scale=4.0, eta=0.5), ccfg.APG(4.0, eta=0.5)),
    (lambda: ccfg.guiders.RuleGuidance("ccfg", 6.0, dict(tau=0.1)), ccfg.CCFG(6.0, tau=0.1)),
])
def test_guider_equals_guide_on_the_same_predictions(pipe, make, rule):
    record = []
    guided_loop(pipe, make(), "boots", "sneakers", ccfg.randn(0, 2, (4, 8, 8)), record)
    for preds, got in record:
        c, u = preds[0], preds[1]
        n = preds[2] if len(preds) > 2 else None
        want = ccfg.guide(u, c, n, rule)
        assert isinstance(got, torch.Tensor) and torch.equal(got, want)


@pytest.mark.parametrize("tau", ["nce", "pilot_noise", "auto"])
def test_tau_schedules_read_alpha_bar_from_the_scheduler(pipe, tau):
    """ā_t is the scheduler's alphas_cumprod at the step's timestep, read here from diffusers'
    own scheduler object, and passed to ccfg.guide as the rule's noise level"""
    record = []
    guider = ccfg.guiders.CCFGGuidance(guidance_scale=5.0, tau=tau, tau_scale=0.5)
    guided_loop(pipe, guider, "boots", "sneakers", ccfg.randn(2, 2, (4, 8, 8)), record, bind=True)
    sched = diffusers.DDIMScheduler.from_pretrained(pipe_folder(pipe), subfolder="scheduler")
    rule, state = ccfg.CCFG(5.0, tau=tau, tau_scale=0.5), None
    for i, (preds, got, t) in enumerate(record):
        kw = dict(step=i, num_steps=STEPS, alpha_bar=float(sched.alphas_cumprod[t]))
        if rule.stateful:
            want, state = ccfg.guide(preds[1], preds[0], preds[2], rule, state, **kw)
        else:
            want = ccfg.guide(preds[1], preds[0], preds[2], rule, **kw)
        assert torch.equal(got, want)
    # ā_t does reach the rule: a different level gives a different result at the last step
    preds, got, t = record[-1]
    other = ccfg.guide(preds[1], preds[0], preds[2], ccfg.CCFG(5.0, tau="nce", tau_scale=0.5),
                       alpha_bar=0.5 * float(sched.alphas_cumprod[t]))
    assert tau != "nce" or not torch.equal(got, other)


def test_a_schedule_that_reads_alpha_bar_needs_the_scheduler(pipe):
    guider = ccfg.guiders.CCFGGuidance(guidance_scale=5.0, tau="nce")
    with pytest.raises(ValueError, match="alpha_bar"):
        guided_loop(pipe, guider, "boots", "sneakers", ccfg.randn(2, 2, (4, 8, 8)))
    with pytest.raises(TypeError, match="scheduler"):
        guider.set_scheduler(object())


def test_guider_loop_equals_the_pipeline(pipe):
    """the same rule, latents and schedule through a guider loop and through ccfg.pipelines"""
    x_T = ccfg.randn(4, 2, (4, 8, 8))
    lat = guided_loop(pipe, ccfg.guiders.CCFGGuidance(guidance_scale=5.0), "boots", "sneakers",
                      x_T)
    _, want = pipe("boots", negative_prompt="sneakers", guidance=ccfg.CCFG(5.0), steps=STEPS,
                   n=2, seed=4, progress=False, return_latents=True)
    assert np.max(np.abs(lat - want)) / np.max(np.abs(want)) <= 1e-4


def test_window_stateful_rule_and_config_round_trip(pipe, tmp_path):
    g = ccfg.guiders.SLDGuidance(guidance_scale=5.0, preset="strong", start=0.25, stop=0.75)
    record = []
    guided_loop(pipe, g, "boots", "sneakers", ccfg.randn(1, 2, (4, 8, 8)), record)
    # outside [start, stop) only the conditional branch runs and is returned as it is
    counts = [len(p) for p, _ in record]
    assert counts == [1, 3, 3, 1]
    assert torch.equal(record[0][1], record[0][0][0])
    assert g._ccfg_state is not None and g._ccfg_state.step == 2
    g.save_pretrained(str(tmp_path))
    g2 = ccfg.guiders.SLDGuidance.from_pretrained(str(tmp_path))
    assert g2.rule == g.rule and g2._start == 0.25


def test_dng_and_unknown_rules_are_refused():
    with pytest.raises(ValueError, match="observe"):
        ccfg.guiders.RuleGuidance("dng")
    with pytest.raises(ValueError, match="rule"):
        ccfg.guiders.RuleGuidance("nope")
