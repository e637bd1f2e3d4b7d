"""A safetensors reader in NumPy (no torch): the format as the reference implementation checks it.

Layout: 8 bytes little-endian u64 header length N, N bytes of UTF-8 JSON (an object mapping tensor
names to ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an optional ``__metadata__``
object of strings), then the byte buffer. Every tensor's offsets are relative to the buffer; sorted
by offset they must tile it exactly (no gap, no overlap, ending at the end of the file) and each
must hold exactly ``prod(shape) * itemsize`` bytes. Anything else raises ``ValueError`` naming the
tensor (or the header part) at fault.
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["read_header", "load", "save"]

MAX_HEADER_SIZE = 100_000_000
# every dtype the format defines -> bits per element (None: not readable here)
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32,
    "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# the dtypes converted to float32 here
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"safetensors header: tensor {k!r} appears twice")
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
    try:
        header = json.loads(text.rstrip(" "), object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors __metadata__ must map strings to strings")

    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"tensor {name!r}: header entry must have exactly dtype, shape and "
                             f"data_offsets, got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers, "
                             f"got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                or offsets[0] > offsets[1]):
            raise ValueError(f"tensor {name!r}: data_offsets must be [begin, end] with "
                             f"0 <= begin <= end, got {offsets!r}")
        bits = int(np.prod(shape, dtype=np.int64)) * DTYPE_BITS[dtype]
        if bits % 8:
            raise ValueError(f"tensor {name!r}: {dtype} data of shape {shape} does not end on a "
                             f"byte boundary")
        if offsets[1] - offsets[0] != bits // 8:
            raise ValueError(f"tensor {name!r}: shape {shape} of {dtype} needs {bits // 8} bytes, "
                             f"data_offsets {offsets} hold {offsets[1] - offsets[0]}")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])

    buffer_len = size - 8 - n
    at, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if begin != at:
            what = "a gap" if begin > at else "an overlap"
            after = f"after tensor {prev!r}" if prev else "at the start of the data"
            raise ValueError(f"tensor {name!r}: data_offsets begin at {begin}, expected {at}: "
                             f"{what} {after}")
        at, prev = end, name
    if at != buffer_len:
        if at > buffer_len:
            raise ValueError(f"safetensors file is truncated: tensor {prev!r} ends at byte {at} "
                             f"of the data, the file holds {buffer_len}")
        raise ValueError(f"safetensors data has {buffer_len - at} bytes after the last tensor "
                         f"{prev!r}")
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
                raise ValueError(f"tensor {name!r} is not in {os.fspath(path)}")
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
