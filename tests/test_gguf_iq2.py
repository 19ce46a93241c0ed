"""The IQ2/IQ1 search tables (:mod:`lowbit.kernels.cpu._iq2_maps`) against ggml.

ggml keeps the tables ``iq2xs_init_impl`` builds in static memory that libggml-base does not
export, so they are checked three ways: the grid keys against the ``kgrid_*`` literals of the
ggml source the oracle was built from, the neighbour lists against a direct (slow, one key at a
time) transcription of ggml's loop on a sample of keys, and the layout's invariants. The encoders
being byte-identical with ggml (tests/test_gguf.py) checks them once more, through use.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lowbit.kernels.cpu._iq2_maps import KMAP_SIZE, grid_keys, iq2_maps
from lowbit.tools.ggml_oracle import GGML, LLAMA_CPP_PYTHON_VERSION

KINDS = {"iq2_xxs": ("kgrid_2bit_256", 256, 2), "iq2_xs": ("kgrid_2bit_512", 512, 2),
         "iq2_s": ("kgrid_2bit_1024", 1024, 1), "iq1_s": ("kgrid_1bit_2048", 2048, 3),
         "iq1_m": ("kgrid_1bit_2048", 2048, 3)}


def ggml_source(ggml: GGML) -> str:
    # the oracle's cache: build/bin/libggml-base.so next to src/ (the sdist it was built from)
    cache = ggml.path.parents[2]
    path = (cache / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp" / "ggml"
            / "src" / "ggml-quants.c")
    assert path.is_file(), f"the oracle's ggml source is missing: {path}"
    return path.read_text()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_grid_keys_are_ggmls(ggml: GGML, kind: str) -> None:
    name, size, _ = KINDS[kind]
    m = re.search(r"static const uint16_t %s\[[^\]]*\]\s*=\s*\{([^}]*)\}" % name, ggml_source(ggml))
    assert m, f"{name} not found in ggml-quants.c"
    want = np.array([int(v) for v in m.group(1).split(",") if v.strip()])
    assert want.size == size
    np.testing.assert_array_equal(grid_keys(kind), want)


def ggml_neighbours(grid: np.ndarray, key: int, nwant: int) -> list[int]:
    """ggml's loop for one off-grid key, transcribed: sort (d2, row), keep nwant distances."""
    pos = np.array([2 * ((key >> (2 * k)) & 3) + 1 for k in range(8)])
    g = grid.astype(np.int64)
    dist = sorted((int(((g[j] - pos) ** 2).sum()), j) for j in range(len(g)))
    out: list[int] = []
    d2, nhave = dist[0][0], 1
    for d, j in dist:
        if d > d2:
            if nhave == nwant:
                break
            d2, nhave = d, nhave + 1
        out.append(j)
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_neighbours_match_ggmls_loop(kind: str) -> None:
    grid, kmap, nb = iq2_maps(kind)
    nwant = KINDS[kind][2]
    rng = np.random.default_rng(len(grid))
    # keys of levels 0..2 (the ones the quantizers look up), a few with level 3, and the edges
    lv = rng.integers(0, 3, (150, 8))
    keys = list((lv << (2 * np.arange(8))).sum(axis=1)) + list(rng.integers(0, KMAP_SIZE, 30)) + [1, KMAP_SIZE - 1]
    checked = 0
    for key in keys:
        if kmap[key] >= 0:
            continue
        o = -int(kmap[key]) - 1
        n = int(nb[o])
        assert nb[o + 1:o + 1 + n].tolist() == ggml_neighbours(grid, int(key), nwant), (kind, key)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_table_layout(kind: str) -> None:
    grid, kmap, nb = iq2_maps(kind)
    size = KINDS[kind][1]
    assert grid.shape == (size, 8) and grid.dtype == np.int8 and set(np.unique(grid)) == {1, 3, 5}
    assert kmap.shape == (KMAP_SIZE,) and kmap.dtype == np.int32 and nb.dtype == np.uint16
    # on-grid keys map to their rows, and a row's key rebuilds from its values
    keys = grid_keys(kind)
    np.testing.assert_array_equal(kmap[keys], np.arange(size))
    np.testing.assert_array_equal((((grid.astype(np.int64) - 1) // 2) << (2 * np.arange(8))).sum(axis=1), keys)
    # off-grid lists tile `neighbours` in key order: count, then rows, the next list right after
    off = np.flatnonzero(kmap < 0)
    starts = -kmap[off].astype(np.int64) - 1
    counts = nb[starts].astype(np.int64)
    assert starts[0] == 0 and (counts > 0).all()
    np.testing.assert_array_equal(starts[1:], starts[:-1] + counts[:-1] + 1)
    assert starts[-1] + counts[-1] + 1 == nb.size
    mask = np.ones(nb.size, bool)
    mask[starts] = False
    assert nb[mask].max() < size
    assert all(not a.flags.writeable for a in (grid, kmap, nb))


def test_iq1_kinds_share_tables() -> None:
    for a, b in zip(iq2_maps("iq1_s"), iq2_maps("iq1_m")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cid", ["iq2_xxs", "iq2_xs", "iq2_s"])
def test_huge_importance(ggml: GGML, cid: str) -> None:
    """Weights of 1e30 still give ggml's bytes (its float32 sums saturate the same way); at 1e38
    they overflow to inf/NaN, where ggml aborts the process: lowbit raises RangeError instead."""
    import lowbit
    from lowbit.errors import RangeError

    x = np.random.default_rng(3).standard_normal((4, 512)).astype(np.float32)
    qw = np.full(512, 1e30, np.float32)
    assert (lowbit.encode(x, cid, importance=qw).data == ggml.quantize(x, cid, qw)).all()
    with pytest.raises(RangeError, match="ggml aborts"):
        lowbit.encode(x, cid, importance=np.full(512, 1e38, np.float32))


def _gpu_rows(seed: int) -> np.ndarray:
    """Six one-block rows of corner cases: signed zeros among Gaussians, magnitudes around
    GROUP_MAX_EPS (1e-15) and IQ2_S's 1e-8, a constant magnitude at max_abs, one outlier among
    near-zero values, heavy tails."""
    rng = np.random.default_rng(seed)
    x = np.zeros((6, 256), np.float32)
    x[0] = rng.standard_normal(256)
    x[0, ::3] = -0.0
    x[1] = 1e-15 * rng.standard_normal(256)
    x[2] = 1e-8 * rng.standard_normal(256)
    x[3] = np.where(rng.random(256) < 0.5, -65504.0, 65504.0)
    x[4] = 1e-30 * rng.standard_normal(256)
    x[4, 17] = 3e4
    x[5] = np.clip(rng.standard_t(1, 256), -6e4, 6e4)
    return x


@pytest.mark.parametrize("cid", ["iq2_xxs", "iq2_xs", "iq2_s"])
def test_gpu_encoder_corner_cases(ggml: GGML, cid: str) -> None:
    """The Triton encoder (the interpreter without CUDA) gives ggml's and the Numba encoder's
    bytes on corner rows, with an imatrix holding zeros (and, for IQ2_S, without one)."""
    pytest.importorskip("triton")
    import lowbit

    from .harness import gpu_tensor

    codec = lowbit.get_codec(cid)
    x = _gpu_rows(5)
    qw = (np.random.default_rng(6).random(256) ** 3 * 10).astype(np.float32)
    qw[::5] = 0
    for imp in ([qw] if codec.requires_importance else [qw, None]):
        want = ggml.quantize(x, cid, imp)
        got = codec.encode(gpu_tensor(x), backend="gpu", importance=None if imp is None else gpu_tensor(imp))
        got = got.data.cpu().numpy()
        bad = np.flatnonzero((got != want).any(1)).tolist()
        assert not bad, f"{cid} gpu vs ggml (imatrix: {imp is not None}): rows {bad} differ"
        assert (got == codec.encode(x, backend="cpu", importance=imp).data).all()


@pytest.mark.parametrize("cid", ["iq2_xxs", "iq2_xs", "iq2_s"])
def test_gpu_huge_importance(ggml: GGML, cid: str) -> None:
    """test_huge_importance on the Triton encoder: weights of 1e30 give ggml's bytes; near
    FLT_MAX the error sums overflow where ggml aborts, and the GPU path raises RangeError naming
    the first such row (row 0 is all zero: its sub-blocks are skipped, nothing overflows)."""
    pytest.importorskip("triton")
    import lowbit
    from lowbit.errors import RangeError

    from .harness import gpu_tensor

    codec = lowbit.get_codec(cid)
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)
    qw = np.full(256, 1e30, np.float32)
    got = codec.encode(gpu_tensor(x), backend="gpu", importance=gpu_tensor(qw)).data.cpu().numpy()
    assert (got == ggml.quantize(x, cid, qw)).all()
    x[0] = 0
    qw = np.full(256, 3e38, np.float32)
    with pytest.raises(RangeError, match="row 1: .*ggml aborts"):
        codec.encode(x, backend="cpu", importance=qw)
    with pytest.raises(RangeError, match="row 1: .*ggml aborts"):
        codec.encode(gpu_tensor(x), backend="gpu", importance=gpu_tensor(qw))
