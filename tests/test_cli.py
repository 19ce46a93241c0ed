"""The ``lowbit`` console script: demo, list, info, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import lowbit
from lowbit.tools.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lowbit.tools.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_demo_writes_a_file_that_decodes(tmp_path: Path) -> None:
    r = run("demo", "--out", str(tmp_path / "d.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "fp8_e4m3" in r.stdout and "SQNR" in r.stdout and "bit-identically: yes" in r.stdout
    for cid in lowbit.list_codecs():
        assert cid in r.stdout
    back = lowbit.load(tmp_path / "d.safetensors")
    q = back["mlp.up_proj.weight"]
    assert q.codec_id == "fp8_e4m3" and q.shape == (1408, 512)


def test_demo_json_and_file_input(tmp_path: Path) -> None:
    src = tmp_path / "f.safetensors"
    lowbit.save(src, {"w": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)})
    r = run("demo", "--file", str(src), "--out", "-", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["elements"] == 512 and any(row["codec"] == "int8" for row in res["rows"])
    fp8 = next(row for row in res["rows"] if row["codec"] == "fp8_e4m3" and row["config"] == {"scale": "channel"})
    assert 25 < fp8["sqnr_db"] < 40 and fp8["bits_per_element"] > 8


def test_list_and_info(capsys) -> None:
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == set(lowbit.list_codecs())
    from lowbit.kernels.registry import has_kernel

    for r in rows:  # what the kernel registry has, and the cpu backend always
        fam = lowbit.codec_class(r["id"]).family
        assert r["backends"] == [b for b in ("cpu", "gpu") if has_kernel(fam, b, "encode")] and "cpu" in r["backends"]
    assert next(r for r in rows if r["id"] == "fp8_e4m3")["backends"] == ["cpu", "gpu"]
    assert main(["info", "fp4_e2m1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"]["block_size"] == 2 and info["input_policy"]["nan"] == "raise"


def test_errors_are_one_line(capsys) -> None:
    assert main(["info", "fp9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit: error:") and "fp9" in err and err.count("\n") == 1


def test_help_on_every_command() -> None:
    for cmd in ([], ["demo"], ["list"], ["info"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout
