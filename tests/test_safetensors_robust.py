"""Hostile safetensors headers (issue 13, item 5): every malformed header gives a ValueError that
names the tensor or the header part at fault, never OverflowError, TypeError, RecursionError or a
NumPy error without the tensor's name. Each case here failed before the fix in ccfg/safetensors.py.
"""
import json

import numpy as np
import pytest

from ccfg import safetensors as st


def _write(path, header, data=b""):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _entry(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"w": {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


@pytest.mark.parametrize("shape", [
    [2 ** 63], [2 ** 64 + 5], [2 ** 64 + 5, 0], [0, 2 ** 70], [0, 2 ** 62], [2 ** 32, 2 ** 32],
    [2 ** 62, 4], [2 ** 31] * 3,
], ids=lambda s: "x".join(str(d) for d in s))
def test_huge_or_wrapping_shape_names_the_tensor(tmp_path, shape):
    # before: OverflowError (dims >= 2**63), or the int64 product wrapped to 0 so the header
    # check passed and NumPy's reshape failed without the tensor's name
    p = _write(tmp_path / "a.safetensors", _entry(shape=shape, offsets=(0, 0)))
    with pytest.raises(ValueError, match=r"tensor 'w'.*shape"):
        st.read_header(p)
    with pytest.raises(ValueError, match=r"tensor 'w'.*shape"):
        st.load(p)


def test_too_many_dimensions(tmp_path):
    p = _write(tmp_path / "a.safetensors", _entry(shape=[1] * 40, offsets=(0, 4)), bytes(4))
    with pytest.raises(ValueError, match=r"tensor 'w'.*dimensions"):
        st.load(p)


def test_shapes_numpy_can_hold_still_load(tmp_path):
    p = _write(tmp_path / "a.safetensors", {
        "e": {"dtype": "F32", "shape": [0, 2 ** 40], "data_offsets": [0, 0]},
        "s": {"dtype": "F16", "shape": [], "data_offsets": [0, 2]},
        "v": {"dtype": "F64", "shape": [1] * 32, "data_offsets": [2, 10]},
    }, bytes(10))
    got = st.load(p)
    assert got["e"].shape == (0, 2 ** 40) and got["s"].shape == () and got["v"].shape == (1,) * 32


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}, 32, None, True, 1.5])
def test_non_string_dtype_names_the_tensor(tmp_path, dtype):
    # before: TypeError: unhashable type: 'list' (a list or dict dtype)
    p = _write(tmp_path / "a.safetensors", _entry(dtype=dtype), bytes(4))
    with pytest.raises(ValueError, match=r"tensor 'w'.*dtype"):
        st.load(p)


@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{\"a\":", "}")])
def test_deeply_nested_header(tmp_path, opener, closer):
    # before: RecursionError from the JSON decoder
    depth = 100_000
    raw = ('{"w":' + opener * depth + "1" + closer * depth + "}").encode()
    p = _write(tmp_path / "a.safetensors", raw)
    with pytest.raises(ValueError, match="safetensors header.*nest"):
        st.load(p)


def test_nesting_a_little_deeper_than_the_format_is_a_plain_error(tmp_path):
    p = _write(tmp_path / "a.safetensors", {"w": {"dtype": "F32", "shape": [[[1]]],
                                                  "data_offsets": [0, 4]}}, bytes(4))
    with pytest.raises(ValueError, match=r"tensor 'w'.*shape"):
        st.load(p)


def test_unbalanced_brackets_are_invalid_json(tmp_path):
    p = _write(tmp_path / "a.safetensors", b'{"w":' + b"[" * 50_000)
    with pytest.raises(ValueError, match="safetensors header"):
        st.load(p)


def test_brackets_inside_strings_do_not_count(tmp_path):
    name = "w[[[[[[[[[[{{{{{{{{{{\\\"" * 20
    raw = json.dumps({json.loads(f'"{name}"'): {"dtype": "F32", "shape": [1],
                                                 "data_offsets": [0, 4]},
                      "__metadata__": {"k": "]]]]]]]]]]}}}}}}}}}" * 10}}).encode()
    p = _write(tmp_path / "a.safetensors", raw, np.float32([3]).tobytes())
    got = st.load(p)
    assert [float(v[0]) for v in got.values()] == [3.0]


def test_number_too_long_for_python(tmp_path):
    # Python refuses to parse integers of more than 4300 digits with a bare ValueError
    raw = ('{"w":{"dtype":"F32","shape":[' + "9" * 5000 + '],"data_offsets":[0,4]}}').encode()
    p = _write(tmp_path / "a.safetensors", raw, bytes(4))
    with pytest.raises(ValueError, match="safetensors header"):
        st.load(p)


def test_messages_stay_short(tmp_path):
    p = _write(tmp_path / "a.safetensors", _entry(shape=[-1] + [7] * 100_000), bytes(4))
    with pytest.raises(ValueError, match=r"tensor 'w'") as err:
        st.load(p)
    assert len(str(err.value)) < 1000
