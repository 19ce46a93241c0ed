"""Numba CPU kernels. Never ``fastmath=True``: it reorders float operations and breaks parity."""
