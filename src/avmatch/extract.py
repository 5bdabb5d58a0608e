"""``avmatch extract``: media files -> a feature corpus, resumable, in parallel, never dying on one file.

Workers decode and compute features; only this process writes, so the corpus manifest has a single
writer. Each finished file is on disk (array, then manifest line) before the next is recorded, so a
killed run resumes where it stopped: files already done with the same extractor version are skipped.
Files that fail are listed with the reason in ``failed.csv`` beside the manifest.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avmatch.atomic import write_text
from avmatch.corpus import CORPUS_INFO, MANIFEST, append_clip, done_entries
from avmatch.errors import AvmatchError
from avmatch.extractors import get_extractor

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES
DASK_CONNECT_TIMEOUT_S = 20  # Dask retries a refused connection until this runs out


@dataclass
class ExtractSummary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    media_s: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"extracted {self.done} files ({self.media_s:.0f} s of media in {self.seconds:.1f} s), "
                f"skipped {self.skipped} already done, {len(self.failed)} failed")


def find_media(sources: list[str | Path]) -> list[tuple[Path, str]]:
    """Every media file under the sources (files or folders, recursive) with its clip id: the path
    relative to the folder it was found in, without the suffix. Files that would share an id
    (``a.mp4`` and ``a.wav``) keep their suffix in it (``a.mp4``, ``a.wav``), so none is dropped."""
    found: dict[str, list[Path]] = {}
    for src in map(Path, sources):
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            pairs = [(p, p.relative_to(src).with_suffix("").as_posix()) for p in files]
        elif src.is_file():
            pairs = [(src, src.stem)]
        elif src.exists():
            raise AvmatchError("is not a regular file or folder (a pipe, socket or device)", src)
        else:
            raise AvmatchError("no such file or folder", src)
        for path, clip_id in pairs:
            same = found.setdefault(clip_id, [])
            if not any(p.resolve() == path.resolve() for p in same):  # a file given twice is one file
                same.append(path)
    out: dict[str, Path] = {}
    for clip_id, paths in found.items():
        for n, path in enumerate(paths):
            cid = clip_id if len(paths) == 1 else f"{clip_id}{path.suffix}"
            out[cid if cid not in out else f"{cid}#{n}"] = path
    return [(p, cid) for cid, p in sorted(out.items())]


def extract_file(path: str, extractor_name: str, options: dict, paired: bool) -> dict:
    """Features of one file: {"video": array?, "audio": array?, "duration_s": float}. Runs in a worker.

    BLAS runs on one thread here: the matrix products of one file are small, and threads that wait
    for each other cost more CPU than they save (measured: half the CPU time of a batch)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _extract_file(path, extractor_name, options, paired)


def _extract_file(path: str, extractor_name: str, options: dict, paired: bool) -> dict:
    from avmatch.media import probe

    extractor = get_extractor(extractor_name, **options)
    info = probe(path)
    if paired and not (info.has_video and info.has_audio):
        raise AvmatchError("has no audio stream; a training clip needs both" if info.has_video
                           else "has no video stream; a training clip needs both", path)
    if not (info.has_video or info.has_audio):
        raise AvmatchError("has neither a video nor an audio stream", path)
    audio_file = Path(path).suffix.lower() in AUDIO_SUFFIXES
    if audio_file and not info.has_audio:
        raise AvmatchError("has no audio stream (an audio file is read for its sound only)", path)
    out: dict = {"duration_s": info.duration_s or 0.0}
    if info.has_video and not audio_file:
        out["video"] = extractor.video(path)
    if info.has_audio:
        out["audio"] = extractor.audio(path)
    for modality in ("video", "audio"):
        x = out.get(modality)
        if x is not None and (x.ndim != 2 or len(x) == 0):
            raise AvmatchError(f"too short: its {modality} gives no feature rows "
                               f"({info.duration_s or 0:.2f} s, extractor {extractor.name!r})", path)
        if x is not None and not np.isfinite(x).all():
            raise AvmatchError(f"its {modality} features hold NaN or inf (extractor {extractor.name!r})", path)
    return out


