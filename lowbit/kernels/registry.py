"""The kernel table: ``KERNELS[(family, backend, op)] -> function``.

Kernel modules live at ``lowbit/kernels/<backend>/<family>.py`` and register their entry points
with the :func:`kernel` decorator when imported. :func:`get_kernel` imports the module on first
use, so ``import lowbit`` pulls in neither Numba-compiled code nor Triton.

Backends are ``"cpu"`` (Numba; numpy arrays) and ``"gpu"`` (Triton; torch tensors on a CUDA
device, or CPU torch tensors under ``TRITON_INTERPRET=1``). ``"auto"`` means gpu for CUDA tensors
and cpu for everything else. A missing kernel is an error: nothing ever falls back to another
backend silently.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from ..errors import BackendUnavailable, ConfigError

__all__ = ["KERNELS", "BACKENDS", "kernel", "get_kernel", "has_kernel", "gpu_status", "resolve_backend"]

BACKENDS = ("cpu", "gpu")
KERNELS: dict[tuple[str, str, str], Callable[..., Any]] = {}


def kernel(family: str, backend: str, op: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the ``op`` kernel of ``family`` on ``backend`` (duplicates raise)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = (family, backend, op)
        if key in KERNELS and KERNELS[key] is not fn:
            raise ValueError(f"kernel {key} registered twice")
        KERNELS[key] = fn
        return fn

    return register


def _import_family(family: str, backend: str) -> None:
    try:
        importlib.import_module(f"lowbit.kernels.{backend}.{family}")
    except ModuleNotFoundError as e:
        if e.name == f"lowbit.kernels.{backend}.{family}":
            return  # no kernels for this family on this backend
        if backend == "gpu":
            raise BackendUnavailable(f"{family}: the gpu backend needs torch and triton ({e})") from None
        raise


def get_kernel(family: str, backend: str, op: str) -> Callable[..., Any]:
    """The registered kernel, importing its module first; BackendUnavailable if there is none."""
    key = (family, backend, op)
    if key not in KERNELS:
        _import_family(family, backend)
    try:
        return KERNELS[key]
    except KeyError:
        raise BackendUnavailable(
            f"{family}: no {op} kernel for backend {backend!r} "
            f"(available: {sorted(b for (f, b, o) in KERNELS if f == family and o == op) or 'none'})"
        ) from None


def has_kernel(family: str, backend: str, op: str) -> bool:
    try:
        get_kernel(family, backend, op)
    except BackendUnavailable:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_status() -> tuple[bool, str]:
    """(usable, reason): whether the gpu backend can run here, and why not if it cannot."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (pip install 'lowbit[gpu]')"
    try:
        import triton  # noqa: F401
    except ImportError:
        return False, "triton is not installed (pip install 'lowbit[gpu]')"
    if interpreting():
        return True, "Triton interpreter (TRITON_INTERPRET=1)"
    if not torch.cuda.is_available():
        return False, "no CUDA device (set TRITON_INTERPRET=1 to run the Triton kernels on the CPU)"
    return True, torch.cuda.get_device_name()


def resolve_backend(backend: str, *, on_cuda: bool, codec: str) -> str:
    """Turn ``"auto"`` into a concrete backend and check that ``"gpu"`` can run."""
    if backend == "auto":
        backend = "gpu" if on_cuda else "cpu"
    if backend not in BACKENDS:
        raise ConfigError(f"{codec}: backend: expected 'cpu', 'gpu' or 'auto', got {backend!r}")
    if backend == "gpu":
        ok, why = gpu_status()
        if not ok:
            raise BackendUnavailable(f"{codec}: backend 'gpu' is not available: {why}")
    return backend
