"""Sharded, resumable conversion of whole checkpoints: one task per output shard, on local
processes or a Dask cluster.

``lowbit quantize`` and ``lowbit convert`` plan a job as they always do (per-tensor decisions,
output entries, metadata: :func:`lowbit.tools.quantize.prepare`), and this module writes it as
shards:

* a sharded safetensors folder — ``model-00001-of-0000N.safetensors`` ... with
  ``model.safetensors.index.json`` (transformers' names and index format), each shard a complete
  lowbit safetensors file (its own layout index and SHA-256 digests) — or a split GGUF,
  ``PREFIX-00001-of-0000N.gguf`` with llama-gguf-split's ``split.*`` keys, byte for byte what the
  one-process writer (:class:`lowbit.formats.gguf_split.Writer`) writes;
* each shard is one task: it reads only the bytes of its own tensors from whichever input shards
  hold them (memory-mapped partial reads, pages dropped after each tensor), encodes them with the
  same per-tensor code as the one-process path, and writes the shard to an unnamed temporary file
  that gets its name only when complete (O_TMPFILE + rename), so a killed worker leaves nothing;
* the driver records every finished shard with its SHA-256 and size in a manifest
  (``lowbit-manifest.json`` in the folder, ``PREFIX.lowbit-manifest.json`` beside GGUF splits),
  rewritten atomically after each shard. A rerun of the same job verifies the recorded shards
  (their digests, on the workers) and writes only the others; a manifest of a different job (other
  input headers, options or shard plan) is refused. The safetensors index is written last, so
  a folder with an index is complete;
* the output depends on the job alone: no times, hosts or worker counts are written anywhere, the
  manifest's entries are sorted, so the bytes are the same for any scheduler, worker count or
  resume history.

Schedulers: ``jobs=1`` runs the shards in this process; ``jobs=N`` in N local processes (a pool
restarted if a process dies); ``dask="local:N"`` starts a ``distributed.LocalCluster`` of N worker
processes, ``dask="tcp://host:8786"`` connects to a running scheduler (its workers need lowbit
installed and the input and output paths on a shared filesystem), ``dask=client`` uses a
``distributed.Client``. Dask reschedules the task of a worker that died; a task that raises stops
the job (the shards finished so far stay recorded). Dask is imported only here, only when asked for.

>>> import os, tempfile, numpy as np, lowbit
>>> from lowbit.tools.quantize import quantize_file
>>> d = tempfile.mkdtemp(); src = os.path.join(d, "f.safetensors")
>>> lowbit.save(src, {f"l{i}.weight": np.ones((4, 64), np.float32) for i in range(3)})
>>> r = quantize_file(src, os.path.join(d, "q") + "/", codec=lowbit.get_codec("q8_0"), max_shard_size=600,
...                   progress=False)
>>> sorted(os.listdir(os.path.join(d, "q")))
['lowbit-manifest.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']
>>> r["sharded"]["written"], quantize_file(src, os.path.join(d, "q") + "/", codec=lowbit.get_codec("q8_0"),
...     max_shard_size=600, progress=False)["sharded"]["skipped"]
(2, 2)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lowbit.errors import ConfigError, FormatError, LowbitError
from lowbit.tools.progress import Progress

__all__ = ["Unit", "Shard", "Job", "Task", "run", "run_task", "quantize_job", "is_folder_output", "parse_dask",
           "MANIFEST", "INDEX", "DEFAULT_SHARD_SIZE", "read_manifest"]

MANIFEST = "lowbit-manifest.json"
INDEX = "model.safetensors.index.json"
DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' save_pretrained default
_FORMAT = 1
Entry = tuple[str, str, tuple[int, ...]]


@dataclass(frozen=True)
class Unit:
    """One source tensor's output: its entries (name, dtype or ggml type, shape) and the
    module-level function that produces their arrays, ``fn(*args) -> [(entry name, array)]``."""

    name: str
    entries: tuple[Entry, ...]
    fn: Callable[..., list[tuple[str, Any]]]
    args: tuple[Any, ...]
    nbytes: int
    # how many trailing args leave the bytes unchanged (a memory bound): outside the job id, so a
    # resumed run may change them
    free_args: int = 0


@dataclass(frozen=True)
class Shard:
    """One output file: which units (indices into :attr:`Job.units`) and its metadata."""

    file: str
    units: tuple[int, ...]
    metadata: dict[str, Any]
    metadata_types: dict[str, Any] | None = None  # GGUF value types


@dataclass
class Job:
    """A planned sharded output. ``signature`` identifies the input (file names, sizes, header
    digests); with the units and shards it makes :meth:`fingerprint`, the manifest's job id."""

    label: str
    folder: Path
    manifest: str
    gguf: bool
    source: Any
    units: list[Unit]
    shards: list[Shard]
    index_file: str | None
    signature: list[Any] = field(default_factory=list)
    output: str = ""

    def fingerprint(self) -> str:
        def clean(a: Any) -> Any:
            return "<source>" if a == self.source else a

        doc = {
            "label": self.label, "gguf": self.gguf, "input": self.signature, "index": self.index_file,
            "units": [[u.name, [list(e) for e in u.entries], f"{u.fn.__module__}.{u.fn.__qualname__}",
                       [clean(a) for a in u.args[:len(u.args) - u.free_args]]] for u in self.units],
            "shards": [[s.file, list(s.units), s.metadata, s.metadata_types] for s in self.shards],
        }
        blob = json.dumps(doc, sort_keys=True, default=_plain).encode()
        return hashlib.sha256(blob).hexdigest()


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, set)):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return repr(v)


