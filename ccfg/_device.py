"""Compute devices: the one place that lists them (``ccfg.devices()``) and parses a device
selector ("auto", "cpu", "vulkan", "vulkan:N" or an entry of ``ccfg.devices()``) into a
canonical device name, "cpu" or "vulkan:N", which is also what the C core opens by
(``ccfg_backend_open``). Bottom layer: imports ``_core`` only."""
from __future__ import annotations

from . import _core

__all__ = ["devices", "resolve"]

# auto's preference among Vulkan device types; lavapipe-like CPU devices ("cpu") never win over
# the CPU backend, but "vulkan" and "vulkan:N" can select them
_AUTO_TYPES = ("discrete", "integrated")
_VULKAN_ORDER = ("discrete", "integrated", "virtual", "cpu", "other")


class Device(dict):
    """One entry of devices(): a dict of properties that prints as its selector and name."""

    def __str__(self):
        if self["backend"] == "cpu":
            return f"cpu ({self['threads']} threads, OpenBLAS)"
        if "index" not in self:
            return f"vulkan: none ({self['note']})"
        return f"vulkan:{self['index']} {self['name']} ({self['type']})"

    __repr__ = __str__


def devices():
    """The compute devices ccfg found, and why others are missing: the CPU backend, then each
    Vulkan device (``vulkan:N``) with its type, vendor, driver, memory and limits, or one entry
    whose ``note`` says why there is none (backend not built, no loader, no driver)."""
    out = []
    for d in _core.devices():
        d = Device(d)
        d.setdefault("available", True)
        d.setdefault("selector", "cpu" if d["backend"] == "cpu" else f"vulkan:{d.get('index', '')}")
        if d["backend"] == "cpu":
            d.update(name="cpu", note=f"{d['threads']} threads, OpenBLAS + OpenMP")
        d.setdefault("name", "vulkan")
        out.append(d)
    return out


def _vulkan_devices(found):
    return [d for d in found if d["backend"] == "vulkan" and "index" in d]


def _vulkan_missing(found):
    notes = [d.get("note") for d in found if d["backend"] == "vulkan" and "index" not in d]
    return notes[0] if notes and notes[0] else "no usable Vulkan device"


def resolve(device, name="device", host_model=False):
    """A device selector -> its canonical name: "cpu" or "vulkan:N".

    "auto": a discrete GPU, else an integrated one, else the CPU backend (always the CPU backend
    when ``host_model``: a model evaluated on the host would make a GPU pay two transfers per
    step); "cpu"; "vulkan": the best Vulkan device of any type (lavapipe included); "vulkan:N"; or
    an entry of ccfg.devices(). ``name`` is the argument named in errors."""
    if isinstance(device, dict) and "selector" in device:
        device = device["selector"]
    if not isinstance(device, str):
        raise TypeError(f"{name} must be 'auto', 'cpu', 'vulkan', 'vulkan:N' or an entry of "
                        f"ccfg.devices(), got {type(device).__name__}")
    sel = device.strip().lower()
    if sel == "cpu" or (sel == "auto" and host_model):
        return "cpu"
    if sel == "auto":
        usable = [d for d in _vulkan_devices(devices())
                  if d["available"] and d["type"] in _AUTO_TYPES]
        if not usable:
            return "cpu"
        best = min(usable, key=lambda d: (_AUTO_TYPES.index(d["type"]), d["index"]))
        return f"vulkan:{best['index']}"
    if sel == "vulkan":
        found = devices()
        usable = [d for d in _vulkan_devices(found) if d["available"]]
        if not usable:
            raise RuntimeError(f"{name}='vulkan': no Vulkan device: {_vulkan_missing(found)}")
        best = min(usable, key=lambda d: (_VULKAN_ORDER.index(d["type"]), d["index"]))
        return f"vulkan:{best['index']}"
    if sel.startswith("vulkan:"):
        num = sel[len("vulkan:"):]
        if not num.isdigit():
            raise ValueError(f"{name}: expected 'vulkan:N' with a device number N, got {device!r}")
        idx = int(num)
        found = devices()
        vulkan = _vulkan_devices(found)
        if not vulkan:
            raise RuntimeError(f"{name}={device!r}: no Vulkan device: {_vulkan_missing(found)}")
        match = [d for d in vulkan if d["index"] == idx]
        if not match:
            raise ValueError(f"{name}={device!r}: no such device (found vulkan:0..vulkan:"
                             f"{len(vulkan) - 1})")
        if not match[0]["available"]:
            raise RuntimeError(f"{name}={device!r}: {match[0]['name']} cannot run ccfg "
                               "(needs Vulkan 1.2 and a compute queue)")
        return f"vulkan:{idx}"
    raise ValueError(f"{name} must be 'auto', 'cpu', 'vulkan' or 'vulkan:N', got {device!r}")
