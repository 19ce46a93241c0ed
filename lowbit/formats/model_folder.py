"""Ready model folders: what ``from_pretrained(OUT_DIR)`` loads with no edit.

A Hugging Face model folder is ``config.json`` (with the ``quantization_config`` the loader reads),
the weights as safetensors, and the other files the model ships (tokenizer, generation config,
chat template, ...). :func:`quantize_folder` writes one for compressed-tensors' preset schemes
(``lowbit convert MODEL_DIR OUT_DIR --to compressed-tensors --scheme W4A16``):

* which tensors are quantized is decided as compressed-tensors decides it: the model is built
  on the meta device from its config (no weights loaded) and ``compressed_tensors.utils.
  match_named_modules(model, scheme.targets, ignore)`` names the Linear modules; the default
  ignore list is llm-compressor's ``["lm_head"]`` (embeddings are not Linear, so never targeted);
* weights are quantized by :mod:`lowbit.formats.ct_schemes` (the bytes of llm-compressor +
  ModelCompressor), one tensor at a time, into one streaming safetensors file; every other
  tensor is copied with its dtype;
* ``config.json`` gets the ``quantization_config`` written by compressed-tensors' own
  ``ModelCompressor.update_config`` (so the version, format and scheme fields are theirs);
* every other regular file of MODEL_DIR is copied (weights in other containers are not);
* the folder is built under a hidden name beside OUT_DIR and renamed into place when complete:
  a refusal or an interruption leaves nothing at OUT_DIR. Files follow the umask.

The consumer's rules are checked before anything is written (:func:`lowbit.formats.ct_schemes.
check_weight`): a group size that does not divide a weight's columns is a SchemeError naming
``--group-size``, the tensor and the rule, with the group sizes that would fit.

>>> import json, os, tempfile, torch, transformers
>>> from lowbit.formats.model_folder import quantize_folder
>>> src, out = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "w4a16")
>>> cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...                                num_attention_heads=2, num_key_value_heads=1)
>>> transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(src)
>>> r = quantize_folder(src, out, scheme="W4A16", group_size=32)
>>> r["config"]["format"], sorted(os.listdir(out))
('pack-quantized', ['config.json', 'generation_config.json', 'model.safetensors'])
>>> model = transformers.AutoModelForCausalLM.from_pretrained(out)      # no edit
>>> quantize_folder(src, out + "-g128", scheme="W4A16")                  # W4A16's default group of 128
Traceback (most recent call last):
...
lowbit.formats.ct_schemes.SchemeError: convert: --group-size 128: tensor 'model.layers.0.mlp.down_proj.weight' has 64 columns, ...
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..codec import QTensor
from ..errors import ConfigError, FormatError, LowbitError
from . import ct_schemes
from .layouts import _st_dtype, checkpoint_files, read_safetensors

__all__ = ["quantize_folder", "linear_modules", "copy_model_files", "DEFAULT_IGNORE", "WEIGHT_FILE"]

#: llm-compressor's examples and defaults: the output head stays in full precision
DEFAULT_IGNORE = ("lm_head",)
WEIGHT_FILE = "model.safetensors"
#: transformers' save_pretrained default shard size (5 GB)
DEFAULT_SHARD_SIZE = 5 * 10**9
_NOT_COPIED_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".gguf", ".h5",
                        ".msgpack", ".ckpt")


def _read_config(src: Path) -> dict[str, Any]:
    f = src / "config.json"
    if not f.is_file():
        raise FormatError(f"convert: {src}: not a model folder (no config.json)")
    try:
        cfg = json.loads(f.read_text())
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{f}: malformed JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise FormatError(f"{f}: expected a JSON object")
    if cfg.get("quantization_config"):
        raise ConfigError(f"convert --scheme: {src} is already quantized "
                          f"({cfg['quantization_config'].get('quant_method')!r}); --scheme quantizes float models")
    return cfg


def _meta_model(src: str | os.PathLike[str]) -> Any:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise LowbitError(f"convert --scheme: finding the Linear modules needs torch and transformers ({e})") from None
    cfg = transformers.AutoConfig.from_pretrained(str(src))
    archs = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    with torch.device("meta"):
        return cls(cfg) if cls is not None else transformers.AutoModelForCausalLM.from_config(cfg)


def _match(model: Any, targets: Iterable[str], ignore: Iterable[str]) -> list[str]:
    try:
        from compressed_tensors.utils import match_named_modules
    except ImportError as e:
        raise LowbitError(f"convert --scheme: matching modules needs compressed-tensors ({e})") from None
    return [n for n, _ in match_named_modules(model, list(targets), list(ignore))]


def linear_modules(src: str | os.PathLike[str], scheme: Any, ignore: Iterable[str]) -> list[str]:
    """The module names compressed-tensors would quantize with ``scheme`` (its ``targets``) in the
    model of folder ``src``, less ``ignore`` — built on the meta device, no weights read."""
    return _match(_meta_model(src), scheme.targets, ignore)


def _plan(name: str, shape: tuple[int, ...], dtype: str, args: dict[str, Any]) -> list[tuple[str, str, tuple[int, ...]]]:
    """The compressed-tensors entries (name, safetensors dtype, shape) of one quantized weight."""
    m = name[: -len(".weight")]
    N, K = shape
    if args["type"] == "int" and args.get("_format") == "int-quantized":  # int8 storage, one code per byte
        ng = 1 if args["strategy"] == "channel" else K // int(args["group_size"])
        out = [(m + ".weight", "I8", (N, K)), (m + ".weight_scale", dtype, (N, ng))]
        if not args["symmetric"]:
            out.append((m + ".weight_zero_point", "I8", (N, ng)))
        return out
    if args["type"] == "int":
        b = int(args["num_bits"])
        ng = 1 if args["strategy"] == "channel" else K // int(args["group_size"])
        out = [(m + ".weight_packed", "I32", (N, -(-K * b // 32))), (m + ".weight_scale", dtype, (N, ng)),
               (m + ".weight_shape", "I64", (2,))]
        if not args["symmetric"]:
            out.append((m + ".weight_zero_point", "I32", (-(-N * b // 32), ng)))
        return out
    if args["strategy"] == "tensor_group":
        return [(m + ".weight_packed", "U8", (N, K // 2)), (m + ".weight_scale", "F8_E4M3", (N, K // 16)),
                (m + ".weight_global_scale", "F32", (1,))]
    if args["type"] == "float" and int(args["num_bits"]) == 4:  # MXFP4
        return [(m + ".weight_packed", "U8", (N, K // 2)), (m + ".weight_scale", "U8", (N, K // 32))]
    return [(m + ".weight", "F8_E4M3", (N, K)),
            (m + ".weight_scale", dtype, (N, 1) if args["strategy"] == "channel" else (1,))]


def _ct_arrays(name: str, q: QTensor, dtype_name: str, fmt: str | None = None) -> dict[str, np.ndarray]:
    """The compressed-tensors arrays of one quantized weight ``<m>.weight`` (``fmt``: the scheme's
    compressed-tensors format; ``int-quantized`` stores integer codes one per int8)."""
    m = name[: -len(".weight")]
    if q.codec_id == "int" and fmt == "int-quantized":
        from ._int32pack import unpack_bits
        from ._intq import take_apart

        data, sc, z, _, c = take_apart(q, "int-quantized")
        off = 1 << (c.bits - 1)
        t = {"weight": (unpack_bits(data, c.bits, q.shape[1]) - off).astype(np.int8), "weight_scale": sc}
        if not c.symmetric:
            t["weight_zero_point"] = (z - off).astype(np.int8)
        if dtype_name == "bfloat16":
            import ml_dtypes

            t["weight_scale"] = np.ascontiguousarray(sc).view(ml_dtypes.bfloat16)
    elif q.codec_id == "int":
        from .compressed_tensors_int import to_compressed_tensors

        t = to_compressed_tensors(q)
        if dtype_name == "bfloat16":
            import ml_dtypes

            t["weight_scale"] = t["weight_scale"].view(ml_dtypes.bfloat16)
    else:
        from .compressed_tensors_fp import to_compressed_tensors

        t, _ = to_compressed_tensors({"weight": q}, scale_dtype=dtype_name)
    return {f"{m}.{k}": v for k, v in t.items()}


def _entry_bytes(e: tuple[str, str, tuple[int, ...]]) -> int:
    from .safetensors import DTYPE_BITS

    return DTYPE_BITS[e[1]][0] * int(np.prod(e[2], dtype=np.int64)) // 8


def _shards(units: dict[str, list[tuple[str, str, tuple[int, ...]]]], limit: int) -> list[list[str]]:
    """Source tensors grouped into shards of at most ``limit`` output bytes, in name order."""
    if limit <= 0:
        raise ConfigError(f"convert: --max-shard-size: expected a positive size, got {limit}")
    out: list[list[str]] = [[]]
    size = 0
    for n, entries in units.items():
        b = sum(_entry_bytes(e) for e in entries)
        if out[-1] and size + b > limit:
            out.append([])
            size = 0
        out[-1].append(n)
        size += b
    return out


def _suggest(cols: set[int], g: int) -> str:
    fits = [c for c in (32, 64, 128, 256) if all(k % c == 0 for k in cols)]
    return f"group sizes that divide every quantized weight's columns: {fits}" if fits else \
        "no power-of-two group size divides every quantized weight's columns"


def copy_model_files(src: Path, dst: Path, *, skip: Iterable[str] = ("config.json",)) -> list[str]:
    """Copy the regular files of a model folder that are not weights (tokenizer, generation
    config, chat template, README, ...) into ``dst``; returns their names."""
    skip = set(skip)
    out = []
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name.startswith(".") or f.name in skip or f.name.endswith(_NOT_COPIED_SUFFIXES):
            continue
        shutil.copyfile(f, dst / f.name)  # contents only: the copy follows the umask
        out.append(f.name)
    return out


def _staging(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"convert: {out}: the output folder exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    os.mkdir(tmp)  # mode 0o777 & ~umask, like any folder
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    if out.is_dir():
        out.rmdir()  # empty (checked before writing)
    os.replace(tmp, out)


def quantize_folder(src: str | os.PathLike[str], out: str | os.PathLike[str], *, scheme: str,
                    group_size: int | None = None, ignore: Iterable[str] | None = None,
                    rules: Iterable[tuple[str, str]] = (), max_shard_size: int = DEFAULT_SHARD_SIZE,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Quantize the float model folder ``src`` with compressed-tensors' preset ``scheme`` into the
    ready model folder ``out``: one ``model.safetensors``, or shards of at most ``max_shard_size``
    bytes (a larger single tensor gets a shard of its own; a module's tensors stay together) with
    ``model.safetensors.index.json``. ``rules`` — ``(target, preset)`` pairs, first match wins,
    targets as compressed-tensors writes them (a module name, ``re:REGEX``, a class name) — give some
    Linear modules another preset (several config groups, format ``mixed-precision``; ``group_size``
    applies to every group preset). Returns a report (per tensor: quantized or copied)."""
    from .safetensors import Writer

    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    _read_config(src)
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    rules = [(str(t), str(n).upper()) for t, n in rules]
    names = [scheme.upper()] + [n for _, n in rules if n != scheme.upper()]
    schemes = {}
    for n in dict.fromkeys(names):  # --group-size: the main preset's (refused where it has none), and the rules' group presets
        sch_n = ct_schemes.scheme(n, group_size=group_size if n == names[0] or _has_groups(n) else None)
        schemes[n] = (sch_n, dict(sch_n.weights.model_dump(mode="json"), _format=_format(sch_n)))
    sch_name = scheme.upper()
    model = _meta_model(src)
    linear = _match(model, schemes[sch_name][0].targets, ignore)
    which = {m: sch_name for m in linear}
    claimed: set[str] = set()
    for target, n in rules:
        hit = [m for m in _match(model, [target], ignore) if m in which and m not in claimed]
        if not hit:
            raise ConfigError(f"convert: --scheme-rule {target}={n}: matches no Linear module still unclaimed "
                              f"outside --ignore {ignore}")
        which.update({m: n for m in hit})
        claimed |= set(hit)
    del model
    tensors: dict[str, np.ndarray] = {}
    for f in checkpoint_files(src):
        t, _ = read_safetensors(f)
        tensors.update(t)
    wargs = {n: schemes[which[n[: -len(".weight")]]][1] for n in tensors
             if n.endswith(".weight") and n[: -len(".weight")] in which}
    quant = sorted(wargs)
    if not quant:
        raise ConfigError(f"convert --scheme {scheme}: no tensor of {src} is a weight of a module the scheme "
                          f"targets ({list(schemes[sch_name][0].targets)}) outside --ignore {ignore}")
    for n in quant:  # the consumer's rules, before anything is written
        try:
            ct_schemes.check_weight(n, tuple(tensors[n].shape), wargs[n])
        except ct_schemes.SchemeError as e:
            cols = {int(tensors[k].shape[-1]) for k in quant if tensors[k].ndim == 2}
            dflt = "" if group_size is not None else (f" ({which[n[: -len('.weight')]]} preset's default; choose one "
                                                      f"with --group-size)")
            raise ct_schemes.SchemeError(f"{e}{dflt}; {_suggest(cols, 0)}") from None
        ct_schemes._dtype_name(tensors[n])
    gscales: dict[str, np.ndarray] = {}
    nv = [n[: -len(".weight")] for n in quant if wargs[n]["strategy"] == "tensor_group"]
    for grp in ct_schemes.fused_groups(nv):  # one global scale per fused group (q/k/v, gate/up)
        g = ct_schemes.global_scale(tensors[m + ".weight"] for m in grp)
        gscales.update({m + ".weight": g for m in grp})
    units = {n: _plan(n, tuple(a.shape), _st_dtype(a.dtype), wargs[n]) if n in quant else [(n, _st_dtype(a.dtype), tuple(a.shape))]
             for n, a in sorted(tensors.items())}
    shards = _shards(units, max_shard_size)
    tmp = _staging(out)
    try:
        weight_map: dict[str, str] = {}
        total = 0
        for i, members in enumerate(shards):
            fname = WEIGHT_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            specs = sorted((e for n in members for e in units[n]), key=lambda e: e[0])
            pending: dict[str, np.ndarray] = {}
            with Writer(tmp / fname, specs, {"format": "pt"}, checksums=True) as w:
                nxt = 0
                for n in members:
                    if n in quant:
                        q = ct_schemes.quantize(tensors[n], wargs[n], gscale=gscales.get(n), name=n)
                        pending.update(_ct_arrays(n, q, tensors[n].dtype.name, wargs[n]["_format"]))
                    else:
                        pending[n] = tensors[n]
                    while nxt < len(specs) and specs[nxt][0] in pending:  # write in header order
                        w.write(specs[nxt][0], pending.pop(specs[nxt][0]))
                        nxt += 1
                    if progress:
                        progress(f"{n}: {'quantized ' + which[n[:-7]] if n in quant else 'copied'}")
                assert not pending and nxt == len(specs), (sorted(pending)[:3], nxt, len(specs))
            weight_map.update({e[0]: fname for e in specs})
            total += sum(_entry_bytes(e) for e in specs)
        if len(shards) > 1:  # the index transformers reads for sharded checkpoints
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / (WEIGHT_FILE + ".index.json")).write_text(json.dumps(index, indent=2) + "\n")
        shutil.copyfile(src / "config.json", tmp / "config.json")
        copied = copy_model_files(src, tmp)
        _write_quantization_config(tmp, schemes, which, ignore, single=not rules)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = [{"name": n, "action": f"quantized ({which[n[:-7]]})" if n in quant else "copied"} for n in sorted(tensors)]
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return {"input": str(src), "output": str(out), "to": "compressed-tensors", "scheme": scheme.upper(),
            "config": json.loads((out / "config.json").read_text())["quantization_config"], "tensors": report,
            "files_copied": copied, "shards": len(shards), "output_bytes": size, "seconds": time.perf_counter() - t0}


def _format(sch: Any) -> str:
    """compressed-tensors' storage format for a Linear quantized with ``sch`` (its own inference)."""
    import torch
    from compressed_tensors.compressors.format import infer_module_format

    return infer_module_format(torch.nn.Linear, sch).value


def _has_groups(name: str) -> bool:
    """Whether a preset's weights have a settable group size (group strategy)."""
    from compressed_tensors.quantization import preset_name_to_scheme

    try:
        w = preset_name_to_scheme(name, ["Linear"]).weights
    except KeyError:
        return True  # let ct_schemes.scheme name the bad preset
    return w is not None and str(getattr(w.strategy, "value", w.strategy)) == "group"


def _write_quantization_config(folder: Path, schemes: dict[str, Any], which: dict[str, str], ignore: list[str],
                               *, single: bool) -> None:
    """config.json's ``quantization_config`` as compressed-tensors writes it (ModelCompressor.
    update_config): one config group targeting ``Linear`` for a single preset, else one group per
    preset targeting its modules by name (format ``mixed-precision``)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.compressors.format import infer_module_format
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus

    groups, formats = {}, set()
    for i, (n, (sch, _)) in enumerate(s for s in schemes.items() if s[0] in set(which.values())):
        fmt = infer_module_format(torch.nn.Linear, sch).value
        upd: dict[str, Any] = {"format": fmt}
        if not single:
            upd["targets"] = sorted(m for m, k in which.items() if k == n)
        groups[f"group_{i}"] = sch.model_copy(update=upd)
        formats.add(fmt)
    fmt = formats.pop() if len(formats) == 1 else "mixed-precision"
    qc = QuantizationConfig(config_groups=groups, format=fmt, ignore=ignore,
                            quantization_status=QuantizationStatus.COMPRESSED)
    ModelCompressor(quantization_config=qc).update_config(str(folder))


# ---- a quantized checkpoint in a wild layout -> a ready folder for that layout's consumer ------------

def _consumer_config(layout: str, config: dict[str, Any], unquantized: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json's quantization_config, extra JSON files) the layout's consumer reads."""
    if layout == "modelopt":  # vLLM / TensorRT-LLM read hf_quant_config.json, transformers config.json
        hq = json.loads(json.dumps(config))
        if unquantized:
            hq.setdefault("quantization", {})["exclude_modules"] = unquantized
        return {"quant_method": "modelopt", **hq.get("quantization", {})}, {"hf_quant_config.json": hq}
    qc = dict(config)
    if layout == "bitsandbytes":  # modules bitsandbytes must leave as plain Linear
        qc["llm_int8_skip_modules"] = unquantized
    elif layout == "gpt-oss":
        qc["modules_to_not_convert"] = sorted(set(qc.get("modules_to_not_convert") or []) | set(unquantized))
    elif layout == "compressed-tensors" and unquantized:
        qc["ignore"] = sorted(set(qc.get("ignore") or []) | set(unquantized))
    return qc, {}


