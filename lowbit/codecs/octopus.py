"""OCTOPUS (Boss et al., arXiv 2605.21226): rotate each vector, cut it into triplets, and code
each triplet as an octahedral direction (two Lloyd–Max coordinates) and a Lloyd–Max norm.

Per vector x of ``dim`` elements (lowbit/spec/octopus.toml; the kernels' docstring in
lowbit/kernels/cpu/octopus.py has every float32 step):

1. ``n = ‖x‖``, ``y = Π x / n`` — the TurboQuant rotation (dense Haar or randomized Hadamard);
2. every full triplet t = (y[3g], y[3g+1], y[3g+2]): its direction by the standard octahedral
   map (sgn(0) = +1) → (ξ, η) ∈ [−1, 1]², each quantized with ``allocation[0]`` /
   ``allocation[1]`` bits on the exact marginal of a uniform direction in R³; its norm ρ with
   ``allocation[2]`` bits on the exact marginal ρ² ~ Beta(3/2, (d−3)/2). ``joint=True`` searches
   the 3×3 neighbourhood of (ξ, η) for the direction closest to t and quantizes t·n̂ as ρ;
3. when dim % 3 != 0 the last slot holds the remainder: a pair (octahedral u on the circle's
   marginal + the sign of the second coordinate + its norm on ρ² ~ Beta(1, (d−2)/2)) or a single
   coordinate (the TurboQuant codebook at ``allocation[0]`` bits) — decoded exactly onto the
   subspace, so re-encoding reproduces them;
4. norm correction: ``γ = f16(n / ‖ŷ‖)`` (``norm_correction=False``: ``γ = f16(n)``); decoded
   ``x̂ = γ · Πᵀ ŷ``.

Default allocation (b+1, b+1, b−1): 3b+1 bits per triplet, b + 0.35 + 16/128 bits per
coordinate at dim 128 (research/kvcodecs.md §3.3, bit accounting).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from .. import _arrays
from ..errors import ConfigError
from ..kernels.registry import get_kernel
from ..layout import BlockLayout
from ._codebooks import codebook
from ._vector import Rotation, VectorCodec, split_vectors, torch, write_u16

__all__ = ["Octopus", "octahedral_directions", "circle_directions"]

F32 = np.float32


def octahedral_directions(Cx: np.ndarray, Ce: np.ndarray) -> np.ndarray:
    """DIR3[a, b] = the unit vector decoded from (ξ, η) = (Cx[a], Ce[b]), float32 [A·B·3]:
    z = 1 − |u| − |v|; (x, y) = (u, v) if z >= 0 else (sgn(u)(1 − |v|), sgn(v)(1 − |u|));
    divided by sqrt((x² + y²) + z²). float32 arithmetic in this order."""
    u = np.repeat(Cx.astype(F32), Ce.size)
    v = np.tile(Ce.astype(F32), Cx.size)
    one = F32(1)
    z = (one - np.abs(u)) - np.abs(v)
    su = np.where(u >= 0, one, -one)
    sv = np.where(v >= 0, one, -one)
    x = np.where(z >= 0, u, su * (one - np.abs(v)))
    y = np.where(z >= 0, v, sv * (one - np.abs(u)))
    r = np.sqrt((x * x + y * y) + z * z)
    out = np.stack([x / r, y / r, z / r], axis=1).astype(F32).reshape(-1)
    out.setflags(write=False)
    return out


def circle_directions(Cc: np.ndarray) -> np.ndarray:
    """DIR2[a, s] = (u, v)/sqrt(u² + v²) with u = Cc[a], v = ±(1 − |u|) (s = 1: minus), float32 [A·2·2]."""
    u = np.repeat(Cc.astype(F32), 2)
    one = F32(1)
    v = np.tile(np.array([1, -1], F32), Cc.size) * (one - np.abs(u))
    r = np.sqrt(u * u + v * v)
    out = np.stack([u / r, v / r], axis=1).astype(F32).reshape(-1)
    out.setflags(write=False)
    return out


class Octopus(VectorCodec, codec_id="octopus"):
    """OCTOPUS: per vector a float16 corrected norm and, per rotated triplet, an octahedral
    direction (ξ, η) and a norm ρ, all Lloyd–Max coded against their exact marginals.

    Parameters
    ----------
    dim:
        the vector length (head_dim).
    bits:
        nominal bits b (1–4); sets the default allocation (b+1, b+1, b−1).
    allocation:
        [bits of ξ, bits of η, bits of ρ] (ξ, η in 1–6, ρ in 0–4).
    joint:
        3×3 joint rounding of the direction in the encoder (same bitstream).
    rotation, seed, norm_correction:
        as ``turboquant_mse`` (without norm correction γ = f16(n): the papers' MSE figures,
        not idempotent).

    >>> import numpy as np, lowbit
    >>> c = lowbit.get_codec("octopus", dim=128, bits=2)
    >>> c.allocation, c.bits_per_element((1, 128))       # 43 slots x 7 bits + 16-bit norm
    ([3, 3, 1], 2.5)
    >>> x = np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32)
    >>> q = c.encode(x)
    >>> bool((c.encode(c.decode(q)).data == q.data).all())
    True
    """

    family = "octopus"

    def __init__(self, *, dim: int = 128, bits: int = 4, allocation: list[int] | None = None,
                 joint: bool = False, rotation: str = "haar", seed: int = 0, norm_correction: bool = True) -> None:
        self._check_dim(dim)
        self._check_seed(seed)
        self._check_rotation(rotation, [dim])
        if isinstance(bits, bool) or bits not in (1, 2, 3, 4):
            raise ConfigError(f"{self.codec_id}: bits: expected 1, 2, 3 or 4, got {bits!r}")
        alloc = [bits + 1, bits + 1, bits - 1] if allocation is None else [int(a) for a in allocation]
        if (len(alloc) != 3 or not 1 <= alloc[0] <= 6 or not 1 <= alloc[1] <= 6 or not 0 <= alloc[2] <= 4):
            raise ConfigError(f"{self.codec_id}: allocation: expected [bits of xi 1-6, bits of eta 1-6, bits of rho 0-4], "
                              f"got {allocation!r}")
        if not isinstance(joint, bool):
            raise ConfigError(f"{self.codec_id}: joint: expected True or False, got {joint!r}")
        if not isinstance(norm_correction, bool):
            raise ConfigError(f"{self.codec_id}: norm_correction: expected True or False, got {norm_correction!r}")
        self.dim, self.bits, self.allocation, self.joint, self.rotation, self.seed = dim, bits, alloc, joint, rotation, seed
        self.norm_correction = norm_correction
        bx, be, br = alloc
        self._G3, self._rem = dim // 3, dim % 3
        self._G = self._G3 + (self._rem > 0)
        self._W = bx + be + br
        self._rot = Rotation(rotation, dim, seed, 0)
        self._Cx, self._Tx = codebook("oct", 0, bx)
        self._Ce, self._Te = codebook("oct", 0, be)
        self._Cr, self._Tr = codebook("rho3", dim, br)
        self._Cc, self._Tc = codebook("circle", 0, bx)
        self._Cr2, self._Tr2 = codebook("rho2", dim, br)
        self._C1, self._T1 = codebook("fd", dim, bx)
        self._DIR3 = octahedral_directions(self._Cx, self._Ce)
        self._DIR2 = circle_directions(self._Cc)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_spec(self.codec_id, d=self.dim, g=self._G, w=self._W)

    @property
    def idempotent(self) -> bool:
        return self.norm_correction

    @functools.cached_property
    def _canon(self) -> np.ndarray:
        """Slot codes of y = 0 (what a vector whose norm underflows float16 stores)."""
        from ..kernels.cpu.octopus import _encode_slots

        y = np.zeros(self.dim, F32)
        codes = np.zeros(self._G, np.int32)
        _encode_slots(y, self._G3, self._rem, self.allocation[0], self.allocation[1], *self._tables_enc("cpu"),
                      codes, np.zeros(self.dim, F32), np.zeros(self._G, F32))
        codes.setflags(write=False)
        return codes

    def _tables_enc(self, backend: str) -> tuple[Any, ...]:
        d = (lambda a: a) if backend == "cpu" else (lambda a: _arrays.gpu_tensor(np.array(a)))
        return (d(self._Tx), d(self._Te), d(self._Cr), d(self._Tr), d(self._DIR3), self.joint, d(self._Tc),
                d(self._Cr2), d(self._Tr2), d(self._DIR2), d(self._C1), d(self._T1))

    def _tables_dec(self, backend: str) -> tuple[Any, ...]:
        d = (lambda a: a) if backend == "cpu" else (lambda a: _arrays.gpu_tensor(np.array(a)))
        return (d(self._Cr), d(self._DIR3), d(self._Cr2), d(self._DIR2), d(self._C1))

    def _encode(self, x2d: Any, shape: tuple[int, ...], backend: str, **kw: Any) -> tuple[Any, dict[str, Any]]:
        self._refuse_nonfinite(x2d, shape)
        xv = split_vectors(x2d, self.dim)
        n = xv.shape[0]
        tm = _arrays.is_torch(xv)
        mk = (lambda s, dt: torch().zeros(s, dtype=getattr(torch(), dt), device=xv.device)) if tm else np.zeros
        out = mk((n, self.type_size), "uint8")
        codes = mk((n, self._G), "int32")
        gam = mk((n,), "int32")
        flags = mk((2,), "int32")
        canon = self._canon if not tm else _arrays.gpu_tensor(np.array(self._canon))
        bx, be, _ = self.allocation
        get_kernel(self.family, backend, "encode")(xv, *self._rot.args(backend), self._G3, self._rem, bx, be,
                                                   *self._tables_enc(backend), self.norm_correction, canon, codes,
                                                   gam, flags)
        self._refuse_overflow(flags)
        write_u16(out, 0, gam)
        get_kernel("turboquant", backend, "pack")(codes, self._W, out, 2)
        return out.reshape(x2d.shape[0], self.row_bytes(x2d.shape[1])), {}

    def _decode(self, data2d: Any, aux: Mapping[str, Any], shape: tuple[int, ...], backend: str) -> Any:
        data = data2d.reshape(-1, self.type_size)
        tm = _arrays.is_torch(data)
        n = data.shape[0]
        out = (torch().empty((n, self.dim), dtype=torch().float32, device=data.device) if tm
               else np.empty((n, self.dim), F32))
        bx, be, _ = self.allocation
        get_kernel(self.family, backend, "decode")(data, self._W, self._G3, self._rem, bx, be,
                                                   *self._tables_dec(backend), *self._rot.args(backend), out)
        return out.reshape(data2d.shape[0], shape[-1])

    def error_bound(self, x: np.ndarray, q: Any) -> np.ndarray:
        from ..tools import kv_oracles

        return kv_oracles.error_bound(self, x)

    def _bound_vectors(self, xv: np.ndarray) -> np.ndarray:
        from ..tools import kv_oracles

        return kv_oracles.octopus_bound(self, xv)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        return [{"dim": 32, "bits": 2}, {"dim": 64, "bits": 3, "joint": True, "rotation": "rht", "seed": 5},
                {"dim": 128, "bits": 4, "joint": True}, {"dim": 24, "bits": 1},
                {"dim": 40, "bits": 2, "allocation": [2, 3, 2]}, {"dim": 32, "bits": 3, "norm_correction": False}]
