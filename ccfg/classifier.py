"""The evaluation classifier: a sequential CNN (conv2d, group_norm, silu, spatial_mean, linear)
read from a folder holding ``config.json`` and ``model.safetensors``, run by ccfg's C core
(csrc/classifier.c): no torch at evaluation time. The shipped one (ccfg/weights/classifier) scores
Fashion-MNIST samples for ``ccfg.metrics``; ``tools/train_classifier.py`` trains it.

    clf = ccfg.classifier.load_classifier()          # the shipped one, cached
    labels = clf.classify(images)                    # (N, 1, 32, 32) in [-1, 1] -> (N,)
"""
from __future__ import annotations

import json
import os

import numpy as np

from . import _core
from . import _validate as _v
from . import safetensors as st

__all__ = ["Classifier", "load_classifier"]

_LAYER_TYPES = {"conv2d": 0, "group_norm": 1, "silu": 2, "spatial_mean": 3, "linear": 4}


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
        with open(cfg_path) as f:
            cfg = json.load(f)
        try:
            self._build(path, cfg)
        except KeyError as exc:
            raise ValueError(f"classifier config {cfg_path}: missing key {exc}") from None

    def _build(self, path, cfg):
        self.path, self.config = path, cfg
        self.input_shape = tuple(int(v) for v in cfg["input_shape"])
        self.classes = tuple(cfg.get("classes", ()))
        layer_list = cfg["layers"]
        tensors = st.load(os.path.join(path, "model.safetensors"))
        layers, params = [], []
        c = self.input_shape[0]
        for i, layer in enumerate(layer_list):
            t = layer.get("type")
            if t not in _LAYER_TYPES:
                raise ValueError(f"classifier layer {i}: unknown type {t!r}")
            spec = [_LAYER_TYPES[t], 0, 0, 0, 0, 0, 0, 0.0]
            expect = {}
            if t == "conv2d":
                k = int(layer["kernel_size"])
                spec[1:6] = [int(layer["in_channels"]), int(layer["out_channels"]), k,
                             int(layer.get("stride", 1)), int(layer.get("padding", 0))]
                expect = {"weight": (spec[2], spec[1], k, k), "bias": (spec[2],)}
                c = spec[2]
            elif t == "group_norm":
                spec[1] = spec[2] = int(layer["num_channels"])
                spec[6], spec[7] = int(layer["num_groups"]), float(layer.get("eps", 1e-5))
                expect = {"weight": (spec[1],), "bias": (spec[1],)}
            elif t == "linear":
                spec[1:3] = [int(layer["in_features"]), int(layer["out_features"])]
                expect = {"weight": (spec[2], spec[1]), "bias": (spec[2],)}
            for role, shape in expect.items():   # weight then bias: the order C walks them
                name = layer.get(role)
                if name not in tensors:
                    raise ValueError(f"classifier layer {i} ({t}): tensor {name!r} missing")
                if tuple(tensors[name].shape) != shape:
                    raise ValueError(f"classifier layer {i} ({t}): {name} has shape "
                                     f"{tuple(tensors[name].shape)}, expected {shape}")
                params.append(tensors[name].ravel())
            layers.append(tuple(spec))
        self.features_layer = int(cfg.get("features_layer", -1))
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
