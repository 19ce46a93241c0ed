"""The codec contract, the codec registry and the quantized tensor type.

A *codec* turns float tensors into exact bytes and back. Every codec is one class, registered
under a user-facing id by subclassing::

    class FP8E4M3(MiniFloat, codec_id="fp8_e4m3", preset={"ebits": 4, "mbits": 3, "special": "fn"}):
        '''docstring with the layout and a runnable example'''

The contract (what the harness in ``tests/harness.py`` checks for every registered codec):

* ``encode(x)`` takes a numpy array or torch tensor (float32, float16 or bfloat16) of shape
  ``(..., K)`` and returns a :class:`QTensor` whose ``data`` is uint8 ``(..., K // block_size *
  type_size)``: row-major blocks along the last axis, laid out as ``spec/<codec_id>.toml`` says.
  Side arrays (scales, global scales, permutations) go to ``aux``. numpy in → numpy out, torch in →
  torch out on the same device.
* ``decode(q)`` returns float32 (or ``dtype=``) of ``q.shape``; ``decode_bytes(raw, shape)``
  decodes raw block bytes from a file.
* ``get_config()`` is JSON-clean, ``get_codec(**config)`` rebuilds an equal codec; codecs compare
  and hash by config.
* ``bits_per_element(shape)`` is the true storage cost, side arrays included.
* Bad input raises a :class:`~lowbit.errors.LowbitError` naming the codec, what was expected and
  what was found; nothing is returned half-done.

Two codec classes may share a kernel family (``family``); a codec id names exactly one class.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import struct
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from . import _arrays
from .errors import ConfigError, DTypeError, FormatError, ShapeError, UnknownCodecError
from .kernels.registry import resolve_backend
from .layout import BlockLayout

__all__ = ["Codec", "QTensor", "get_codec", "list_codecs", "codec_class", "codec_parameters", "encode", "decode"]

_REGISTRY: dict[str, type["Codec"]] = {}
_ID_RE = re.compile(r"[a-z][a-z0-9_]*")


class Codec:
    """Base class of every codec. Subclasses set ``codec_id=`` in the class statement.

    Subclasses implement:

    * ``_encode(x2d, shape, backend, **kwargs) -> (data2d, aux)``: float32 ``(rows, K)`` in the
      backend's array type (numpy for cpu, torch for gpu) to uint8 ``(rows, row_bytes)`` plus a
      dict of side arrays;
    * ``_decode(data2d, aux, shape, backend) -> float32 (rows, K)``;
    * ``_aux_spec(shape) -> {name: (shape, dtype_name)}`` when ``aux`` is not empty;
    * ``encode_kwargs``: names of per-call keyword arguments ``encode`` accepts.

    Public constructor arguments are stored as public attributes of the same name; they are the
    configuration (``get_config``), unless the class fixes them as a ``preset``.
    """

    codec_id: ClassVar[str]
    family: ClassVar[str]
    preset: ClassVar[Mapping[str, Any]] = {}
    encode_kwargs: ClassVar[tuple[str, ...]] = ()
    #: whether ``encode(decode(encode(x))) == encode(x)``; False only where a reference encoder
    #: that must be matched byte for byte is not idempotent itself (ggml's scale searches)
    idempotent: ClassVar[bool] = True

    def __init_subclass__(cls, codec_id: str | None = None, preset: Mapping[str, Any] | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if preset is not None:
            cls.preset = {**getattr(cls, "preset", {}), **preset}
        if codec_id is None:
            return  # an abstract intermediate class
        if not isinstance(codec_id, str) or not _ID_RE.fullmatch(codec_id):
            raise ConfigError(f"codec id: expected lower-case letters, digits and '_', got {codec_id!r}")
        if codec_id in _REGISTRY:
            raise ConfigError(
                f"codec id {codec_id!r} is already registered by {_REGISTRY[codec_id].__qualname__}"
            )
        cls.codec_id = codec_id
        if "family" not in cls.__dict__ and not hasattr(cls, "family"):
            cls.family = codec_id
        _REGISTRY[codec_id] = cls

    # ---- configuration --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """``{"id": codec_id, **parameters}``, JSON-clean; ``get_codec(**config)`` inverts it."""
        cfg: dict[str, Any] = {"id": self.codec_id}
        for k, v in self.__dict__.items():
            if not k.startswith("_") and k not in self.preset:
                cfg[k] = v
        return cfg

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Codec":
        return get_codec(dict(config))

    def _key(self) -> str:
        return json.dumps(self.get_config(), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        cfg = self.get_config()
        args = [repr(cfg.pop("id"))] + [f"{k}={v!r}" for k, v in cfg.items()]
        return f"lowbit.get_codec({', '.join(args)})"

    # ---- layout ---------------------------------------------------------------------------
    @property
    def layout(self) -> BlockLayout:
        """The block layout from ``spec/<codec_id>.toml``."""
        return BlockLayout.from_spec(self.codec_id)

    @property
    def block_size(self) -> int:
        """Elements per block: the last axis must be a multiple of it."""
        return self.layout.block_size

    @property
    def type_size(self) -> int:
        """Bytes per block."""
        return self.layout.type_size

    def row_bytes(self, K: int) -> int:
        """Bytes of encoded data for a row of ``K`` elements."""
        return K // self.block_size * self.type_size

    def _aux_spec(self, shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], str]]:
        """Shapes and dtypes of the side arrays for a tensor of ``shape`` (none by default)."""
        return {}

    def bits_per_element(self, shape: tuple[int, ...] | None = None) -> float:
        """Storage bits per element for a tensor of ``shape``: block bytes plus every side array.

        ``shape`` may be omitted when the codec has no side arrays.
        """
        if shape is None:
            if self._aux_spec((self.block_size,)) == {} and self._aux_spec((2, 2 * self.block_size)) == {}:
                return self.layout.bits_per_element
            raise ShapeError(f"{self.codec_id}: bits_per_element: its side arrays depend on the tensor shape; pass shape=")
        shape = tuple(int(d) for d in shape)
        self._check_shape(shape)
        n = math.prod(shape)
        if n == 0:
            return self.layout.bits_per_element
        total = math.prod(shape[:-1]) * self.row_bytes(shape[-1])
        for ashape, dt in self._aux_spec(shape).values():
            total += math.prod(ashape) * np.dtype(dt).itemsize
        return total * 8 / n

    # ---- checks ---------------------------------------------------------------------------
    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 1:
            raise ShapeError(f"{self.codec_id}: shape: expected at least 1 dimension, got ()")
        if any(d < 0 for d in shape):
            raise ShapeError(f"{self.codec_id}: shape: expected non-negative sizes, got {shape}")
        K = shape[-1]
        if K % self.block_size:
            raise ShapeError(
                f"{self.codec_id}: last dimension: expected a multiple of the block size "
                f"{self.block_size}, got {K} (shape {shape})"
            )

    def _check_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        unknown = sorted(set(kwargs) - set(self.encode_kwargs))
        if unknown:
            raise ConfigError(
                f"{self.codec_id}: encode() keyword arguments: expected "
                f"{list(self.encode_kwargs) or 'none'}, got {unknown}"
            )

    # ---- the public operations ------------------------------------------------------------
    def encode(self, x: Any, *, backend: str = "auto", **kwargs: Any) -> "QTensor":
        """Encode a float tensor of shape ``(..., K)``; returns a :class:`QTensor`.

        ``backend``: ``"cpu"`` (Numba), ``"gpu"`` (Triton) or ``"auto"`` (gpu for CUDA tensors).
        """
        self._check_kwargs(kwargs)
        inp = _arrays.Input(x, codec=self.codec_id)
        self._check_shape(inp.shape)
        be = resolve_backend(backend, on_cuda=inp.on_cuda, codec=self.codec_id)
        x2d = inp.float32_2d(be)
        data2d, aux = self._encode(x2d, inp.shape, be, **kwargs)
        data = inp.restore(data2d.reshape(inp.shape[:-1] + (self.row_bytes(inp.shape[-1]),)))
        return QTensor(data, {k: inp.restore(v) for k, v in aux.items()}, inp.shape, self)

    def decode(self, q: "QTensor", *, backend: str = "auto", dtype: Any = None) -> Any:
        """Decode a :class:`QTensor` made by this codec to float32 (or ``dtype``)."""
        if not isinstance(q, QTensor):
            raise DTypeError(f"{self.codec_id}: decode: expected a QTensor, got {type(q).__name__} (use decode_bytes for raw bytes)")
        if q.codec != self:
            raise ConfigError(f"{self.codec_id}: decode: expected a QTensor made by {self!r}, got one made by {q.codec!r}")
        return self._decode_checked(q.data, q.aux, q.shape, backend, dtype)

    def decode_bytes(self, raw: Any, shape: tuple[int, ...], *, aux: Mapping[str, Any] | None = None,
                     backend: str = "auto", dtype: Any = None) -> Any:
        """Decode raw block bytes (``bytes``, a uint8 array or tensor) of a tensor of ``shape``.

        The byte count must be exact: truncated or oversized buffers raise :class:`ShapeError`.
        """
        shape = tuple(int(d) for d in shape)
        self._check_shape(shape)
        if isinstance(raw, (bytes, bytearray, memoryview)):
            data: Any = np.frombuffer(raw, dtype=np.uint8)
        elif isinstance(raw, np.ndarray) or _arrays.is_torch(raw):
            data = raw
        else:
            raise DTypeError(f"{self.codec_id}: decode_bytes: expected bytes or a uint8 array, got {type(raw).__name__}")
        expected = math.prod(shape[:-1]) * self.row_bytes(shape[-1])
        n = int(data.numel() if _arrays.is_torch(data) else data.size)
        if n != expected:
            what = "truncated" if n < expected else "oversized"
            raise ShapeError(f"{self.codec_id}: {what} data: expected {expected} bytes for shape {shape}, got {n}")
        data = data.reshape(shape[:-1] + (self.row_bytes(shape[-1]),))
        return self._decode_checked(data, dict(aux or {}), shape, backend, dtype)

    def check_aux(self, aux: Mapping[str, Any], shape: tuple[int, ...]) -> None:
        """FormatError unless ``aux`` holds exactly the side arrays ``_aux_spec(shape)`` names, each
        with its shape and dtype: what decode checks, and what a reader checks when it loads a
        QTensor (so a file whose side arrays contradict its codec is refused at load)."""
        spec = self._aux_spec(shape)
        if set(aux) != set(spec):
            raise FormatError(f"{self.codec_id}: aux arrays: expected {sorted(spec)}, got {sorted(aux)}")
        for name, (ashape, adt) in spec.items():
            a = aux[name]
            got_dt = str(a.dtype).removeprefix("torch.")
            if tuple(a.shape) != tuple(ashape) or got_dt != adt:
                raise FormatError(
                    f"{self.codec_id}: aux[{name!r}]: expected {adt} {tuple(ashape)}, got {got_dt} {tuple(a.shape)}"
                )

    def _decode_checked(self, data: Any, aux: Mapping[str, Any], shape: tuple[int, ...],
                        backend: str, dtype: Any) -> Any:
        self._check_shape(shape)
        torch_out = _arrays.is_torch(data)
        for a in (data, *aux.values()):
            if _arrays.is_torch(a):
                _arrays._refuse_meta(a, self.codec_id)
        if (str(data.dtype).removeprefix("torch.")) != "uint8":
            raise DTypeError(f"{self.codec_id}: data dtype: expected uint8, got {data.dtype}")
        want = shape[:-1] + (self.row_bytes(shape[-1]),)
        if tuple(data.shape) != want:
            raise ShapeError(f"{self.codec_id}: data shape: expected {want} for a tensor of shape {shape}, got {tuple(data.shape)}")
        self.check_aux(aux, shape)
        out_dtype = _arrays.resolve_dtype(dtype, torch_out=torch_out, codec=self.codec_id)
        on_cuda = torch_out and data.device.type == "cuda"
        be = resolve_backend(backend, on_cuda=on_cuda, codec=self.codec_id)
        K = shape[-1]
        data2d = _arrays.native(data, be).reshape(math.prod(shape[:-1]), self.row_bytes(K))
        naux = {k: _arrays.native(v, be) for k, v in aux.items()}
        y = self._decode(data2d, naux, shape, be).reshape(shape)
        y = _arrays.restore(y, torch_out=torch_out, device=data.device if torch_out else None)
        if y.dtype == out_dtype:
            return y
        if torch_out:
            return y.to(out_dtype)
        with np.errstate(over="ignore"):  # float32 -> float16 overflows to ±Inf, as a cast does
            return y.astype(out_dtype)

    # ---- subclass hooks -------------------------------------------------------------------
    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        raise NotImplementedError

    # ---- what the test harness needs to know ----------------------------------------------
    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Configurations the harness checks (the default one unless a class lists more)."""
        return [{}]

    def error_bound(self, x: np.ndarray, q: "QTensor") -> np.ndarray:
        """Per element of float32 ``x``, the largest ``|decode(q) - x|`` this codec promises for
        ``q = encode(x)`` (float64; ``inf`` where the policy gives a non-finite value)."""
        raise NotImplementedError(f"{self.codec_id}: error_bound is part of the codec contract")

    def backends(self) -> list[str]:
        """The backends with an encoder for this codec (``"cpu"`` always; ``"gpu"`` once its
        family has Triton kernels)."""
        from .kernels.registry import has_kernel

        return [be for be in ("cpu", "gpu") if has_kernel(self.family, be, "encode")]

    def idempotence(self) -> str:
        """What ``encode(decode(encode(x)))`` promises, checked by the harness: ``"bytes"``
        (the same bytes and side arrays: the default), ``"values"`` (possibly other bytes that
        decode to the same values), ``"bound"`` (only the round-trip error bound: a reference
        encoder that is not idempotent itself, e.g. ggml's scale searches, or a block scale computed
        from data whose decoded maximum differs from the original) or ``"deterministic"`` (decode is
        an estimator off the reconstruction set, e.g. TurboQuant-prod: encoding, and re-encoding
        what was decoded, are only deterministic). Derived from ``idempotent`` unless a codec says
        more."""
        return "bytes" if self.idempotent else "bound"

    def reencode_kwargs(self, q: "QTensor") -> dict[str, Any]:
        """Keyword arguments that let ``encode`` repeat a *fitting choice* recorded in ``q`` when
        re-encoding ``decode(q)`` (the harness' idempotence check passes them). Empty for every
        codec whose choices are functions of the values alone; ``dense_sparse`` returns the
        outlier positions, a top-k selection that quantization can reorder among near-equal
        magnitudes (everything else it stores is then reproduced exactly)."""
        return {}

    def interesting_values(self) -> np.ndarray:
        """float32 values at or next to rounding boundaries (ties, ±max, the smallest values),
        mixed into the harness' random inputs."""
        return np.zeros(0, dtype=np.float32)

    def input_policy(self) -> dict[str, str]:
        """What the encoder does with each kind of awkward input. Keys: ``nan``, ``inf`` (±Inf),
        ``overflow`` (finite values beyond the range), ``negative`` (x < 0), ``negative_zero``
        (-0.0), ``subnormal`` (float32 subnormals). Values: ``"raise"`` (RangeError, nothing
        encoded), ``"saturate"`` (the nearest end of the range), ``"nan"``, ``"inf"`` (±Inf),
        ``"encode"`` (represented, rounded like any value), ``"zero"`` (becomes a zero whose sign is
        not promised), ``"nearest"`` (lossy table codecs: the nearest level, within ``error_bound``;
        -0.0 need not stay -0.0) or, for -0.0, ``"keep"`` (stays -0.0).
        The harness probes every entry on both backends (``tests/harness.check_input_policy``)."""
        return {"nan": "raise", "inf": "raise", "overflow": "raise", "negative": "encode",
                "negative_zero": "encode", "subnormal": "encode"}


