"""IQ3_XXS / IQ3_S beyond the registry-wide GGUF tests (tests/test_gguf.py): the search tables
against ggml's own, and the corners of ggml's quantizer that ordinary rows rarely reach."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.errors import RangeError
from lowbit.kernels.cpu._iq3_maps import iq3_maps
from lowbit.kernels.registry import has_kernel
from lowbit.tools.ggml_oracle import GGML


def _elf_symbols(path: Path, names: set[str]) -> dict[str, int]:
    """``{name: st_value}`` from the ELF64 little-endian ``.symtab`` of ``path`` (static symbols
    included, which the dynamic loader does not expose)."""
    b = path.read_bytes()
    assert b[:4] == b"\x7fELF" and b[4] == 2 and b[5] == 1, f"{path}: not an ELF64 little-endian file"
    (shoff,) = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", b, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, int] = {}
    for _name, sh_type, _fl, _addr, off, size, link, _info, _al, _es in secs:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab = secs[link][4]
        for o in range(off, off + size, 24):
            st_name, _i, _ot, _sh, st_value, _sz = struct.unpack_from("<IBBHQQ", b, o)
            nm = b[strtab + st_name:b.index(b"\0", strtab + st_name)].decode()
            if nm in names:
                out[nm] = st_value
    return out


def test_search_tables_are_ggmls(ggml: GGML) -> None:
    """kmap and the neighbour lists built by lowbit equal ggml's ``iq3_data[]`` after
    ``iq3xs_init_impl``, read from the library's memory (iq3_data is static: its address comes
    from the symbol table, relative to an exported function's)."""
    path = ggml.path.resolve()
    syms = _elf_symbols(path, {"iq3_data", "ggml_row_size"})
    assert set(syms) == {"iq3_data", "ggml_row_size"}, f"{path}: symbols not found (a stripped library?)"
    base = ctypes.cast(ggml.lib.ggml_row_size, ctypes.c_void_p).value - syms["ggml_row_size"]
    init = ggml.lib.iq3xs_init_impl
    init.argtypes, init.restype = [ctypes.c_int], None
    for gi, n in enumerate((256, 512)):
        init(n)
        grid_p, map_p, nb_p = (ctypes.c_void_p * 3).from_address(base + syms["iq3_data"] + 24 * gi)
        codes, kmap, nbrs = iq3_maps(n)
        grid = np.ctypeslib.as_array((ctypes.c_uint32 * n).from_address(grid_p)).view(np.int8).reshape(n, 4)
        assert np.array_equal(grid, 2 * codes + 1), f"grid {n}"
        theirs_map = np.ctypeslib.as_array((ctypes.c_int32 * 4096).from_address(map_p))
        assert np.array_equal(theirs_map, kmap), f"kmap {n}"
        theirs_nb = np.ctypeslib.as_array((ctypes.c_uint16 * nbrs.size).from_address(nb_p))
        assert np.array_equal(theirs_nb, nbrs), f"neighbours {n}"
        # the lists tile the array exactly: the last list ends at its end
        offs = -kmap[kmap < 0].astype(np.int64) - 1
        assert int((offs + 1 + nbrs[offs]).max()) == nbrs.size


def _same_as_ggml(ggml: GGML, cid: str, x: np.ndarray, imp: np.ndarray | None) -> None:
    want = ggml.quantize(x, cid, imp)
    q = lowbit.get_codec(cid).encode(x, backend="cpu", importance=imp)
    bad = np.nonzero((q.data != want).any(1))[0]
    assert bad.size == 0, f"{cid}: rows {bad.tolist()} differ from ggml"


def _corner_rows(rng: np.random.Generator, K: int, n: int) -> np.ndarray:
    """``n`` rows of the six corner kinds in turn (see test_corners_match_ggml)."""
    rows = []
    for r in range(n):
        kind = r % 6
        if kind == 0:
            x = rng.standard_normal(K)
            x[np.repeat(rng.random(K // 32) < 0.3, 32)] = 0.0
        elif kind == 1:
            x = rng.standard_normal(K) * (rng.random(K) < 0.1)
        elif kind == 2:
            x = rng.integers(-3, 4, K).astype(np.float64)
        elif kind == 3:
            x = rng.standard_normal(K) * 10.0 ** rng.uniform(-45, -36)
        elif kind == 4:
            x = np.where(rng.random(K) < 0.5, -0.0, rng.standard_normal(K) * 1e-9)
        else:
            x = np.clip(rng.standard_normal(K) * np.exp(rng.uniform(-20, 20, K)), -65000, 65000)
        rows.append(x)
    return np.asarray(rows, np.float32)


def _corner_imatrices(rng: np.random.Generator, K: int) -> list[np.ndarray | None]:
    return [None, (rng.random(K) ** 3 * 10).astype(np.float32),
            (10.0 ** rng.uniform(-30, 10, K) * (rng.random(K) < 0.8)).astype(np.float32),
            np.zeros(K, np.float32), (10.0 ** rng.uniform(10, 25, K)).astype(np.float32)]


@pytest.mark.parametrize("cid", ["iq3_xxs", "iq3_s"])
def test_corners_match_ggml(ggml: GGML, cid: str) -> None:
    """All-zero sub-blocks (IQ3_S then writes the next sub-blocks' codes one slot early), sparse and
    integer rows, subnormals, -0.0, wildly spread values, and imatrices with zeros and extremes."""
    rng = np.random.default_rng(21)
    K = 1024
    x = _corner_rows(rng, K, 48)
    for imp in _corner_imatrices(rng, K):
        _same_as_ggml(ggml, cid, x, imp)


@pytest.mark.parametrize("cid", ["iq3_xxs", "iq3_s"])
def test_gpu_corners_match_ggml_and_cpu(ggml: GGML, cid: str) -> None:
    """The corner rows through the Triton encoder (fewer of them: the interpreter is slow), with
    every imatrix of test_corners_match_ggml; also a row whose sub-blocks alternate zero and not."""
    pytest.importorskip("triton")
    from .harness import gpu_tensor

    rng = np.random.default_rng(22)
    K = 512
    x = _corner_rows(rng, K, 12)
    x[0, :] = rng.standard_normal(K)
    x[0, np.repeat(np.arange(K // 32) % 2 == 0, 32)] = 0.0
    codec = lowbit.get_codec(cid)
    for imp in _corner_imatrices(rng, K):
        want = ggml.quantize(x, cid, imp)
        got = codec.encode(gpu_tensor(x), backend="gpu", importance=None if imp is None else gpu_tensor(imp)).data
        got = got.cpu().numpy()
        bad = np.nonzero((got != want).any(1))[0]
        assert bad.size == 0, f"{cid} gpu: rows {bad.tolist()} differ from ggml"
        assert np.array_equal(got, codec.encode(x, backend="cpu", importance=imp).data)


def test_iq3_xxs_negative_scale_flips_signs_like_ggml(ggml: GGML) -> None:
    """ggml's "should never happen" branch: the sign-parity flip makes one magnitude negative, and
    with an imatrix that weighs it most the best scale comes out negative; ggml then negates the
    scale and inverts every 7-bit sign index."""
    x = np.zeros((1, 256), np.float32)
    x[0, 0], x[0, 1:8] = -1.0, 1000.0
    sigma2 = np.float32(2) * np.float32((x * x).sum()) / np.float32(256)
    imp = np.zeros(256, np.float32)
    imp[0], imp[1:8] = 1 / np.sqrt(sigma2 + 1), 1e-6 / np.sqrt(sigma2 + 1e6)
    want = ggml.quantize(x, "iq3_xxs", imp)
    assert want[0, 66:70].tobytes() == b"\xff" * 4  # all sign indices inverted to 127: the branch ran
    _same_as_ggml(ggml, "iq3_xxs", x, imp)
    if has_kernel("gguf_iq", "gpu", "encode"):
        from .harness import gpu_tensor

        got = lowbit.get_codec("iq3_xxs").encode(gpu_tensor(x), backend="gpu", importance=gpu_tensor(imp)).data
        assert np.array_equal(got.cpu().numpy(), want), "gpu"


@pytest.mark.parametrize("cid", ["iq3_xxs", "iq3_s"])
def test_overflowing_weights_raise(cid: str) -> None:
    """Where ggml aborts (no neighbour at a finite weighted distance: the imatrix times
    sqrt(sigma2 + x**2) overflows float32), lowbit raises instead."""
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    with pytest.raises(RangeError, match="GGML_ASSERT"):
        lowbit.encode(x, cid, importance=np.full(256, 3e38, np.float32))
    if has_kernel("gguf_iq", "gpu", "encode"):
        from .harness import gpu_tensor

        with pytest.raises(RangeError, match="row 0: .*GGML_ASSERT"):
            lowbit.get_codec(cid).encode(gpu_tensor(x), backend="gpu", importance=gpu_tensor(np.full(256, 3e38, np.float32)))


def test_rotated_iq3_s_round_trips() -> None:
    """ITQ3_S (FWHT + IQ3_S) encodes now, closer to Gaussian weights than plain IQ3_S on a
    matrix with outlier columns (what the rotation is for)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    w[:, rng.integers(1024, size=8)] *= 20
    rot = lowbit.get_codec("rotated", codec="iq3_s")
    e_rot = float(np.sqrt(np.mean((lowbit.decode(rot.encode(w)) - w) ** 2)))
    e_plain = float(np.sqrt(np.mean((lowbit.decode(lowbit.encode(w, "iq3_s")) - w) ** 2)))
    assert e_rot < e_plain
