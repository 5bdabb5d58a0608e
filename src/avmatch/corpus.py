"""The on-disk feature corpus: clips of visual and/or audio feature sequences.

In memory a corpus is a list of :class:`Clip` plus the rates and the extractor that made it.
On disk (avmatch's own format) it is a folder with ``manifest.jsonl`` and one ``.npy`` per clip and
modality. :func:`load_corpus` also reads the course's classic layouts.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avmatch.atomic import atomic_path, write_text
from avmatch.errors import AvmatchError


@dataclass
class Clip:
    id: str
    video: np.ndarray | None = None  # (T, Dv) float32, rows at Corpus.video_rate_hz
    audio: np.ndarray | None = None  # (T, Da) float32, rows at Corpus.audio_rate_hz
    source: str = ""  # the media file (or folder) the features came from


@dataclass
class Corpus:
    clips: list[Clip]
    video_rate_hz: float = 1.0
    audio_rate_hz: float = 1.0
    extractor: dict = field(default_factory=lambda: {"name": "classic", "version": 1})
    root: Path | None = None

    @property
    def video_dim(self) -> int | None:
        return next((c.video.shape[1] for c in self.clips if c.video is not None), None)

    @property
    def audio_dim(self) -> int | None:
        return next((c.audio.shape[1] for c in self.clips if c.audio is not None), None)

    def paired(self) -> Corpus:
        """Only the clips that have both modalities."""
        return self._with([c for c in self.clips if c.video is not None and c.audio is not None])

    def split(self, val_fraction: float, seed: int = 0) -> tuple[Corpus, Corpus]:
        """A repeatable random (train, val) split of the clips: the same seed and clip ids give the same
        split whatever order the clips were read in (parallel extraction writes them in the order its
        workers finish), each part in id order."""
        clips = sorted(self.clips, key=lambda c: c.id)
        order = np.random.default_rng(seed).permutation(len(clips))
        n_val = max(1, int(round(len(clips) * val_fraction))) if val_fraction > 0 else 0
        val = sorted(order[:n_val].tolist())
        train = sorted(order[n_val:].tolist())
        return self._with([clips[i] for i in train]), self._with([clips[i] for i in val])

    def _with(self, clips: list[Clip]) -> Corpus:
        return Corpus(clips, self.video_rate_hz, self.audio_rate_hz, dict(self.extractor), self.root)


# ------------------------------------------------------------------------------------------ on disk
#
# avmatch's own format: a folder with
#   manifest.jsonl   one JSON line per (clip, modality): clip, modality, file, source, rate_hz, dims,
#                    frames, modalities, extractor, extractor_version and source_id (the content
#                    identity of the source file, see source_identity; absent in older corpora).
#                    A later line for the same (clip, modality) wins, and a later write of a clip
#                    from another source (or another identity or extractor version) supersedes all
#                    of the clip's earlier lines, so one clip never mixes two files' streams.
#                    A line {"clip": ID, "removed": WHY} takes the clip out of the corpus.
#   corpus.json      optional: the full description of the extractor that made the corpus
#   arrays/*.npy     one (T, D) float32 array per line of the manifest
# The manifest is appended to one finished clip at a time (array first, then its line), so a killed
# writer leaves at worst one torn last line, which readers ignore.

MANIFEST = "manifest.jsonl"
CORPUS_INFO = "corpus.json"
ARRAYS = "arrays"
MODALITIES = ("video", "audio")
CLASSIC_FILES = {"video": "vfeat.npy", "audio": "afeat.npy"}
CLASSIC_DIMS = {"video": 1024, "audio": 128}
MAX_FEATURE_DIM = 8192  # dims per row: a header that claims more is corrupt or not features


HASH_EDGE = 1 << 20  # the content hash reads the first and the last MiB ...
HASH_SAMPLES, HASH_SAMPLE = 8, 1 << 16  # ... and 8 blocks of 64 KiB spread over the middle


def visible(text: str) -> str:
    """``text`` safe for any UTF-8 output (CSV, JSON, the terminal): bytes of a file name that are not
    UTF-8 (Python keeps them as surrogate escapes) become a visible ``\\xNN``. Clip ids are always in
    this form, so every output names a clip the same way."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name byte gives (from JSON, say)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def source_identity(path: str | Path, known: dict | None = None) -> dict:
    """The content identity of a media file: ``{"size", "mtime_ns", "hash"}``.

    ``known`` is the identity recorded earlier: while size and mtime are unchanged it is returned as
    is (no read); otherwise the hash is computed again. Two files hold the same content when their
    size and hash agree (:func:`same_content`), whatever their paths or mtimes."""
    path = Path(path)
    st = path.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("hash"):
        return dict(known)
    # non-blocking: opening a pipe for reading would wait for a writer forever
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        st = os.fstat(f.fileno())  # the size of what is read, should the file change meanwhile
        if not stat.S_ISREG(st.st_mode):  # a device may never end
            raise AvmatchError("is not a regular file (a pipe, socket or device)", path)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": _content_hash(f, st.st_size)}


