"""The exceptions lowbit raises.

Every error lowbit raises on purpose is a :class:`LowbitError`. Each subclass also derives
from the built-in exception a Python user would expect (``ValueError``, ``TypeError``,
``KeyError``, ``RuntimeError``), so existing ``except ValueError:`` code keeps working.

Messages name the codec, what was expected and what was found, for example::

    fp8_e4m3: input dtype: expected float32, float16 or bfloat16, got int64

Use :func:`describe` to build such messages consistently.
"""

from __future__ import annotations

__all__ = [
    "LowbitError",
    "ConfigError",
    "UnknownCodecError",
    "ShapeError",
    "DTypeError",
    "FormatError",
    "RangeError",
    "BackendUnavailable",
    "describe",
]


class LowbitError(Exception):
    """Base class of every error lowbit raises on purpose."""


class ConfigError(LowbitError, ValueError):
    """A codec parameter is unknown, has the wrong type or an invalid value."""


class UnknownCodecError(ConfigError, KeyError):
    """No codec is registered under the requested id."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ShapeError(LowbitError, ValueError):
    """An array's shape does not fit the codec (for example, the last axis is not a multiple of
    the block size) or a byte buffer has the wrong length."""


class DTypeError(LowbitError, TypeError):
    """An array has a dtype the operation does not accept."""


class FormatError(LowbitError, ValueError):
    """Bytes or metadata that do not follow the format they claim to be."""


class RangeError(LowbitError, ValueError):
    """Values the codec's policy refuses: NaN under ``on_nan="raise"``, or values outside the
    representable range under ``overflow="raise"``."""


class BackendUnavailable(LowbitError, RuntimeError):
    """The requested backend (``"gpu"``, or a kernel for this codec on it) is not available.
    lowbit never falls back to another backend silently."""


def describe(codec: str, what: str, expected: object, actual: object) -> str:
    """Return the house style error message: ``"<codec>: <what>: expected <e>, got <a>"``."""
    return f"{codec}: {what}: expected {expected}, got {actual}"
