"""Array plumbing shared by every codec: accept numpy or torch, hand kernels the array type of
their backend (numpy for ``cpu``, torch for ``gpu``), and give results back in the caller's type.

torch is imported only when a torch tensor shows up or the gpu backend is asked for.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from .errors import DTypeError, ShapeError

__all__ = ["Input", "is_torch", "to_numpy", "native", "restore", "ACCEPTED_FLOATS", "resolve_dtype", "indexable"]

ACCEPTED_FLOATS = ("float32", "float16", "bfloat16")
INDEX_LIMIT = 2**63 - 1  # numpy's (and torch's) largest size: an int64 byte count


def indexable(shape: tuple[int, ...], itemsize: int = 1) -> bool:
    """Whether numpy can make an array of ``shape`` with ``itemsize``-byte elements: every size a
    non-negative int and the product of the non-zero sizes, in bytes, within int64 (numpy refuses
    ``(0, 2**70)`` although it holds nothing). Python integers: no overflow."""
    n = max(int(itemsize), 1)
    for d in shape:
        if d < 0 or d > INDEX_LIMIT:
            return False
        n *= d or 1
        if n > INDEX_LIMIT:
            return False
    return True


def is_torch(x: Any) -> bool:
    """True for torch tensors, without importing torch when nobody else has."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _dtype_name(x: Any) -> str:
    if is_torch(x):
        return str(x.dtype).removeprefix("torch.")
    return np.dtype(x.dtype).name


def _refuse_meta(x: Any, codec: str) -> None:
    """torch "meta" tensors have a shape and no data: nothing can be encoded from or decoded into
    them (torch would raise NotImplementedError on the first copy)."""
    if x.device.type == "meta":
        raise DTypeError(f"{codec}: input device: expected a tensor with data (cpu or cuda), got a 'meta' tensor "
                         f"of shape {tuple(x.shape)} (materialize it first, e.g. model.to_empty(device='cpu') and load the weights)")


def to_numpy(x: Any, *, codec: str = "lowbit") -> np.ndarray:
    """A contiguous numpy view/copy of a numpy array or torch tensor (any device; a meta tensor,
    which has no data, raises :class:`DTypeError`)."""
    if is_torch(x):
        _refuse_meta(x, codec)
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        return np.asarray(x.numpy(), order="C")
    return np.asarray(x, order="C")  # (ascontiguousarray would turn 0-d into 1-d)


def _torch_from_numpy(a: np.ndarray, device: Any) -> Any:
    import torch

    t = torch.from_numpy(np.require(a, requirements=["C", "W"]))  # keeps 0-d arrays 0-d
    return t if device is None or str(device) == "cpu" else t.to(device)


class Input:
    """A validated float input: remembers where it came from so results can go back there.

    Accepts numpy arrays (float32, float16, ml_dtypes bfloat16) and torch tensors (float32,
    float16, bfloat16) with at least one dimension. float64 is refused on purpose: rounding it
    to float32 first and then to a small format rounds twice, which is not what the spec says.
    """

    def __init__(self, x: Any, *, codec: str) -> None:
        self.codec = codec
        self.torch = is_torch(x)
        if not self.torch and not isinstance(x, np.ndarray):
            if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
                raise DTypeError(
                    f"{codec}: input type: expected a numpy array or torch tensor, got "
                    f"{type(x).__name__} (wrap it with np.asarray(..., dtype=np.float32))"
                )
            raise DTypeError(f"{codec}: input type: expected a numpy array or torch tensor, got {type(x).__name__}")
        name = _dtype_name(x)
        if name not in ACCEPTED_FLOATS:
            hint = " (cast with .astype(np.float32): lowbit rounds from float32 exactly once)" if name == "float64" else ""
            raise DTypeError(f"{codec}: input dtype: expected float32, float16 or bfloat16, got {name}{hint}")
        if self.torch:
            _refuse_meta(x, codec)
        if x.ndim < 1:
            raise ShapeError(f"{codec}: input shape: expected at least 1 dimension, got a 0-d scalar")
        self.x = x
        self.shape: tuple[int, ...] = tuple(int(d) for d in x.shape)
        self.device = x.device if self.torch else None
        self.on_cuda = bool(self.torch and x.device.type == "cuda")

    def float32_2d(self, backend: str) -> Any:
        """The input as contiguous float32 of shape (rows, K), as the backend's array type."""
        K = self.shape[-1]
        rows = math.prod(self.shape[:-1])
        x = self.x
        if backend == "cpu":
            if self.torch:
                x = x.detach()
                if x.dtype != _torch().float32:
                    x = x.float()  # exact widening, on the tensor's own device
                a = to_numpy(x)
            else:
                a = np.ascontiguousarray(x, dtype=np.float32)  # exact widening from f16/bf16
            return a.reshape(rows, K)
        t = gpu_tensor(x)
        t = t.detach().float().contiguous()
        return t.reshape(rows, K)

    def restore(self, a: Any) -> Any:
        """Give a backend result back as the caller's array type, on the caller's device."""
        return restore(a, torch_out=self.torch, device=self.device)


def _torch() -> Any:
    import torch

    return torch


def gpu_tensor(x: Any) -> Any:
    """x as a torch tensor on the device the gpu backend runs on (CUDA, or CPU when the
    Triton interpreter is on)."""
    from .kernels.registry import interpreting

    torch = _torch()
    t = x if is_torch(x) else torch.from_numpy(np.require(x, requirements=["C", "W"]))
    _refuse_meta(t, "lowbit")
    if interpreting():
        return t.cpu() if t.device.type != "cpu" else t
    if t.device.type != "cuda":
        t = t.to("cuda")
    return t


def native(a: Any, backend: str) -> Any:
    """Convert an array (numpy or torch) to the array type of ``backend``."""
    if backend == "cpu":
        return to_numpy(a)
    return gpu_tensor(a).contiguous()


def restore(a: Any, *, torch_out: bool, device: Any) -> Any:
    if torch_out:
        if is_torch(a):
            return a if device is None or a.device == device else a.to(device)
        return _torch_from_numpy(a, device)
    return to_numpy(a)


_NUMPY_OUT = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


def resolve_dtype(dtype: Any, *, torch_out: bool, codec: str) -> Any:
    """Normalise a decode ``dtype=`` argument; None means float32."""
    name = "float32" if dtype is None else (
        dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.") if is_torch_dtype(dtype)
        else np.dtype(dtype).name
    )
    allowed = ("float32", "float16", "bfloat16", "float64")
    if name not in allowed:
        raise DTypeError(f"{codec}: decode dtype: expected one of {allowed}, got {name}")
    if torch_out:
        return getattr(_torch(), name)
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise DTypeError(f"{codec}: decode dtype bfloat16 for numpy output needs ml_dtypes (pip install ml_dtypes)") from None
        return ml_dtypes.bfloat16
    return _NUMPY_OUT[name]


def is_torch_dtype(d: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(d, torch.dtype)
