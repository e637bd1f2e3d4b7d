"""PyTorch tensors in and out of ``ccfg.guide``, without importing torch unless one is passed.

In: a floating-point tensor of any dtype (float16, bfloat16, float32, float64) on any device is
detached (guidance is not differentiated through) and read as float32 on the host: a float32,
contiguous CPU tensor without a copy (NumPy shares its memory), anything else through one
conversion copy. Out: the result as a tensor of the first input's dtype and device (on the CPU
in float32 it shares the NumPy result's memory)."""
from __future__ import annotations

__all__ = ["is_tensor", "to_array", "like"]


def is_tensor(x):
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def to_array(t, name):
    """A float32 NumPy array of tensor ``t`` (any real dtype: float or integer, the rule of
    docs/api.md "dtypes"); TypeError naming ``name`` for a bool or complex tensor."""
    if t.is_complex() or str(t.dtype) == "torch.bool":
        raise TypeError(f"{name} must be a tensor of real numbers (any float or integer dtype, "
                        f"read as float32), got {t.dtype}")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if str(t.dtype) != "torch.float32":
        t = t.float()
    return t.contiguous().numpy()


def like(array, ref):
    """NumPy ``array`` as a tensor of ``ref``'s dtype (float32 when ``ref`` is an integer
    tensor: a guided prediction is not an integer) and device."""
    import torch
    out = torch.from_numpy(array)
    dtype = ref.dtype if ref.is_floating_point() else out.dtype
    if out.dtype != dtype or out.device != ref.device:
        out = out.to(device=ref.device, dtype=dtype)
    return out
