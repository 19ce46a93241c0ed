"""Encode/decode kernels: ``cpu/`` (Numba) and ``gpu/`` (Triton), one module per codec family,
with the same function names and signatures on both backends. See :mod:`lowbit.kernels.registry`."""
