"""lowbit: bit-exact encoders and decoders for quantized tensors and KV caches.

>>> import numpy as np, lowbit
>>> q = lowbit.encode(np.array([0.1, -2.0, 300.0, 1e-4], np.float32), "fp8_e4m3")
>>> q.data.tobytes().hex()
'1dc07900'
>>> lowbit.decode(q).tolist()
[0.1015625, -2.0, 288.0, 0.0]
"""

from .codec import Codec, QTensor, codec_class, decode, encode, get_codec, list_codecs
from .errors import (
    BackendUnavailable,
    ConfigError,
    DTypeError,
    FormatError,
    LowbitError,
    RangeError,
    ShapeError,
    UnknownCodecError,
)
from .formats import load, open_file, save
from .numerics import FloatFormat, IntFormat

__version__ = "0.1.0"

__all__ = [
    "Codec", "QTensor", "get_codec", "list_codecs", "codec_class", "encode", "decode", "save", "load", "open_file",
    "FloatFormat", "IntFormat",
    "LowbitError", "ConfigError", "UnknownCodecError", "ShapeError", "DTypeError", "FormatError",
    "RangeError", "BackendUnavailable",
]
