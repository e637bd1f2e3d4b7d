"""The evaluation classifier: a sequential CNN (conv2d, group_norm, silu, spatial_mean, linear)
read from a folder holding ``config.json`` and ``model.safetensors``, run by ccfg's C core
(csrc/classifier.c): no torch at evaluation time. The shipped one (ccfg/weights/classifier) scores
Fashion-MNIST samples for ``ccfg.metrics``; ``tools/train_classifier.py`` trains it.

    clf = ccfg.classifier.load_classifier()          # the shipped one, cached
    labels = clf.classify(images)                    # (N, 1, 32, 32) in [-1, 1] -> (N,)
"""
from __future__ import annotations

import os

import numpy as np

from . import _core
from . import _validate as _v
from . import safetensors as st

__all__ = ["Classifier", "load_classifier"]

_LAYER_TYPES = {"conv2d": 0, "group_norm": 1, "silu": 2, "spatial_mean": 3, "linear": 4}
# bounds on config values (an untrusted config.json; the C core takes them as int): sizes and
# channel counts, and kernel size, stride and padding
MAX_SIZE = 65536
MAX_KERNEL = 64
MAX_LAYERS = 1024


def _int(value, what, low, high):
    """``value`` as an int in [low, high] (bools and floats refused), or ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or \
            not low <= value <= high:
        text = repr(value) if len(repr(value)) <= 60 else repr(value)[:50] + "..."
        raise ValueError(f"{what}: expected an integer in [{low}, {high}], got {text}")
    return int(value)


def _weights_dir(name):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", name)


class Classifier:
    """A sequential CNN from a folder holding ``config.json`` (ordered layer list with tensor
    names) and ``model.safetensors``; run by the C core. ``classify``/``logits``/``features``
    take (N, C, H, W) images in [-1, 1]."""

    def __init__(self, path=None):
        path = _weights_dir("classifier") if path is None else os.fspath(path)
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"classifier: no config.json in {path}")
        cfg = _v.json_file(cfg_path, f"classifier config {cfg_path}")
        if not isinstance(cfg, dict):
            raise ValueError(f"classifier config {cfg_path}: expected a JSON object, got "
                             f"{type(cfg).__name__}")
        try:
            self._build(path, cfg)
        except KeyError as exc:
            raise ValueError(f"classifier config {cfg_path}: missing key {exc}") from None

    def _build(self, path, cfg):
        self.path, self.config = path, cfg
        shape = cfg["input_shape"]
        if not isinstance(shape, (list, tuple)) or len(shape) != 3:
            raise ValueError(f"input_shape: expected [channels, height, width], got {shape!r}")
        self.input_shape = tuple(_int(v, "input_shape", 1, MAX_SIZE) for v in shape)
        classes = cfg.get("classes", ())
        if not isinstance(classes, (list, tuple)) or not all(isinstance(n, str) for n in classes):
            raise ValueError("classes: expected a list of class names")
        self.classes = tuple(classes)
        layer_list = cfg["layers"]
        if not isinstance(layer_list, list) or not 1 <= len(layer_list) <= MAX_LAYERS:
            raise ValueError(f"layers: expected a list of 1 to {MAX_LAYERS} layers")
        tensors = st.load(os.path.join(path, "model.safetensors"))
        layers, params = [], []
        for i, layer in enumerate(layer_list):
            if not isinstance(layer, dict):
                raise ValueError(f"classifier layer {i}: expected an object, got "
                                 f"{type(layer).__name__}")
            t = layer.get("type")
            if not isinstance(t, str) or t not in _LAYER_TYPES:
                raise ValueError(f"classifier layer {i}: unknown type {t!r}")
            spec = [_LAYER_TYPES[t], 0, 0, 0, 0, 0, 0, 0.0]
            expect = {}

            def field(key, low=1, high=MAX_SIZE, default=None):
                v = layer[key] if default is None else layer.get(key, default)
                return _int(v, f"classifier layer {i} ({t}): {key}", low, high)

            if t == "conv2d":
                k = field("kernel_size", 1, MAX_KERNEL)
                spec[1:6] = [field("in_channels"), field("out_channels"), k,
                             field("stride", 1, MAX_KERNEL, 1), field("padding", 0, MAX_KERNEL, 0)]
                expect = {"weight": (spec[2], spec[1], k, k), "bias": (spec[2],)}
            elif t == "group_norm":
                spec[1] = spec[2] = field("num_channels")
                spec[6] = field("num_groups")
                eps = layer.get("eps", 1e-5)
                if isinstance(eps, bool) or not isinstance(eps, (int, float)) or \
                        not 0 < eps < 1:
                    raise ValueError(f"classifier layer {i} ({t}): eps: expected a number in "
                                     f"(0, 1), got {eps!r}")
                spec[7] = float(eps)
                expect = {"weight": (spec[1],), "bias": (spec[1],)}
            elif t == "linear":
                spec[1:3] = [field("in_features"), field("out_features")]
                expect = {"weight": (spec[2], spec[1]), "bias": (spec[2],)}
            for role, shape in expect.items():   # weight then bias: the order C walks them
                name = layer.get(role)
                if not isinstance(name, str) or name not in tensors:
                    raise ValueError(f"classifier layer {i} ({t}): tensor {name!r} missing")
                if tuple(tensors[name].shape) != shape:
                    raise ValueError(f"classifier layer {i} ({t}): {name} has shape "
                                     f"{tuple(tensors[name].shape)}, expected {shape}")
                params.append(tensors[name].ravel())
            layers.append(tuple(spec))
        self.features_layer = _int(cfg.get("features_layer", -1), "features_layer", -1,
                                   len(layer_list) - 1)
        flat = np.concatenate(params).astype(np.float32) if params else np.zeros(0, np.float32)
        self._c = _core.classifier_new(tuple(layers), self.input_shape, self.features_layer, flat)

    def _run(self, images):
        x = _v.images(images, self.input_shape)
        return _core.classifier_forward(self._c, x)

    def logits(self, images):
        """(N, classes) float32 logits."""
        return self._run(images)[0]

    def features(self, images):
        """(N, F) float32: the output of layer ``features_layer`` (the spatial mean)."""
        return self._run(images)[1]

    def classify(self, images):
        """(N,) int64 class indices (argmax of the logits)."""
        return np.argmax(self._run(images)[0], axis=1).astype(np.int64)


_DEFAULT = {}


def load_classifier(path=None):
    """The shipped Fashion-MNIST classifier (cached), or the one in folder ``path``."""
    key = None if path is None else str(path)
    if key not in _DEFAULT:
        _DEFAULT[key] = Classifier(path)
    return _DEFAULT[key]
