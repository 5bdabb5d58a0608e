"""Retrieval beyond one machine: the indexed side cut into shards, each built and searched by a Dask
worker, and the shards' top K merged into each query's top K.

Each shard is one task: it reads its rows of the base vectors and all the queries from ``.npy`` files
(memory-mapped, so a worker holds its shard and a chunk of queries, not the whole set), builds its
index of any kind, tunes that index's search depth for the recall target, searches every query and
writes its (Q, K) scores and row numbers beside the inputs. The client merges the shards' answers by
score: with an exact kind (flat) this is exactly one index's answer over all the rows; an approximate
kind searches each shard as deep as its own recall target needs. The workers need the folder at the
same path: one host, or a shared filesystem (``workdir``).

A search of millions against millions takes hours (10^7 x 10^7 about 7 core-hours, benchmarks/scale.py),
so with a ``workdir`` little is lost: the job's folder is named by a fingerprint of its inputs and
settings, each shard's answer is kept as it finishes (written whole or not at all), a shard's built index
and its progress are kept as it goes, and the same call after a crash or a kill searches only what had not
been searched. Other inputs or settings make another folder: nothing kept is ever taken for a job it was
not made for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from avmatch.atomic import atomic_path, write_text
from avmatch.cluster import dask_client
from avmatch.errors import AvmatchError
from avmatch.matching.index import (
    MATCH_RECALL_TARGET,
    SEARCH_ROWS,
    build_index,
    is_compressed,
    resolve_kind,
    sample_rows,
    search,
    tune_search,
)

TUNE_SAMPLE = 500  # queries each shard tunes its search depth on

SAVE_EVERY = 4  # search chunks between marks of progress: a crash loses at most this many (80 s at 10^7)


def search_shard(folder: str, shard: int, lo: int, hi: int, k: int, kind: str, options: dict) -> dict:
    """One task: index base rows ``lo:hi`` of ``folder``/base.npy, search every query of queries.npy,
    and write the (Q, k) scores and (global) row numbers as shard{N}.sims.npy and shard{N}.rows.npy.
    The search depth is tuned on the sample of queries in tune.npz, counting a query only where this
    shard holds its best row over all shards (see :func:`tune_search`'s ``floor``). Returns the shard's
    record: its rows, the depth it tuned and the seconds it spent building, tuning and searching.

    Nothing done is lost to a crash: the built and tuned index is saved (unless flat: rebuilt in no
    time), the answers are written into partial files whose progress is marked every SAVE_EVERY chunks,
    once flushed, and the same task run again goes on from the mark."""
    folder_path = Path(folder)
    base = np.ascontiguousarray(np.load(folder_path / "base.npy", mmap_mode="r")[lo:hi], dtype=np.float32)
    queries = np.load(folder_path / "queries.npy", mmap_mode="r")
    index, record = _shard_index(folder_path, shard, base, queries, k, kind, options)
    full = base if is_compressed(index) else None
    k = min(k, hi - lo)
    part = {name: folder_path / f"shard{shard}.{name}.part.npy" for name in ("sims", "rows")}
    mark = folder_path / f"shard{shard}.part.json"
    sims, rows, progress = _open_parts(part, mark, (len(queries), k))
    clock = time.perf_counter() - progress["search_s"]
    for n, s in enumerate(range(progress["done"], len(queries), SEARCH_ROWS), 1):
        d, i = search(index, np.asarray(queries[s : s + SEARCH_ROWS]), k, full)
        sims[s : s + SEARCH_ROWS], rows[s : s + SEARCH_ROWS] = d, np.where(i >= 0, i + lo, -1)
        if n % SAVE_EVERY == 0 or s + SEARCH_ROWS >= len(queries):
            sims.flush()
            rows.flush()
            write_text(mark, json.dumps({"done": min(s + SEARCH_ROWS, len(queries)),
                                         "search_s": time.perf_counter() - clock}))
    del sims, rows
    record["search_s"] = time.perf_counter() - clock
    for name, path in part.items():
        os.replace(path, folder_path / f"shard{shard}.{name}.npy")
    write_text(folder_path / f"shard{shard}.json", json.dumps(record))  # last: the shard is done
    for path in (mark, folder_path / f"shard{shard}.faiss", folder_path / f"shard{shard}.index.json"):
        path.unlink(missing_ok=True)
    return record


def _shard_index(folder: Path, shard: int, base: np.ndarray, queries: np.ndarray, k: int, kind: str,
                 options: dict) -> tuple[faiss.Index, dict]:
    """The shard's index, built and tuned (and saved, unless flat), or as an earlier run of the task saved
    it; and the shard's record so far (rows, queries, its depth, build and tuning seconds)."""
    saved, about = folder / f"shard{shard}.faiss", folder / f"shard{shard}.index.json"
    try:
        record, index = json.loads(about.read_text()), faiss.read_index(str(saved))
        if index.ntotal == len(base):
            _set_depth(index, {**record, **options})
            return index, record
    except (OSError, ValueError, RuntimeError):  # none saved, or not whole: built again
        pass
    clock = time.perf_counter()
    kind = resolve_kind(kind, len(base))
    index = build_index(base, kind, **options)
    record = {"shard": shard, "rows": len(base), "queries": len(queries), "build_s": time.perf_counter() - clock}
    if not {"nprobe", "ef_search"} & set(options):
        sample = np.load(folder / "tune.npz")
        tuned = tune_search(index, np.asarray(queries[sample["rows"]]), k, MATCH_RECALL_TARGET,
                            full=base if is_compressed(index) else None, floor=sample["floor"])
        record.update(tuned, queries=len(queries), tuned_on=tuned.get("queries", 0))  # sample queries it holds
    record["tune_s"] = time.perf_counter() - clock - record["build_s"]
    if kind != "flat":
        with atomic_path(saved) as tmp:
            faiss.write_index(index, str(tmp))
        write_text(about, json.dumps(record))
    return index, record


def _set_depth(index: faiss.Index, values: dict) -> None:
    """An IVF index's nprobe or an HNSW index's efSearch as ``values`` give it (a read-back index)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and "nprobe" in values:
        ivf.nprobe = int(values["nprobe"])
    if isinstance(index, faiss.IndexHNSW) and "ef_search" in values:
        index.hnsw.efSearch = int(values["ef_search"])


def _open_parts(part: dict, mark: Path, shape: tuple) -> tuple[np.ndarray, np.ndarray, dict]:
    """The partial (Q, k) scores and rows of an earlier run of the task and its progress, or new ones."""
    try:
        progress = json.loads(mark.read_text())
        sims, rows = (np.lib.format.open_memmap(part[name], "r+") for name in ("sims", "rows"))
        if sims.shape == rows.shape == shape and (sims.dtype, rows.dtype) == (np.float32, np.int64):
            return sims, rows, {"done": int(progress["done"]), "search_s": float(progress["search_s"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (np.lib.format.open_memmap(part["sims"], "w+", np.float32, shape),
            np.lib.format.open_memmap(part["rows"], "w+", np.int64, shape), {"done": 0, "search_s": 0.0})


def sharded_top_k(queries: np.ndarray, base: np.ndarray, k: int, kind: str = "auto", *, shards: int = 2,
                  cluster: str = "", workers: int = 2, workdir: str | Path | None = None, **options
                  ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Each query's ``k`` best base rows, as :func:`~avmatch.matching.index.search` gives them
    ((Q, k) scores best first, (Q, k) rows, -1 past the last), from ``shards`` indexes of the base
    rows searched as Dask tasks on ``cluster`` (an address, or "" for a local cluster of ``workers``
    processes). Also returns each shard's record (rows, the search depth it tuned, its seconds; "kept":
    True for a shard an earlier run had finished). ``workdir``: the folder, shared with the workers,
    that keeps the job's files until the answer is merged, so that the same call resumes after a crash
    (see the module); without it a temporary folder."""
    n = len(base)
    if not 1 <= shards <= max(1, n):
        raise AvmatchError(f"--shards {shards}: give 1 to {max(1, n)} (the rows to index)")
    bounds = np.linspace(0, n, shards + 1).astype(int)
    l2 = options.get("metric", "ip") == "l2"
    # as float32 once, for the shards' files and the tuning sample both
    base, queries = (np.ascontiguousarray(x, dtype=np.float32) for x in (base, queries))
    settings = {"k": k, "kind": kind, "shards": shards, "options": options}
    with _job_folder(workdir, base, queries, settings) as folder:
        if not (folder / "job.json").exists():  # the inputs, whole, before the shards read them
            for name, array in (("base", base), ("queries", queries)):
                with atomic_path(folder / f"{name}.npy") as tmp:
                    np.save(tmp, array)
            with atomic_path(folder / "tune.npz") as tmp:
                np.savez(tmp, **_tuning_sample(queries, base, l2))
            write_text(folder / "job.json", json.dumps(settings))
        kept = {}
        for s in range(shards):
            record = _kept(folder, s, len(queries), min(k, int(bounds[s + 1] - bounds[s])))
            if record is not None:
                kept[s] = record
        todo = [s for s in range(shards) if s not in kept]
        if todo:
            with dask_client(cluster, workers) as client:
                futures = [client.submit(search_shard, str(folder), s, int(bounds[s]), int(bounds[s + 1]), k, kind,
                                         options, pure=False) for s in todo]
                kept.update(zip(todo, client.gather(futures), strict=True))
        records = [kept[s] for s in range(shards)]
        sims, rows = _merge(folder, shards, len(queries), min(k, n), l2)
    return sims, rows, records


@contextlib.contextmanager
def _job_folder(workdir: str | Path | None, base: np.ndarray, queries: np.ndarray, settings: dict) -> Iterator[Path]:
    """The job's folder: a temporary one, or in ``workdir`` one named by the SHA-256 of the inputs and
    settings, kept if the job fails (to resume) and removed once it has succeeded."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="avmatch-shards-") as folder:
            yield Path(folder)
        return
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in (base, queries):
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(memoryview(array).cast("B"))
    folder = Path(workdir) / f"avmatch-shards-{digest.hexdigest()[:20]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:  # one run a job: the first to finish would remove the other's files
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AvmatchError("another run is searching these shards now; wait for it, or give it another folder",
                               folder) from None
        yield folder
        shutil.rmtree(folder, ignore_errors=True)


def _kept(folder: Path, shard: int, n_queries: int, k: int) -> dict | None:
    """The record of a shard an earlier run finished, with "kept": True; None where it did not finish,
    or where its answer is not whole (a file missing, unreadable or of another shape): search it again."""
    try:
        record = json.loads((folder / f"shard{shard}.json").read_text())
        shapes = [np.load(folder / f"shard{shard}.{part}.npy", mmap_mode="r").shape for part in ("sims", "rows")]
    except (OSError, ValueError):
        return None
    return {**record, "kept": True} if shapes == [(n_queries, k)] * 2 else None


def _merge(folder: Path, shards: int, n_queries: int, k: int, l2: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` best over the shards' answers in ``folder``."""
    parts = [(np.load(folder / f"shard{s}.sims.npy", mmap_mode="r"), np.load(folder / f"shard{s}.rows.npy", mmap_mode="r"))
             for s in range(shards)]
    sims = np.empty((n_queries, k), np.float32)
    rows = np.empty((n_queries, k), np.int64)
    for s in range(0, n_queries, SEARCH_ROWS):
        d = np.hstack([np.asarray(p[0][s : s + SEARCH_ROWS]) for p in parts])
        i = np.hstack([np.asarray(p[1][s : s + SEARCH_ROWS]) for p in parts])
        key = np.where(i >= 0, d if l2 else -d, np.inf)  # best first; a missing row last
        best = np.argsort(key, axis=1, kind="stable")[:, :k]
        sims[s : s + SEARCH_ROWS] = np.take_along_axis(d, best, 1)
        rows[s : s + SEARCH_ROWS] = np.take_along_axis(i, best, 1)
    return sims, rows


def _tuning_sample(queries: np.ndarray, base: np.ndarray, l2: bool, sample: int = TUNE_SAMPLE) -> dict:
    """The queries each shard tunes its search depth on (a seeded sample) and, for each, the score of
    its best row over the whole base (exact: sample x N products): a shard counts a query only where it
    holds that row. ``queries`` and ``base``: contiguous float32."""
    rows = sample_rows(len(queries), sample)
    scores, _ = faiss.knn(queries[rows], base, 1, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
    return {"rows": rows, "floor": scores[:, 0]}