# ---- registry ----------------------------------------------------------------------------------

def _ensure_loaded() -> None:
    from . import codecs  # noqa: F401  (importing registers every built-in codec)


def list_codecs() -> list[str]:
    """Ids of every registered codec, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def codec_class(codec_id: str) -> type[Codec]:
    """The class registered under ``codec_id``."""
    _ensure_loaded()
    try:
        return _REGISTRY[codec_id]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(codec_id), _REGISTRY, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise UnknownCodecError(
            f"codec id: expected one of the {len(_REGISTRY)} registered ids (lowbit.list_codecs()), "
            f"got {codec_id!r}{hint}"
        ) from None


def get_codec(codec: str | Mapping[str, Any] | None = None, /, **params: Any) -> Codec:
    """Build a codec from its id and parameters, from a ``get_config()`` dict, or from the
    config spelled as keywords (``get_codec(**config)``, where ``id=`` names the codec).

    >>> import lowbit
    >>> lowbit.get_codec("fp8_e4m3").bits_per_element()
    8.0
    >>> c = lowbit.get_codec({"id": "minifloat", "ebits": 3, "mbits": 2, "special": "finite"})
    >>> c == lowbit.get_codec(**c.get_config())
    True
    """
    if codec is None:
        if "id" not in params:
            raise ConfigError("get_codec: expected a codec id (or id=...), got none")
        codec = params.pop("id")
    if isinstance(codec, Mapping):
        cfg = dict(codec)
        if "id" not in cfg:
            raise ConfigError(f"codec config: expected an 'id' key, got keys {sorted(cfg)}")
        codec_id = cfg.pop("id")
        params = {**cfg, **params}
    else:
        codec_id = codec
    cls = codec_class(codec_id)
    accepted = codec_parameters(cls)
    fixed = sorted(set(params) & set(cls.preset))
    if fixed:
        raise ConfigError(f"{codec_id}: parameters {fixed} are fixed by this preset (accepted: {accepted})")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"{codec_id}: parameters: expected a subset of {accepted}, got unknown {unknown}")
    return cls(**params)


def codec_parameters(cls: type[Codec]) -> list[str]:
    """The configuration parameters a codec class accepts (a preset's fixed ones excluded)."""
    sig = inspect.signature(cls.__init__)
    return [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n not in cls.preset]


# ---- the quantized tensor ------------------------------------------------------------------------

_MAGIC = b"LBQT"
_VERSION = 1
_AUX_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "float16", "float32", "float64")


