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
    r = run("demo", "--model", "synthetic", "--out", str(tmp_path / "d.safetensors"))
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
    r = run("demo", "--model", "synthetic", "--file", str(src), "--out", "-", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["elements"] == 512 and any(row["codec"] == "int8" for row in res["rows"])
    fp8 = next(row for row in res["rows"] if row["codec"] == "fp8_e4m3" and row["config"] == {"scale": "channel"})
    assert 25 < fp8["sqnr_db"] < 40 and fp8["bits_per_element"] > 8


def test_list_and_info(capsys) -> None:
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == set(lowbit.list_codecs())
    from .harness import family_has

    for r in rows:  # what the kernel registry has (wrappers: their inner codec's), and cpu always
        c = lowbit.get_codec(r["id"])
        inner = getattr(c, "inner", c)
        # a family's gpu encoder may cover only some of its types (GGUFCodec.gpu_encode)
        want = [b for b in ("cpu", "gpu") if family_has(inner.family, b, "encode") and (b == "cpu" or getattr(inner, "gpu_encode", True))]
        assert r["backends"] == want and "cpu" in r["backends"], r["id"]
    assert next(r for r in rows if r["id"] == "fp8_e4m3")["backends"] == ["cpu", "gpu"]
    assert main(["info", "fp4_e2m1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"]["block_size"] == 2 and info["input_policy"]["nan"] == "raise"


def test_errors_are_one_line(capsys) -> None:
    assert main(["info", "fp9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit: error:") and "fp9" in err and err.count("\n") == 1


def test_help_on_every_command() -> None:
    for cmd in ([], ["demo"], ["list"], ["info"], ["inspect"], ["quantize"], ["convert"], ["compare"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


def _float_checkpoint(path: Path) -> dict:
    from lowbit.tools.demo import demo_weights

    w = {k: v[:256] if v.ndim == 2 else v for k, v in demo_weights().items()}
    lowbit.save(path, w, metadata={"origin": "test"})
    return w


def test_quantize_rules_and_jobs(tmp_path: Path) -> None:
    src = tmp_path / "f.safetensors"
    w = _float_checkpoint(src)
    out = tmp_path / "q.safetensors"
    r = run("quantize", str(src), str(out), "--codec", "fp4_e2m1", "--param", "scale=block:1x32",
            "--rule", "embed=fp8_e4m3:scale=channel", "--rule", "up_proj=keep", "--jobs", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    to = {d["name"]: d["to"] for d in res["decisions"]}
    assert to["mlp.up_proj.weight"] == "kept" and to["input_layernorm.weight"] == "kept"
    assert to["embed_tokens.weight"]["id"] == "fp8_e4m3" and to["self_attn.q_proj.weight"]["id"] == "fp4_e2m1"
    back = lowbit.load(out)
    assert np.array_equal(back["mlp.up_proj.weight"], w["mlp.up_proj.weight"])
    want = lowbit.encode(w["self_attn.q_proj.weight"], "fp4_e2m1", scale="block:1x32")
    assert np.array_equal(back["self_attn.q_proj.weight"].data, want.data)
    with lowbit.open_file(out) as f:
        assert f.metadata["origin"] == "test"
    # one job gives the same bytes
    out1 = tmp_path / "q1.safetensors"
    assert run("quantize", str(src), str(out1), "--codec", "fp4_e2m1", "--param", "scale=block:1x32",
               "--rule", "embed=fp8_e4m3:scale=channel", "--rule", "up_proj=keep").returncode == 0
    assert out1.read_bytes() == out.read_bytes()


def test_quantize_dry_run_and_bad_rule(tmp_path: Path) -> None:
    src = tmp_path / "f.safetensors"
    _float_checkpoint(src)
    r = run("quantize", str(src), str(tmp_path / "x.safetensors"), "--codec", "int4", "--dry-run", "--json")
    assert r.returncode == 0 and not (tmp_path / "x.safetensors").exists()
    plan = json.loads(r.stdout)
    assert sum(p["to"] != "kept" for p in plan) == 7
    r = run("quantize", str(src), str(tmp_path / "x.safetensors"), "--rule", "embed=nosuchcodec")
    assert r.returncode == 2 and "rule" in r.stderr and not (tmp_path / "x.safetensors").exists()


def test_convert_and_compare(tmp_path: Path) -> None:
    src = tmp_path / "f.safetensors"
    w = _float_checkpoint(src)
    q = tmp_path / "q.safetensors"
    assert run("quantize", str(src), str(q), "--codec", "int8", "--param", "scale=channel").returncode == 0
    copy = tmp_path / "copy.safetensors"
    r = run("convert", str(q), str(copy), "--json")
    assert r.returncode == 0, r.stderr
    assert {t["action"] for t in json.loads(r.stdout)["tensors"]} == {"codes copied", "array copied"}
    a, b = lowbit.load(q), lowbit.load(copy)
    assert all(np.array_equal(a[k].data, b[k].data) for k in a if isinstance(a[k], lowbit.QTensor))
    deq = tmp_path / "deq.safetensors"
    assert run("convert", str(q), str(deq), "--to", "float32").returncode == 0
    d = lowbit.load(deq)
    assert np.array_equal(d["mlp.down_proj.weight"], lowbit.decode(a["mlp.down_proj.weight"]))
    r = run("compare", str(src), str(q), "--json")
    assert r.returncode == 0, r.stderr
    rows = {t["name"]: t for t in json.loads(r.stdout)["compare"]["tensors"]}
    assert rows["input_layernorm.weight"]["rmse"] == 0.0
    x = w["mlp.down_proj.weight"].astype(np.float64)
    e = lowbit.decode(a["mlp.down_proj.weight"]).astype(np.float64) - x
    row = rows["mlp.down_proj.weight"]
    assert np.isclose(row["sqnr_db"], 10 * np.log10((x * x).sum() / (e * e).sum()), rtol=1e-12)
    assert row["max_abs_error"] == np.abs(e).max() and row["bits_b"] == a["mlp.down_proj.weight"].bits_per_element
    png = tmp_path / "rd.png"
    r = run("compare", str(src), "--codecs", "fp8_e4m3:scale=channel;int4:scale=channel", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect(tmp_path: Path) -> None:
    src = tmp_path / "f.safetensors"
    _float_checkpoint(src)
    q = tmp_path / "q.safetensors"
    assert run("quantize", str(src), str(q), "--codec", "fp8_e4m3", "--param", "scale=channel").returncode == 0
    r = run("inspect", str(q), "--json")
    info = json.loads(r.stdout)
    assert info["container"] == "safetensors" and info["metadata"] == {"origin": "test"}
    t = {x["name"]: x for x in info["tensors"]}
    assert t["self_attn.q_proj.weight"]["codec"] == "fp8_e4m3" and t["input_layernorm.weight"]["dtype"] == "float32"
    r = run("inspect", str(q))
    assert "fp8_e4m3 (channel)" in r.stdout and "bits/element" in r.stdout


def test_warmup_fills_a_cache_that_later_processes_hit(tmp_path: Path) -> None:
    """Issue 19: ``lowbit warmup`` compiles into Numba's cache (here a fresh ``NUMBA_CACHE_DIR``, as for
    a read-only install; dynamic8: a family that compiles in seconds), and a later process encodes and
    decodes with no compile: every kernel it
    ran was loaded from the cache (Numba's per-dispatcher ``stats``: hits, no misses)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    r = subprocess.run([sys.executable, "-m", "lowbit.tools.cli", "warmup", "--codecs", "dynamic8", "--json", "-j", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res["families"]) == ["dynamic8"] and res["families"]["dynamic8"]["failed"] == {}
    assert list((tmp_path / "numba").rglob("*.nbi")), "warmup wrote nothing to the cache"
    probe = ("import numpy as np, lowbit, numba\n"
             "from lowbit.kernels.cpu import dynamic8 as m\n"
             "c = lowbit.get_codec('dynamic8'); x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)\n"
             "c.decode(c.encode(x))\n"
             "ran = [d for d in vars(m).values() if isinstance(d, numba.core.registry.CPUDispatcher) and d.signatures]\n"
             "print(sum(sum(d.stats.cache_hits.values()) for d in ran), sum(sum(d.stats.cache_misses.values()) for d in ran))\n")
    hits, misses = map(int, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                           check=True).stdout.split())
    assert hits >= 2 and misses == 0, (hits, misses)
