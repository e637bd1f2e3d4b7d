"""A safetensors reader in NumPy (no torch): the format as the reference implementation checks it.

Layout: 8 bytes little-endian u64 header length N, N bytes of UTF-8 JSON (an object mapping tensor
names to ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an optional ``__metadata__``
object of strings), then the byte buffer. Every tensor's offsets are relative to the buffer; sorted
by offset they must tile it exactly (no gap, no overlap, ending at the end of the file) and each
must hold exactly ``prod(shape) * itemsize`` bytes. Anything else raises ``ValueError`` naming the
tensor (or the header part) at fault.

The header is untrusted input: its length is bounded (``MAX_HEADER_SIZE``), its nesting too
(``MAX_HEADER_DEPTH``, checked before the JSON decoder recurses), every dtype must be one of the
format's names, every shape at most ``MAX_DIMS`` non-negative integers whose element count an array
can hold, and the byte counts are computed with exact integers, so no header can make this module
raise anything but ``ValueError`` or allocate more than the file's size.
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np

__all__ = ["read_header", "load", "save"]

MAX_HEADER_SIZE = 100_000_000
# a valid header nests 3 deep (object -> tensor entry -> shape list); anything deeper than this is
# refused before the JSON decoder (which recurses) sees it
MAX_HEADER_DEPTH = 8
# NumPy 1.x holds at most 32 dimensions
MAX_DIMS = 32
# elements of one tensor (its non-zero dimensions multiplied): as float64, the widest array built
# here, their bytes must fit in a signed 64-bit size, or NumPy refuses the shape
MAX_ELEMENTS = 2 ** 60
# every dtype the format defines -> bits per element (None: not readable here)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32,
    "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# the dtypes converted to float32 here
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def _short(value, limit=120):
    """repr of a header value for a message, cut to `limit` characters."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


# after escapes are dropped a JSON string is "..." without inner quotes (an unterminated one runs
# to the end); both patterns are single-character repeats, linear in time and constant in memory
_JSON_STRING = re.compile(r'"[^"]*(?:"|\Z)')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def _check_depth(text):
    """ValueError if the JSON text nests deeper than MAX_HEADER_DEPTH or its brackets do not
    balance, before the (recursive) JSON decoder sees it. A few linear passes at C speed: escaped
    backslashes and quotes are dropped, then strings, then everything but brackets, then every
    innermost bracket pair, one level per pass."""
    rest = text.replace("\\\\", "").replace('\\"', "")
    rest = _NOT_BRACKET.sub("", _JSON_STRING.sub("", rest))
    for _ in range(MAX_HEADER_DEPTH):
        if not rest:
            return
        shorter = _EMPTY_PAIR.sub("", rest)
        if len(shorter) == len(rest):
            break
        rest = shorter
    if not rest:
        return
    if _EMPTY_PAIR.search(rest):
        raise ValueError(f"safetensors header nests deeper than {MAX_HEADER_DEPTH} levels (a "
                         f"valid one nests 3: tensor -> entry -> shape)")
    raise ValueError("safetensors header is not valid JSON (its brackets do not balance)")


class _DuplicateName(ValueError):
    pass


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateName(f"safetensors header: tensor {_short(k)} appears twice")
        out[k] = v
    return out


def _read_exact(f, n, what):
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"safetensors file is truncated: {what} needs {n} bytes, "
                         f"found {len(data)}")
    return data


def read_header(path):
    """Parse and validate the header. Returns ``(entries, metadata, data_start)``: entries maps
    name -> (dtype, shape tuple, begin, end) with offsets relative to the byte buffer, which starts
    at file offset ``data_start``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(_read_exact(f, 8, "the header length"), "little")
        if n > MAX_HEADER_SIZE:
            raise ValueError(f"safetensors header length {n} exceeds the limit "
                             f"{MAX_HEADER_SIZE}")
        if 8 + n > size:
            raise ValueError(f"safetensors file is truncated: the header claims {n} bytes, the "
                             f"file has {size - 8} after the length")
        raw = _read_exact(f, n, "the header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"safetensors header is not UTF-8 ({exc})") from None
    if not text.startswith("{"):
        raise ValueError("safetensors header must be a JSON object starting with '{'")
    _check_depth(text)
    try:
        header = json.loads(text.rstrip(" "), object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"safetensors header is not valid JSON ({exc})") from None
    except RecursionError:      # cannot happen after _check_depth; kept as a last line
        raise ValueError("safetensors header nests too deeply") from None
    except _DuplicateName:
        raise
    except ValueError as exc:
        # e.g. an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ValueError(f"safetensors header: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors __metadata__ must map strings to strings")

    entries = {}
    for name, info in header.items():
        tname = _short(name)
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {tname}: header entry must have exactly dtype, shape and "
                             f"data_offsets, got {_short(info)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise ValueError(f"tensor {tname}: unknown dtype {_short(dtype)}")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise ValueError(f"tensor {tname}: shape must be a list of non-negative integers, "
                             f"got {_short(shape)}")
        if len(shape) > MAX_DIMS:
            raise ValueError(f"tensor {tname}: shape has {len(shape)} dimensions, at most "
                             f"{MAX_DIMS} supported")
        # exact integers (an int64 product wraps: [2**32, 2**32] would need 0 bytes)
        if math.prod(s for s in shape if s) > MAX_ELEMENTS:
            raise ValueError(f"tensor {tname}: shape {_short(shape)} has more elements than an "
                             f"array can hold")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            raise ValueError(f"tensor {tname}: data_offsets must be [begin, end] with "
                             f"0 <= begin <= end, got {_short(offsets)}")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8:
            raise ValueError(f"tensor {tname}: {dtype} data of shape {shape} does not end on a "
                             f"byte boundary")
        if offsets[1] - offsets[0] != bits // 8:
            raise ValueError(f"tensor {tname}: shape {shape} of {dtype} needs {bits // 8} bytes, "
                             f"data_offsets {_short(offsets)} hold {offsets[1] - offsets[0]}")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])

    buffer_len = size - 8 - n
    at, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if begin != at:
            what = "a gap" if begin > at else "an overlap"
            after = f"after tensor {_short(prev)}" if prev is not None else \
                "at the start of the data"
            raise ValueError(f"tensor {_short(name)}: data_offsets begin at {begin}, expected "
                             f"{at}: {what} {after}")
        at, prev = end, name
    if at != buffer_len:
        if at > buffer_len:
            raise ValueError(f"safetensors file is truncated: tensor {_short(prev)} ends at byte "
                             f"{at} of the data, the file holds {buffer_len}")
        raise ValueError(f"safetensors data has {buffer_len - at} bytes after the last tensor "
                         f"{_short(prev)}")
    return entries, metadata, 8 + n


def _to_array(dtype, shape, data):
    if dtype == "F32":
        return np.frombuffer(data, dtype="<f4").reshape(shape)
    if dtype == "F16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(shape)
    if dtype == "BF16":
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype == "F64":
        return np.frombuffer(data, dtype="<f8").astype(np.float32).reshape(shape)
    raise ValueError(f"unsupported dtype {dtype}")


def load(path, names=None):
    """The tensors of a safetensors file as float32 NumPy arrays (F32, F16, BF16, F64), a dict
    name -> array. ``names``: only these (each must exist). Other dtypes raise ValueError naming
    the tensor."""
    entries, _, start = read_header(path)
    wanted = entries if names is None else names
    out = {}
    with open(path, "rb") as f:
        for name in wanted:
            if name not in entries:
                raise ValueError(f"tensor {_short(name)} is not in {os.fspath(path)}")
            dtype, shape, begin, end = entries[name]
            if dtype not in FLOAT_DTYPES:
                raise ValueError(f"tensor {name!r}: dtype {dtype} is not a float type "
                                 f"({', '.join(FLOAT_DTYPES)} are read)")
            f.seek(start + begin)
            out[name] = _to_array(dtype, shape, f.read(end - begin))
    return out


def save(path, tensors, metadata=None):
    """Write float32/float16 arrays as a safetensors file (tests and tools)."""
    header, blobs, at = {}, [], 0
    codes = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
             np.dtype(np.float64): "F64"}
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in codes:
            raise TypeError(f"tensor {name!r}: dtype {a.dtype} not supported by save")
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape),
                        "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for b in blobs:
            f.write(b)
