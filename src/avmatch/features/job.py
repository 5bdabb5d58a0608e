"""``avmatch extract``: media files -> a feature corpus, resumable, in parallel, never dying on one file.

Workers decode and compute features; only this process writes, so the corpus manifest has a single
writer. Each finished file is on disk (array, then manifest line) before the next is recorded, so a
killed run resumes where it stopped.

A clip's identity is its source file's content, not its path string: every manifest row records the
file's resolved path and its identity (size, mtime, a fast content hash; ``corpus.source_identity``),
and every reuse checks it. A rerun skips files unchanged since they were extracted with the same
extractor version, re-extracts changed ones (their old rows superseded), takes over the features of
a file that was moved, renamed or copied without decoding it again, and refuses a file that would
give a clip id already held by a different file that still exists (one line naming both). Files
that fail are listed with the reason in ``failed.csv`` beside the manifest; earlier failures of
files this run did not try stay listed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avmatch.atomic import remove_stale_temps_in, write_text
from avmatch.cluster import dask_client
from avmatch.corpus import (
    ARRAYS,
    CORPUS_INFO,
    MANIFEST,
    append_clip,
    done_clips,
    retire_clips,
    reuse_clip,
    same_content,
    source_identity,
    visible,
)
from avmatch.errors import AvmatchError
from avmatch.features import get_extractor
from avmatch.features.record import ExtractorRecord
from avmatch.progress import bar as progress_bar

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"}
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES


@dataclass
class ExtractSummary:
    done: int = 0
    skipped: int = 0  # unchanged since they were extracted
    reused: int = 0  # moved, renamed or copied files whose features were already in the corpus
    changed: list[str] = field(default_factory=list)  # re-extracted: changed since the corpus saw them
    unverified: list[str] = field(default_factory=list)  # re-extracted: recorded by an older avmatch, no identity
    retired: dict[str, str] = field(default_factory=dict)  # clip id -> why it left the corpus
    gone: list[str] = field(default_factory=list)  # clips whose file no longer exists (kept)
    failed: list[tuple[str, str]] = field(default_factory=list)
    clips: dict[str, str] = field(default_factory=dict)  # clip id -> source, every file of this run now in the corpus
    media_s: float = 0.0
    seconds: float = 0.0

    def line(self) -> str:
        extra = [f"reused {self.reused} moved or renamed"] if self.reused else []
        if self.changed:
            extra.append(f"re-extracted {len(self.changed)} changed since the corpus saw them")
        if self.unverified:
            extra.append(f"re-extracted {len(self.unverified)} recorded without a content identity (older avmatch)")
        if self.retired:
            extra.append(f"dropped {len(self.retired)} stale clips")
        if self.gone:
            extra.append(f"{len(self.gone)} clips' files are gone (kept)")
        return (f"extracted {self.done} files ({self.media_s:.0f} s of media in {self.seconds:.1f} s), "
                f"skipped {self.skipped} already done, {len(self.failed)} failed"
                + "".join(f"; {e}" for e in extra))


def find_media(sources: list[str | Path]) -> list[tuple[Path, str]]:
    """Every media file under the sources (files or folders, recursive) as (resolved path, clip id).
    The clip id is the path relative to the folder it was found in, without the suffix, in the
    :func:`corpus.visible` form (bytes of a name that are not UTF-8 shown as ``\\xNN``). Files that
    would share an id (``a.mp4`` and ``a.wav``) keep their suffix in it (``a.mp4``, ``a.wav``), so
    none is dropped; a file reached twice (a folder given twice or spelled two ways, a link) is one."""
    found: dict[str, list[tuple[Path, Path]]] = {}
    seen: set[Path] = set()
    for src in map(Path, sources):
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
            pairs = [(p, p.relative_to(src).with_suffix("").as_posix()) for p in files]
        elif src.is_file():
            pairs = [(src, src.stem)]
        elif src.exists():
            raise AvmatchError("is not a regular file or folder (a pipe, socket or device)", visible(str(src)))
        else:
            raise AvmatchError("no such file or folder", visible(str(src)))
        for path, clip_id in pairs:
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                found.setdefault(visible(clip_id), []).append((real, path))
    out: dict[str, Path] = {}
    for clip_id, paths in found.items():
        for n, (real, path) in enumerate(paths):
            cid = clip_id if len(paths) == 1 else f"{clip_id}{visible(path.suffix)}"
            out[cid if cid not in out else f"{cid}#{n}"] = real
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
    info = probe(path)  # first: it refuses pipes, devices and folders before anything reads them
    try:  # taken before decoding: a file that changes meanwhile is seen as changed by the next run
        identity = source_identity(path)
    except OSError as err:
        raise AvmatchError(f"cannot read: {err.strerror or err}", path) from None
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
    out["source_id"] = identity
    return out


def _reason(err: BaseException, path: Path) -> str:
    """One line for failed.csv: the fault without the file name (the row has it)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if not isinstance(err, AvmatchError):  # not a fault avmatch knows: say what broke
        text = f"unexpected {type(err).__name__}: {text}" if lines else f"unexpected {text}"
    return visible(text.removeprefix(f"{path}: "))