# ---- planning ------------------------------------------------------------------------------------------

def is_folder_output(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` names an output folder: it ends with ``/`` or is an existing folder."""
    s = os.fspath(out)
    return s.endswith(("/", os.sep)) or os.path.isdir(s)


def _entry_bytes(e: Entry, gguf: bool) -> int:
    from lowbit.formats import gguf as G
    from lowbit.formats import safetensors as st

    if gguf:
        _, bs, ts = G.BLOCK[G._TYPE_ID[e[1]]]
        return int(np.prod(e[2] or (1,), dtype=np.int64)) // bs * ts
    return st._nbytes(e[1], e[2], e[0])


def group_units(units: list[Unit], limit: int) -> list[list[int]]:
    """Consecutive units in shards of at most ``limit`` bytes (a larger unit alone), in order."""
    if limit <= 0:
        raise ConfigError(f"--max-shard-size: expected a positive size, got {limit}")
    out: list[list[int]] = [[]]
    size = 0
    for i, u in enumerate(units):
        if out[-1] and size + u.nbytes > limit:
            out.append([])
            size = 0
        out[-1].append(i)
        size += u.nbytes
    return out if out[0] else []


def safetensors_shards(units: list[Unit], groups: list[list[int]], metadata: dict[str, str],
                       index: dict[str, Any], *, first_only: tuple[str, ...] = ()) -> list[Shard]:
    """Shards ``model-0000i-of-0000N.safetensors``: each with ``metadata`` (the keys in
    ``first_only`` on the first shard alone) and lowbit's layout index of its own tensors."""
    from lowbit.formats import safetensors as st

    n = len(groups)
    shards = []
    for i, g in enumerate(groups):
        meta = {k: v for k, v in metadata.items() if i == 0 or k not in first_only}
        names = [units[j].name for j in g]
        meta[st.METADATA_KEY] = json.dumps({"format": 1, "tensors": {k: index[k] for k in names if k in index}},
                                           sort_keys=True)
        shards.append(Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", tuple(g), meta))
    return shards


def gguf_shards(out: Path, units: list[Unit], per_unit: list[int] | None, metadata: dict[str, Any],
                types: dict[str, Any], order: str) -> list[Shard]:
    """The files of a GGUF output: ``out`` itself (``per_unit`` None), or llama-gguf-split's
    shards, each with :func:`lowbit.formats.gguf_split.shard_metadata`."""
    from lowbit.formats import gguf_split

    if per_unit is None:
        return [Shard(out.name, tuple(range(len(units))), dict(metadata), dict(types))]
    count = max(per_unit) + 1
    n_tensors = sum(len(u.entries) for u in units)
    prefix = str(out)[: -len(".gguf")] if str(out).lower().endswith(".gguf") else str(out)
    shards = []
    for i in range(count):
        meta, mtypes = gguf_split.shard_metadata(i, count, n_tensors, metadata, types, order=order)
        shards.append(Shard(gguf_split.split_path(prefix, i, count).name,
                            tuple(j for j, s in enumerate(per_unit) if s == i), meta, mtypes))
    return shards


def input_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of an input: the shards its index names (or a folder's), a split GGUF's splits."""
    from lowbit.formats import gguf_split
    from lowbit.formats.sharded import index_path

    p = Path(path)
    if p.is_dir() or p.name.endswith(".index.json"):
        idx = index_path(p)
        folder = p if p.is_dir() else p.parent
        if idx is not None:
            wm = json.loads(idx.read_text()).get("weight_map", {})
            return [folder / f for f in sorted(set(wm.values()))]
        return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.gguf"))
    parsed = gguf_split.parse_split_path(p)
    if parsed is not None and parsed[2] > 1:
        return [gguf_split.split_path(parsed[0], i, parsed[2]) for i in range(parsed[2])]
    return [p]


def input_signature(path: str | os.PathLike[str]) -> list[Any]:
    """(file name, size, SHA-256 of its header) of each input file: what a manifest's job id
    knows of the input (contents behind an unchanged header are not hashed)."""
    import struct

    out = []
    for f in input_files(path):
        with open(f, "rb") as fh:
            head = fh.read(8)
            if head[:4] == b"GGUF":
                from lowbit.formats import gguf as G

                with G.read(f) as g:
                    n = g.data_offset
            else:
                n = 8 + (struct.unpack("<Q", head)[0] if len(head) == 8 else 0)
            fh.seek(0)
            blob = fh.read(min(n, 1 << 30))
        out.append([f.name, f.stat().st_size, hashlib.sha256(blob).hexdigest()])
    return out


def quantize_job(prep: Any, *, max_shard_size: int | None = None, folder: bool = True) -> Job:
    """The sharded job of a planned quantization (:func:`lowbit.tools.quantize.prepare`): a GGUF
    (split or not), a sharded safetensors folder, or (``folder=False``) one safetensors file."""
    from lowbit.tools.quantize import GGUF_METADATA_KEY, _produce

    units, k = [], 0
    for d, w in zip(prep.decisions, prep.work):
        n = len(d.entries)
        units.append(Unit(d.name, tuple(prep.specs[k:k + n]), _produce, tuple(w), d.out_bytes, free_args=1))
        k += n
    out = Path(prep.out)
    if prep.out_gguf:
        shards = gguf_shards(out, units, prep.shards, prep.gmeta, prep.gtypes, prep.order)
        stem = out.name[:-5] if out.name.lower().endswith(".gguf") else out.name
        return Job("quantize", out.parent, f"{stem}.lowbit-manifest.json", True, prep.source, units, shards, None,
                   input_signature(prep.inp), output=str(out))
    if not folder:  # one .safetensors file, one task
        shard = Shard(out.name, tuple(range(len(units))), prep.st_metadata())
        return Job("quantize", out.parent, f"{out.stem}.lowbit-manifest.json", False, prep.source, units, [shard],
                   None, input_signature(prep.inp), output=str(out))
    groups = group_units(units, DEFAULT_SHARD_SIZE if max_shard_size is None else max_shard_size)
    shards = safetensors_shards(units, groups, prep.st_meta, prep.index, first_only=(GGUF_METADATA_KEY,))
    return Job("quantize", out, MANIFEST, False, prep.source, units, shards, INDEX, input_signature(prep.inp),
               output=str(out))


# ---- a task: one shard --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """What a worker needs to write one shard (pickled to it)."""

    no: int
    path: str
    gguf: bool
    source: Any
    units: tuple[Unit, ...]
    metadata: dict[str, Any]
    metadata_types: dict[str, Any] | None
    expect: dict[str, Any] | None = None  # the manifest's record: verify it and skip the shard
    hook: Callable[[int], None] | None = None  # called first, with the shard number (fault-injection tests)
    events: str | None = None  # a Dask topic for per-tensor progress


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def run_task(task: Task) -> dict[str, Any]:
    """Write one shard (or find it already written, as the manifest says); returns its record."""
    from lowbit.formats import gguf as G
    from lowbit.formats import safetensors as st
    from lowbit.formats.sharded import release_pages
    from lowbit.tools.quantize import _source

    name = os.path.basename(task.path)
    t0 = time.perf_counter()
    _fresh(task)
    if task.expect is not None and os.path.isfile(task.path):
        if os.path.getsize(task.path) == task.expect.get("bytes") and sha256_file(task.path) == task.expect.get("sha256"):
            return {"no": task.no, "file": name, "sha256": task.expect["sha256"], "bytes": task.expect["bytes"],
                    "skipped": True, "seconds": time.perf_counter() - t0}
    if task.hook is not None:
        task.hook(task.no)
    specs = [e for u in task.units for e in u.entries]
    if task.gguf:
        writer: Any = G.Writer(task.path, specs, task.metadata, task.metadata_types)
    else:
        writer = st.Writer(task.path, specs, task.metadata, checksums=True)
    log = _event_logger(task.events)
    with writer as w:
        for u in task.units:
            for n, a in u.fn(*u.args):
                w.write(n, a)
            release_pages(_source(task.source), u.name)
            if log is not None:
                log((task.no, u.nbytes))
    return {"no": task.no, "file": name, "sha256": sha256_file(task.path), "bytes": os.path.getsize(task.path),
            "skipped": False, "seconds": time.perf_counter() - t0}


_SEEN: dict[Any, Any] = {}  # per worker process: the identity of the files behind each cached open input


def _identity(path: str | os.PathLike[str]) -> list[tuple[str, int, int, int]]:
    out = []
    for f in input_files(path):
        st = os.stat(f)
        out.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return out


def _fresh(task: Task) -> None:
    """A long-lived worker keeps inputs open between tasks and jobs (lowbit.tools.quantize's
    caches): an input whose files changed since it was opened (replaced, rewritten), or that was
    opened before this check first saw it, is opened again, so no task reads a stale map."""
    from lowbit.tools import quantize

    keys: list[tuple[Any, Any, str]] = [(quantize._OPEN, task.source,
                                         task.source[0] if isinstance(task.source, tuple) else task.source)]
    for u in task.units:
        ik = u.args[3] if u.fn is quantize._produce and len(u.args) > 3 else None
        if ik:
            keys.append((quantize._IMATRIX, ik, ik[0]))
    for cache, key, path in keys:
        try:
            ident = _identity(path)
        except OSError:
            continue  # missing: opening it says so
        if _SEEN.get((id(cache), key)) != ident:
            old = cache.pop(key, None)
            if hasattr(old, "close"):
                with contextlib.suppress(Exception):
                    old.close()
            _SEEN[(id(cache), key)] = ident


def _event_logger(topic: str | None) -> Callable[[Any], None] | None:
    if topic is None:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return lambda msg: worker.log_event(topic, msg)


# ---- the manifest -------------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: unreadable manifest ({e}); remove it to start the job afresh") from None
    if not isinstance(doc, dict) or doc.get("lowbit_manifest") != _FORMAT or not isinstance(doc.get("files"), dict):
        raise FormatError(f"{p}: not a lowbit manifest (format {_FORMAT}); remove it to start the job afresh")
    return doc


def _write_json(path: Path, doc: Any) -> None:
    """Atomically: a temporary name in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _folder_lock(folder: Path, what: str) -> Iterator[None]:
    """An exclusive flock on the output folder itself (no lock file left behind): two runs of a
    job into one folder do not interleave."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{what}: another run is writing into {folder}") from None
        yield
    finally:
        os.close(fd)


# ---- schedulers ---------------------------------------------------------------------------------------

def parse_dask(spec: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); anything else is a scheduler address."""
    if spec.startswith("local"):
        _, sep, n = spec.partition(":")
        if not sep or not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--dask {spec}: expected local:N with N >= 1 worker processes, or a scheduler "
                              "address (tcp://host:8786)")
        return "local", int(n)
    if not spec.strip():
        raise ConfigError("--dask: expected local:N or a scheduler address")
    return "address", spec


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise LowbitError(f"--dask needs dask.distributed ({e}); pip install 'lowbit[dask]'") from None
    return distributed


@contextlib.contextmanager
def _client(dask: Any) -> Iterator[Any]:
    distributed = _import_distributed()
    if isinstance(dask, distributed.Client):
        yield dask
        return
    kind, arg = parse_dask(str(dask))
    if kind == "local":
        import logging

        cluster = distributed.LocalCluster(n_workers=int(arg), threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with distributed.Client(cluster) as c:
                yield c
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(arg, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise LowbitError(f"--dask {arg}: cannot reach a Dask scheduler there ({e})") from None
    with client:
        yield client


class _ShardFailed(Exception):
    def __init__(self, no: int, error: BaseException) -> None:
        super().__init__(no, error)
        self.no, self.error = no, error


def _serial(tasks: list[Task]) -> Iterator[dict[str, Any]]:
    for t in tasks:
        try:
            r = run_task(t)
        except Exception as e:
            raise _ShardFailed(t.no, e) from e
        yield r


def _pool(tasks: list[Task], jobs: int, restarts: int = 3) -> Iterator[dict[str, Any]]:
    """A local process pool; if a process dies (the pool breaks) the unfinished shards go to a
    new pool, at most ``restarts`` times."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    todo = list(tasks)
    for attempt in range(restarts + 1):
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)))
        futs = {pool.submit(run_task, t): t for t in todo}
        broken = False
        try:
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        r = f.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    except Exception as e:
                        raise _ShardFailed(futs[f].no, e) from e
                    todo.remove(futs[f])
                    yield r
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if not broken or not todo:
            return
        if attempt == restarts:
            raise LowbitError(f"a worker process died {restarts + 1} times; {len(todo)} shard(s) unfinished")


def _dask(tasks: list[Task], client: Any, on_event: Callable[[Any], None] | None) -> Iterator[dict[str, Any]]:
    distributed = _import_distributed()
    import uuid

    run_id = uuid.uuid4().hex[:8]
    topic = f"lowbit-progress-{run_id}"
    if on_event is not None:
        client.subscribe_topic(topic, lambda ev: on_event(ev[1]))
        tasks = [dataclasses.replace(t, events=topic) for t in tasks]
    futs = {client.submit(run_task, t, key=f"lowbit-shard-{t.no:05d}-{run_id}", pure=False): t.no for t in tasks}
    try:
        for f in distributed.as_completed(list(futs)):
            try:
                yield f.result()
            except Exception as e:
                raise _ShardFailed(futs[f], e) from e
    finally:
        client.cancel([f for f in futs if not f.done()])
        if on_event is not None:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)


# ---- the driver ---------------------------------------------------------------------------------------

def run(job: Job, *, jobs: int | None = None, dask: Any = None, progress: bool = True,
        hook: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write ``job``'s shards that the manifest does not record as finished (and verified), then
    the index and the completed manifest. Returns what was written, skipped and redone."""
    t0 = time.perf_counter()
    what = job.label
    if not job.shards:
        raise ConfigError(f"{what}: the input has no tensors")
    folder = job.folder
    created = not folder.exists()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what}: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    mpath = folder / job.manifest
    fp = job.fingerprint()
    files = [s.file for s in job.shards]
    recorded: dict[str, Any] = {}
    ours = False
    try:
        with _folder_lock(folder, what):
            man = read_manifest(mpath)
            if man is not None and man.get("job") != fp:
                raise ConfigError(f"{what}: {folder} holds the output of another job (manifest {mpath.name}: job "
                                  f"{str(man.get('job'))[:12]}, this job {fp[:12]}: the input, the options or the "
                                  "shard plan differ); remove it or choose another output")
            if man is None:
                clash = [f for f in files + ([job.index_file] if job.index_file else []) if (folder / f).exists()]
                if job.index_file is not None and not clash:
                    clash = [f.name for f in folder.iterdir() if not f.name.startswith(".")]
                if clash:
                    raise ConfigError(f"{what}: {folder} already holds {', '.join(sorted(clash)[:3])} and no manifest "
                                      "of this job; choose a new output (or remove them)")
                man = {"lowbit_manifest": _FORMAT, "job": fp, "label": what, "shards": len(files), "files": {},
                       "complete": False}
            ours = True
            recorded = {k: v for k, v in man["files"].items() if k in files}
            if job.index_file is not None and man.get("complete") and not (folder / job.index_file).is_file():
                man["complete"] = False
            man["files"] = dict(recorded)
            tasks = [Task(i, str(folder / s.file), job.gguf, job.source, tuple(job.units[j] for j in s.units),
                          s.metadata, s.metadata_types, recorded.get(s.file), hook)
                     for i, s in enumerate(job.shards)]
            res = _execute(job, tasks, man, mpath, jobs=jobs, dask=dask, progress=progress)
            if job.index_file is not None:
                _write_json(folder / job.index_file, _index(job))
            man["complete"] = True
            _write_json(mpath, man)
    except BaseException:
        if not recorded and (not ours or not _any_recorded(mpath)):  # nothing of this job on disk: leave nothing
            if ours:
                mpath.unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    res.update({"folder": str(folder), "manifest": str(mpath), "shards": len(files), "job": fp,
                "files": files, "seconds": time.perf_counter() - t0,
                "output": str(folder) if job.index_file is not None else str(folder / files[0]) if len(files) == 1
                else [str(folder / f) for f in files]})
    return res


def _any_recorded(mpath: Path) -> bool:
    try:
        man = read_manifest(mpath)
    except FormatError:
        return True
    return bool(man and man["files"])


def _index(job: Job) -> dict[str, Any]:
    """transformers' index: every stored tensor's shard, and the bytes of all of them."""
    weight_map, total = {}, 0
    for s in job.shards:
        for j in s.units:
            for e in job.units[j].entries:
                weight_map[e[0]] = s.file
                total += _entry_bytes(e, job.gguf)
    return {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}


def _cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _execute(job: Job, tasks: list[Task], man: dict[str, Any], mpath: Path, *, jobs: int | None, dask: Any,
             progress: bool) -> dict[str, Any]:
    total = sum(u.nbytes for u in job.units)
    sizes = [sum(u.nbytes for u in t.units) for t in tasks]
    written = skipped = redone = 0
    lock = threading.Lock()
    shown = [0] * len(tasks)  # bytes shown per shard (events and completions, never past its size)
    with Progress(total, job.label, enabled=progress) as bar:
        def show(no: int, n: int, note: str = "") -> None:
            with lock:
                add = max(min(n, sizes[no] - shown[no]), 0)
                shown[no] += add
                bar.update(add, note)

        def event(msg: Any) -> None:
            no, n = msg
            show(int(no), int(n))

        if dask is not None:
            ctx: Any = _client(dask)
        else:
            ctx = contextlib.nullcontext(None)
        with ctx as client:
            if client is not None:
                results = _dask(tasks, client, event if progress else None)
            elif (jobs or _cpus()) > 1 and len(tasks) > 1:
                results = _pool(tasks, jobs or _cpus())
            else:
                results = _serial(tasks)
            try:
                for r in results:
                    t = tasks[r["no"]]
                    if r["skipped"]:
                        skipped += 1
                    else:
                        written += 1
                        redone += t.expect is not None
                    man["files"][r["file"]] = {"sha256": r["sha256"], "bytes": r["bytes"]}
                    man["files"] = dict(sorted(man["files"].items()))
                    _write_json(mpath, man)
                    show(r["no"], sizes[r["no"]], r["file"])
            except _ShardFailed as f:
                e, done = f.error, len(man["files"])
                why = str(e) if isinstance(e, LowbitError) else f"{type(e).__name__}: {e}"
                more = (f"; {done} of {len(tasks)} shards are finished and recorded in {mpath}: run the same "
                        "command again to write the rest") if done else ""
                raise LowbitError(f"{job.label}: shard {job.shards[f.no].file}: {why}{more}") from e
    return {"written": written, "skipped": skipped, "redone": redone}