def convert_folder(inp: str | os.PathLike[str], out: str | os.PathLike[str], *, to: str,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``lowbit convert IN OUT_DIR --to LAYOUT`` where IN is a quantized checkpoint (a file, a sharded
    index or a folder; lowbit's layout or a wild one) next to a ``config.json``: the tensors are
    carried into ``LAYOUT`` exactly as :func:`lowbit.formats.layouts.convert_file` carries them, and
    OUT_DIR becomes a ready folder: ``model.safetensors``, config.json with the consumer's
    ``quantization_config`` (plus ModelOpt's hf_quant_config.json), the other model files copied.
    Linear modules left in full precision are named in the config (bitsandbytes'
    ``llm_int8_skip_modules``, gpt-oss' ``modules_to_not_convert``, ModelOpt's ``exclude_modules``)."""
    from . import layouts

    t0 = time.perf_counter()
    inp, out = Path(inp), Path(out)
    src_dir = inp if inp.is_dir() else inp.parent
    base_cfg = json.loads((src_dir / "config.json").read_text()) if (src_dir / "config.json").is_file() else None
    if base_cfg is None:
        raise FormatError(f"convert: {src_dir}: no config.json beside the input, so {out} could not be a model folder "
                          f"(name an output file OUT.safetensors to write the tensors alone)")
    if to not in layouts.LAYOUTS:
        raise ConfigError(f"convert: a model folder output needs --to one of {list(layouts.LAYOUTS)}, got {to!r}")
    src, _, _ = layouts._read_any(inp)
    ready, rows = {}, []
    for name, t in src.items():
        v, word = layouts._for_target(name, t, to)
        ready[name] = v
        rows.append({"name": name, "action": word, "codec": t.codec_id if isinstance(t, QTensor) else None})
    tensors, config = layouts.to_layout(to, ready)
    quantized = {n[: -len(".weight")] for n, t in src.items() if isinstance(t, QTensor) and n.endswith(".weight")}
    try:
        lin = linear_modules(src_dir, _AnyLinear(), [])
    except LowbitError:
        lin = []
    unquantized = [m for m in lin if m not in quantized and f"{m}.weight" in src]
    qc, extra = _consumer_config(to, config, unquantized)
    tmp = _staging(out)
    try:
        layouts.write_safetensors(tmp / WEIGHT_FILE, tensors, {"format": "pt"})
        copy_model_files(src_dir, tmp)
        for fname, obj in extra.items():
            (tmp / fname).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        cfg = dict(base_cfg)
        cfg["quantization_config"] = qc
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        for r in rows:
            progress(f"{r['name']}: {r['action']}")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return {"input": str(inp), "output": str(out), "to": to, "config": qc, "tensors": rows,
            "unquantized_linear": unquantized, "output_bytes": size, "seconds": time.perf_counter() - t0}


class _AnyLinear:
    """A stand-in scheme for :func:`linear_modules`: every Linear module."""

    targets = ("Linear",)
