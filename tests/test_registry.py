"""The codec registry and the public surface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.codec import Codec
from lowbit.errors import ConfigError, UnknownCodecError

ROOT = Path(__file__).resolve().parents[1]


def test_list_codecs() -> None:
    ids = lowbit.list_codecs()
    assert ids == sorted(ids)
    for cid in ("minifloat", "integer", "fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "e8m0",
                "ue4m3", "ue5m3", "int8", "int4", "int2"):
        assert cid in ids


def test_duplicate_ids_raise() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        class Again(Codec, codec_id="fp8_e4m3"):
            pass
    with pytest.raises(ConfigError, match="codec id"):
        class Bad(Codec, codec_id="Not-An-Id"):
            pass


def test_unknown_codec_suggests() -> None:
    with pytest.raises(UnknownCodecError, match="fp8_e4m3"):
        lowbit.get_codec("fp8_e4m2x")
    with pytest.raises(KeyError):  # also a KeyError, for callers that expect one
        lowbit.get_codec("nope")


def test_unknown_and_fixed_parameters() -> None:
    with pytest.raises(ConfigError, match=r"unknown \['scal'\]"):
        lowbit.get_codec("fp8_e4m3", scal="channel")
    with pytest.raises(ConfigError, match="fixed by this preset"):
        lowbit.get_codec("fp8_e4m3", ebits=5)
    with pytest.raises(ConfigError, match="scale"):
        lowbit.get_codec("fp8_e4m3", scale="rows")
    with pytest.raises(ConfigError, match="cannot be scaled|2\\*\\*253"):
        lowbit.get_codec("e8m0", scale="channel")
    with pytest.raises(ConfigError, match="overflow"):
        lowbit.get_codec("fp4_e2m1", overflow="nan")
    with pytest.raises(ConfigError, match="id"):
        lowbit.get_codec({"ebits": 4})


def test_configs_round_trip_through_json_and_files(tmp_path: Path) -> None:
    for cid in lowbit.list_codecs():
        for cfg in lowbit.codec_class(cid).examples():
            c = lowbit.get_codec(cid, **cfg)
            assert lowbit.get_codec(json.loads(json.dumps(c.get_config()))) == c


def test_import_is_light() -> None:
    code = "import lowbit, sys; print(sorted(m for m in ('torch', 'numba', 'triton', 'safetensors', 'gguf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_building_any_codec_loads_no_compiler() -> None:
    """Issue 19: ``get_codec`` of every codec (each example configuration), its layout and its
    config load neither Numba nor Triton nor torch: compilers are imported by the first encode/decode."""
    code = ("import lowbit, sys\n"
            "for cid in lowbit.list_codecs():\n"
            "    for cfg in lowbit.codec_class(cid).examples():\n"
            "        c = lowbit.get_codec(cid, **cfg); c.get_config(); c.block_size\n"
            "        loaded = [m for m in ('numba', 'triton', 'torch') if m in sys.modules]\n"
            "        if loaded: print(cid, cfg, loaded); sys.exit(0)\n"
            "print('none')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "none", f"building this codec loaded a compiler: {out}"


def test_readme_lists_every_codec() -> None:
    readme = (ROOT / "README.md").read_text()
    for cid in lowbit.list_codecs():
        assert f"`{cid}`" in readme, f"README's codec table lacks {cid}"


def test_every_public_class_has_a_runnable_example() -> None:
    for cid in lowbit.list_codecs():
        cls = lowbit.codec_class(cid)
        assert cls.__doc__ and ">>>" in cls.__doc__, f"{cls.__qualname__} has no example in its docstring"


def test_doctests_pass() -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--doctest-modules", "-p", "no:cacheprovider",
                        str(ROOT / "lowbit")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_backend_auto_never_falls_back() -> None:
    from lowbit.errors import BackendUnavailable
    from lowbit.kernels.registry import get_kernel

    with pytest.raises(BackendUnavailable, match="no frob kernel"):
        get_kernel("minifloat", "cpu", "frob")
    x = np.ones((1, 4), np.float32)
    assert lowbit.encode(x, "fp8_e4m3", backend="auto").data.dtype == np.uint8


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w.safetensors").exists()


def test_ci_runs_the_readme_command() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    i = readme.index("# set up and pass the tests")
    assert "pytest" in readme[i + 1] and 'pip install -e ".[test]"' in readme[i + 1]
    assert "# set up and pass the tests" in (ROOT / ".ci" / "run").read_text()


def test_input_policy_doc_is_current() -> None:
    from lowbit.tools.policy_table import DOC, render

    assert DOC.read_text() == render(), "docs/input-policy.md is stale: python -m lowbit.tools.policy_table"