def _reason(err: BaseException, path: Path) -> str:
    """One line for failed.csv: the fault without the file name (the row has it)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if not isinstance(err, AvmatchError):  # not a fault avmatch knows: say what broke
        text = f"unexpected {type(err).__name__}: {text}" if lines else f"unexpected {text}"
    return text.removeprefix(f"{path}: ")


def extract(sources: list[str | Path], out: str | Path, extractor_name: str = "default", *,
            options: dict | None = None, workers: int = 1, paired: bool = False,
            progress: bool = True, cluster: str | None = None) -> ExtractSummary:
    """Extract features of every media file under ``sources`` into the corpus folder ``out``.

    ``workers`` > 1 decodes in that many local processes; ``cluster`` runs every file as a task on a
    Dask cluster (an address, or "" for a local cluster of ``workers`` processes). Only this process
    writes the corpus, whichever way the features are computed."""
    out = Path(out)
    options = options or {}
    extractor = get_extractor(extractor_name, **options)
    files = find_media(sources)
    if not files:
        raise AvmatchError("no media files found (looked for " + ", ".join(sorted(MEDIA_SUFFIXES)) + ")",
                           ", ".join(map(str, sources)))
    _claim_corpus(out, extractor.describe())
    done = done_entries(out) if (out / MANIFEST).exists() else {}
    summary = ExtractSummary()
    todo = []
    for path, clip_id in files:
        row = done.get(str(path))
        if row and (row.get("extractor"), row.get("extractor_version")) == (extractor.name, extractor.version):
            summary.skipped += 1
        else:
            todo.append((path, clip_id))
    started = time.perf_counter()
    bar = tqdm(total=len(files), initial=summary.skipped, desc=f"extract ({extractor.name})", unit="file",
               disable=not progress, dynamic_ncols=True)

    def record(path: Path, clip_id: str, result: dict | None, err: BaseException | None) -> None:
        if err is not None:
            summary.failed.append((str(path), _reason(err, path)))
        else:
            features = {m: result[m] for m in ("video", "audio") if m in result}
            append_clip(out, clip_id, features, rates_hz={"video": extractor.video_rate_hz,
                                                          "audio": extractor.audio_rate_hz},
                        source=str(path), extractor=extractor.name, extractor_version=extractor.version)
            summary.done += 1
            summary.media_s += result["duration_s"]
        bar.update(1)
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(files_s=f"{summary.done / elapsed:.1f}", media_s_per_s=f"{summary.media_s / elapsed:.1f}",
                        failed=len(summary.failed))

    out.mkdir(parents=True, exist_ok=True)
    try:
        for path, clip_id, result, err in _results(todo, (extractor_name, options, paired), workers, cluster):
            record(path, clip_id, result, err)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
        _write_failed(out / "failed.csv", summary.failed)
    if len(files) == 1 and summary.failed and all(Path(s).is_file() for s in sources):
        raise AvmatchError(*reversed(summary.failed[0]))  # one file asked for: its fault is the command's
    return summary


def _results(todo: list[tuple[Path, str]], args: tuple, workers: int, cluster: str | None) -> Iterator[tuple]:
    """(path, clip id, features or None, error or None) for every file, in order of completion:
    in this process, in a local process pool, or as tasks on a Dask cluster."""
    if cluster is not None:
        yield from _dask_results(todo, args, workers, cluster)
    elif workers <= 1:
        for path, clip_id in todo:
            try:
                yield path, clip_id, extract_file(str(path), *args), None
            except Exception as err:  # one bad file must not end the batch
                yield path, clip_id, None, err
    else:
        # forkserver, not fork: a forked child of a process whose torch threads already ran deadlocks
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            futures = {pool.submit(extract_file, str(p), *args): (p, cid) for p, cid in todo}
            for fut in as_completed(futures):
                err = fut.exception()
                yield *futures[fut], None if err else fut.result(), err


def _dask_results(todo: list[tuple[Path, str]], args: tuple, workers: int, address: str) -> Iterator[tuple]:
    """Files as Dask tasks: on the scheduler at ``address``, or on a local cluster of ``workers``
    processes when the address is empty. Workers need avmatch installed and the files at the same paths."""
    try:
        import dask.distributed as dd
    except ImportError:
        raise AvmatchError("--cluster needs Dask: pip install 'avmatch[cluster]'") from None
    with contextlib.ExitStack() as stack:
        if address:
            try:
                client = stack.enter_context(dd.Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s"))
            except (OSError, TimeoutError) as err:
                raise AvmatchError(f"cannot reach the Dask scheduler: {str(err).splitlines()[0]}", address) from None
        else:
            cluster = stack.enter_context(dd.LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                                          processes=True, dashboard_address=None,
                                                          silence_logs=logging.ERROR))
            client = stack.enter_context(dd.Client(cluster))
        futures = {client.submit(extract_file, str(p), *args, pure=False): (p, cid) for p, cid in todo}
        for fut in dd.as_completed(list(futures)):
            err = fut.exception() if fut.status == "error" else None
            yield *futures[fut], None if err else fut.result(), err


def _claim_corpus(out: Path, extractor: dict) -> None:
    """Record the extractor in ``corpus.json``; refuse to mix features of another extractor into a corpus."""
    info = out / CORPUS_INFO
    if info.is_file():
        try:
            had = json.loads(info.read_text())["extractor"]
        except (ValueError, KeyError, TypeError):
            had = None
        if had is not None and (had.get("name"), had.get("params")) != (extractor["name"], extractor["params"]):
            raise AvmatchError(f"corpus was made with extractor {had.get('name')!r} {had.get('params')}; "
                               f"extract with {extractor['name']!r} {extractor['params']} into another folder", out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(info, json.dumps({"extractor": extractor}, indent=2, default=str))
    for stale in out.glob("arrays/.*.tmp*"):  # left by a writer that was killed mid-file
        stale.unlink(missing_ok=True)


def _write_failed(path: Path, failed: list[tuple[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "reason"])
    writer.writerows(sorted(failed))
    write_text(path, buf.getvalue())


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


def is_media_source(path: str | Path) -> bool:
    """True for a media file, or a folder that holds media files and is not a feature corpus."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in MEDIA_SUFFIXES
    if not path.is_dir() or (path / MANIFEST).exists() or any(path.glob("*/*feat.npy")) \
            or (path / "vfeat").is_dir():
        return False
    return any(p.suffix.lower() in MEDIA_SUFFIXES for p in path.rglob("*") if p.is_file())


def cache_dir(path: str | Path, extractor: dict) -> Path:
    """Where the features of a media folder are cached for a given extractor and its settings."""
    root = Path(os.environ.get("AVMATCH_CACHE", Path.home() / ".cache" / "avmatch"))
    key = json.dumps([str(Path(path).resolve()), extractor], sort_keys=True, default=str)
    return root / "features" / f"{Path(path).name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def open_features(path: str | Path, extractor: dict, workers: int = 1, progress: bool = True):
    """A feature corpus at ``path``, or the features of the media at ``path`` extracted (and cached)
    with the given extractor (as recorded in a trained run)."""
    from avmatch.corpus import load_corpus

    if not is_media_source(path):
        return load_corpus(path)
    out = cache_dir(path, extractor)
    summary = extract([path], out, extractor.get("name", "default"), options=extractor.get("params", {}),
                      workers=workers, progress=progress)
    if summary.failed and progress:
        print(f"avmatch: {len(summary.failed)} file(s) under {path} failed; see {out / 'failed.csv'}")
    return load_corpus(out)