@dataclass
class _Plan:
    """What a run does with each file, decided from the corpus before any file is decoded."""
    todo: list[tuple[Path, str]] = field(default_factory=list)
    # (path, clip id, identity, clip whose features it takes): moved, renamed, copied or touched files
    reuse: list[tuple[Path, str, dict, str]] = field(default_factory=list)
    had_rows: set[str] = field(default_factory=set)  # clips in todo that the corpus holds from before
    identity: dict[str, dict] = field(default_factory=dict)  # clip id -> its file's identity, where known
    settled: set[str] = field(default_factory=set)  # files (visible form) this run has dealt with


def extract(sources: list[str | Path], out: str | Path, extractor_name: str = "default", *,
            options: dict | None = None, workers: int = 1, paired: bool = False,
            progress: bool = True, cluster: str | None = None, mirror: bool = False) -> ExtractSummary:
    """Extract features of every media file under ``sources`` into the corpus folder ``out``.

    ``workers`` > 1 decodes in that many local processes; ``cluster`` runs every file as a task on a
    Dask cluster (an address, or "" for a local cluster of ``workers`` processes). Only this process
    writes the corpus, whichever way the features are computed.

    Unchanged files are skipped, changed ones re-extracted, moved or renamed ones keep their features
    (see the module's docstring); a file that would take a clip id from a different file that still
    exists is refused. ``mirror`` makes the corpus follow the sources exactly, as the media cache of
    :func:`open_features` needs: such a file takes the id over, and clips whose file is gone, no
    longer among the sources or no longer extracts are dropped."""
    out = Path(out)
    options = options or {}
    extractor = get_extractor(extractor_name, **options)
    files = find_media(sources)
    if not files:
        raise AvmatchError("no media files found (looked for " + ", ".join(sorted(MEDIA_SUFFIXES)) + ")",
                           ", ".join(visible(str(s)) for s in sources))
    _claim_corpus(out, extractor.record())
    done = done_clips(out) if (out / MANIFEST).exists() else {}
    summary = ExtractSummary()
    plan = _plan(files, done, (extractor.name, extractor.version), mirror, summary, out)
    for path, clip_id, identity, origin in plan.reuse:
        reuse_clip(out, done[origin], clip_id, str(path), identity)
    started = time.perf_counter()
    bar = progress_bar(len(files), f"extract ({extractor.name})", "file", initial=len(files) - len(plan.todo),
                       enabled=progress)

    def record(path: Path, clip_id: str, result: dict | None, err: BaseException | None) -> None:
        plan.settled.add(visible(str(path)))
        if err is not None:
            summary.failed.append((visible(str(path)), _reason(err, path)))
        else:
            features = {m: result[m] for m in ("video", "audio") if m in result}
            append_clip(out, clip_id, features, rates_hz={"video": extractor.video_rate_hz,
                                                          "audio": extractor.audio_rate_hz},
                        source=str(path), extractor=extractor.name, extractor_version=extractor.version,
                        source_id=result["source_id"])
            summary.done += 1
            summary.media_s += result["duration_s"]
            summary.clips[clip_id] = str(path)
            plan.identity[clip_id] = result["source_id"]
        bar.update(1)
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(files_s=f"{summary.done / elapsed:.1f}", media_s_per_s=f"{summary.media_s / elapsed:.1f}",
                        failed=len(summary.failed))

    out.mkdir(parents=True, exist_ok=True)
    try:
        for path, clip_id, result, err in _results(plan.todo, (extractor_name, options, paired), workers, cluster):
            record(path, clip_id, result, err)
        # only after every file was tried: a run cut short drops nothing, its rerun decides
        summary.retired = _stale_clips(files, done, plan, summary, mirror)
        retire_clips(out, summary.retired)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
        _write_failed(out / "failed.csv", summary.failed, plan.settled)
    if len(files) == 1 and summary.failed and all(Path(s).is_file() for s in sources):
        # one file asked for: its fault is the command's, named as given (the terminal escapes odd bytes)
        raise AvmatchError(summary.failed[0][1], sources[0] if len(sources) == 1 else files[0][0])
    return summary


