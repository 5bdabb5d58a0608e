"""Where features come from when a command is given media: a media source told apart from a feature
corpus, and the features of media extracted once into a cache (``$AVMATCH_CACHE``, else
``~/.cache/avmatch/features``) keyed by the folder and the extractor record."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

from avmatch.corpus import MANIFEST, Corpus, load_corpus, visible
from avmatch.errors import AvmatchError
from avmatch.features.job import MEDIA_SUFFIXES, VIDEO_SUFFIXES, extract
from avmatch.features.record import ExtractorRecord


def is_media_source(path: str | Path) -> bool:
    """True for a media file, or a folder that holds media files and is not a feature corpus."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in MEDIA_SUFFIXES
    if not path.is_dir() or _feature_folder(path):
        return False
    return any(p.suffix.lower() in MEDIA_SUFFIXES for p in path.rglob("*") if p.is_file())


def _feature_folder(path: Path) -> bool:
    """A feature corpus: avmatch's own (a manifest) or the classic layouts."""
    return (path / MANIFEST).exists() or any(path.glob("*/*feat.npy")) or (path / "vfeat").is_dir()


def check_holds_videos(path: str | Path, role: str, usage: str, look: int = 10_000) -> None:
    """One line, before any extraction, when a media source that should hold videos (``role``, as
    ``usage`` — the command line — names it) holds audio files only: the arguments were given the
    wrong way round. A feature corpus, or a source with a video file among its first ``look`` files,
    passes. One walk of at most ``look`` files (no media file among them: not a media source)."""
    path = Path(path)
    if path.is_dir() and _feature_folder(path):
        return
    files = [path] if path.is_file() else itertools.islice((p for p in path.rglob("*") if p.is_file()), look)
    suffixes = {p.suffix.lower() for p in files} & MEDIA_SUFFIXES
    if suffixes and not suffixes & VIDEO_SUFFIXES:
        raise AvmatchError(f"{role} holds audio files only ({', '.join(sorted(suffixes))}): nothing to see there. "
                           f"The silent videos come first: {usage}", path)


def training_features(path: str | Path) -> Corpus:
    """:func:`~avmatch.corpus.load_corpus` for training: a folder of media files (the commonest first
    mistake) is told to be extracted first, rather than called an empty corpus."""
    if is_media_source(path):
        raise AvmatchError(f"holds media files, not features: extract them first (avmatch extract {path} -o FEATS "
                           "--paired), then train on FEATS", path)
    return load_corpus(path)


def cache_dir(path: str | Path, extractor: ExtractorRecord) -> Path:
    """Where the features of a media folder are cached for a given extractor and its settings."""
    root = Path(os.environ.get("AVMATCH_CACHE", Path.home() / ".cache" / "avmatch"))
    key = json.dumps([str(Path(path).resolve()), extractor.to_dict()], sort_keys=True, default=str)
    return root / "features" / f"{Path(path).name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def open_features(path: str | Path, extractor: ExtractorRecord, workers: int = 1, progress: bool = True) -> Corpus:
    """A feature corpus at ``path``, or the features of the media at ``path`` extracted (and cached)
    with the given extractor (as recorded in a trained run)."""
    if not is_media_source(path):
        return load_corpus(path)
    out = cache_dir(path, extractor)
    summary = extract([path], out, "default" if extractor.name is None else extractor.name,
                      options=dict(extractor.params or {}), workers=workers, progress=progress, mirror=True)
    if summary.failed and progress:
        print(f"avmatch: {len(summary.failed)} file(s) under {visible(str(path))} failed; "
              f"see {visible(str(out / 'failed.csv'))}")
    if not summary.clips:
        raise AvmatchError(f"none of its media files could be extracted; see {visible(str(out / 'failed.csv'))}",
                           visible(str(path)))
    corpus = load_corpus(out)
    # only the files there now, as they are now: a match must never name a file that is gone; in the
    # order of their ids, so a warm cache gives a clean one's answer, ties included
    now = [c for c in corpus.clips if summary.clips.get(c.id) == c.source]
    return replace(corpus, clips=sorted(now, key=lambda c: c.id))
