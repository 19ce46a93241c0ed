"""``lowbit convert``: between layouts and containers, carrying codes over when they are exact.

Layouts (``--to``):

* ``lowbit`` — lowbit's safetensors layout: quantized tensors (GGUF blocks included) are copied
  byte for byte with their codec config; a GGUF source's metadata rides along, typed, so
  converting back to GGUF restores the file.
* ``gguf`` — GGUF: tensors whose codec is a GGUF type are copied byte for byte, plain arrays keep
  their dtype; tensors no GGUF type can hold are decoded to float32, and the report says so.
* ``float32`` / ``bfloat16`` / ``float16`` — every tensor decoded to plain floats (safetensors);
  with a ``.gguf`` output, llama-quantize's F32 / F16 / BF16: the tensors it would quantize become
  that type, norms and the other small tensors keep theirs, ``general.file_type`` is set.

The output suffix picks the container when ``--to`` is not given (``.gguf`` → ``gguf``, anything
else → ``lowbit``); a ``--to`` the suffix contradicts is refused.
* ``compressed-tensors`` / ``modelopt`` / ``gpt-oss`` / ``bitsandbytes`` — the quantized layouts in
  the wild (:mod:`lowbit.formats.layouts`); a source in one of them is detected and read too.

Every conversion streams one tensor at a time into a file that only gets its name when complete,
and reports per tensor whether codes were copied or values converted. ``--to lowbit`` / float
layouts with an output folder (``OUT_DIR/``), a split GGUF output (``--split-max-*``) or ``--dask``
write shard by shard, resumably, on local processes or Dask (:mod:`lowbit.tools.sharding`).

Model folders (:mod:`lowbit.formats.model_folder`): ``convert MODEL_DIR OUT_DIR --to
compressed-tensors --scheme W4A16 [--group-size 64] [--ignore lm_head] [--max-shard-size 5GB]``
quantizes a float Hugging Face folder with a compressed-tensors preset into a folder
``from_pretrained`` loads; ``convert Q.safetensors OUT_DIR/ --to bitsandbytes`` (output ending in
``/`` or an existing folder, or the input a folder) carries an already quantized checkpoint into
a ready folder for the layout's consumer, from the ``config.json`` beside the input.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

import lowbit
from lowbit.codec import QTensor
from lowbit.errors import ConfigError, LowbitError
from lowbit.formats import gguf as G
from lowbit.formats import layouts as wild
from lowbit.formats import safetensors as st
from lowbit.tools.progress import Progress
from lowbit.tools.quantize import GGUF_METADATA_KEY, _typed_gguf_metadata, gguf_metadata_json

__all__ = ["LAYOUTS", "convert_file"]

_FLOATS = ("float32", "float16", "bfloat16")
LAYOUTS = ("lowbit", "gguf") + _FLOATS + wild.LAYOUTS


def _float_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _as_values(t: Any) -> np.ndarray:
    return np.asarray(lowbit.decode(t) if isinstance(t, QTensor) else t, dtype=np.float32)


def _gguf_holds(t: Any) -> bool:
    if isinstance(t, QTensor):
        return t.codec_id in G._CODEC_TYPES and not t.aux and t.codec == type(t.codec)()
    return np.asarray(t).dtype.name in G._PLAIN_OUT


def _plan(t: Any, to: str) -> tuple[str, Any]:
    """(report word, what is written) for one source tensor; decoding happens only when the
    second element is called."""
    if to == "lowbit":
        return ("codes copied" if isinstance(t, QTensor) else "array copied"), lambda: t
    if to == "gguf":
        if _gguf_holds(t):
            return ("codes copied" if isinstance(t, QTensor) else "array copied"), lambda: t
        what = t.codec_id if isinstance(t, QTensor) else str(np.asarray(t).dtype)
        return f"decoded to float32 (no GGUF type holds {what})", lambda: _as_values(t)

    def cast() -> np.ndarray:
        with np.errstate(over="ignore"):
            return _as_values(t).astype(_float_dtype(to), copy=False)  # float32 -> float32: no second copy

    return ("decoded" if isinstance(t, QTensor) else "cast"), cast


def _entries(name: str, t: Any, word: str, to: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """The output entries (name, dtype or ggml type, shape), from the source tensor's type and
    shape alone (nothing decoded)."""
    shape = tuple(t.shape)
    decoded = word.startswith(("decoded", "cast"))
    if to == "gguf":
        if not decoded:
            return [(n, tn, s) for n, tn, s, _ in [G.entry(name, t)]]
        return [(name, "f32", shape)]
    if decoded:
        return [(name, st._dtype_of(np.zeros(0, _float_dtype(to if to != "lowbit" else "float32"))), shape)]
    return [(n, d, s) for n, d, s, _ in st.layout_entries(name, t)]


def _target(out: str | Path, to: str | None) -> str:
    """The layout: ``to``, or from the output suffix (``.gguf`` -> ``gguf``, else ``lowbit``);
    a ``to`` the suffix contradicts is refused."""
    gguf_out = Path(out).suffix.lower() == ".gguf"
    if to is None:
        return "gguf" if gguf_out else "lowbit"
    if to not in LAYOUTS:
        raise ConfigError(f"convert: --to: expected one of {list(LAYOUTS)}, got {to!r}")
    if gguf_out and to not in ("gguf",) + _FLOATS:
        raise ConfigError(f"convert: --to {to} writes safetensors, but the output {out} ends in .gguf "
                          "(use --to gguf/float32/float16/bfloat16, or a .safetensors name)")
    if not gguf_out and to == "gguf":
        raise ConfigError(f"convert: --to gguf writes GGUF, but the output {out} does not end in .gguf")
    return to


def convert_file(inp: str | Path, out: str | Path, *, to: str | None = None, progress: bool = True,
                 scheme: str | None = None, group_size: int | None = None,
                 ignore: list[str] | None = None, max_shard_size: str | int | None = None,
                 rules: list[str] | None = None, dask: Any = None, jobs: int | None = None,
                 split_max_tensors: int | None = None, split_max_size: int | None = None) -> dict[str, Any]:
    """Convert ``inp`` to the layout ``to`` (default: from the output suffix) in ``out``.

    ``inp`` is a file, a split GGUF (any shard) or a sharded safetensors checkpoint (its folder or
    index). A model folder in or out (an output ending in ``/``, an existing folder, or a folder
    input with a suffix-less output) writes a ready model folder (:mod:`lowbit.formats.model_folder`)
    for the wild layouts; with ``scheme`` it quantizes a float model folder to that
    compressed-tensors preset. With ``to`` ``lowbit`` / float32 / float16 / bfloat16 a folder output
    is a sharded safetensors checkpoint (shards of at most ``max_shard_size``, default 5 GB, and
    ``model.safetensors.index.json``), written shard by shard and resumable
    (:mod:`lowbit.tools.sharding`); ``split_max_tensors`` / ``split_max_size`` split a GGUF output
    as llama-gguf-split does; ``dask`` (``"local:N"``, an address or a ``distributed.Client``)
    writes the shards on Dask workers, ``jobs`` on local processes.

    A ``.gguf`` output with ``to`` float32/float16/bfloat16 is llama-quantize's F32/F16/BF16 (with
    --allow-requantize): the weights llama-quantize would quantize become that float type, the
    rest keep their type, ``general.file_type`` says so.

    >>> import os, tempfile, numpy as np, lowbit
    >>> from lowbit.formats import gguf as G
    >>> d = tempfile.mkdtemp(); src = os.path.join(d, "q.gguf")
    >>> G.save(src, {"blk.0.ffn_up.weight": lowbit.encode(np.ones((2, 32), np.float32), "q8_0")}, {"general.file_type": 7})
    >>> r = convert_file(src, os.path.join(d, "f.gguf"), to="float32", progress=False)
    >>> g = G.read(os.path.join(d, "f.gguf")); g.tensors[0].type_name, g.metadata["general.file_type"]
    ('f32', 0)
    """
    from lowbit.tools import sharding

    folder_out = str(out).endswith(("/", "\\")) or Path(out).is_dir() or (
        Path(inp).is_dir() and Path(out).suffix not in (".safetensors", ".gguf"))  # a sharded folder -> one file stays
    sharded_st = folder_out and scheme is None and (to is None or to in ("lowbit",) + _FLOATS)
    if (scheme is not None or folder_out) and not sharded_st:
        if to is not None and to not in LAYOUTS:
            raise ConfigError(f"convert: --to: expected one of {list(LAYOUTS)}, got {to!r}")
        if dask is not None or split_max_size or split_max_tensors:
            raise ConfigError("convert: --dask / --split-max-*: a ready model folder of a wild layout is written in "
                              "one process (sharded output: --to lowbit/float32/float16/bfloat16, or a .gguf output)")
        # a model folder in or out: a ready model folder (lowbit.formats.model_folder)
        return _model_folder(inp, out, to=to or ("compressed-tensors" if scheme is not None else "lowbit"),
                             scheme=scheme, group_size=group_size, ignore=ignore, progress=progress,
                             max_shard_size=max_shard_size, rules=rules)
    if group_size is not None or ignore is not None or rules or (max_shard_size is not None and not sharded_st):
        raise ConfigError("convert: --group-size, --ignore and --max-shard-size go with --scheme (quantizing a model "
                          "folder) or, --max-shard-size, with a sharded output folder (OUT_DIR/)")
    to = "lowbit" if sharded_st and to is None else to
    if not sharded_st:
        to = _target(out, to)
    gguf_out = not sharded_st and Path(out).suffix.lower() == ".gguf"
    if (split_max_size or split_max_tensors) and not gguf_out:
        raise ConfigError("convert: --split-max-size / --split-max-tensors split a .gguf output")
    if to in wild.LAYOUTS or _wild_input(inp):  # wild layouts: whole-file
        if dask is not None or sharded_st:
            raise ConfigError(f"convert: {inp}: a wild-layout checkpoint converts in one process (no --dask, no "
                              "sharded output)")
        return wild.convert_file(inp, out, to=to)
    if gguf_out and to in _FLOATS + ("gguf",) and Path(inp).is_dir():
        from lowbit.formats.hf_gguf import is_model_folder

        if is_model_folder(inp):
            if dask is not None or split_max_size or split_max_tensors:
                raise ConfigError("convert: a Hugging Face folder converts to one GGUF file in one process (for "
                                  "split output use `lowbit quantize HF_DIR out.gguf F16 --split-max-size ...`)")
            return _hf_gguf(inp, out, to, progress)
    if gguf_out and to in _FLOATS:
        return _gguf_floats(inp, out, to, progress, dask=dask, jobs=jobs, split_max_tensors=split_max_tensors,
                            split_max_size=split_max_size)
    t0 = time.perf_counter()
    with lowbit.open_file(inp) as src:
        names = src.names()
        gmeta, gtypes = _typed_gguf_metadata(src)
        # the header needs every tensor's type and shape before any data: a first pass over the
        # memory-mapped tensors (views, nothing decoded) gives them
        words, entries, carried = {}, {}, {}
        for name in names:
            t = src.get(name, copy=False)
            words[name] = _plan(t, to)[0]
            entries[name] = _entries(name, t, words[name], to)
            if isinstance(t, QTensor) and words[name] == "codes copied":
                carried[name] = t
        specs = [e for n in names for e in entries[n]]
        if to == "gguf":
            from lowbit.tools.gguf_kv import SPLIT_KEYS

            for k in SPLIT_KEYS:  # one file now (or split again by the writer)
                gmeta.pop(k, None)
                gtypes.pop(k, None)
        else:
            meta = st.user_metadata(getattr(src, "metadata", {})) if isinstance(src, st.SafetensorsFile) else {}
            if gmeta:
                meta[GGUF_METADATA_KEY] = gguf_metadata_json(gmeta, gtypes)
            index = json.loads(st.layout_index(carried))["tensors"]
        if sharded_st or dask is not None or split_max_size or split_max_tensors:
            units = [sharding.Unit(n, tuple(entries[n]), _convert_unit, (str(inp), n, to),
                                   sum(sharding._entry_bytes(e, to == "gguf") for e in entries[n])) for n in names]
            if to == "gguf":
                from lowbit.formats import gguf_split

                per = gguf_split.plan_shards(specs, max_tensors=split_max_tensors, max_size=split_max_size)
                job = sharding.Job("convert", Path(out).parent, f"{Path(out).stem}.lowbit-manifest.json", True,
                                   str(inp), units,
                                   sharding.gguf_shards(Path(out), units, per, gmeta, gtypes, "gguf-split"), None,
                                   output=str(out))
            else:
                limit = sharding.DEFAULT_SHARD_SIZE if max_shard_size is None else _size(max_shard_size)
                if not sharded_st:  # one .safetensors file, written by a Dask worker
                    groups = [list(range(len(units)))]
                    shards = [sharding.Shard(Path(out).name, tuple(groups[0]), dict(meta, **{st.METADATA_KEY: json.dumps(
                        {"format": 1, "tensors": index}, sort_keys=True)}))]
                    job = sharding.Job("convert", Path(out).parent, f"{Path(out).stem}.lowbit-manifest.json", False,
                                       str(inp), units, shards, None, output=str(out))
                else:
                    shards = sharding.safetensors_shards(units, sharding.group_units(units, limit), meta, index,
                                                         first_only=(GGUF_METADATA_KEY,))
                    job = sharding.Job("convert", Path(out), sharding.MANIFEST, False, str(inp), units, shards,
                                       sharding.INDEX, output=str(out))
            job.signature = sharding.input_signature(inp)
    if sharded_st or dask is not None or split_max_size or split_max_tensors:
        run = sharding.run(job, jobs=jobs, dask=dask, progress=progress)
        paths = [job.folder / s.file for s in job.shards]
        report = [{"name": n, "action": words[n]} for n in names]
        return {"input": str(inp), "output": run["output"], "to": to, "tensors": report,
                "output_bytes": sum(p.stat().st_size for p in paths), "seconds": time.perf_counter() - t0,
                "sharded": run}
    with lowbit.open_file(inp) as src:
        if to == "gguf":
            writer: Any = G.Writer(out, specs, gmeta, gtypes)
        else:
            meta[st.METADATA_KEY] = st.layout_index(carried)
            writer = st.Writer(out, specs, meta, checksums=True)
        with writer as w, Progress(len(names), "convert", unit="tensors", enabled=progress) as bar:
            for name in names:
                value = _plan(src.get(name, copy=False), to)[1]()
                if to == "gguf":
                    w.write(name, G.entry(name, value)[3])
                else:
                    for n, _, _, a in st.layout_entries(name, value):
                        w.write(n, a)
                bar.update(1, name)
    report = [{"name": n, "action": words[n]} for n in names]
    return {"input": str(inp), "output": str(out), "to": to, "tensors": report,
            "output_bytes": Path(out).stat().st_size, "seconds": time.perf_counter() - t0}


def _wild_input(inp: str | Path) -> bool:
    """Whether ``inp`` (a file, or a sharded checkpoint: its first shard) is in a wild layout."""
    from lowbit.formats.sharded import is_sharded

    if not is_sharded(inp):
        return wild.detect_file(inp) is not None
    try:
        files = wild.checkpoint_files(inp)
    except LowbitError:
        return False
    return bool(files) and wild.detect_file(files[0]) is not None


def _convert_unit(source: str, name: str, to: str) -> list[tuple[str, Any]]:
    """One tensor of a sharded conversion, as the one-process loop above writes it."""
    from lowbit.tools.quantize import _source

    value = _plan(_source(source).get(name, copy=False), to)[1]()
    if to == "gguf":
        return [(name, G.entry(name, value)[3])]
    return [(n, a) for n, _, _, a in st.layout_entries(name, value)]


def _gguf_floats(inp: str | Path, out: str | Path, to: str, progress: bool, **sharded: Any) -> dict[str, Any]:
    from lowbit.tools.quantize import quantize_file

    r = quantize_file(inp, out, mix={"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[to],
                      allow_requantize=True, progress=progress, **sharded)
    acts = []
    for d in r["decisions"]:
        kept = d["to"] == "kept"
        q = d["from"].startswith("lowbit:")
        acts.append({"name": d["name"], "action": ("codes copied" if q else "array copied") if kept
                     else ("decoded" if q else "cast")})
    return {"input": str(inp), "output": r["output"], "to": to, "tensors": acts, "output_bytes": r["output_bytes"],
            "seconds": r["seconds"], **({"sharded": r["sharded"]} if "sharded" in r else {})}


def _hf_gguf(inp: str | Path, out: str | Path, to: str, progress: bool) -> dict[str, Any]:
    """``convert HF_DIR out.gguf --to float32|float16|bfloat16|gguf``: the GGUF llama.cpp's
    ``convert_hf_to_gguf.py --outtype f32|f16|bf16`` writes (``--to gguf``: each weight keeps the
    float type it is stored in), streamed one tensor at a time (:mod:`lowbit.formats.hf_gguf`)."""
    from lowbit.formats.hf_gguf import open_folder

    t0 = time.perf_counter()
    outtype = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "gguf": "source"}[to]
    acts = []
    with open_folder(inp, outtype=outtype) as src:
        specs = [(t.name, t.type_name, t.shape) for t in src.tensors]
        total = sum(t.nbytes for t in src.tensors)
        with G.Writer(out, specs, src.metadata, src.metadata_types) as w, \
                Progress(total, "convert", enabled=progress) as bar:
            for t in src.tensors:
                w.write(t.name, src.raw(t.name))
                bar.update(t.nbytes, t.name)
                acts.append({"name": t.name, "action": f"converted to {t.type_name}", "from": src.hf_name(t.name)})
    return {"input": str(inp), "output": str(out), "to": to, "tensors": acts, "output_bytes": Path(out).stat().st_size,
            "seconds": time.perf_counter() - t0}


def _model_folder(inp: str | Path, out: str | Path, *, to: str, scheme: str | None, group_size: int | None,
                  ignore: list[str] | None, progress: bool, max_shard_size: str | int | None = None,
                  rules: list[str] | None = None) -> dict[str, Any]:
    """``lowbit convert MODEL_DIR OUT_DIR --to compressed-tensors --scheme W4A16``: see
    :mod:`lowbit.formats.model_folder`."""
    from lowbit.formats import model_folder

    if scheme is None:  # an already quantized checkpoint, carried into the layout --to names
        return model_folder.convert_folder(inp, out, to=to, progress=_stderr if progress else None)
    if not Path(inp).is_dir():
        raise ConfigError(f"convert: --scheme quantizes a model folder (config.json + safetensors); {inp} is not a folder")
    if to != "compressed-tensors":
        raise ConfigError(f"convert: --scheme writes --to compressed-tensors, got --to {to}")
    return model_folder.quantize_folder(inp, out, scheme=scheme, group_size=group_size,
                                        ignore=None if ignore is None else [i for i in ignore if i],
                                        max_shard_size=_size(max_shard_size), rules=[_rule(r) for r in rules or []],
                                        progress=_stderr if progress else None)


def _rule(r: str) -> tuple[str, str]:
    target, eq, name = str(r).rpartition("=")
    if not eq or not target or not name:
        raise ConfigError(f"convert: --scheme-rule: expected TARGET=SCHEME (e.g. 're:.*self_attn.*=NVFP4A16'), got {r!r}")
    return target, name


def _size(v: str | int | None) -> int:
    """``--max-shard-size``: bytes, or a number with KB/MB/GB (powers of 1000) or KiB/MiB/GiB."""
    from lowbit.formats.model_folder import DEFAULT_SHARD_SIZE

    if v is None:
        return DEFAULT_SHARD_SIZE
    if isinstance(v, int):
        return v
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", str(v), re.IGNORECASE)
    if not m:
        raise ConfigError(f"convert: --max-shard-size: expected bytes or e.g. 500MB / 5GB / 2GiB, got {v!r}")
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(m.group(1)) * mult)


def _stderr(msg: str) -> None:
    import sys

    print(f"convert: {msg}", file=sys.stderr)
