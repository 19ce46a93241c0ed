"""Written files follow the umask (0o666 & ~umask), like any file a user's tools write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.formats import layouts


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("tmpfile", ["o_tmpfile", "named"])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, tmpfile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if tmpfile == "named":  # the fallback where O_TMPFILE is missing: mkstemp's 0600 is widened
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    q = lowbit.encode(np.ones((2, 64), np.float32), "nvfp4", recipe="compressed_tensors")
    own = tmp_path / "own.safetensors"
    lowbit.save(own, {"w": q})
    wild = tmp_path / "ct.safetensors"
    layouts.save_layout(wild, {"l.weight": q}, "compressed-tensors")
    want = 0o666 & ~umask
    assert (_mode(own), _mode(wild)) == (want, want), f"umask {umask:o}: {_mode(own):o}, {_mode(wild):o}"
