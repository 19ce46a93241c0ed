"""TurboQuant (Zandieh et al., arXiv 2504.19874): rotate each vector, then quantize every
coordinate with the Lloyd–Max codebook of a random unit vector's coordinate in dimension d.

``turboquant_mse`` (lowbit/spec/turboquant_mse.toml), per vector x of ``dim`` elements:

1. ``n = ‖x‖`` (float32, pairwise tree), ``y = Π x / n`` with Π the seeded rotation (dense Haar
   or randomized Hadamard, lowbit/codecs/_rotations.py);
2. ``code_j = #{k : y_j > t_k}``: the nearest Lloyd–Max centroid (ties to the lower one);
3. norm correction: ``γ = f16(n / ‖c‖)`` with c the centroids picked, so the decoded vector
   ``x̂ = γ · Πᵀ c`` has the norm of x and re-encoding x̂ gives back the same bytes
   (``norm_correction=False``: ``γ = f16(n)``, the paper's quantizer and its D_mse).

``bits`` 1–4, or 1.5/2.5/3.5: an outlier split (§1.8 of research/kvcodecs.md) — ``dim/4``
outlier channels (``outlier_channels``, default the first dim/4) form one instance at
``floor(bits)+1`` bits and the rest another at ``floor(bits)``, each with its own rotation,
codebook and norm; with the two float16 norms counted the rate is exactly ``bits``.

``turboquant_prod`` (lowbit/spec/turboquant_prod.toml): the MSE stage at ``bits−1`` bits (as
published: no norm correction, γ = f16(n)) plus a
1-bit QJL sketch of the residual r = y − ŷ (in the rotated domain): ``z = sign(S r)`` with S a
seeded dim×dim Gaussian matrix and ``γ_r = f16(n·‖r‖)``; decoded as
``Πᵀ(γ c + fl(√(π/2)/dim · γ_r) · Sᵀ z)``, an unbiased estimate of x (E⟨q, x̃⟩ = ⟨q, x⟩).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..errors import ConfigError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from . import _rotations as R
from ._codebooks import codebook
from ._vector import Rotation, VectorCodec, split_vectors, torch, write_u16

__all__ = ["TurboQuantMSE", "TurboQuantProd", "pick_outlier_channels"]


class _Instance:
    """One rotation + codebook over a subset of channels (all of them without an outlier split)."""

    def __init__(self, channels: np.ndarray | None, d: int, bits: int, rotation: str, seed: int, k: int) -> None:
        self.channels, self.d, self.bits = channels, d, bits
        self.rot = Rotation(rotation, d, seed, k)
        if bits:
            self.C, self.T = codebook("fd", d, bits)
            self.zero_code = int((np.float32(0) > self.T).sum())
        else:  # the 1-bit prod variant has no MSE stage
            self.C, self.T, self.zero_code = np.zeros(1, np.float32), np.zeros(0, np.float32), 0

    @property
    def code_bytes(self) -> int:
        return self.d * self.bits // 8

    def take(self, xv: Any) -> Any:
        if self.channels is None:
            return xv
        if _arrays.is_torch(xv):
            return xv[:, torch().from_numpy(self.channels).to(xv.device)].contiguous()
        return np.ascontiguousarray(xv[:, self.channels])

    def put(self, out: Any, part: Any) -> None:
        if self.channels is None:
            out[...] = part
        elif _arrays.is_torch(out):
            out[:, torch().from_numpy(self.channels).to(out.device)] = part
        else:
            out[:, self.channels] = part


def _new(like: Any, shape: tuple[int, ...], dtype: str) -> Any:
    if _arrays.is_torch(like):
        return torch().zeros(shape, dtype=getattr(torch(), dtype), device=like.device)
    return np.zeros(shape, dtype=dtype)


def _dev(a: np.ndarray, backend: str) -> Any:
    return a if backend == "cpu" else _arrays.gpu_tensor(np.array(a))


class _TurboBase(VectorCodec):
    def backends(self) -> list[str]:
        from ..kernels.registry import has_kernel  # composed from per-instance kernels

        return [be for be in ("cpu", "gpu") if has_kernel(self.family, be, "encode_instance")]

    family = "turboquant"

    def _run_instance(self, inst: _Instance, xv: Any, backend: str, flags: Any, want_resid: bool) -> tuple[Any, Any, Any, Any]:
        n = xv.shape[0]
        xi = inst.take(xv)
        codes = _new(xv, (n, inst.d), "uint8")
        gam = _new(xv, (n,), "int32")
        resid = _new(xv, (n if want_resid else 0, inst.d), "float32")
        rnorm = _new(xv, (n,), "int32")
        P, s, rht, rscale = inst.rot.args(backend)
        get_kernel(self.family, backend, "encode_instance")(
            xi, P, s, rht, rscale, _dev(inst.C, backend), _dev(inst.T, backend), inst.zero_code, inst.bits > 0,
            self._nc, codes, gam, resid, rnorm, flags)
        return codes, gam, resid, rnorm

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        from ..tools import kv_oracles

        return kv_oracles.error_bound(self, x)


class TurboQuantMSE(_TurboBase, codec_id="turboquant_mse"):
    """TurboQuant-MSE: a float16 norm plus ``bits`` bits per coordinate of the rotated vector.

    Parameters
    ----------
    dim:
        the vector length (head_dim); the last axis holds consecutive vectors.
    bits:
        1, 2, 3, 4, or 1.5 / 2.5 / 3.5 (outlier split: dim/4 channels get one more bit).
    rotation:
        ``"haar"`` (dense seeded orthogonal matrix, the paper's) or ``"rht"`` (randomized
        Hadamard: fast, power-of-two dims; not rotation-invariant for adversarial inputs).
    seed:
        the rotation's seed (use one per layer and KV head).
    outlier_channels:
        with fractional bits, the dim/4 channel indices of the high-precision instance
        (default: the first dim/4; see :func:`pick_outlier_channels`).
    norm_correction:
        store n/‖c‖ (default; decode keeps the norm, encode∘decode is idempotent) or n (the
        paper's D_mse; decoded norms shrink by ‖c‖).

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("turboquant_mse", dim=64, bits=3)
    >>> x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    >>> q = c.encode(x)
    >>> q.data.shape, c.bits_per_element(x.shape)     # 2-byte norm + 64 * 3 bits
    ((2, 26), 3.25)
    >>> y = c.decode(q)
    >>> bool(np.allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-3))
    True
    >>> bool((c.encode(y).data == q.data).all())        # norm correction: idempotent
    True
    """

    def __init__(self, *, dim: int = 128, bits: float = 4, rotation: str = "haar", seed: int = 0,
                 outlier_channels: list[int] | None = None, norm_correction: bool = True) -> None:
        self._check_dim(dim)
        if not isinstance(norm_correction, bool):
            raise ConfigError(f"{self.codec_id}: norm_correction: expected True or False, got {norm_correction!r}")
        self._nc = norm_correction
        self._check_seed(seed)
        frac = isinstance(bits, float) and not float(bits).is_integer()
        if isinstance(bits, bool) or bits not in (1, 2, 3, 4, 1.5, 2.5, 3.5):
            raise ConfigError(f"{self.codec_id}: bits: expected 1, 2, 3, 4, 1.5, 2.5 or 3.5, got {bits!r}")
        self.dim, self.bits, self.rotation, self.seed = dim, (float(bits) if frac else int(bits)), rotation, seed
        if not frac:
            if outlier_channels is not None:
                raise ConfigError(f"{self.codec_id}: outlier_channels: only with fractional bits (1.5, 2.5, 3.5), got bits={bits}")
            self._check_rotation(rotation, [dim])
            self._inst = [_Instance(None, dim, int(bits), rotation, seed, 0)]
        else:
            n_out = dim // 4
            if dim % 32:
                raise ConfigError(f"{self.codec_id}: bits={bits}: the outlier split needs dim a multiple of 32, got {dim}")
            oc = list(range(n_out)) if outlier_channels is None else [int(c) for c in outlier_channels]
            if len(oc) != n_out or len(set(oc)) != n_out or not all(0 <= c < dim for c in oc):
                raise ConfigError(f"{self.codec_id}: outlier_channels: expected {n_out} distinct indices in [0, {dim}), got {outlier_channels!r}")
            self._check_rotation(rotation, [n_out, dim - n_out])
            oc_arr = np.array(sorted(oc), dtype=np.int64)
            rest = np.setdiff1d(np.arange(dim), oc_arr)
            base = int(math.floor(bits))
            self._inst = [_Instance(oc_arr, n_out, base + 1, rotation, seed, 0),
                          _Instance(rest, dim - n_out, base, rotation, seed, 1)]
            oc = sorted(oc)
        self.outlier_channels = None if not frac or outlier_channels is None else oc
        self.norm_correction = norm_correction

    @property
    def idempotent(self) -> bool:
        """Without norm correction the decoded norm is n·‖c‖ < n, so every decode→encode
        round shrinks the vector (research/kvcodecs.md §1.7): only the corrected codec is
        idempotent."""
        return self.norm_correction

    @property
    def layout(self) -> BlockLayout:
        if len(self._inst) == 1:
            return BlockLayout.from_spec(self.codec_id, d=self.dim, b=self.bits)
        fields = []
        for name, inst in zip(("outlier", "rest"), self._inst):
            fields += [(f"norm_{name}", 16, 1, "float16"), (f"codes_{name}", inst.bits, inst.d, f"uint{inst.bits}")]
        return self._make_layout("TurboQuant-MSE, outlier split", fields)

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
        self._refuse_nonfinite(x2d, shape)
        xv = split_vectors(x2d, self.dim)
        n = xv.shape[0]
        out = _new(xv, (n, self.type_size), "uint8")
        flags = _new(xv, (2,), "int32")
        col = 0
        for inst in self._inst:
            codes, gam, _, _ = self._run_instance(inst, xv, backend, flags, False)
            write_u16(out, col, gam)
            get_kernel(self.family, backend, "pack")(codes, inst.bits, out, col + 2)
            col += 2 + inst.code_bytes
        self._refuse_overflow(flags)
        return out.reshape(x2d.shape[0], self.row_bytes(x2d.shape[1])), {}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        data = data2d.reshape(-1, self.type_size)
        n = data.shape[0]
        out = _new(data, (n, self.dim), "float32")
        col = 0
        for inst in self._inst:
            part = out if inst.channels is None else _new(data, (n, inst.d), "float32")
            P, s, rht, rscale = inst.rot.args(backend)
            get_kernel(self.family, backend, "decode_instance")(data, col, col + 2, inst.bits, _dev(inst.C, backend),
                                                               P, s, rht, rscale, part)
            if inst.channels is not None:
                inst.put(out, part)
            col += 2 + inst.code_bytes
        return out.reshape(data2d.shape[0], shape[-1])

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"dim": 32, "bits": 2}, {"dim": 64, "bits": 3, "rotation": "rht", "seed": 7},
                {"dim": 128, "bits": 4}, {"dim": 32, "bits": 1, "rotation": "rht"},
                {"dim": 64, "bits": 2.5, "outlier_channels": list(range(48, 64))},
                {"dim": 64, "bits": 2, "norm_correction": False}]


class TurboQuantProd(_TurboBase, codec_id="turboquant_prod"):
    """TurboQuant-prod: (bits−1)-bit TurboQuant-MSE plus a 1-bit QJL sketch of the residual;
    inner products with the decoded vectors are unbiased.

    Parameters: ``dim``, ``bits`` (1–4; bits=1 is pure QJL), ``rotation``, ``seed`` as for
    ``turboquant_mse``. Layout: float16 norm (omitted at bits=1), float16 residual norm,
    (bits−1)·dim code bits, dim sign bits.

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("turboquant_prod", dim=64, bits=3)
    >>> q = c.encode(np.ones((1, 64), np.float32))
    >>> q.data.shape, c.bits_per_element((1, 64))      # 2 + 2 + 64*2/8 + 64/8 bytes
    ((1, 28), 3.5)
    """

    def __init__(self, *, dim: int = 128, bits: int = 4, rotation: str = "haar", seed: int = 0) -> None:
        self._check_dim(dim)
        self._check_seed(seed)
        if isinstance(bits, bool) or bits not in (1, 2, 3, 4):
            raise ConfigError(f"{self.codec_id}: bits: expected 1, 2, 3 or 4, got {bits!r}")
        self._check_rotation(rotation, [dim])
        self.dim, self.bits, self.rotation, self.seed = dim, int(bits), rotation, seed
        self._inst = _Instance(None, dim, self.bits - 1, rotation, seed, 0)
        self._nc = False  # Algorithm 2 as published: the MSE stage stores n itself
        self._S = R.gaussian_matrix(dim, dim, seed, R.TAG_SKETCH)
        self._alpha = np.float32(math.sqrt(math.pi / 2) / dim)  # the QJL scale, rounded once

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec(self.codec_id, d=self.dim, b=self.bits)

    def _cols(self) -> tuple[int, int, int, int]:
        """Byte offsets of (norm, residual norm, codes, signs); norm is −1 at bits=1."""
        if self.bits == 1:
            return -1, 0, 2, 2
        return 0, 2, 4, 4 + self._inst.code_bytes

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
        self._refuse_nonfinite(x2d, shape)
        xv = split_vectors(x2d, self.dim)
        n = xv.shape[0]
        out = _new(xv, (n, self.type_size), "uint8")
        flags = _new(xv, (2,), "int32")
        codes, gam, resid, rnorm = self._run_instance(self._inst, xv, backend, flags, True)
        zbits = _new(xv, (n, self.dim), "uint8")
        get_kernel(self.family, backend, "sketch_signs")(resid, _dev(self._S, backend), zbits)
        gcol, rcol, ccol, zcol = self._cols()
        pack = get_kernel(self.family, backend, "pack")
        if gcol >= 0:
            write_u16(out, gcol, gam)
            pack(codes, self._inst.bits, out, ccol)
        write_u16(out, rcol, rnorm)
        pack(zbits, 1, out, zcol)
        self._refuse_overflow(flags)
        return out.reshape(x2d.shape[0], self.row_bytes(x2d.shape[1])), {}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        data = data2d.reshape(-1, self.type_size)
        out = _new(data, (data.shape[0], self.dim), "float32")
        gcol, rcol, ccol, zcol = self._cols()
        P, s, rht, rscale = self._inst.rot.args(backend)
        get_kernel(self.family, backend, "decode_prod")(
            data, max(gcol, 0), rcol, ccol, zcol, self._inst.bits, _dev(self._inst.C, backend),
            _dev(self._S, backend), self._alpha, P, s, rht, rscale, out)
        return out.reshape(data2d.shape[0], shape[-1])

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"dim": 32, "bits": 3}, {"dim": 64, "bits": 1, "rotation": "rht", "seed": 3},
                {"dim": 128, "bits": 4}, {"dim": 32, "bits": 2, "rotation": "rht"}]

    #: the decode is an unbiased *estimator* (MSE part plus a random-sign sketch), not a point of
    #: the codebook, so encode(decode(q)) != q in general; see the harness' idempotence hook
    idempotent = False


def pick_outlier_channels(keys: Any, dim: int, n: int | None = None) -> list[int]:
    """The ``n`` (default dim/4) channels with the largest mean square over calibration
    vectors ``keys`` (…, dim): the static outlier set of the fractional-bit TurboQuant split
    (KVQuant-style per-channel magnitude)."""
    k = _arrays.to_numpy(keys).reshape(-1, dim).astype(np.float64)
    n = dim // 4 if n is None else n
    ms = (k * k).mean(axis=0)
    return sorted(int(i) for i in np.argsort(-ms, kind="stable")[:n])
