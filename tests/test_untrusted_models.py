"""Issue 13, items 3, 5 and 8: an untrusted UNet folder (config.json, the sharded index) is
checked before it costs memory or reads files elsewhere: every integer config field is bounded,
the parameter count the config implies is checked against the weights before the layers are
walked, and a weight_map entry outside the model folder is refused; each error names the field,
the file or the entry. Needs no torch: the weights are made from the layout the config implies."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from ccfg import safetensors as st
from ccfg import unet as U
from ccfg.models import UNet


# ------------------------------------------------------------------- helpers: tiny UNets
TINY = dict(_class_name="UNet2DModel", sample_size=8, in_channels=1, out_channels=1,
            block_out_channels=[8], layers_per_block=1, norm_num_groups=4,
            down_block_types=["DownBlock2D"], up_block_types=["UpBlock2D"], add_attention=False)
TINY_COND = dict(_class_name="UNet2DConditionModel", sample_size=8, in_channels=1,
                 out_channels=1, block_out_channels=[8, 8], layers_per_block=1,
                 norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])


def weights_for(cfg):
    """name -> zero array of every tensor the config implies (q/k/v stacks split by name)."""
    out = {}
    for names, shape in U._param_layout(U._c_config(cfg)):
        for n in (names if isinstance(names, tuple) else (names,)):
            out[n] = np.zeros(shape, np.float32)
    return out


def save_model(folder, cfg, tensors=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    st.save(os.path.join(folder, U.WEIGHTS_NAME), weights_for(cfg) if tensors is None else tensors)


# ===================================================================== item 3: config bounds
def test_layers_per_block_bounded_before_weights():
    """layers_per_block = 10**5 took 9 s and 1.3 GB enumerating layers before any weight was
    checked (10**9 never finished); now refused at once, naming the field."""
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="layers_per_block"):
        UNet(dict(TINY, layers_per_block=10 ** 5), weights_for(TINY))
    with pytest.raises(ValueError, match="layers_per_block"):
        U._c_config(dict(TINY, layers_per_block=10 ** 9))
    assert time.perf_counter() - t0 < 2.0


HUGE = 2 ** 40


@pytest.mark.parametrize("base,field,value", [
    (TINY, "layers_per_block", 10 ** 6),
    (TINY, "block_out_channels", [2 ** 20]),
    (TINY, "in_channels", HUGE),
    (TINY, "out_channels", HUGE),
    (TINY, "norm_num_groups", HUGE),
    (TINY, "num_class_embeds", HUGE),
    (TINY, "time_embedding_dim", HUGE),
    (TINY, "attention_head_dim", HUGE),
    (TINY, "attn_norm_num_groups", HUGE),
    (TINY_COND, "cross_attention_dim", HUGE),
    (TINY_COND, "transformer_layers_per_block", 10 ** 6),
    (TINY_COND, "transformer_layers_per_block", [1, 10 ** 6]),
    (TINY_COND, "attention_head_dim", [2, HUGE]),
    (TINY_COND, "layers_per_block", [10 ** 6, 10 ** 6]),
], ids=lambda v: str(v)[:20])
def test_integer_config_fields_have_upper_bounds(base, field, value):
    with pytest.raises(ValueError, match=field):
        U._c_config(dict(base, **{field: value}))


@pytest.mark.parametrize("value", [8.0, "8", [8.0, 8], [8], [8, 8, 8], {"h": 8}, True, HUGE,
                                   [8, HUGE], []], ids=repr)
def test_sample_size_bad_values_name_the_field(value):
    """sample_size=8.0 raised "'float' object is not iterable"."""
    with pytest.raises(ValueError, match="sample_size"):
        UNet(dict(TINY, sample_size=value), weights_for(TINY))


@pytest.mark.parametrize("field,value", [("flip_sin_to_cos", "false"),
                                         ("center_input_sample", "yes"),
                                         ("_class_name", ["UNet2DModel"]),
                                         ("down_block_types", [["DownBlock2D"]]),
                                         ("freq_shift", 10 ** 400)])
def test_config_field_types_name_the_field(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        U._c_config(dict(TINY, **{field: value}))


def test_config_not_a_dict_names_config():
    with pytest.raises(TypeError, match="config"):
        U._c_config([("layers_per_block", 1)])


@pytest.mark.parametrize("cfg", [TINY, TINY_COND,
                                 dict(TINY, block_out_channels=[8, 16, 16], layers_per_block=3,
                                      down_block_types=["DownBlock2D", "AttnDownBlock2D",
                                                        "AttnDownBlock2D"],
                                      up_block_types=["AttnUpBlock2D", "AttnUpBlock2D",
                                                      "UpBlock2D"],
                                      num_class_embeds=7, resnet_time_scale_shift="scale_shift",
                                      attention_head_dim=4),
                                 dict(TINY_COND, use_linear_projection=True,
                                      transformer_layers_per_block=[2, 3], layers_per_block=2,
                                      attention_head_dim=[2, 4], time_embedding_dim=20)],
                         ids=["tiny", "tiny_cond", "3_levels", "cond_linear"])
def test_parameter_count_is_the_layout_size(cfg):
    c = U._c_config(cfg)
    layout = sum(int(np.prod(s)) * (len(n) if isinstance(n, tuple) else 1)
                 for n, s in U._param_layout(c))
    assert U._param_count(c) == layout


def test_parameter_count_checked_before_the_layers_are_walked(monkeypatch):
    """A config implying far more parameters than the weights hold fails on the count, naming the
    first tensor that is missing, without walking every layer the config implies."""
    cfg = dict(TINY_COND, layers_per_block=64, transformer_layers_per_block=64,
               block_out_channels=[8] * 8, down_block_types=["CrossAttnDownBlock2D"] * 8,
               up_block_types=["CrossAttnUpBlock2D"] * 8, sample_size=128)
    tensors = weights_for(TINY)
    walked = []
    orig = U._param_layout

    def counting(c):
        for e in orig(c):
            walked.append(e)
            yield e

    monkeypatch.setattr(U, "_param_layout", counting)
    with pytest.raises(ValueError, match=r"(?s)parameter.*missing|missing.*parameter"):
        UNet(cfg, tensors)
    assert len(walked) <= len(tensors) + 1


# ============================================ item 5: index.json names the file
@pytest.mark.parametrize("index", [[], [1, 2], "weights", 3, {"weight_map": [["a", "b"]]},
                                   {"weight_map": {"a": 3}}, {"weight_map": {"a": ["x"]}},
                                   {"weight_map": None}], ids=repr)
def test_bad_index_json_names_the_file(tmp_path, index):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    (tmp_path / (U.WEIGHTS_NAME + ".index.json")).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="index.json"):
        UNet.from_pretrained(tmp_path)


def test_index_json_not_json_names_the_file(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    (tmp_path / (U.WEIGHTS_NAME + ".index.json")).write_text("{not json")
    with pytest.raises(ValueError, match="index.json"):
        UNet.from_pretrained(tmp_path)


# ===================================================== item 8: shards outside the model folder
def sharded(folder, cfg, where):
    """A two-shard model in folder whose second shard file is put at ``where(folder)`` (a path
    relative to folder or absolute); returns the index entry it writes."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    tensors = weights_for(cfg)
    names = sorted(tensors)
    half = len(names) // 2
    entry = where(folder)
    target = entry if os.path.isabs(entry) else os.path.join(folder, entry)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    st.save(os.path.join(folder, "a.safetensors"), {n: tensors[n] for n in names[:half]})
    st.save(target, {n: tensors[n] for n in names[half:]})
    wm = {n: "a.safetensors" for n in names[:half]}
    wm.update({n: entry for n in names[half:]})
    with open(os.path.join(folder, U.WEIGHTS_NAME + ".index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)
    return entry


@pytest.mark.parametrize("where", [
    lambda d: os.path.join("..", "outside.safetensors"),
    lambda d: os.path.join("sub", "..", "..", "outside2.safetensors"),
    lambda d: os.path.abspath(os.path.join(d, "..", "abs.safetensors")),
    lambda d: os.path.abspath(os.path.join(d, "inside_but_absolute.safetensors")),
], ids=["dotdot", "nested_dotdot", "absolute_outside", "absolute_inside"])
def test_shard_outside_the_folder_refused(tmp_path, where):
    entry = sharded(str(tmp_path / "model"), TINY, where)
    with pytest.raises(ValueError, match="weight_map") as info:
        UNet.from_pretrained(tmp_path / "model")
    assert entry in str(info.value)


def test_shard_symlink_escaping_refused(tmp_path):
    folder = tmp_path / "model"
    sharded(str(folder), TINY, lambda d: os.path.join("..", "real.safetensors"))
    idx = folder / (U.WEIGHTS_NAME + ".index.json")
    index = json.loads(idx.read_text())
    os.symlink(tmp_path / "real.safetensors", folder / "b.safetensors")
    index["weight_map"] = {n: ("b.safetensors" if s != "a.safetensors" else s)
                           for n, s in index["weight_map"].items()}
    idx.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="b.safetensors"):
        UNet.from_pretrained(folder)


def test_shard_inside_the_folder_still_loads(tmp_path):
    sharded(str(tmp_path / "model"), TINY, lambda d: os.path.join("sub", "b.safetensors"))
    unet = UNet.from_pretrained(tmp_path / "model")
    assert unet.num_parameters == sum(a.size for a in weights_for(TINY).values())


# ================================== the classifier's config.json (the same pattern: ints to C)
def classifier_folder(tmp_path, mutate):
    import shutil
    from ccfg import classifier
    src = classifier._weights_dir("classifier")
    shutil.copy(os.path.join(src, "model.safetensors"), tmp_path / "model.safetensors")
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg = mutate(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def _set_layer(i, key, value):
    def mutate(cfg):
        cfg["layers"][i][key] = value
        return cfg
    return mutate


@pytest.mark.parametrize("mutate,match", [
    (_set_layer(0, "out_channels", 2 ** 40), "out_channels"),
    (_set_layer(0, "kernel_size", 3.7), "kernel_size"),
    (_set_layer(0, "kernel_size", "3"), "kernel_size"),
    (_set_layer(0, "stride", 2 ** 31), "stride"),
    (_set_layer(1, "num_groups", -8), "num_groups"),
    (_set_layer(1, "eps", "x"), "eps"),
    (_set_layer(0, "weight", ["layers.0.weight"]), "layer 0"),
    (lambda c: dict(c, input_shape=[1, 2 ** 31, 32]), "input_shape"),
    (lambda c: dict(c, input_shape=[1, 32.5, 32]), "input_shape"),
    (lambda c: dict(c, features_layer=2 ** 40), "features_layer"),
    (lambda c: dict(c, layers=[["conv2d"]]), "layer 0"),
    (lambda c: dict(c, layers="conv2d"), "layers"),
    (lambda c: [c], "JSON object"),
], ids=["out_channels_huge", "kernel_float", "kernel_str", "stride_huge", "groups_negative",
        "eps_str", "tensor_name_list", "input_huge", "input_float", "features_huge",
        "layer_not_object", "layers_not_list", "config_list"])
def test_classifier_config_values_bounded_and_named(tmp_path, mutate, match):
    """ints went to C unchecked (OverflowError), floats and strings were truncated by int()
    (kernel_size 3.7 read as 3), a list tensor name raised TypeError: unhashable"""
    from ccfg.classifier import Classifier
    folder = classifier_folder(tmp_path, mutate)
    with pytest.raises(ValueError, match=match):
        Classifier(folder)


def test_classifier_config_not_json_names_the_file(tmp_path):
    from ccfg.classifier import Classifier
    folder = classifier_folder(tmp_path, lambda c: c)
    (folder / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json"):
        Classifier(folder)


@pytest.mark.parametrize("field,value", [("mid_block_scale_factor", 9.7e-46),
                                         ("mid_block_scale_factor", 1e300),
                                         ("norm_eps", 1e-50), ("norm_eps", 5.0)])
def test_config_reals_that_break_float32_refused(field, value):
    """found by tests/test_properties.py: mid_block_scale_factor = 9.7e-46 is nonzero in float64
    but 0 in the core's float32, and the forward returned NaN without a word"""
    with pytest.raises(ValueError, match=field):
        U._c_config(dict(TINY, **{field: value}))


def test_forward_overflow_raises():
    cfg = dict(TINY, mid_block_type="UNetMidBlock2D", mid_block_scale_factor=1e-6)
    tensors = {k: np.full(v.shape, 1e3, np.float32) for k, v in weights_for(cfg).items()}
    unet = UNet(cfg, tensors)
    with pytest.raises(FloatingPointError, match="UNet"):
        unet(np.full((1, 1, 8, 8), 1e30, np.float32), 10)


@pytest.mark.parametrize("entry", ["missing.safetensors", "sub"])
def test_shard_that_is_not_a_file_names_the_entry(tmp_path, entry):
    """found by tests/test_properties.py: FileNotFoundError / IsADirectoryError from open()"""
    folder = tmp_path / "model"
    sharded(str(folder), TINY, lambda d: os.path.join("sub", "b.safetensors"))
    idx = folder / (U.WEIGHTS_NAME + ".index.json")
    index = json.loads(idx.read_text())
    first = sorted(index["weight_map"])[0]
    index["weight_map"][first] = entry
    idx.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="weight_map") as info:
        UNet.from_pretrained(folder)
    assert entry in str(info.value)
