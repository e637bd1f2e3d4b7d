"""Compute devices: the one place that lists them (``ccfg.devices()``) and parses a device
selector ("auto", "cpu", "vulkan", "vulkan:N" or an entry of ``ccfg.devices()``) into a
canonical device name, "cpu" or "vulkan:N", which is also what the C core opens by
(``ccfg_backend_open``). Bottom layer: imports ``_core`` only."""
from __future__ import annotations

import warnings

from . import _core

__all__ = ["devices", "resolve"]

# auto's preference among Vulkan device types; lavapipe-like CPU devices ("cpu") never win over
# the CPU backend, but "vulkan" and "vulkan:N" can select them
_AUTO_TYPES = ("discrete", "integrated")
_ANY_ORDER = ("discrete", "integrated", "virtual", "cpu", "other")
# how errors name a backend's devices
_LABEL = {"vulkan": "Vulkan"}


class Device(dict):
    """One entry of devices(): a dict of properties that prints as its selector and name."""

    def __str__(self):
        if self["backend"] == "cpu":
            return f"cpu ({self['threads']} threads, OpenBLAS)"
        if "index" not in self:
            return f"{self['backend']}: none ({self['note']})"
        return f"{self['selector']} {self['name']} ({self['type']})"

    __repr__ = __str__


def devices():
    """The compute devices ccfg found, and why others are missing: the CPU backend, then each
    device of every other backend the C core registers (``vulkan:N``) with its type, vendor,
    driver, memory and limits, or one entry per backend whose ``note`` says why it has none
    (backend not built, no loader, no driver)."""
    out = []
    for d in _core.devices():
        d = Device(d)
        # the keys every entry has (COMMON_KEYS); backends add their own details
        d.setdefault("selector", d["backend"])
        d.setdefault("name", d["backend"])
        d.setdefault("type", None)
        d.setdefault("available", False)
        if d["backend"] == "cpu":
            d["note"] = f"{d['threads']} threads, OpenBLAS + OpenMP"
        elif "index" in d and d["type"] == "cpu":
            d.setdefault("note", _SOFTWARE_NOTE)
        d.setdefault("note", None)
        out.append(d)
    return out


COMMON_KEYS = ("backend", "selector", "name", "type", "available", "note")
_SOFTWARE_NOTE = ("a software Vulkan driver running on the CPU (lavapipe): for testing, much slower "
                  "than the CPU backend")
_warned = set()


def _warn_software(d):
    """Once per device: a bare backend name picked a software device."""
    if d["selector"] in _warned:
        return
    _warned.add(d["selector"])
    warnings.warn(f"device='{d['backend']}' selected {d['selector']} {d['name']}, {_SOFTWARE_NOTE}"
                  f". It is the only {_LABEL.get(d['backend'], d['backend'])} "
                  f"device here; use device='cpu' or 'auto' for speed, or device='{d['selector']}' "
                  "to select it explicitly without this warning.", RuntimeWarning, stacklevel=4)


def _offered(found, backend):
    """The devices of an indexed backend (entries with an index)."""
    return [d for d in found if d["backend"] == backend and "index" in d]


def _missing(found, backend):
    notes = [d.get("note") for d in found if d["backend"] == backend and "index" not in d]
    return notes[0] if notes and notes[0] else f"no usable {backend} device"


def _rank(d, order):
    return (order.index(d["type"]) if d["type"] in order else len(order), d["index"])


def resolve(device, name="device", host_model=False):
    """A device selector -> its canonical name: "cpu" or "BACKEND:N" ("vulkan:0").

    "auto": a discrete GPU, else an integrated one, else the CPU backend (always the CPU backend
    when ``host_model``: a model evaluated on the host would make a GPU pay two transfers per
    step); "cpu"; a backend's name ("vulkan"): its best device of any type (lavapipe included);
    "BACKEND:N"; or an entry of ccfg.devices(). ``name`` is the argument named in errors.
    A bare backend name that can only pick a software device (lavapipe) warns, once per process
    (RuntimeWarning); "vulkan:N" selects it silently."""
    if isinstance(device, dict) and "selector" in device:
        device = device["selector"]
    if not isinstance(device, str):
        raise TypeError(f"{name} must be 'auto', 'cpu', 'vulkan', 'vulkan:N' or an entry of "
                        f"ccfg.devices(), got {type(device).__name__}")
    sel = device.strip().lower()
    if sel == "cpu" or (sel == "auto" and host_model):
        return "cpu"
    found = devices()
    backends = {d["backend"] for d in found} - {"cpu"}
    if sel == "auto":
        usable = [d for b in sorted(backends) for d in _offered(found, b)
                  if d["available"] and d["type"] in _AUTO_TYPES]
        if not usable:
            return "cpu"
        return min(usable, key=lambda d: _rank(d, _AUTO_TYPES))["selector"]
    if sel in backends:
        usable = [d for d in _offered(found, sel) if d["available"]]
        if not usable:
            raise RuntimeError(f"{name}={sel!r}: no {_LABEL.get(sel, sel)} device: "
                               f"{_missing(found, sel)}")
        best = min(usable, key=lambda d: _rank(d, _ANY_ORDER))
        if best["type"] == "cpu":
            _warn_software(best)
        return best["selector"]
    backend, _, num = sel.partition(":")
    if backend in backends:
        if not num.isdigit():
            raise ValueError(f"{name}: expected '{backend}:N' with a device number N, got "
                             f"{device!r}")
        offered = _offered(found, backend)
        if not offered:
            raise RuntimeError(f"{name}={device!r}: no {_LABEL.get(backend, backend)} device: "
                               f"{_missing(found, backend)}")
        match = [d for d in offered if d["index"] == int(num)]
        if not match:
            raise ValueError(f"{name}={device!r}: no such device (found {backend}:0..{backend}:"
                             f"{len(offered) - 1})")
        if not match[0]["available"]:
            raise RuntimeError(f"{name}={device!r}: {match[0]['name']} cannot run ccfg "
                               "(needs Vulkan 1.2 and a compute queue)")
        return match[0]["selector"]
    raise ValueError(f"{name} must be 'auto', 'cpu', "
                     + ", ".join(f"'{b}', '{b}:N'" for b in sorted(backends))
                     + f" or an entry of ccfg.devices(), got {device!r}")