def _plan(files: list[tuple[Path, str]], done: dict[str, dict[str, dict]], extractor: tuple, mirror: bool,
          summary: ExtractSummary, out: Path) -> _Plan:
    """Compare every file with what the corpus recorded of its clip id and of its content.

    A file's content is hashed only when its clip's size or mtime changed, when the clip id belongs
    to another path, or when the corpus holds a clip of the same size it could have been moved from."""
    head = {cid: next(iter(rows.values())) for cid, rows in done.items()}
    current = {cid for cid, row in head.items() if isinstance(row.get("source_id"), dict)
               and (row.get("extractor"), row.get("extractor_version")) == extractor}
    by_content: dict[tuple, str] = {}
    for cid in current:
        by_content.setdefault((head[cid]["source_id"]["size"], head[cid]["source_id"]["hash"]), cid)
    sizes = {size for size, _ in by_content}
    plan = _Plan()
    collisions = []
    for path, cid in files:
        src, row = str(path), head.get(cid)
        old = str(row.get("source", "")) if row else ""
        try:
            if row is not None and (old == src or os.path.realpath(old) == src):  # realpath: older relative rows
                # no hash for a row that is redone anyway (another extractor, or no identity recorded)
                if cid in current:
                    plan.identity[cid] = source_identity(path, row["source_id"])
                ident = plan.identity.get(cid)
                if ident is not None and same_content(ident, row["source_id"]):
                    summary.skipped += 1
                    summary.clips[cid] = src
                    plan.settled.add(visible(src))
                    if ident != row["source_id"] or old != src:  # touched or copied over with the same bytes
                        plan.reuse.append((path, cid, ident, cid))  # record it, to skip the hash next time
                    continue
                if (row.get("extractor"), row.get("extractor_version")) == extractor:
                    (summary.changed if cid in current else summary.unverified).append(visible(src))
                plan.todo.append((path, cid))
                plan.had_rows.add(cid)
                continue
            ident = None
            if row is not None or path.stat().st_size in sizes:
                ident = plan.identity[cid] = source_identity(path)
        except (OSError, AvmatchError) as err:  # unreadable, or gone or replaced since it was listed
            why = err if isinstance(err, AvmatchError) else AvmatchError(f"cannot read: {err.strerror or err}", path)
            summary.failed.append((visible(src), _reason(why, path)))
            plan.settled.add(visible(src))
            continue
        if row is not None:  # the clip id is held by another path
            if cid in current and same_content(ident, row["source_id"]):
                summary.clips[cid] = old if os.path.exists(old) else src
                plan.settled.add(visible(src))
                if os.path.exists(old):  # the same bytes at two paths: one clip
                    summary.skipped += 1
                else:  # moved here
                    summary.reused += 1
                    plan.reuse.append((path, cid, ident, cid))
            elif os.path.exists(old) and not mirror:
                collisions.append((cid, src, old))
            else:  # its old file is gone (or the corpus mirrors the sources): this file takes the id over
                summary.changed.append(visible(src))
                plan.todo.append((path, cid))
                plan.had_rows.add(cid)
            continue
        origin = by_content.get((ident["size"], ident["hash"])) if ident else None
        if origin is not None:  # a file seen before under another name or path
            summary.reused += 1
            summary.clips[cid] = src
            plan.settled.add(visible(src))
            plan.reuse.append((path, cid, ident, origin))
        else:
            plan.todo.append((path, cid))
    if collisions:
        cid, src, old = collisions[0]
        more = f" ({len(collisions) - 1} more clip ids like this)" if len(collisions) > 1 else ""
        raise AvmatchError(f"clip id {cid!r} would come from {visible(src)}, but this corpus holds it from "
                           f"{visible(old)}, a different file; extract into another corpus folder or rename one"
                           + more, visible(str(out)))
    return plan


