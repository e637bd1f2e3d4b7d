"""Argument validators shared by every module: each returns the clean value or raises a
TypeError/ValueError that names the argument. Bottom layer: imports NumPy only."""
from __future__ import annotations

import json
import math
import numbers

import numpy as np

__all__ = ["as_array", "name", "canonical", "is_int", "real", "integer", "window", "eps_array", "all_finite", "flat", "seed", "shape",
           "images", "INT_MAX", "FLOAT32_MAX"]

# the one dtype rule of guide, sample (x_T) and UNet: any real dtype (float16/32/64, signed or
# unsigned integers) is read as float32, the core's type; bool, complex and objects are refused
_REAL_KINDS = "fiu"
# the largest C ``int``: step counts, steps, offsets and indices cross into the core as int, so
# an integer argument is refused above this (a ValueError naming it, not C's OverflowError)
INT_MAX = 2 ** 31 - 1
# the core computes in float32: a float64 input beyond this would become inf on conversion
FLOAT32_MAX = float(np.finfo(np.float32).max)


def real(value, name, *, low=None, high=None, low_open=False, allow_none=False):
    """A finite real number, or a TypeError/ValueError that names the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:           # an int beyond the float range
        raise ValueError(f"{name} must be finite, got an integer of {value.bit_length()} "
                         "bits") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def name(value, argname, choices=None):
    """A name ccfg defines (sampler, rule, prediction type, schedule, ...), matched
    case-insensitively and without surrounding spaces: the lower-case string. With ``choices``,
    a ValueError naming ``argname`` and listing them when it is not one."""
    if not isinstance(value, str):
        raise TypeError(f"{argname} must be a string, got {type(value).__name__}")
    key = value.strip().lower()
    if choices is not None and key not in choices:
        raise ValueError(f"{argname} must be one of {sorted(choices)}, got {value!r}")
    return key


def canonical(value, names):
    """The entry of ``names`` that the string ``value`` names: itself, else the one entry equal
    to it case-insensitively (surrounding spaces ignored); None when there is none or several."""
    if value in names:
        return value
    key = value.strip().casefold()
    match = [n for n in names if isinstance(n, str) and n.casefold() == key]
    return match[0] if len(match) == 1 else None


def as_array(value, name, dtype=None):
    """``np.asarray(value, dtype)``, with a ragged or non-numeric value's error naming ``name``
    (NumPy's own says "setting an array element with a sequence") and masked arrays refused."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not accepted (the values under the mask would "
                        "be used); fill it (.filled(value)) or pass a plain array")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TypeError(f"{name}: expected an array of numbers ({exc})") from None


def is_int(value):
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def integer(value, name, *, low=None, high=INT_MAX):
    """An int (bools refused), at least ``low`` when given and at most ``high`` (default: the
    largest C int, what the core takes; None: unbounded)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {_short(value)}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {_short(value)}")
    return value


def json_file(path, label):
    """The parsed contents of JSON file ``path``; ValueError starting with ``label`` when it is
    not UTF-8 JSON (nesting too deep for the decoder included: an untrusted file must not escape as
    RecursionError)."""
    with open(path, "rb") as f:
        try:
            return json.loads(f.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{label}: not valid JSON ({exc})") from None


def _short(value):
    """An int for a message: its digits, or its size when it has too many to print."""
    return str(value) if abs(value) < 10 ** 30 else f"an integer of {value.bit_length()} bits"


def window(value):
    """A rule's ``negative_window``: None (the whole run) or a (start, stop) pair of fractions."""
    if value is None:
        return (0.0, 1.0)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError("negative_window must be a (start, stop) pair of fractions")
    start = real(value[0], "negative_window start", low=0.0, high=1.0)
    stop = real(value[1], "negative_window stop", low=0.0, high=1.0)
    if start > stop:
        raise ValueError(f"negative_window start {start} is after stop {stop}")
    return (start, stop)


def eps_array(value, name, shape=None, finite=True, shape_of="the shape of eps_u"):
    """A finite real array (any float or integer dtype) of at least 1 dimension whose values fit
    float32 (the core's type);
    TypeError/ValueError naming ``name``. Masked arrays are refused (their masked values would be
    used as they are); other ndarray subclasses are read as plain arrays. ``finite=False`` leaves
    the NaN/Inf check of a float32 array to the caller (``guide``: the C core checks while it
    reads, one pass over the data instead of two); other dtypes are checked here all the same."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name}: masked arrays are not accepted (the values under the mask would "
                        "be used); fill it (.filled(value)) or pass a plain array")
    if not isinstance(value, np.ndarray):
        if hasattr(value, "__array__") or isinstance(value, (list, tuple)):
            value = as_array(value, name)
        else:
            raise TypeError(f"{name} must be a NumPy array, got {type(value).__name__}")
    elif type(value) is not np.ndarray:
        value = np.asarray(value)
    if value.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{name} must be an array of real numbers (any float or integer dtype, "
                        f"read as float32), got {value.dtype}")
    if value.ndim < 1 or value.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, ...) with N >= 1, got {value.shape}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape} ({shape_of})")
    if (finite or value.dtype != np.float32) and not all_finite(value):
        raise ValueError(f"{name} contains NaN or Inf")
    if value.dtype.itemsize > 4 and value.size and (value.max() > FLOAT32_MAX or
                                                     value.min() < -FLOAT32_MAX):
        raise ValueError(f"{name} has values beyond the float32 range (|x| > {FLOAT32_MAX:.4g}); "
                         "ccfg computes in float32")
    return value


def all_finite(a):
    """True when no element of ``a`` is NaN or Inf."""
    # a sum is NaN/Inf whenever an element is (one fast pass, no temporary); only an overflowing
    # sum of finite values needs the exact elementwise check
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None)):
            return True
    return bool(np.isfinite(a).all())


def flat(a):
    """``a`` as a C-contiguous float32 (N, dim) array (the layout the C core takes)."""
    return np.ascontiguousarray(a, dtype=np.float32).reshape(a.shape[0], -1)


def seed(value):
    """A seed: an integer in [0, 2**64)."""
    value = integer(value, "seed", low=0, high=None)
    if value >= 2 ** 64:
        raise ValueError("seed must be < 2**64")
    return value


def shape(value):
    """A sample shape: an int or a sequence of positive sizes -> tuple."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"shape must be an int or a sequence of ints, got {type(value).__name__}")
    value = tuple(value)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, (bool, np.bool_))
               for s in value):
        raise TypeError(f"shape must be an int or a sequence of ints, got {value!r}")
    value = tuple(int(s) for s in value)
    if any(s < 1 for s in value):
        raise ValueError(f"shape must have positive sizes, got {value}")
    return value


def images(images, shape, argname="images"):
    """(N, *shape) real array -> C-contiguous float32 clipped to [-1, 1], the model's image range
    (what ``ccfg.sample`` returns goes in as it is: its values may stray a little beyond ±1, as a
    diffusion sampler's do, and are clipped here as they would be for display). Images in [0, 1]
    or [0, 255] must be mapped to [-1, 1] first."""
    images = as_array(images, argname)
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)) \
            or images.dtype == np.bool_:
        raise TypeError(f"{argname}: expected a real array, got dtype {images.dtype}")
    if images.ndim != 1 + len(shape) or tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"{argname}: expected shape (N, {', '.join(map(str, shape))}), "
                         f"got {images.shape}")
    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.size:
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{argname}: contains NaN or infinity")
        if float(x.min()) < -1.0 or float(x.max()) > 1.0:
            x = np.clip(x, -1.0, 1.0)
    return x
