"""One behaviour across the API (issue 14, must-have 5): names are case-insensitive everywhere,
the library's own samples go into its own metrics, devices() entries share their keys, a bare
"vulkan" that can only pick a software device says so once; and progress output fit for logs
(must-have 4)."""
import io
import warnings

import numpy as np
import pytest

import ccfg
from ccfg import _device, sampling

TOY = ccfg.models.GaussianMixture.toy_2d()


def run(**kw):
    args = dict(model=TOY, positive="A", negative="B", guidance="ccfg", sampler="ddim", steps=4,
                n=5, seed=3, progress=False, device="cpu")
    args.update(kw)
    return ccfg.sample(**args)


# ------------------------------------------------------------------- case-insensitive names
@pytest.mark.parametrize("kw", [
    dict(sampler="DDIM"), dict(sampler=" Ddim "), dict(guidance="CCFG"), dict(device="CPU"),
    dict(positive="a", negative="b"),
    dict(scheduler=ccfg.schedulers.SchedulerConfig(beta_schedule="LINEAR",
                                                   prediction_type="Epsilon",
                                                   timestep_spacing="Leading")),
], ids=lambda kw: ",".join(f"{k}={v!r}"[:30] for k, v in kw.items()))
def test_names_are_case_insensitive_in_sample(kw):
    np.testing.assert_array_equal(run(**kw), run(scheduler=ccfg.schedulers.SchedulerConfig(
        timestep_spacing="leading")) if "scheduler" in kw else run())


@pytest.mark.parametrize("sampler", ["EULER_ANCESTRAL", "Heun", "DPMPP_2M", "DDPM"])
def test_every_sampler_name_case_insensitive(sampler):
    np.testing.assert_array_equal(run(sampler=sampler), run(sampler=sampler.lower()))
    assert ccfg.schedulers.plan(sampler, 4)["timesteps"].tolist() == \
        ccfg.schedulers.plan(sampler.lower(), 4)["timesteps"].tolist()


def test_other_names_case_insensitive():
    assert ccfg.CCFG(tau_reduce="MEAN").tau_reduce == "mean"
    assert type(ccfg.guidance.get("Negated_CFG")) is ccfg.NegatedCFG
    m = ccfg.models.PythonModel(lambda x, t, c: np.zeros_like(x), (2,),
                                prediction_type="V_Prediction")
    assert m.prediction_type == "v_prediction"
    assert ccfg.schedulers.SchedulerConfig(beta_schedule="Scaled_Linear").beta_schedule == \
        "scaled_linear"
    x = run(n=64)
    assert ccfg.metrics.target_distance(TOY, x, "A", "B", method="Energy") == \
        ccfg.metrics.target_distance(TOY, x, "A", "B", method="energy")
    assert ccfg.data.concept_id("Sneaker") == ccfg.data.concept_id("sneaker")
    assert _device.resolve("CPU") == "cpu" and _device.resolve("Auto", host_model=True) == "cpu"
    with pytest.raises(ValueError, match="sampler"):
        run(sampler="ddimm")


def test_shipped_model_names_case_insensitive():
    fm = ccfg.models.load("Fashion-MNIST")
    kw = dict(guidance="ccfg", steps=2, n=2, seed=1, progress=False, device="cpu")
    np.testing.assert_array_equal(ccfg.sample(fm, "Footwear", "SNEAKER", **kw),
                                  ccfg.sample(fm, "footwear", "sneaker", **kw))
    assert ccfg.models.load("TOY2D").concept_names == TOY.concept_names


# ------------------------------------------------------------ metrics take sample()'s output
def test_metrics_accept_what_sample_returns():
    fm = ccfg.models.load("fashion-mnist")
    x = ccfg.sample(fm, "footwear", "sneaker", "ccfg", steps=3, n=4, seed=0, progress=False,
                    device="cpu")
    assert np.abs(x).max() > 1.0          # a sampler's output strays beyond [-1, 1] ...
    labels = ccfg.metrics.classify(x)     # ... and is clipped inside, not refused
    np.testing.assert_array_equal(labels, ccfg.metrics.classify(np.clip(x, -1, 1)))
    assert ccfg.metrics.image_summary(x, "footwear", "sneaker")["n"] == 4
    assert ccfg.metrics.features(x).shape == (4, 128)


# ------------------------------------------------------------------------------ devices
def test_devices_entries_share_their_keys():
    found = ccfg.devices()
    for d in found:
        assert set(_device.COMMON_KEYS) <= set(d), d
        assert d["note"] is None or isinstance(d["note"], str)
        str(d)                                       # prints, whatever the backend
    assert len({d["selector"] for d in found}) == len(found)


def test_bare_vulkan_on_a_software_device_warns_once(monkeypatch):
    soft = [d for d in ccfg.devices() if d["backend"] == "vulkan" and "index" in d
            and d["available"]]
    if not soft:
        pytest.skip("no Vulkan device here")
    if any(d["type"] != "cpu" for d in soft):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _device.resolve("vulkan")                # a hardware device: no warning
        return
    monkeypatch.setattr(_device, "_warned", set())
    with pytest.warns(RuntimeWarning, match="software Vulkan driver.*vulkan:0"):
        _device.resolve("vulkan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _device.resolve("Vulkan")                    # once per process
        monkeypatch.setattr(_device, "_warned", set())
        assert _device.resolve("vulkan:0") == "vulkan:0"   # explicit: silent
        assert _device.resolve("auto") == "cpu"            # auto never picks it


# ------------------------------------------------------------------------------ progress
class FakeLog(io.StringIO):
    """A log file or a pipe: not a terminal."""

    def isatty(self):
        return False


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_is_plain_periodic_lines(monkeypatch):
    log = FakeLog()
    monkeypatch.setattr("sys.stderr", log)
    monkeypatch.setattr(sampling._Progress, "LINE_SECONDS", 0.0)   # every 10 % of the steps
    run(steps=50, progress=True)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 9 <= len(lines) <= 11, lines
    assert lines[-1].startswith("CCFG ddim: step 50/50 (100%)")
    assert all("elapsed" in line for line in lines)
    assert any("ETA" in line for line in lines[:-1])


def test_progress_in_a_log_is_rate_limited(monkeypatch):
    log = FakeLog()
    monkeypatch.setattr("sys.stderr", log)
    run(steps=200, progress=True)         # far under 5 s: only the closing line
    assert log.getvalue().splitlines() == [l for l in log.getvalue().splitlines()
                                           if "step 200/200" in l]
    assert len(log.getvalue().splitlines()) == 1


def test_progress_on_a_terminal_is_a_redrawn_bar(monkeypatch):
    tty = FakeTerminal()
    monkeypatch.setattr("sys.stderr", tty)
    run(steps=20, progress=True)
    text = tty.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "20/20" in text


def test_progress_false_is_silent(monkeypatch, capfd):
    log = FakeLog()
    monkeypatch.setattr("sys.stderr", log)
    run(steps=20, progress=False)
    assert log.getvalue() == ""
    assert capfd.readouterr() == ("", "")


def test_progress_callable_gets_every_step():
    seen = []
    run(steps=7, progress=lambda done, steps: seen.append((done, steps)))
    assert seen[-1] == (7, 7) and len(seen) >= 7