def _stale_clips(files: list[tuple[Path, str]], done: dict[str, dict[str, dict]], plan: _Plan,
                 summary: ExtractSummary, mirror: bool) -> dict[str, str]:
    """Clips to take out of the corpus after a run, with the reason: their file now gives another clip
    id, moved to a path that gives another id, changed and no longer extracts; with ``mirror`` also
    every clip that is not one of this run's files. A clip whose file is merely gone is kept (the
    features are still right) and listed in ``summary.gone``."""
    ids = {cid for _, cid in files}
    by_source = {src: cid for cid, src in summary.clips.items()}
    by_content = {(i["size"], i["hash"]): cid for cid, i in plan.identity.items() if cid in summary.clips}
    stale = {}
    for cid, rows in done.items():
        row = next(iter(rows.values()))
        src = str(row.get("source", ""))
        if cid in ids:
            if cid in plan.had_rows and cid not in summary.clips:
                stale[cid] = "its file changed and no longer extracts (see failed.csv)"
            elif mirror and cid not in summary.clips:
                stale[cid] = "its file no longer extracts (see failed.csv)"
            continue
        ident = row.get("source_id") if isinstance(row.get("source_id"), dict) else {}
        moved = by_content.get((ident.get("size"), ident.get("hash")))
        if src in by_source:
            stale[cid] = f"its file is now clip {by_source[src]!r}"
        elif src and os.path.exists(src) and not mirror:
            continue
        elif moved is not None:
            stale[cid] = f"its file moved to {visible(summary.clips[moved])} (clip {moved!r})"
        elif mirror:
            stale[cid] = "its file is gone or no longer among the sources"
        else:
            summary.gone.append(cid)
    return stale


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
        from avmatch.media import process_pool

        with process_pool(workers) as pool:
            futures = {pool.submit(extract_file, str(p), *args): (p, cid) for p, cid in todo}
            for fut in as_completed(futures):
                err = fut.exception()
                if isinstance(err, BrokenProcessPool):  # not one bad file: every worker is gone
                    raise AvmatchError("the extraction worker processes died (killed, out of memory, or started "
                                       "from a script without `if __name__ == \"__main__\":`); the files done are "
                                       "kept, a rerun resumes") from None
                yield *futures[fut], None if err else fut.result(), err


def _dask_results(todo: list[tuple[Path, str]], args: tuple, workers: int, address: str) -> Iterator[tuple]:
    """Files as Dask tasks: on the scheduler at ``address``, or on a local cluster of ``workers``
    processes when the address is empty. Workers need avmatch installed and the files at the same paths."""
    with dask_client(address, workers) as client:
        from dask.distributed import as_completed as completed

        futures = {client.submit(extract_file, str(p), *args, pure=False): (p, cid) for p, cid in todo}
        for fut in completed(list(futures)):
            err = fut.exception() if fut.status == "error" else None
            yield *futures[fut], None if err else fut.result(), err


def _claim_corpus(out: Path, extractor: ExtractorRecord) -> None:
    """Record the extractor in ``corpus.json``; refuse to mix features of another extractor into a corpus."""
    info = out / CORPUS_INFO
    if info.is_file():
        try:
            had = json.loads(info.read_text())["extractor"]
        except (ValueError, KeyError, TypeError):
            had = None
        had = None if had is None else ExtractorRecord.from_dict(had)
        if had is not None and not had.same_settings(extractor):
            raise AvmatchError(f"corpus was made with extractor {had.name!r} {had.params}; "
                               f"extract with {extractor.name!r} {extractor.params} into another folder", out)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / ARRAYS):  # what a writer killed mid-file (manifest, array, ...) left
        remove_stale_temps_in(folder)
    write_text(info, json.dumps({"extractor": extractor.to_dict()}, indent=2, default=str))


def _write_failed(path: Path, failed: list[tuple[str, str]], settled: set[str]) -> None:
    """``failed.csv``: this run's failures, and the earlier ones that still apply (files this run did
    not try that still exist), one row per file."""
    rows = dict(failed)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                file = row.get("file") or ""
                if file and file not in settled and file not in rows and os.path.exists(file):
                    rows[file] = row.get("reason") or ""
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # none yet, or damaged: this run's list replaces it
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "reason"])
    writer.writerows(sorted(rows.items()))
    write_text(path, buf.getvalue())


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