class QTensor:
    """An encoded tensor: the exact bytes, the side arrays and what is needed to decode them.

    Attributes
    ----------
    data:
        uint8 array/tensor ``(..., row_bytes)``: row-major blocks along the last axis.
    aux:
        dict of side arrays (per-tensor/per-channel scales, permutations, …).
    shape:
        the logical (decoded) shape.
    codec:
        the :class:`Codec` that made it.

    >>> import numpy as np, lowbit
    >>> q = lowbit.encode(np.array([1.0, -0.5, 3.0, 7.0], np.float32), "fp4_e2m1")
    >>> q.data.tobytes().hex(), q.shape
    ('9275', (4,))
    >>> lowbit.decode(q).tolist()
    [1.0, -0.5, 3.0, 6.0]
    """

    __slots__ = ("data", "aux", "shape", "codec")

    def __init__(self, data: Any, aux: Mapping[str, Any], shape: tuple[int, ...], codec: Codec) -> None:
        self.data = data
        self.aux = dict(aux)
        self.shape = tuple(int(d) for d in shape)
        self.codec = codec

    @property
    def codec_id(self) -> str:
        return self.codec.codec_id

    @property
    def config(self) -> dict[str, Any]:
        return self.codec.get_config()

    @property
    def nbytes(self) -> int:
        """Bytes of data plus side arrays."""
        def nb(a: Any) -> int:
            return int(a.numel() * a.element_size()) if _arrays.is_torch(a) else int(a.nbytes)
        return nb(self.data) + sum(nb(a) for a in self.aux.values())

    @property
    def bits_per_element(self) -> float:
        n = math.prod(self.shape)
        return self.nbytes * 8 / n if n else self.codec.layout.bits_per_element

    def decode(self, *, backend: str = "auto", dtype: Any = None) -> Any:
        return self.codec.decode(self, backend=backend, dtype=dtype)

    def slice(self, bits: int) -> "QTensor":
        """The lower-precision QTensor of a sliceable code (``sliceable_int``), without re-encoding."""
        fn = getattr(self.codec, "slice", None)
        if fn is None:
            raise ConfigError(f"{self.codec_id}: slice: this codec's codes are not sliceable (use sliceable_int)")
        return fn(self, bits)

    def numpy(self) -> "QTensor":
        """The same QTensor with numpy arrays (copied from the device if needed)."""
        return QTensor(_arrays.to_numpy(self.data), {k: _arrays.to_numpy(v) for k, v in self.aux.items()},
                       self.shape, self.codec)

    def __repr__(self) -> str:
        aux = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.aux.items())
        return f"QTensor({self.codec_id}, shape={self.shape}, {self.nbytes} bytes{', aux {' + aux + '}' if aux else ''})"

    def __iter__(self) -> Iterator[Any]:  # refuse accidental iteration over a QTensor
        raise TypeError("QTensor is not iterable; use .data, .aux or decode()")

    # ---- a self-describing byte string ------------------------------------------------------
    def tobytes(self) -> bytes:
        """Serialize: ``b"LBQT"``, version byte, 3 zero bytes, u64 LE header length, UTF-8
        JSON header (codec config, shape, array table), zero padding to 8 bytes, then the arrays."""
        arrays = [("data", _arrays.to_numpy(self.data))] + [(k, _arrays.to_numpy(v)) for k, v in self.aux.items()]
        table, blobs, off = {}, [], 0
        for name, a in arrays:
            b = a.tobytes()
            table[name] = {"dtype": a.dtype.name, "shape": list(a.shape), "offset": off, "nbytes": len(b)}
            blobs.append(b)
            off += len(b)
        header = json.dumps({"config": self.codec.get_config(), "shape": list(self.shape), "arrays": table},
                            sort_keys=True, separators=(",", ":")).encode()
        pad = -(16 + len(header)) % 8
        return b"".join([_MAGIC, bytes([_VERSION, 0, 0, 0]), struct.pack("<Q", len(header) + pad),
                         header, b" " * pad, *blobs])

    @classmethod
    def frombytes(cls, buf: bytes | bytearray | memoryview) -> "QTensor":
        """Inverse of :meth:`tobytes`; every length and offset is checked before use."""
        mv = memoryview(buf).cast("B")
        if len(mv) < 16 or bytes(mv[:4]) != _MAGIC:
            raise FormatError("QTensor.frombytes: expected the magic b'LBQT' and a 16-byte preamble")
        if mv[4] != _VERSION:
            raise FormatError(f"QTensor.frombytes: version: expected {_VERSION}, got {mv[4]}")
        (hlen,) = struct.unpack("<Q", mv[8:16])
        if hlen > len(mv) - 16:
            raise FormatError(f"QTensor.frombytes: header length {hlen} exceeds the buffer ({len(mv) - 16} bytes left)")
        try:
            header = json.loads(bytes(mv[16:16 + hlen]).decode())
            config, shape, table = header["config"], tuple(header["shape"]), header["arrays"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise FormatError(f"QTensor.frombytes: malformed header ({type(e).__name__})") from None
        if not isinstance(config, dict) or not isinstance(table, dict) or "data" not in table:
            raise FormatError("QTensor.frombytes: malformed header (config/arrays)")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError(f"QTensor.frombytes: shape: expected non-negative ints, got {list(shape)}")
        codec = get_codec(config)
        payload = mv[16 + hlen:]
        arrays = {}
        for name, ent in table.items():
            try:
                dt, ash, off, nb = ent["dtype"], tuple(ent["shape"]), int(ent["offset"]), int(ent["nbytes"])
            except (KeyError, TypeError, ValueError):
                raise FormatError(f"QTensor.frombytes: malformed entry for array {name!r}") from None
            if dt not in _AUX_DTYPES or not all(isinstance(d, int) and d >= 0 for d in ash):
                raise FormatError(f"QTensor.frombytes: array {name!r}: bad dtype or shape ({dt}, {list(ash)})")
            if nb != math.prod(ash) * np.dtype(dt).itemsize or off < 0 or off + nb > len(payload):
                raise FormatError(f"QTensor.frombytes: array {name!r}: {nb} bytes at {off} do not fit its shape or the {len(payload)}-byte payload")
            arrays[name] = np.frombuffer(payload[off:off + nb], dtype=dt).reshape(ash).copy()
        data = arrays.pop("data")
        q = cls(data, arrays, shape, codec)
        codec._check_shape(q.shape)  # the decode path checks the rest on use
        want = q.shape[:-1] + (codec.row_bytes(q.shape[-1]),)
        if tuple(data.shape) != want or data.dtype != np.uint8:
            raise FormatError(f"QTensor.frombytes: data: expected uint8 {want}, got {data.dtype} {tuple(data.shape)}")
        return q


# ---- module-level shortcuts ----------------------------------------------------------------------

def encode(x: Any, codec: str | Codec | Mapping[str, Any], /, *, backend: str = "auto", **kwargs: Any) -> QTensor:
    """Encode ``x`` with a codec given as an id, a config dict or a :class:`Codec`.

    With an id or a config, keyword arguments that are codec parameters configure the codec and
    the rest go to ``encode`` (``lowbit.encode(x, "fp8_e4m3", scale="channel")``).
    """
    if isinstance(codec, Codec):
        return codec.encode(x, backend=backend, **kwargs)
    cfg = dict(codec) if isinstance(codec, Mapping) else {"id": codec}
    params = codec_parameters(codec_class(cfg["id"])) if "id" in cfg else []
    cfg.update({k: v for k, v in kwargs.items() if k in params})
    return get_codec(cfg).encode(x, backend=backend, **{k: v for k, v in kwargs.items() if k not in params})


def decode(q: QTensor, /, *, backend: str = "auto", dtype: Any = None) -> Any:
    """Decode a :class:`QTensor` with the codec that made it."""
    if not isinstance(q, QTensor):
        raise DTypeError(f"decode: expected a QTensor, got {type(q).__name__}")
    return q.codec.decode(q, backend=backend, dtype=dtype)