def _content_hash(f, size: int) -> str:
    """blake2b of the size, the first and last MiB and 8 blocks spread over the middle (the whole
    file when it is small): about 2.5 MiB read per file, however long the media. The middle blocks
    catch an edit of equal size that leaves both ends alone."""
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    if size <= 2 * HASH_EDGE + HASH_SAMPLES * HASH_SAMPLE:
        for block in iter(lambda: f.read(HASH_EDGE), b""):
            h.update(block)
        return h.hexdigest()
    step = (size - 2 * HASH_EDGE) // (HASH_SAMPLES + 1)
    starts = [(0, HASH_EDGE)] + [(HASH_EDGE + k * step, HASH_SAMPLE) for k in range(1, HASH_SAMPLES + 1)]
    for start, length in starts + [(size - HASH_EDGE, HASH_EDGE)]:
        f.seek(start)
        h.update(f.read(length))
    return h.hexdigest()


def same_content(a: dict | None, b: dict | None) -> bool:
    """True when two source identities name the same content (size and hash; not the mtime)."""
    return bool(a and b and a.get("hash") and (a.get("size"), a.get("hash")) == (b.get("size"), b.get("hash")))


def _array_file(clip_id: str, modality: str) -> str:
    """The array's file, relative to the corpus root, for a clip id (which may hold slashes or odd
    characters), unique per id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("._")[:80] or "clip"
    digest = hashlib.sha1(clip_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{ARRAYS}/{stem}-{digest}.{modality}.npy"


def _read_text(path: Path) -> str:
    """A small text file (manifest, file list, corpus.json) as str; bytes that are not UTF-8 are a
    one-line error, not a UnicodeDecodeError."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise AvmatchError(f"not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                           "is this the right file?", path) from None
    except OSError as err:
        raise AvmatchError(f"cannot read: {err.strerror or err}", path) from None


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        kept = np.uint8 if array.dtype == np.uint8 else np.float32  # uint8: YouTube-8M's codes, read back de-quantised
        np.save(tmp, np.ascontiguousarray(array, dtype=kept), allow_pickle=False)


def append_clip(root: str | Path, clip_id: str, features: dict[str, np.ndarray], *, rates_hz: dict[str, float],
                source: str = "", extractor: str = "", extractor_version: int = 0,
                source_id: dict | None = None) -> None:
    """Add one clip (its features by modality) to the corpus at ``root``: arrays first, then all its
    manifest lines in one write. Each line names every modality of the clip, so a reader can tell a
    clip whose lines were torn apart by a crash from one that has a single modality. ``source_id``
    (see :func:`source_identity`) lets a later run tell whether the source file changed."""
    rows = []
    for modality, array in features.items():
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2:
            raise AvmatchError(f"{modality} features of clip {clip_id!r} should be (T, D), got shape {array.shape}",
                               source)
        name = _array_file(clip_id, modality)
        _save_array(Path(root) / name, array)
        rows.append({"clip": clip_id, "modality": modality, "file": name, "source": source,
                     "rate_hz": float(rates_hz[modality]), "dims": int(array.shape[1]),
                     "frames": int(array.shape[0]), "modalities": sorted(features),
                     "extractor": extractor, "extractor_version": int(extractor_version)}
                    | ({"source_id": source_id} if source_id else {}))
    _append_lines(Path(root), rows)


def reuse_clip(root: str | Path, rows: dict[str, dict], clip_id: str, source: str, source_id: dict) -> None:
    """Record the features of an existing clip (``rows``: its manifest rows by modality) as clip
    ``clip_id`` from ``source``: a file moved, renamed or copied keeps its features without being
    decoded again. The arrays are hard-linked (copied where links fail) under the new clip's names,
    so re-extracting either clip later cannot change the other."""
    root = Path(root)
    new = []
    for modality, row in rows.items():
        name = _array_file(clip_id, modality)
        if name != row["file"]:
            with atomic_path(root / name) as tmp:
                tmp.unlink()
                try:
                    os.link(_inside(root, row["file"], root / MANIFEST), tmp)
                except OSError:
                    shutil.copyfile(_inside(root, row["file"], root / MANIFEST), tmp)
        new.append({**row, "clip": clip_id, "file": name, "source": source, "source_id": source_id})
    _append_lines(root, new)


def retire_clips(root: str | Path, why: dict[str, str]) -> None:
    """Take clips out of the corpus (``why``: clip id -> the reason, kept in the manifest)."""
    if why:
        _append_lines(Path(root), [{"clip": clip_id, "removed": reason} for clip_id, reason in why.items()])


def _append_lines(root: Path, rows: list[dict]) -> None:
    """Rows appended to the manifest in one write, flushed to disk before the caller goes on."""
    root.mkdir(parents=True, exist_ok=True)
    _drop_torn_line(root / MANIFEST)
    with open(root / MANIFEST, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_line(path: Path) -> None:
    """Cut a torn last line (a writer killed mid-line) before appending, so the next row does not
    join it into one bad line in the middle of the file."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())


def _check_row(row: object) -> tuple[str, str]:
    """The (clip, modality) key of a manifest row; ValueError/KeyError/TypeError if it is malformed."""
    if not isinstance(row, dict):
        raise ValueError(f"not a JSON object but a {type(row).__name__}")
    clip, modality, file, rate = row["clip"], row["modality"], row["file"], row["rate_hz"]
    if isinstance(clip, bool) or not isinstance(clip, (str, int)) or clip == "":
        raise ValueError(f"clip must be a name, got {clip!r:.40}")
    if not isinstance(file, str) or not file.strip():
        raise ValueError(f"file must be a path inside the corpus folder, got {file!r:.40}")
    _check_relative(file)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate_hz must be a positive number, got {rate!r:.40}")
    both = row.get("modalities", [modality])
    if not isinstance(both, list) or not all(isinstance(m, str) for m in both):
        raise ValueError(f"modalities must be a list of names, got {both!r:.40}")
    ident = row.get("source_id")
    if ident is not None and not (isinstance(ident, dict) and isinstance(ident.get("hash"), str)
                                  and all(type(ident.get(k)) is int for k in ("size", "mtime_ns"))):
        raise ValueError(f"source_id must hold size, mtime_ns and hash, got {ident!r:.60}")
    return str(clip), str(modality)


def _check_removal(row: dict) -> str:
    """The clip a removal line ({"clip": ID, "removed": WHY}) takes out; ValueError if malformed."""
    clip = row.get("clip")
    if isinstance(clip, bool) or not isinstance(clip, (str, int)) or clip == "" or not isinstance(row["removed"], str):
        raise ValueError("a removal line needs a clip name and a reason")
    return str(clip)


def _write_of(row: dict) -> tuple:
    """What one write of a clip shares on all its lines: a row with another value came from another file,
    another version of it or another extractor."""
    return (row.get("source"), json.dumps(row.get("source_id"), sort_keys=True), row.get("extractor"),
            row.get("extractor_version"))


def read_manifest(root: str | Path) -> list[dict]:
    """The manifest's rows, later rows for the same (clip, modality) replacing earlier ones.

    A torn last line (a writer killed mid-line) is ignored; any other bad line is an error.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise AvmatchError(f"no {MANIFEST} here", root)
    text = _read_text(path)
    lines = text.split("\n")
    clips: dict[str, dict[str, dict]] = {}  # clip -> modality -> row
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row, dict) and "removed" in row:
                clips.pop(_check_removal(row), None)
                continue
            clip, modality = _check_row(row)
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            if n == len(lines) and not text.endswith("\n"):
                continue  # torn last line of an interrupted writer
            why = (f"no {err}" if isinstance(err, KeyError) else "JSON nested too deeply"
                   if isinstance(err, RecursionError) else _why(err))
            raise AvmatchError(f"line {n} is not a valid manifest row ({why})", path) from None
        if modality not in MODALITIES:
            raise AvmatchError(f"line {n}: modality must be video or audio, got {modality!r}", path)
        had = clips.setdefault(clip, {})
        if had and "modalities" in row:
            # a new write of this clip: lines of an older write (another file, a changed file, another
            # extractor) or of a modality the new write does not have must not survive beside it
            keep = {m: r for m, r in had.items() if m in row["modalities"] and _write_of(r) == _write_of(row)}
            if len(keep) != len(had):
                had.clear()
                had.update(keep)
        had[modality] = row
    return [row for by_modality in clips.values() for row in by_modality.values()]


def done_clips(root: str | Path) -> dict[str, dict[str, dict]]:
    """The finished clips of this corpus, each with its manifest rows by modality: every modality the
    clip's write named has its line and its array on disk. What a resumed extraction can keep."""
    root = Path(root)
    rows: dict[str, dict[str, dict]] = {}
    for row in read_manifest(root):
        if _inside(root, row["file"], root / MANIFEST).is_file():
            rows.setdefault(str(row["clip"]), {})[row["modality"]] = row
    return {clip: by_m for clip, by_m in rows.items()
            if set(next(iter(by_m.values())).get("modalities", by_m)) <= set(by_m)}


def done_entries(root: str | Path) -> dict[str, dict]:
    """The source files finished in this corpus, each with one of its manifest rows."""
    heads = (next(iter(by_m.values())) for by_m in done_clips(root).values())
    return {str(row.get("source", "")): row for row in heads}


def write_corpus(corpus: Corpus, root: str | Path) -> Path:
    """Write ``corpus`` in avmatch's own format (arrays first, the manifest last and atomically)."""
    root = Path(root)
    lines = []
    for clip in corpus.clips:
        for modality in MODALITIES:
            array = getattr(clip, modality)
            if array is None:
                continue
            name = _array_file(clip.id, modality)
            _save_array(root / name, array)
            rate = corpus.video_rate_hz if modality == "video" else corpus.audio_rate_hz
            lines.append(json.dumps({"clip": clip.id, "modality": modality, "file": name, "source": clip.source,
                                     "rate_hz": float(rate), "dims": int(array.shape[1]),
                                     "frames": int(array.shape[0]),
                                     "modalities": sorted(m for m in MODALITIES if getattr(clip, m) is not None),
                                     "extractor": corpus.extractor.get("name", ""),
                                     "extractor_version": corpus.extractor.get("version", 0)}))
    write_text(root / CORPUS_INFO, json.dumps({"extractor": corpus.extractor}, indent=2, default=str))
    write_text(root / MANIFEST, "".join(line + "\n" for line in lines))
    return root


# ------------------------------------------------------------------------------------------ reading


def dequantize(x: np.ndarray, max_value: float = 2.0, min_value: float = -2.0) -> np.ndarray:
    """YouTube-8M's uint8 features back to floats spanning [min_value, max_value] (its own formula:
    each code maps near the centre of its bin, so 0 -> -1.992 and 255 -> 2.008 for the default range)."""
    span = max_value - min_value
    return (x.astype(np.float32) * (span / 255.0) + (span / 512.0 + min_value)).astype(np.float32)


def quantize(x: np.ndarray, max_value: float = 2.0, min_value: float = -2.0) -> np.ndarray:
    """Floats to YouTube-8M's uint8 codes, the inverse of :func:`dequantize` (values outside the range
    are clipped to it); ``dequantize(quantize(x))`` lies within half a code of ``x``."""
    span = max_value - min_value
    codes = np.round((np.asarray(x, np.float64) - min_value - span / 512.0) * (255.0 / span))
    return np.clip(codes, 0, 255).astype(np.uint8)


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:120]}" if text else type(err).__name__


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, checked against the file's size before anything is loaded,
    so a header that claims terabytes costs nothing and a pickle is never touched."""
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version} (avmatch reads 1.0 and 2.0)")
            data_start = f.tell()
    except Exception as err:  # noqa: BLE001 - any fault of the header reads the same to a user
        raise AvmatchError(f"not a readable .npy file ({_why(err)})", path) from None
    if dtype.hasobject:
        raise AvmatchError("holds a pickled object array; avmatch reads plain numeric arrays only", path)
    if dtype != np.uint8 and dtype.kind != "f":
        raise AvmatchError(f"dtype {dtype} is not a float or uint8 feature array", path)
    if len(shape) != 2:
        raise AvmatchError(f"should be a (T, D) array, got shape {shape}", path)
    need = math.prod(shape) * dtype.itemsize
    have = path.stat().st_size - data_start
    if need > have:
        raise AvmatchError(f"truncated or corrupt: its header says shape {shape} ({need:,} bytes of {dtype}) "
                           f"but the file holds {have:,}", path)
    if shape[1] > MAX_FEATURE_DIM:
        raise AvmatchError(f"has {shape[1]:,} dims per row; avmatch reads features of at most {MAX_FEATURE_DIM:,}", path)
    return shape, dtype


def load_array(path: str | Path, expect_dim: int | None = None) -> np.ndarray:
    """One feature file as a validated (T, D) float32 array; every fault is a one-line error.
    Reads the header before the data and never unpickles (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise AvmatchError("is a folder, not a .npy feature file" if path.is_dir() else "missing feature file", path)
    shape, _ = _npy_header(path)
    if shape[0] == 0 or shape[1] == 0:
        raise AvmatchError(f"is empty (shape {shape})", path)
    if expect_dim is not None and shape[1] != expect_dim:
        raise AvmatchError(f"has {shape[1]} dims per row, expected {expect_dim}", path)
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise AvmatchError(f"not a readable .npy file ({_why(err)})", path) from None
    if not isinstance(x, np.ndarray) or x.shape != shape:
        raise AvmatchError("not a single .npy array", path)
    if x.dtype == np.uint8:
        return dequantize(x)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise AvmatchError(f"holds NaN or inf in {len(rows)} row(s), first at row {rows[0]}", path)
    with np.errstate(over="ignore"):
        x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise AvmatchError(f"holds values too large for float32 in {len(rows)} row(s), first at row {rows[0]}", path)
    return x


def _check_relative(rel: str) -> None:
    """ValueError for an absolute path or one with '..' (it could leave the corpus folder)."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts or "\0" in rel:
        raise ValueError(f"path {rel!r} leaves the corpus folder; only paths inside it are read")


def _inside(root: Path, rel: str, origin: Path) -> Path:
    """``root / rel``, refusing absolute paths and paths that climb out of ``root`` (also through links)."""
    try:
        _check_relative(rel)
    except ValueError as err:
        raise AvmatchError(str(err), origin) from None
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise AvmatchError(f"path {rel!r} leaves the corpus folder (through a link); refused", origin)
    return path


def _check_dims(clips: list[Clip], origin: Path) -> None:
    """Every clip's features of one modality must have the same number of dims."""
    for modality in MODALITIES:
        first = None
        for clip in clips:
            x = getattr(clip, modality)
            if x is None:
                continue
            if first is None:
                first = (clip, x.shape[1])
            elif x.shape[1] != first[1]:
                raise AvmatchError(f"{modality} features of clip {clip.id!r} have {x.shape[1]} dims but clip "
                                   f"{first[0].id!r} has {first[1]}", origin)


def _load_own(root: Path) -> Corpus:
    rows = read_manifest(root)
    rates = {m: {float(r["rate_hz"]) for r in rows if r["modality"] == m} for m in MODALITIES}
    for m, found in rates.items():
        if len(found) > 1:
            raise AvmatchError(f"{m} features at several rates ({sorted(found)} Hz) in one corpus", root / MANIFEST)
    have: dict[str, set[str]] = {}
    for row in rows:
        have.setdefault(str(row["clip"]), set()).add(row["modality"])
    # a clip whose lines a crash tore apart is left out: a resumed extraction writes it again
    rows = [r for r in rows if set(r.get("modalities", [r["modality"]])) <= have[str(r["clip"])]]
    if not rows:
        raise AvmatchError(f"empty corpus: {MANIFEST} lists no complete clip", root)
    clips: dict[str, Clip] = {}
    for row in rows:
        clip = clips.setdefault(str(row["clip"]), Clip(str(row["clip"]), source=str(row.get("source", ""))))
        setattr(clip, row["modality"], load_array(_inside(root, str(row["file"]), root / MANIFEST)))
    info_path = root / CORPUS_INFO
    extractor = {"name": rows[0].get("extractor", ""), "version": rows[0].get("extractor_version", 0)}
    if info_path.is_file():
        try:
            extractor = json.loads(_read_text(info_path))["extractor"]
            if not isinstance(extractor, dict):
                raise TypeError(f"'extractor' should be an object, not a {type(extractor).__name__}")
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise AvmatchError(f"malformed ({_why(err)})", info_path) from None
    corpus = Corpus(list(clips.values()), rates["video"].pop() if rates["video"] else 1.0,
                    rates["audio"].pop() if rates["audio"] else 1.0, extractor, root)
    _check_dims(corpus.clips, root)
    return corpus


def _classic_clip(clip_id: str, files: dict[str, Path], origin: Path) -> Clip:
    """A clip of the course's layout: both modalities, one row per second, the same number of rows."""
    missing = [m for m in MODALITIES if not files[m].is_file()]
    if missing:
        have = [m for m in MODALITIES if m not in missing]
        raise AvmatchError(f"clip {clip_id!r} has {CLASSIC_FILES[have[0]] if have else 'no feature file'} but no "
                           f"{CLASSIC_FILES[missing[0]]}", files[missing[0]])
    # the row counts from the headers, before any data is read: a header that claims a huge array of
    # another length costs nothing
    rows = {m: _npy_header(files[m])[0][0] for m in MODALITIES}
    if rows["video"] != rows["audio"]:
        raise AvmatchError(f"clip {clip_id!r}: vfeat has {rows['video']} rows but afeat has {rows['audio']} "
                           "(one row per second each)", files["audio"])
    return Clip(clip_id, load_array(files["video"]), load_array(files["audio"]), source=str(files["video"].parent))


def _classic(clips: list[Clip], root: Path) -> Corpus:
    if not clips:
        raise AvmatchError("empty corpus: no clips found", root)
    _check_dims(clips, root)
    return Corpus(clips, 1.0, 1.0, {"name": "classic-course", "version": 1}, root)


def _load_file_list(list_path: Path) -> Corpus:
    """A text file with one clip folder per line (relative to the list's folder), as the course's
    starter code uses; blank lines and lines starting with # are skipped."""
    root = list_path.parent
    clips = []
    for n, line in enumerate(_read_text(list_path).splitlines(), 1):
        rel = line.strip()
        if not rel or rel.startswith("#"):
            continue
        folder = _inside(root, rel, list_path)
        if not folder.is_dir():
            raise AvmatchError(f"line {n}: no such clip folder {rel!r}", list_path)
        clips.append(_classic_clip(rel, {m: folder / f for m, f in CLASSIC_FILES.items()}, list_path))
    return _classic(clips, list_path)


def load_corpus(path: str | Path) -> Corpus:
    """Read a feature corpus: avmatch's own folder (``manifest.jsonl``), the course's classic layout
    (one folder per clip with ``vfeat.npy`` and ``afeat.npy``), its flat variant (``vfeat/NNNN.npy`` and
    ``afeat/NNNN.npy``) or a ``.txt`` list of clip folders. Every fault is one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise AvmatchError("no such corpus folder or file list", path)
    if path.is_file():
        if path.suffix.lower() in (".txt", ".lst", ".list"):
            return _load_file_list(path)
        raise AvmatchError("not a corpus: give a folder, or a .txt list of clip folders", path)
    if not path.is_dir():
        raise AvmatchError("is not a regular file or folder (a pipe, socket or device); not a corpus", path)
    if (path / MANIFEST).is_file():
        return _load_own(path)
    flat = {m: path / Path(f).stem for m, f in CLASSIC_FILES.items()}  # vfeat/, afeat/
    if any(d.is_dir() for d in flat.values()):
        ids = sorted({p.stem for d in flat.values() if d.is_dir() for p in d.glob("*.npy")})
        return _classic([_classic_clip(i, {m: flat[m] / f"{i}.npy" for m in MODALITIES}, path) for i in ids], path)
    folders = sorted(p for p in path.iterdir() if p.is_dir() and any((p / f).exists() for f in CLASSIC_FILES.values()))
    if folders:
        return _classic([_classic_clip(p.name, {m: p / f for m, f in CLASSIC_FILES.items()}, path)
                         for p in folders], path)
    raise AvmatchError("empty corpus: no manifest.jsonl, no clip folders with vfeat.npy/afeat.npy and no "
                       "vfeat/ or afeat/ folders here", path)
