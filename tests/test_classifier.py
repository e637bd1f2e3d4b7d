"""The evaluation classifier run by ccfg's C core vs torch running the same weights
(tools/train_classifier.py builds the torch module from the same config)."""
import importlib.util
import json
import os

import numpy as np
import pytest

import ccfg.metrics as metrics
from ccfg import data
from ccfg import safetensors as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "ccfg", "weights", "classifier")
torch = pytest.importorskip("torch")


def _train_module():
    spec = importlib.util.spec_from_file_location(
        "train_classifier", os.path.join(ROOT, "tools", "train_classifier.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _torch_model(folder=WEIGHTS):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = _train_module().build(cfg["layers"])
    stored = st.load(os.path.join(folder, "model.safetensors"))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in stored.items()}
    model.load_state_dict(tensors)
    return model.eval(), cfg


def _torch_forward(model, cfg, x):
    """logits and the output of layer features_layer"""
    with torch.no_grad():
        h = torch.from_numpy(x)
        feats = None
        for i, layer in enumerate(model.layers):
            h = layer(h)
            if i == cfg["features_layer"]:
                feats = h.numpy().copy()
    return h.numpy(), feats


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def real():
    try:
        return data.fashion_mnist("test")
    except (FileNotFoundError, OSError) as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")


def test_logits_and_features_match_torch_on_real_and_noise(real):
    model, cfg = _torch_model()
    clf = metrics.load_classifier()
    rng = np.random.default_rng(0)
    x = np.concatenate([real[0][:300], rng.uniform(-1, 1, (20, 1, 32, 32)).astype(np.float32)])
    want_logits, want_feats = _torch_forward(model, cfg, x)
    assert _rel(clf.logits(x), want_logits) <= 1e-4
    assert _rel(clf.features(x), want_feats) <= 1e-4
    assert np.array_equal(metrics.classify(x), np.argmax(want_logits, axis=1))
    assert metrics.features(x).shape == (x.shape[0], 128)


def test_batch_sizes_do_not_change_results(real):
    # activations are planned per chunk size; a 1-image, odd and > chunk batch must agree
    clf = metrics.load_classifier()
    x = real[0][:300]
    full = clf.logits(x)
    assert np.allclose(clf.logits(x[:1]), full[:1], rtol=1e-5, atol=1e-5)
    assert np.allclose(clf.logits(x[:37]), full[:37], rtol=1e-5, atol=1e-5)
    assert clf.logits(x[:0]).shape == (0, 10)


def test_accuracy_on_real_test_set_via_c(real):
    x, y = real
    pred = metrics.classify(x[:2000])
    assert pred.dtype == np.int64 and pred.min() >= 0 and pred.max() <= 9
    assert np.mean(pred == y[:2000]) >= 0.90


def test_random_small_cnn_matches_torch(tmp_path):
    # a different chain (even kernel, padding 0, two linears with a SiLU between, features after
    # the first linear) built from the same kind of config: the runner is not tuned to one model
    layers = [
        {"type": "conv2d", "in_channels": 2, "out_channels": 6, "kernel_size": 4, "stride": 2,
         "padding": 0, "weight": "c0.w", "bias": "c0.b"},
        {"type": "group_norm", "num_channels": 6, "num_groups": 3, "eps": 1e-5,
         "weight": "g.w", "bias": "g.b"},
        {"type": "conv2d", "in_channels": 6, "out_channels": 5, "kernel_size": 3, "stride": 1,
         "padding": 2, "weight": "c1.w", "bias": "c1.b"},
        {"type": "silu"},
        {"type": "spatial_mean"},
        {"type": "linear", "in_features": 5, "out_features": 7, "weight": "l0.w", "bias": "l0.b"},
        {"type": "silu"},
        {"type": "linear", "in_features": 7, "out_features": 3, "weight": "l1.w", "bias": "l1.b"},
    ]
    cfg = {"input_shape": [2, 11, 9], "layers": layers, "features_layer": 6}
    model = _train_module().build(layers)
    torch.manual_seed(1)
    tensors = {}
    names = {"c0": 0, "g": 1, "c1": 2, "l0": 5, "l1": 7}
    for key, idx in names.items():
        for role, short in (("weight", "w"), ("bias", "b")):
            p = getattr(model.layers[idx], role)
            with torch.no_grad():
                p.copy_(torch.randn_like(p) * 0.5)
            tensors[f"{key}.{short}"] = p.detach().numpy().copy()
    st.save(str(tmp_path / "model.safetensors"), tensors)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    clf = metrics.Classifier(tmp_path)
    x = np.random.default_rng(2).uniform(-1, 1, (9, 2, 11, 9)).astype(np.float32)
    want_logits, want_feats = _torch_forward(model.eval(), cfg, x)
    assert _rel(clf.logits(x), want_logits) <= 1e-4
    assert _rel(clf.features(x), want_feats) <= 1e-4


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        metrics.classify(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="shape"):
        metrics.classify(np.zeros((1, 32, 32), np.float32))
    # beyond [-1, 1]: clipped (what ccfg.sample returns goes in as it is), not refused
    np.testing.assert_array_equal(metrics.classify(np.full((2, 1, 32, 32), 2.0, np.float32)),
                                  metrics.classify(np.full((2, 1, 32, 32), 1.0, np.float32)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.features(np.full((2, 1, 32, 32), np.nan, np.float32))
    with pytest.raises(TypeError):
        metrics.classify(np.zeros((2, 1, 32, 32), dtype=object))
    # float64 in range is accepted (converted)
    assert metrics.classify(np.zeros((2, 1, 32, 32))).shape == (2,)


def test_bad_weights_raise(tmp_path):
    import shutil
    shutil.copy(os.path.join(WEIGHTS, "model.safetensors"), tmp_path / "model.safetensors")
    with open(os.path.join(WEIGHTS, "config.json")) as f:
        cfg = json.load(f)
    cfg["layers"][0]["out_channels"] = 16        # shape mismatch with the stored tensor
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        metrics.Classifier(tmp_path)
    cfg["layers"][0]["out_channels"] = 32
    cfg["layers"][1]["weight"] = "nope"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        metrics.Classifier(tmp_path)
    cfg["layers"][1]["weight"] = "layers.1.weight"
    cfg["features_layer"] = 3                   # a spatial layer: features must be flat
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="flat"):
        metrics.Classifier(tmp_path)


def test_config_without_layers_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"input_shape": [1, 32, 32]}))
    with pytest.raises(ValueError, match="missing key"):
        metrics.Classifier(tmp_path)
    with pytest.raises(FileNotFoundError):
        metrics.Classifier(tmp_path / "absent")
