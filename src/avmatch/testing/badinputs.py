"""A corpus of bad inputs, made on the spot (never committed), and every reader run on every case.

Used by ``tests/test_robustness.py`` and ``benchmarks/robustness.py``::

    cases = make_cases(tmp_dir)               # media, .npy, corpora, checkpoints, score files: ~135
    outcomes = run_all(cases, tmp_dir / "w")  # [Outcome(case, reader, outcome, detail, seconds)]

A reader is something a user runs on a file: a library function (``probe``, ``load_corpus``,
``load_trained`` ...) or a CLI command (``avmatch extract FILE``), plus one batch extraction over all
media cases that must list each bad file in ``failed.csv``. Each run ends in one outcome:

  ok       the reader accepted the input
  error    one line naming the file and the fault (an AvmatchError; exit status 2 from the CLI)
  unclear  an AvmatchError that spans lines or names no file of the case
  crash    any other exception, a traceback on stderr, or a CLI exit status other than 0 or 2
  hang     still running after the time limit
  wrong    handled, but not as the case expects (e.g. a zero-byte file accepted)

Making a case never needs the network: media comes from ``mediagen`` (PyAV), damage is seeded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avmatch.testing.mediagen import faststart, make_audio, make_clip  # noqa: E402

TIME_LIMIT_S = 20.0  # a reader still busy after this long on a 1 s clip is hanging
HANDLED = ("ok", "error")


@dataclass(frozen=True)
class Case:
    """One bad (or deliberately odd but valid) input.

    ``expect`` is what every reader should do: "error", "ok" or "any" (either is fine, e.g. a file with
    a few flipped bits may still decode); ``expect_by`` overrides it per reader.
    """

    name: str
    kind: str  # "media", "npy", "corpus", "checkpoint", "scores"
    path: Path
    fault: str
    expect: str = "error"
    expect_by: dict = field(default_factory=dict)

    def expected(self, reader: str) -> str:
        return self.expect_by.get(reader, self.expect)


@dataclass
class Outcome:
    case: Case
    reader: str
    outcome: str  # ok, error, unclear, crash, hang, wrong
    detail: str
    seconds: float

    @property
    def handled(self) -> bool:
        return self.outcome in HANDLED


# ----------------------------------------------------------------------------------------- damage


def flip_bits(data: bytes, count: int, seed: int, start: float = 0.1, end: float = 0.9) -> bytes:
    """``count`` single-bit flips at seeded positions within [start, end) of the file."""
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    lo, hi = int(len(out) * start), max(int(len(out) * start) + 1, int(len(out) * end))
    for pos in rng.integers(lo, hi, count):
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def scramble(data: bytes, fraction: float, seed: int) -> bytes:
    """Random bytes over ``fraction`` of the file, in one run from the middle (the index stays intact)."""
    out = bytearray(data)
    n = int(len(out) * fraction)
    start = len(out) // 3
    out[start:start + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(out)


class _Exploit:
    """Unpickling this would create the folder ``marker``: proof that a reader ran a pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def exploit_marker(root: Path) -> Path:
    """The folder a pickle in the bad-input corpus would create if any reader unpickled it."""
    return Path(root) / "PICKLE-WAS-RUN"


# ------------------------------------------------------------------------------------------ media


def _huge_rawvideo(path: Path, side: int) -> Path:
    """A Matroska file of raw 256x256 gray frames whose header says the frames are ``side`` x ``side``."""
    import av

    tmp = path.with_suffix(".tmp.mkv")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("rawvideo", rate=25)
        s.width = s.height = 256
        s.pix_fmt = "gray"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((256, 256), 50 * i, np.uint8), format="gray")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    data = bytearray(tmp.read_bytes())
    tmp.unlink()
    for element in (b"\xb0", b"\xba"):  # PixelWidth, PixelHeight as 2-byte EBML integers
        at = data.find(element + b"\x82\x01\x00")
        assert at >= 0, "Matroska header layout changed"
        data[at + 2:at + 4] = side.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def _no_av_streams(path: Path) -> Path:
    """A Matroska file holding only a subtitle track: a container with neither video nor audio."""
    from fractions import Fraction

    import av

    try:
        with av.open(str(path), "w") as out:
            s = out.add_stream("ass")
            s.time_base = Fraction(1, 1000)
            pkt = av.Packet(b"hello")
            pkt.stream, pkt.pts, pkt.dts, pkt.duration = s, 0, 0, 500
            out.mux(pkt)
    except Exception:  # noqa: BLE001 - an ffmpeg build without an ASS encoder: a bare header instead
        path.write_bytes(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81"
                         b"\x08\x42\x82\x88matroska\x42\x87\x81\x04\x42\x85\x81\x02")
    return path


def media_cases(root: Path) -> list[Case]:
    root.mkdir(parents=True, exist_ok=True)
    good = {ext: make_clip(root / f"_good.{ext}", duration_s=1.0, size=(64, 48)) for ext in ("mp4", "mkv", "webm")}
    fast = faststart(good["mp4"], root / "_fast.mp4")
    cases: list[Case] = []

    def add(name: str, data: bytes | None, fault: str, expect: str = "error", **by) -> None:
        path = root / name
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(name, "media", path, fault, expect, by))

    for ext, path in good.items():
        data = path.read_bytes()
        for pct in (10, 50, 90):
            add(f"truncated-{pct}.{ext}", data[: len(data) * pct // 100], f"cut to {pct}% of its bytes", "any")
        add(f"bitflip-body.{ext}", flip_bits(data, 24, seed=1), "24 bits flipped in the body", "any")
        add(f"bitflip-header.{ext}", flip_bits(data, 12, 2, 0.0, 0.05), "12 bits flipped in the first 5%", "any")
        add(f"scrambled.{ext}", scramble(data, 0.3, seed=3), "30% of the bytes random", "any")
    fdata = fast.read_bytes()
    add("faststart-truncated-50.mp4", fdata[: len(fdata) // 2], "index first, cut in half (opens, decodes less)", "any")
    add("faststart-bitflip.mp4", flip_bits(fdata, 200, 4, 0.05, 1.0), "200 bits flipped after the index", "any")
    add("zero-bytes.mp4", b"", "empty file (0 bytes)")
    add("text.mp4", b"these are my holiday notes, not a video\n" * 40, "a text file renamed .mp4")
    add("random.webm", np.random.default_rng(5).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        "20 kB of random bytes named .webm")
    add("header-only.mkv", good["mkv"].read_bytes()[:64], "the first 64 bytes of a Matroska file")
    add("pdf.mp4", b"%PDF-1.4\n" + b"0" * 2000, "a PDF named .mp4")
    make_clip(root / "no-video.mp4", duration_s=1.0, with_video=False)
    add("no-video.mp4", None, "an .mp4 holding only sound", "ok", read_video="error")
    make_clip(root / "no-audio.m4a", duration_s=1.0, with_audio=False)
    add("no-audio.m4a", None, "an audio file (.m4a) holding only video", "error", probe="ok", read_video="ok")
    make_clip(root / "one-frame.mp4", duration_s=0.04, with_audio=False)
    add("one-frame.mp4", None, "a video of a single frame", "ok", read_audio="error")
    make_audio(root / "short-0.1s.wav", duration_s=0.1)
    add("short-0.1s.wav", None, "0.1 s of sound", "any", read_video="error", probe="ok", read_audio="ok")
    make_audio(root / "short-1ms.wav", duration_s=0.001)
    add("short-1ms.wav", None, "1 ms of sound (16 samples)", "any", read_video="error")
    _huge_rawvideo(root / "huge-dims.mkv", 12000)
    add("huge-dims.mkv", None, "header says 12000x12000 frames (raw video of 256x256)")
    _huge_rawvideo(root / "huge-dims-8k.mkv", 8192)
    add("huge-dims-8k.mkv", None, "header says 8192x8192 frames (raw video of 256x256)")
    make_clip(root / "time-jump.mkv", frame_times=[0.0, 0.04, 0.08, 200_000.0], with_audio=False)
    add("time-jump.mkv", None, "a frame 55 hours after the others (huge duration)", read_audio="error")
    _no_av_streams(root / "subtitles-only.mkv")
    add("subtitles-only.mkv", None, "a container with neither video nor audio")
    (root / "folder.mp4").mkdir(exist_ok=True)
    add("folder.mp4", None, "a folder named .mp4", batch="skip")
    add("missing.mp4", None, "no such file", batch="skip")
    os.mkfifo(root / "pipe.mp4")
    add("pipe.mp4", None, "a named pipe no one writes to (reading it would wait forever)", batch="skip")
    os.symlink("/dev/zero", root / "dev-zero.mkv")
    add("dev-zero.mkv", None, "a link to /dev/zero (endless zeros)", batch="skip")
    for p in (*good.values(), fast):
        p.unlink()
    return cases


# -------------------------------------------------------------------------------------------- npy


def _npy_with_header(path: Path, header: dict, payload: bytes) -> Path:
    from numpy.lib import format as npformat

    with open(path, "wb") as f:
        npformat.write_array_header_1_0(f, header)
        f.write(payload)
    return path


def npy_cases(root: Path) -> list[Case]:
    """Each case is a classic clip folder ``CASE/0000/vfeat.npy`` (the bad file) beside good clips
    0001..0003 with 16-dim video and 8-dim audio, 6 rows each."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    marker = exploit_marker(root.parent)
    good_v = rng.uniform(-1, 1, (6, 16)).astype(np.float32)
    overflow = good_v.astype(np.float64)
    overflow[2, 3] = 1e300
    nan = good_v.copy()
    nan[3, 5] = np.nan
    inf = good_v.copy()
    inf[0, 0] = -np.inf
    structured = np.zeros(6, dtype=[("a", "<f4", (16,))])
    makers: dict[str, tuple[Callable[[Path], object], str, str]] = {
        "int64": (lambda p: np.save(p, np.zeros((6, 16), np.int64)), "dtype int64", "error"),
        "complex": (lambda p: np.save(p, good_v.astype(np.complex64)), "complex numbers", "error"),
        "bool": (lambda p: np.save(p, np.ones((6, 16), bool)), "dtype bool", "error"),
        "strings": (lambda p: np.save(p, np.array([["a"] * 16] * 6)), "an array of strings", "error"),
        "structured": (lambda p: np.save(p, structured), "a structured (record) array", "error"),
        "1d": (lambda p: np.save(p, good_v[0]), "shape (16,)", "error"),
        "3d": (lambda p: np.save(p, good_v.reshape(6, 4, 4)), "shape (6, 4, 4)", "error"),
        "scalar": (lambda p: np.save(p, np.float32(1.0)), "a 0-d array", "error"),
        "no-rows": (lambda p: np.save(p, np.zeros((0, 16), np.float32)), "shape (0, 16)", "error"),
        "no-dims": (lambda p: np.save(p, np.zeros((6, 0), np.float32)), "shape (6, 0)", "error"),
        "wrong-dims": (lambda p: np.save(p, np.zeros((6, 12), np.float32)), "12 dims where the others have 16", "error"),
        "wrong-rows": (lambda p: np.save(p, np.zeros((5, 16), np.float32)), "5 rows where afeat has 6", "error"),
        "nan": (lambda p: np.save(p, nan), "a NaN", "error"),
        "inf": (lambda p: np.save(p, inf), "a -inf", "error"),
        "float64-overflow": (lambda p: np.save(p, overflow), "float64 1e300: inf once made float32", "error"),
        "object-array": (lambda p: np.save(p, np.array([_Exploit(marker)], dtype=object), allow_pickle=True),
                         "an object array (pickle inside a .npy)", "error"),
        "raw-pickle": (lambda p: p.write_bytes(pickle.dumps(_Exploit(marker))), "a pickle renamed .npy", "error"),
        "npz": (lambda p: np.savez(open(p, "wb"), a=good_v), "an .npz archive renamed .npy", "error"),
        "zero-bytes": (lambda p: p.write_bytes(b""), "empty file (0 bytes)", "error"),
        "text": (lambda p: p.write_text("1,2,3\n4,5,6\n"), "CSV text renamed .npy", "error"),
        "bad-header": (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4'  \n" + b"\0" * 64),
                       "a .npy header that is not a dict", "error"),
        "truncated": (lambda p: p.write_bytes(_npy_bytes(good_v)[:-100]), "data cut short", "error"),
        "huge-shape": (lambda p: _npy_with_header(p, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**12, 10**6)}, b"\0" * 64),
                       "header says (10^12, 10^6) float32 (4 EB)", "error"),
        "big-shape": (lambda p: _npy_with_header(p, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (6, 50_000_000)}, b"\0" * 64),
                      "header says (6, 5e7) float32 (1.2 GB) in a 200-byte file", "error"),
        "big-endian": (lambda p: np.save(p, good_v.astype(">f4")), "big-endian float32 (valid)", "ok"),
        "float16": (lambda p: np.save(p, good_v.astype(np.float16)), "float16 (valid)", "ok"),
        "fortran-order": (lambda p: np.save(p, np.asfortranarray(good_v)), "Fortran order (valid)", "ok"),
        "uint8": (lambda p: np.save(p, rng.integers(0, 256, (6, 16)).astype(np.uint8)), "uint8, YouTube-8M style (valid)", "ok"),
    }
    cases = []
    for name, (make, fault, expect) in makers.items():
        folder = root / name
        for i in range(4):
            d = folder / f"{i:04d}"
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "vfeat.npy", rng.uniform(-1, 1, (6, 16)).astype(np.float32))
            np.save(d / "afeat.npy", rng.uniform(-1, 1, (6, 8)).astype(np.float32))
        bad = folder / "0000" / "vfeat.npy"
        make(bad)
        # load_array alone does not know the corpus: dims and rows are faults of the corpus only
        by = {"load_array": "ok"} if name in ("wrong-dims", "wrong-rows") else {}
        cases.append(Case(f"npy-{name}", "npy", bad, fault, expect, by))
    return cases


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ corpora


def corpus_cases(root: Path) -> list[Case]:
    """Own-format corpora (manifest.jsonl) and .txt file lists with bad manifests, paths and files."""
    from avmatch.corpus import write_corpus
    from avmatch.testing.featuregen import make_feature_corpus

    root.mkdir(parents=True, exist_ok=True)
    outside = root / "outside.npy"
    np.save(outside, np.zeros((4, 6), np.float32))
    base = make_feature_corpus(4, video_dim=6, audio_dim=4, min_len=3, max_len=5, seed=0)
    cases: list[Case] = []

    def own(name: str, fault: str, edit: Callable[[Path, list[dict]], None], expect: str = "error",
            rows_ok: bool = False, **by: str) -> None:
        """``rows_ok``: every manifest row is well-formed (the fault lies in the files it names), so the
        readers of the manifest alone may accept it."""
        folder = root / name
        write_corpus(base, folder)
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        edit(folder, rows)
        if rows_ok:
            by = {"read_manifest": "any", "done_entries": "any", **by}
        cases.append(Case(name, "corpus", folder, fault, expect, by))

    def lines(text: str):
        return lambda f, rows: (f / "manifest.jsonl").write_text(text(rows) if callable(text) else text)

    def dumps(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    def with_row(i: int, **change):
        return lines(lambda rows: dumps([{**r, **change} if k == i else r for k, r in enumerate(rows)]))

    def without(i: int, key: str):
        return lines(lambda rows: dumps([{k: v for k, v in r.items() if k != key} if n == i else r
                                         for n, r in enumerate(rows)]))

    own("manifest-valid", "a good corpus (valid)", lambda f, rows: None, "ok")
    own("manifest-torn-last-line", "a writer killed mid-line (valid: the torn line is ignored)",
        lines(lambda rows: dumps(rows) + '{"clip": "clip9", "moda'), "ok")
    own("manifest-bad-json", "line 3 is not JSON", lines(lambda rows: dumps(rows[:2]) + "{clip: 1,\n" + dumps(rows[2:])))
    own("manifest-not-object", "a line holding a JSON list", lines(lambda rows: dumps(rows[:1]) + "[1, 2]\n" + dumps(rows[1:])))
    own("manifest-missing-key", "a row without 'file'", without(1, "file"))
    own("manifest-missing-clip", "a row without 'clip'", without(0, "clip"))
    own("manifest-missing-file", "a row naming a file that is not there", with_row(2, file="arrays/gone.npy"), rows_ok=True)
    own("manifest-dotdot", "a path with '..'", with_row(0, file="../outside.npy"))
    own("manifest-dotdot-inner", "a path 'arrays/../../outside.npy'", with_row(0, file="arrays/../../outside.npy"))
    own("manifest-absolute", "an absolute path", with_row(0, file=str(outside)))
    own("manifest-symlink-out", "an array that is a link to a file outside",
        lambda f, rows: (f / rows[0]["file"]).unlink() or os.symlink(outside, f / rows[0]["file"]),
        rows_ok=True, done_entries="error")
    own("manifest-file-is-folder", "a row naming a folder", with_row(1, file="arrays"), rows_ok=True)
    own("manifest-file-empty", "a row with file ''", with_row(1, file=""))
    own("manifest-file-number", "a row with file 42", with_row(1, file=42))
    own("manifest-rate-text", "rate_hz is a word", with_row(0, rate_hz="fast"))
    own("manifest-rate-null", "rate_hz is null", with_row(0, rate_hz=None))
    own("manifest-rate-negative", "rate_hz is -25", lines(lambda rows: dumps([{**r, "rate_hz": -25} for r in rows])))
    own("manifest-rate-nan", "rate_hz is NaN", lines(lambda rows: dumps([{**r, "rate_hz": float("nan")} for r in rows])))
    own("manifest-modality", "modality 'smell'", with_row(1, modality="smell"))
    own("manifest-clip-dict", "clip is an object, not a name", with_row(0, clip={"a": 1}))
    own("manifest-deep-json", "a line nested 100,000 brackets deep",
        lines(lambda rows: dumps(rows[:1]) + "[" * 100_000 + "]" * 100_000 + "\n" + dumps(rows[1:])))
    own("manifest-binary", "binary bytes, not UTF-8 text",
        lambda f, rows: (f / "manifest.jsonl").write_bytes(b"\xff\xfe\x00garbage\x80\x81\n"))
    own("manifest-empty", "an empty manifest", lines(""), rows_ok=True)
    own("manifest-folder", "manifest.jsonl is a folder",
        lambda f, rows: (f / "manifest.jsonl").unlink() or (f / "manifest.jsonl").mkdir())
    own("manifest-bad-array", "a listed array holds NaN",
        lambda f, rows: np.save(f / rows[1]["file"], np.full((3, 4), np.nan, np.float32)), rows_ok=True)
    own("manifest-mixed-dims", "two clips' video of different dims",
        lambda f, rows: np.save(f / next(r for r in rows if r["modality"] == "video")["file"],
                                np.zeros((3, 7), np.float32)), rows_ok=True)
    own("corpus-json-bad", "corpus.json is not JSON", lambda f, rows: (f / "corpus.json").write_text("{nope"), rows_ok=True)
    own("corpus-json-extractor-list", "corpus.json's extractor is a list",
        lambda f, rows: (f / "corpus.json").write_text('{"extractor": [1, 2]}'), rows_ok=True)
    own("corpus-json-binary", "corpus.json is binary", lambda f, rows: (f / "corpus.json").write_bytes(b"\xff\x00\x80"),
        rows_ok=True)

    # .txt lists of classic clip folders
    lists = root / "lists"
    for i in range(4):
        d = lists / "clips" / f"{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "vfeat.npy", np.zeros((5, 16), np.float32))
        np.save(d / "afeat.npy", np.zeros((5, 8), np.float32))
    listed = "".join(f"clips/{i:04d}\n" for i in range(4))
    for name, text, fault, expect in (
            ("list-valid.txt", listed, "a good list (valid)", "ok"),
            ("list-dotdot.txt", listed + "../corpus-json-bad\n", "a line with '..'", "error"),
            ("list-absolute.txt", listed + f"{lists / 'clips' / '0000'}\n", "an absolute path", "error"),
            ("list-missing.txt", listed + "clips/9999\n", "a folder that is not there", "error"),
            ("list-empty.txt", "# nothing\n\n", "no clips", "error"),
            ("list-binary.txt", None, "binary bytes", "error"),
            ("list-pipe.txt", None, "a named pipe no one writes to", "error")):
        path = lists / name
        if name == "list-pipe.txt":
            os.mkfifo(path)
        elif text is None:
            path.write_bytes(b"\xff\xfe\x00\x80clips/0000\n")
        else:
            path.write_text(text)
        cases.append(Case(name.removesuffix(".txt"), "corpus", path, fault, expect,
                          {"read_manifest": "skip", "done_entries": "skip"}))
    return cases


# -------------------------------------------------------------------------------------- checkpoints


def checkpoint_cases(root: Path) -> list[Case]:
    import torch

    from avmatch.checkpoint import Trained
    from avmatch.features.record import ExtractorRecord
    from avmatch.models import build_model

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("dual", 6, 4, hidden=8, embed_dim=4, blocks=1)
    trained = Trained(model, np.zeros(6, np.float32), np.ones(6, np.float32), np.zeros(4, np.float32),
                      np.ones(4, np.float32), extractor=ExtractorRecord(name="synthetic", version=1))
    good = root / "valid.pt"
    trained.save(good)
    state = torch.load(good, weights_only=True)
    cases: list[Case] = [Case("ckpt-valid", "checkpoint", good, "a good checkpoint (valid)", "ok")]

    def add(name: str, fault: str, change: Callable[[dict], object] | None = None, data: bytes | None = None) -> None:
        path = root / f"{name}.pt"
        if data is not None:
            path.write_bytes(data)
        else:
            s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
            obj = change(s)
            torch.save(s if obj is None else obj, path)
        cases.append(Case(f"ckpt-{name}", "checkpoint", path, fault))

    raw = good.read_bytes()
    add("zero-bytes", "empty file (0 bytes)", data=b"")
    add("text", "a text file renamed .pt", data=b"model weights go here\n" * 20)
    add("truncated", "cut in half", data=raw[: len(raw) // 2])
    add("bitflip", "64 bits flipped", data=flip_bits(raw, 64, 7, 0.0, 1.0))
    add("pickle-exploit", "a pickle that would run code", data=pickle.dumps(_Exploit(exploit_marker(root.parent))))
    add("torch-exploit", "a torch file holding an object that would run code",
        lambda s: {"format": "avmatch-checkpoint", "payload": _Exploit(exploit_marker(root.parent))})
    add("plain-state-dict", "a bare state_dict (another tool's torch file)", lambda s: s["state_dict"])
    add("tensor", "a single tensor", lambda s: torch.zeros(3))
    add("other-format", "a dict with another 'format'", lambda s: s.update(format="something-else"))
    add("newer-format", "format_version 99 (from a newer avmatch)", lambda s: s.update(format_version=99))
    add("format-version-text", "format_version is a string", lambda s: s.update(format_version="2"))
    add("unknown-model", "model 'transformer-xl', not registered here", lambda s: s.update(model="transformer-xl"))
    add("other-model", "weights of a dual model labelled 'gru'", lambda s: s.update(model="gru"))
    add("no-model-config", "no model_config", lambda s: s.pop("model_config") and None)
    add("config-not-dict", "model_config is a list", lambda s: s.update(model_config=[1, 2]))
    add("config-unknown-option", "model_config has an option the model lacks",
        lambda s: s["model_config"].update(wings=2))
    add("config-bad-dim", "video_dim is -6", lambda s: s["model_config"].update(video_dim=-6))
    add("config-dim-text", "video_dim is a string", lambda s: s["model_config"].update(video_dim="six"))
    add("missing-weights", "state_dict lacks two tensors",
        lambda s: s.update(state_dict={k: v for k, v in list(s["state_dict"].items())[2:]}))
    add("extra-weights", "state_dict has a tensor the model lacks",
        lambda s: s["state_dict"].update({"video.extra.weight": torch.zeros(2)}))
    add("wrong-shape", "a weight of the wrong shape",
        lambda s: s["state_dict"].update({k: torch.zeros(3, 3) for k in list(s["state_dict"])[:1]}))
    add("nan-weights", "NaN in the weights",
        lambda s: s["state_dict"].update({k: torch.full_like(v, float("nan")) for k, v in list(s["state_dict"].items())[2:3]}))
    add("no-stats", "no feature statistics", lambda s: s.pop("stats") and None)
    add("stats-wrong-shape", "video_mean of 5 dims for a 6-dim model",
        lambda s: s["stats"].update(video_mean=torch.zeros(5)))
    add("stats-zero-std", "audio_std of zeros (division by zero)", lambda s: s["stats"].update(audio_std=torch.zeros(4)))
    add("no-rates", "no rates", lambda s: s.pop("rates") and None)
    add("rates-bad", "rates hold a string", lambda s: s.update(rates={"video_hz": "fast", "audio_hz": 1.0}))
    add("state-dict-list", "state_dict is a list", lambda s: s.update(state_dict=[1, 2, 3]))
    add("input-centre-text", "input centre_clips is a string", lambda s: s.update(input={"centre_clips": "yes"}))
    add("input-list", "input is a list", lambda s: s.update(input=[True]))
    return cases


def score_cases(root: Path) -> list[Case]:
    """Score matrices (``pairs.scores.npz``) as ``avmatch evaluate`` reads them beside a pairs.csv."""
    root.mkdir(parents=True, exist_ok=True)
    marker = exploit_marker(root.parent)
    ids = {"video_ids": np.array(["v0", "v1"]), "audio_ids": np.array(["a0", "a1", "a2"])}
    good = root / "valid.scores.npz"
    np.savez(good, scores=np.zeros((2, 3)), raw_scores=np.zeros((2, 3)), **ids)
    raw = good.read_bytes()
    cases = [Case("scores-valid", "scores", good, "a good score matrix (valid)", "ok")]
    for name, fault, make in (
            ("zero-bytes", "empty file (0 bytes)", lambda p: p.write_bytes(b"")),
            ("text", "text renamed .npz", lambda p: p.write_text("video,audio\n")),
            ("truncated", "cut in half", lambda p: p.write_bytes(raw[: len(raw) // 2])),
            ("pickled", "an object array inside", lambda p: np.savez(
                p, scores=np.array([_Exploit(marker)], dtype=object), **ids)),
            ("no-ids", "no video_ids", lambda p: np.savez(p, scores=np.zeros((2, 3)), audio_ids=ids["audio_ids"])),
            ("wrong-shape", "a 3x3 matrix for 2 videos", lambda p: np.savez(p, scores=np.zeros((3, 3)), **ids)),
            ("1d", "a 1-d score array", lambda p: np.savez(p, scores=np.zeros(6), **ids))):
        path = root / f"{name}.scores.npz"
        make(path)
        cases.append(Case(f"scores-{name}", "scores", path, fault))
    return cases


def make_cases(root: str | Path) -> list[Case]:
    """Every bad input, written under ``root``."""
    root = Path(root)
    return (media_cases(root / "media") + npy_cases(root / "npy") + corpus_cases(root / "corpus")
            + checkpoint_cases(root / "checkpoints") + score_cases(root / "scores")
            + identity_corpus_cases(root / "identity"))


# ------------------------------------------------------------------------------------------ readers


class _Hang(BaseException):
    """Raised by the alarm: deliberately not an Exception, so no reader's handler swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise _Hang in this (main) thread after ``seconds``. PyAV and numpy return to Python often
    enough for the alarm to land."""
    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class CliRun:
    rc: int
    stderr: str


# ``avmatch ARGV`` run by the caller's means: (exit status, stdout, stderr). The harness drives the command
# line but never imports it (it is library code below the application): callers pass
# ``avmatch.cli.run_captured`` (in this process, fast); the trust cases run the program as a process.
Cli = Callable[[list], tuple[int, str, str]]


def _media_readers(cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    from avmatch.features.job import extract_file
    from avmatch.media import probe, read_audio, read_video

    def video(case, work):
        frames = read_video(case.path, fps=5.0, size=8, gray=True)
        return f"{len(frames)} frames"

    def audio(case, work):
        return f"{read_audio(case.path, 8000).size} samples"

    def features(case, work):
        out = extract_file(str(case.path), "default", {}, False)
        return ", ".join(f"{m} {out[m].shape}" for m in ("video", "audio") if m in out)

    def cli_extract(case, work):
        return _run(cli, ["extract", str(case.path), "-o", str(work / "cli-extract")])

    return {"probe": lambda c, w: probe(c.path).duration_s, "read_video": video, "read_audio": audio,
            "extract_file": features, "cli extract": cli_extract}


def _npy_readers(cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    from avmatch.corpus import load_array, load_corpus

    def corpus(case, work):
        return f"{len(load_corpus(case.path.parents[1]).clips)} clips"

    def cli_train(case, work):
        return _run(cli, ["train", str(case.path.parents[1]), "-o", str(work / "run"), "--model", "dual", "--epochs", "1",
                     "--no-histograms", "--option", "hidden=8", "--option", "embed_dim=4"])

    return {"load_array": lambda c, w: load_array(c.path).shape, "load_corpus": corpus, "cli train": cli_train}


def _corpus_readers(cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    from avmatch.corpus import done_entries, load_corpus, read_manifest

    def cli_train(case, work):
        return _run(cli, ["train", str(case.path), "-o", str(work / "run"), "--model", "dual", "--epochs", "1",
                     "--no-histograms", "--val-fraction", "0", "--option", "hidden=8", "--option", "embed_dim=4"])

    return {"read_manifest": lambda c, w: f"{len(read_manifest(c.path))} rows",
            "done_entries": lambda c, w: f"{len(done_entries(c.path))} done",
            "load_corpus": lambda c, w: f"{len(load_corpus(c.path).clips)} clips", "cli train": cli_train}


def _checkpoint_readers(cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    from avmatch.checkpoint import load_trained

    def loaded(case, work):
        trained = load_trained(case.path)
        return f"{trained.model.name}"

    return {"load_trained": loaded, "cli inspect": lambda c, w: _run(cli, ["inspect", "--model", str(c.path)])}


def _score_readers(cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    from avmatch.outputs import load_scores

    return {"load_scores": lambda c, w: load_scores(c.path)[0].shape}


def _run(cli: Cli, argv: list[str]) -> CliRun:
    rc, _out, err = cli(argv)
    return CliRun(rc, err)


def readers(kind: str, cli: Cli) -> dict[str, Callable[[Case, Path], object]]:
    return {"media": _media_readers, "npy": _npy_readers, "corpus": _corpus_readers,
            "checkpoint": _checkpoint_readers, "scores": _score_readers}[kind](cli)


def _one_line(text: str) -> str:
    return text.replace("\n", " | ")[:500]


def judge(case: Case, reader: str, fn: Callable[[], object], limit_s: float = TIME_LIMIT_S) -> Outcome:
    """Run one reader on one case and say how it went."""
    from avmatch.errors import AvmatchError

    started = time.perf_counter()
    try:
        with time_limit(limit_s):
            result = fn()
    except _Hang:
        return Outcome(case, reader, "hang", f"still running after {limit_s:.0f} s", time.perf_counter() - started)
    except AvmatchError as err:
        text = str(err)
        outcome = "error" if "\n" not in text and _names_case(text, case) else "unclear"
        return _expected(Outcome(case, reader, outcome, _one_line(text), time.perf_counter() - started))
    except BaseException as err:  # noqa: BLE001 - what we are here to find
        if isinstance(err, KeyboardInterrupt):
            raise
        return Outcome(case, reader, "crash", _one_line(f"{type(err).__name__}: {err}"),
                       time.perf_counter() - started)
    seconds = time.perf_counter() - started
    if isinstance(result, CliRun):
        rc, err = result.rc, result.stderr
        errors = [line for line in err.splitlines() if line.startswith("avmatch: error:")]
        if "Traceback" in err or rc not in (0, 2):
            return Outcome(case, reader, "crash", _one_line(f"exit {rc}: {err.strip()[-300:]}"), seconds)
        if rc == 0:
            return _expected(Outcome(case, reader, "ok", "exit 0", seconds))
        good = len(errors) == 1 and _names_case(errors[0], case)
        return _expected(Outcome(case, reader, "error" if good else "unclear",
                                 _one_line(errors[0] if errors else err.strip()), seconds))
    return _expected(Outcome(case, reader, "ok", _one_line(str(result)), seconds))


def _names_case(text: str, case: Case) -> bool:
    """The message names the case's file, or a file inside the case's folder."""
    root = case.path.parents[1] if case.kind == "npy" else case.path
    return str(root) in text or str(case.path) in text or (case.kind == "corpus" and str(case.path.parent) in text)


def _expected(o: Outcome) -> Outcome:
    want = o.case.expected(o.reader)
    if o.outcome in HANDLED and want in HANDLED and o.outcome != want:
        return Outcome(o.case, o.reader, "wrong", f"expected {want}, got {o.outcome}: {o.detail}", o.seconds)
    return o


def batch_outcomes(cases: list[Case], work: Path) -> list[Outcome]:
    """One ``extract`` over a folder holding every media case: each bad file must be one row of
    failed.csv (one line, no traceback), each good one a clip in the corpus."""
    from avmatch.corpus import read_manifest
    from avmatch.errors import AvmatchError
    from avmatch.features.job import extract

    src = work / "batch-src"
    src.mkdir(parents=True, exist_ok=True)
    media = [c for c in cases if c.kind == "media" and c.expected("batch") != "skip"]
    for c in media:
        shutil.copyfile(c.path, src / c.path.name)
    out = work / "batch-corpus"
    started = time.perf_counter()
    try:
        with time_limit(TIME_LIMIT_S * 4):
            extract([src], out, progress=False)
    except _Hang:
        return [Outcome(c, "batch extract", "hang", "the batch did not finish", time.perf_counter() - started) for c in media]
    except AvmatchError as err:
        return [Outcome(c, "batch extract", "unclear", _one_line(str(err)), 0.0) for c in media]
    except Exception as err:  # noqa: BLE001
        return [Outcome(c, "batch extract", "crash", _one_line(f"{type(err).__name__}: {err}"), 0.0) for c in media]
    seconds = (time.perf_counter() - started) / max(1, len(media))
    with open(out / "failed.csv", newline="") as f:
        failed = {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}
    done = {Path(r["source"]).name for r in read_manifest(out)}
    outs = []
    for c in media:
        name = c.path.name
        if name in failed:
            reason = failed[name]
            o = Outcome(c, "batch extract", "error" if reason and "\n" not in reason else "unclear", _one_line(reason), seconds)
        elif name in done:
            o = Outcome(c, "batch extract", "ok", "in the corpus", seconds)
        else:
            o = Outcome(c, "batch extract", "crash", "neither in the corpus nor in failed.csv", seconds)
        want = c.expect_by.get("batch", c.expect_by.get("extract_file", c.expect))
        if o.outcome in HANDLED and want in HANDLED and o.outcome != want:
            o = Outcome(c, o.reader, "wrong", f"expected {want}, got {o.outcome}: {o.detail}", o.seconds)
        outs.append(o)
    return outs


def run_all(cases: list[Case], work: str | Path, cli: Cli, limit_s: float = TIME_LIMIT_S,
            progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Every reader of each case's kind on every case (the command-line ones through ``cli``), then the
    batch extraction of the media cases."""
    work = Path(work)
    outcomes: list[Outcome] = []
    table = {kind: readers(kind, cli) for kind in {c.kind for c in cases}}
    with _one_torch_thread():
        _run_readers(cases, table, work, limit_s, outcomes, progress)
    if any(c.kind == "media" for c in cases):
        for o in batch_outcomes(cases, work):
            outcomes.append(o)
            if progress:
                progress(o)
    return outcomes


@contextlib.contextmanager
def _one_torch_thread():
    """The CLI train runs of valid cases train for real: on one thread they take a second, not ten, on
    a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_readers(cases, table, work, limit_s, outcomes, progress) -> None:
    for case in cases:
        for name, fn in table[case.kind].items():
            if case.expected(name) == "skip":
                continue
            scratch = work / "scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            o = judge(case, name, lambda fn=fn, case=case, scratch=scratch: fn(case, scratch), limit_s)
            outcomes.append(o)
            if progress:
                progress(o)


# ----------------------------------------------------------------------------------- kill -9 runs


@dataclass
class CrashRun:
    """A job run as ``python -m avmatch ...``, killed with SIGKILL at random moments and rerun until it
    completes. ``saved`` lists what the parent saw finished on disk, in order (epochs of last.pt, or
    manifest rows); ``unreadable`` counts the times a finished file read back mid-run was partial."""

    kills: int = 0
    runs: int = 0
    saved: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    seconds: float = 0.0
    kept: dict = field(default_factory=dict)  # extract: array file -> mtime_ns when a kill left it done


def _child_env() -> dict:
    # one thread: the machine may be shared, and a run's float sums must not depend on the thread count
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", AVMATCH_DEBUG="1")


def _run_with_kills(argv_for: Callable[[], list[str]], kills: int, seed: int, poll: Callable[[CrashRun], int],
                    log: Path, timeout_s: float) -> CrashRun:
    """Start the job, kill its process group at a random moment (after ``poll`` has seen 1-3 new things
    finished, plus a random fraction of a second, or at a random time after start), rerun; repeat
    ``kills`` times, then let the last run finish. ``poll(run)`` looks at the disk and returns how many
    new things it saw finished."""
    import subprocess

    rng = np.random.default_rng(seed)
    run = CrashRun()
    started = time.monotonic()
    while True:
        run.runs += 1
        with open(log, "ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "avmatch", *argv_for()], stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True, env=_child_env())
        planned = run.kills < kills
        after_new = int(rng.integers(1, 4))
        delay_s = float(rng.uniform(0.0, 0.2))
        kill_after_s = float(rng.uniform(0.2, 1.0)) if planned and rng.random() < 0.25 else None
        t0, new, kill_at = time.monotonic(), 0, None
        while proc.poll() is None:
            now = time.monotonic()
            if now - started > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise TimeoutError(f"job not done after {timeout_s:.0f} s ({run.runs} runs, {run.kills} kills)")
            new += poll(run)
            if planned and kill_at is None and new >= after_new:
                kill_at = now + delay_s
            if planned and kill_after_s and now - t0 >= kill_after_s:
                kill_at = now
            if kill_at is not None and now >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                run.kills += 1
                break
            time.sleep(0.005)
        else:
            poll(run)
            if proc.returncode != 0:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"run {run.runs} ended with status {proc.returncode}: {tail}")
            break
    run.seconds = time.monotonic() - started
    return run


def train_with_kills(corpus: Path, run_dir: Path, train_args: list[str], kills: int = 3, seed: int = 0,
                     timeout_s: float = 240.0) -> CrashRun:
    """``avmatch train CORPUS -o RUN ...`` killed ``kills`` times, rerun with --resume once last.pt exists.
    Every save of last.pt the parent notices is loaded back (it must be whole) and its epoch noted."""
    import torch

    last = run_dir / "last.pt"
    seen = {"mtime": None}

    def argv() -> list[str]:
        return ["train", str(corpus), "-o", str(run_dir), *train_args, *(["--resume"] if last.exists() else [])]

    def poll(run: CrashRun) -> int:
        try:
            mtime = last.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        if mtime == seen["mtime"]:
            return 0
        seen["mtime"] = mtime
        try:
            epoch = torch.load(last, map_location="cpu", weights_only=True)["extra"]["state"]["epoch"]
        except FileNotFoundError:
            return 0
        except Exception as err:  # noqa: BLE001 - a partial file: what must never happen
            run.unreadable.append(f"last.pt: {type(err).__name__}: {err}")
            return 0
        if run.saved and epoch == run.saved[-1]:
            return 0
        run.saved.append(epoch)
        return 1

    return _run_with_kills(argv, kills, seed, poll, run_dir.parent / f"{run_dir.name}.log", timeout_s)


def extract_with_kills(sources: Path, out: Path, kills: int = 2, seed: int = 0, workers: int = 2,
                       timeout_s: float = 240.0) -> CrashRun:
    """``avmatch extract SOURCES -o OUT --workers N`` killed ``kills`` times and rerun. At every change
    of the manifest the parent reads the corpus back (manifest and every listed array must be whole);
    at every kill it notes the mtimes of the finished arrays (a rerun must not write them again)."""
    from avmatch.corpus import done_entries, load_array, read_manifest

    manifest = out / "manifest.jsonl"
    seen = {"size": -1}

    def argv() -> list[str]:
        return ["extract", str(sources), "-o", str(out), "--workers", str(workers)]

    def poll(run: CrashRun) -> int:
        try:
            size = manifest.stat().st_size
        except FileNotFoundError:
            return 0
        if size == seen["size"]:
            return 0
        seen["size"] = size
        try:
            rows = read_manifest(out)
            for row in rows:
                load_array(out / row["file"])
            done = done_entries(out)
        except Exception as err:  # noqa: BLE001
            run.unreadable.append(f"{type(err).__name__}: {err}")
            return 0
        fresh = len(done) - (run.saved[-1] if run.saved else 0)
        run.saved.append(len(done))
        for row in rows:  # finished arrays: a rerun must leave them alone
            if row.get("source") in done:
                path = out / row["file"]
                run.kept.setdefault(str(path), path.stat().st_mtime_ns)
        return max(fresh, 0)

    return _run_with_kills(argv, kills, seed, poll, out.parent / f"{out.name}.log", timeout_s)


def same_corpus(a: Path, b: Path, atol: float = 1e-5) -> list[str]:
    """Differences between two feature corpora: clip ids, array shapes, values beyond ``atol`` (the
    killed runs' child processes use one BLAS thread, which may move a float in its last bits)."""
    from avmatch.corpus import load_corpus

    ca, cb = load_corpus(a), load_corpus(b)
    by_id = {c.id: c for c in cb.clips}
    diffs = [f"clips only in {b}: {sorted(set(by_id) - {c.id for c in ca.clips})}"] if len(ca.clips) != len(cb.clips) else []
    for clip in ca.clips:
        other = by_id.get(clip.id)
        if other is None:
            diffs.append(f"clip {clip.id} only in {a}")
            continue
        for m in ("video", "audio"):
            x, y = getattr(clip, m), getattr(other, m)
            if (x is None) != (y is None) or (x is not None and (x.shape != y.shape or not np.allclose(x, y, rtol=0, atol=atol))):
                diffs.append(f"clip {clip.id}: {m} differs")
    return diffs


# ----------------------------------------------------------------- trust: answers, not only errors
#
# Issue 10's causes 2-5 as CLI runs in their own process (peak memory per run): an output set mixed
# from two runs, a run folder written over, checkpoints that ask for more than their weights or name
# code, forged FAISS files, a distance model ranked by inner product, features at another rate, keys
# that are not one-to-one, options out of range. A run that exits 0 must give the clean run's answer:
# one that does not is a silent wrong answer, the one thing a matching tool must never do.


@dataclass(frozen=True)
class TrustCase:
    name: str
    family: str  # "outputs", "checkpoint", "mismatch", "errors"
    argv: list
    fault: str
    expect: str = "error"  # "error": exit 2 and one line; "ok": exit 0 with ``answer`` on stdout
    answer: str | None = None  # the clean run's stdout (an "ok" case must give exactly this)


@dataclass
class TrustOutcome:
    case: TrustCase
    outcome: str  # ok, error, silent-wrong, wrong, internal, traceback, hang
    detail: str
    peak_mib: float
    seconds: float


_PEAK = ("import resource, runpy, sys\nsys.argv[0] = 'avmatch'\ntry:\n    runpy.run_module('avmatch', run_name='__main__')\n"
         "    rc = 0\n"
         "except SystemExit as stop:  # the program's exit, or argparse's refusal of an option value\n    rc = stop.code\n"
         "sys.stderr.write(f'\\nPEAK_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\nsys.exit(rc)\n")


def _cli_process(argv: list, timeout_s: float = 120.0) -> tuple[int, str, str, float]:
    """(exit status, stdout, stderr, peak MiB) of ``avmatch ARGV`` in a process of its own."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _PEAK, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ, OMP_NUM_THREADS="1"))
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KIB ")]
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("PEAK_KIB ")).strip()
    return proc.returncode, proc.stdout, err, int(peak[-1].split()[1]) / 1024 if peak else float("nan")


def trust_cases(root: str | Path) -> list[TrustCase]:
    """Every trust case, with the files it needs made under ``root`` and each clean answer computed."""
    import torch

    from avmatch.corpus import Corpus, write_corpus
    from avmatch.testing.featuregen import make_feature_corpus

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = make_feature_corpus(24, video_dim=8, audio_dim=6, min_len=4, max_len=8, seed=3)
    feats = Corpus(base.clips, 25.0, 25.0, dict(base.extractor))
    write_corpus(feats, root / "feats")
    write_corpus(Corpus(base.clips, 10.0, 10.0, dict(base.extractor)), root / "feats-10hz")
    tiny = ["--epochs", "2", "--no-histograms", "--batch-size", "8", "--option", "hidden=8", "--option", "embed_dim=4"]

    def must(argv: list) -> str:
        rc, out, err, _ = _cli_process(argv)
        assert rc == 0, f"clean run failed: {argv}: {err}"
        return out

    must(["train", root / "feats", "-o", root / "run", "--model", "dual", *tiny])
    must(["train", root / "feats", "-o", root / "run-b", "--model", "dual", "--seed", "7", *tiny])
    must(["train", root / "feats", "-o", root / "metric", "--model", "va-metric", *tiny])
    key = root / "key.csv"
    key.write_text("video,audio\n" + "".join(f"{c.id},{c.id}\n" for c in base.clips))
    must(["match", root / "feats", root / "feats", "--model", root / "run", "-o", root / "pairs.csv"])
    clean_eval = must(["evaluate", root / "pairs.csv", "--key", key, "--json"])
    cases: list[TrustCase] = []

    def add(name: str, family: str, argv: list, fault: str, expect: str = "error", answer: str | None = None):
        cases.append(TrustCase(name, family, [str(a) for a in argv], fault, expect, answer))

    # 2. outputs of one command as one unit
    mixed = root / "mixed"
    mixed.mkdir()
    must(["match", root / "feats", root / "feats", "--model", root / "run", "-o", mixed / "pairs.csv"])
    shutil.copyfile(mixed / "pairs.scores.npz", root / "old.scores.npz")
    must(["match", root / "feats", root / "feats", "--model", root / "run-b", "-o", mixed / "pairs.csv"])
    shutil.copyfile(root / "old.scores.npz", mixed / "pairs.scores.npz")  # as a kill between renames left it
    add("mixed-output-set", "outputs", ["evaluate", mixed / "pairs.csv", "--key", key, "--json"],
        "pairs.csv of one run beside pairs.scores.npz of another")
    shutil.copytree(root / "run", root / "run-kept")
    add("train-over-a-run", "outputs", ["train", root / "feats", "-o", root / "run-kept", "--model", "dual", *tiny],
        "train -o into a folder holding a run, without --resume or --force")
    shutil.copytree(root / "run", root / "run-torn")
    (root / "run-torn" / "config.json").write_text('{"train": {"model": "du')
    add("resume-torn", "outputs", ["train", root / "feats", "-o", root / "run-torn", "--model", "dual", "--resume"],
        "train --resume on a run folder whose config.json is torn")
    shutil.copytree(root / "run", root / "run-foreign")
    shutil.copyfile(root / "metric" / "last.pt", root / "run-foreign" / "last.pt")
    add("resume-foreign", "outputs", ["train", root / "feats", "-o", root / "run-foreign", "--model", "dual", "--resume"],
        "train --resume with another model's last.pt")

    # 3. a checkpoint is trusted for its weights only
    state = torch.load(root / "run" / "best.pt", weights_only=True)

    def ckpt(name: str, change) -> Path:
        s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
        s["model_config"] = dict(s["model_config"])
        s["extractor"] = {**s.get("extractor", {}), "params": dict(s.get("extractor", {}).get("params", {}))}
        change(s)
        torch.save(s, root / f"{name}.pt")
        return root / f"{name}.pt"

    media = root / "media"
    media.mkdir()
    for i in range(2):
        make_clip(media / f"m{i}.mp4", duration_s=1.0, size=(64, 48))
    code = root / "code.pt"
    code.write_bytes(b"a TorchScript file avmatch must never load on a checkpoint's word")
    for name, change, fault, argv_of in (
            ("ckpt-hidden-4000", lambda s: s["model_config"].update(hidden=4000),
             "model_config hidden=4000 in a small file", None),
            ("ckpt-max-lag-5M", lambda s: s["model_config"].update(max_lag=5_000_000), "max_lag 5,000,000", None),
            ("ckpt-names-code", lambda s: s.update(extractor={"name": "weights", "version": 1, "params": {
                "video_weights": str(code), "fps": 5.0}, "weights_sha1": {"video": "0" * 16}}),
             "its extractor names a TorchScript file", "media"),
            ("ckpt-sample-rate-4M", lambda s: s.update(extractor={"name": "default", "version": 2, "params": {
                "fps": 25.0, "sample_rate": 4_000_000}}), "extractor sample_rate 4,000,000", "media")):
        path = ckpt(name, change)
        videos = media if argv_of else root / "feats"
        add(name, "checkpoint", ["match", videos, videos, "--model", path, "-o", root / f"{name}.csv"], fault)
    os.mkfifo(root / "weights-pipe.pt")
    add("weights-pipe", "checkpoint", ["extract", media, "-o", root / "pipe-feats", "--extractor", "weights",
                                       "--option", f"weights={root / 'weights-pipe.pt'}"],
        "a named pipe as --option weights")
    must(["index", root / "feats", "--model", root / "run", "-o", root / "index"])
    forged = root / "index-forged"
    shutil.copytree(root / "index", forged)
    head = bytearray((forged / "audio.faiss").read_bytes()[:45])
    head[37:45] = (500_000_000).to_bytes(8, "little")
    (forged / "audio.faiss").write_bytes(bytes(head) + bytes(64))  # 109 bytes asking for 2 GB
    add("faiss-109-bytes", "checkpoint", ["search", forged, base.clips[0].id], "a 109-byte FAISS file asking for 2 GB")

    # 4. mismatches between a run and its input, keys that are not one-to-one
    dense = must(["match", root / "feats", root / "feats", "--model", root / "metric", "-o", root / "metric.csv",
                  "--normalise", "none", "--greedy"])
    assert dense
    with open(root / "metric.csv", newline="") as f:
        best = {r["video"]: r["audio"] for r in csv.DictReader(f)}
    must(["index", root / "feats", "--model", root / "metric", "-o", root / "metric-index"])
    add("va-metric-search", "mismatch", ["search", root / "metric-index", *best, "-k", "1", "--json"],
        "a Euclidean model's index: top-1 must be the model's own", "ok",
        json.dumps({v: best[v] for v in best}, sort_keys=True))
    add("rate-10-vs-25-hz", "mismatch", ["match", root / "feats-10hz", root / "feats-10hz", "--model", root / "run",
                                         "-o", root / "rate.csv"], "a 10 Hz corpus, a 25 Hz run")
    bom = root / "key-bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + key.read_text().replace(",", ", ").encode())
    add("key-bom-spaces", "mismatch", ["evaluate", root / "pairs.csv", "--key", bom, "--json"],
        "a key with a UTF-8 BOM and spaces after commas", "ok", clean_eval)
    twice = root / "key-twice.csv"
    twice.write_text(key.read_text() + f"{base.clips[0].id},{base.clips[1].id}\n")
    add("key-video-twice", "mismatch", ["evaluate", root / "pairs.csv", "--key", twice], "a key listing a video twice")
    many = root / "key-not-1to1.csv"
    many.write_text("video,audio\n" + "".join(f"{c.id},{base.clips[0].id}\n" for c in base.clips))
    add("key-not-one-to-one", "mismatch", ["evaluate", root / "pairs.csv", "--key", many], "every video given one audio")
    nan = root / "key-nan.csv"
    nan.write_text("video,audio,offset_s\n" + "".join(f"{c.id},{c.id},nan\n" for c in base.clips))
    add("key-nan-offsets", "mismatch", ["evaluate", root / "pairs.csv", "--key", nan], "offsets of NaN")

    # 5. errors that must be one line
    bad_json = root / "index-bad-json"
    shutil.copytree(root / "index", bad_json)
    (bad_json / "index.json").write_text('{"format": "avmatch-index", "format_version": 1, "video_ids": {"a": 1}}')
    add("index-json-malformed", "errors", ["search", bad_json, base.clips[0].id], "index.json with ids as an object")
    for m in (0, -5):
        add(f"hnsw-m-{m}", "errors", ["index", root / "feats", "--model", root / "run", "-o", root / f"hnsw{m}",
                                      "--kind", "hnsw", "--hnsw-m", m], f"--hnsw-m {m}")
    add("ivf-on-24-clips", "errors", ["match", root / "feats", root / "feats", "--model", root / "run", "-o",
                                      root / "ivf.csv", "--mode", "two-stage", "--retrieval", "ivf"],
        "--retrieval ivf on 24 clips")
    _trust_ii_cases(root, add, must, key, clean_eval, media, tiny)
    return cases


def _trust_ii_cases(root: Path, add: Callable, must: Callable, key: Path, clean_eval: str, media: Path,
                    tiny: list) -> None:
    """Issue 24's cases: the newer commands (mux, evaluate's keys, train's run folder), option values
    at every boundary, files whose headers or timestamps claim more than they hold."""
    from numpy.lib import format as npformat

    pairs = root / "mux-pairs.csv"
    pairs.write_text("video,audio,offset_s\nm0,m1,0\nm1,m0,0\n")
    add("mux-into-inputs", "trust-ii", ["mux", pairs, media, media, "-o", media],
        "mux -o the folder the videos come from (the silent inputs stood in for the results)")
    far = root / "mux-far.csv"
    far.write_text("video,audio,offset_s\nm0,m1,-50\n")
    add("mux-offset-outside", "trust-ii", ["mux", far, media, media, "-o", root / "mux-far"],
        "an offset that puts the audio wholly outside the video (an all-silent track)")
    wild = root / "mux-drift.csv"
    wild.write_text("video,audio,offset_s,drift_ppm\nm0,m1,0,1e12\n")
    add("mux-drift-1e12", "trust-ii", ["mux", wild, media, media, "-o", root / "mux-drift"],
        "a hand-edited drift_ppm of 1e12 (allocated without bound)")
    named = root / "key-file-names.csv"
    named.write_text("video,audio\n" + "".join(f"{line.split(',')[0]}.mp4,{line.split(',')[1]}.flac\n"
                                                for line in key.read_text().splitlines()[1:]))
    add("key-file-names", "trust-ii", ["evaluate", root / "pairs.csv", "--key", named, "--json"],
        "a key naming the files (v1.mp4, a1.flac) where pairs.csv names clip ids (scored 0.000)", "ok", clean_eval)
    other = root / "key-other-set.csv"
    other.write_text("video,audio\nx1,y1\nx2,y2\n")
    add("key-other-set", "trust-ii", ["evaluate", root / "pairs.csv", "--key", other],
        "a key of another test set: every video '(unmatched)'")
    shutil.copytree(root / "run", root / "run-moved")
    for name in ("best.pt", "last.pt"):
        (root / "run-moved" / name).unlink()
    add("train-over-metrics", "trust-ii", ["train", root / "feats", "-o", root / "run-moved", "--model", "dual", *tiny],
        "train -o a run folder holding metrics.json and tb/ but no checkpoint (they were deleted)")
    for name, argv in (("val-fraction-1.5", ["--val-fraction", "1.5"]), ("lr-nan", ["--lr", "nan"]),
                       ("epochs-0", ["--epochs", "0"]), ("hidden--4", ["--option", "hidden=-4"])):
        add(name, "trust-ii", ["train", root / "feats", "-o", root / f"bad-{name}", "--model", "dual", "--no-histograms",
                               *argv], f"train {' '.join(argv)}")
    add("candidates--5", "trust-ii", ["match", root / "feats", root / "feats", "--model", root / "run", "-o",
                                      root / "c.csv", "--candidates", "-5"], "match --candidates -5")
    add("clips-0", "trust-ii", ["make-features", "-o", root / "mf0", "--clips", "0"], "make-features --clips 0")
    late = root / "late" / "late.mkv"
    late.parent.mkdir()
    late_frame_mkv(late)
    add("mkv-frame-at-5h", "trust-ii", ["extract", late, "-o", root / "late-feats"],
        "a tiny mkv whose fourth frame is stamped at 5 h (took 4.4 GB, then MemoryError)")
    sparse = root / "sparse" / "clip1"
    sparse.mkdir(parents=True)
    with open(sparse / "vfeat.npy", "wb") as f:
        npformat.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (32768, 16384)})
        f.truncate(f.tell() + 8 * 32768 * 16384)
    np.save(sparse / "afeat.npy", np.zeros((5, 128), np.float32))
    add("npy-sparse-32768x16384", "trust-ii", ["train", sparse.parent, "-o", root / "sparse-run", "--epochs", "1"],
        "a sparse vfeat.npy whose header claims 32768x16384 (3.4 GB read before the row counts were compared)")


def late_frame_mkv(path: Path) -> Path:
    """Four 32x32 H.264 frames in Matroska, the fourth stamped at 5 h."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for i, pts_ms in enumerate((0, 40, 80, 5 * 3600 * 1000)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts_ms, stream.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def concurrent_writers(root: str | Path, trials: int = 20, files: int = 6) -> dict:
    """Two ``avmatch extract`` processes into one corpus at once, ``trials`` times: a trial is clean
    when both exit 0, the corpus then holds every clip and no temporary file is left. Returns
    {"trials", "clean", "faults": [...]}."""
    import subprocess

    from avmatch.corpus import load_corpus

    root = Path(root)
    src = root / "media"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        if not (src / f"c{i}.mp4").exists():
            make_clip(src / f"c{i}.mp4", duration_s=1.0, size=(64, 48), events=(0.2 + 0.1 * i,))
    clean, faults = 0, []
    for t in range(trials):
        out = root / f"corpus{t}"
        argv = [sys.executable, "-m", "avmatch", "-q", "extract", str(src), "-o", str(out)]
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
                 for _ in range(2)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        problems = [f"exit {rc}: {_one_line(err)[:160]}" for rc, err in results if rc != 0]
        try:
            n = len(load_corpus(out).clips)
            if n != files:
                problems.append(f"the corpus holds {n} clips of {files}")
        except Exception as err:  # noqa: BLE001 - whatever goes wrong, it is this trial's fault to report
            problems.append(f"the corpus does not load: {_one_line(str(err))[:160]}")
        left = list(out.glob("**/.*.tmp*"))
        if left:
            problems.append(f"{len(left)} temporary files left")
        clean += not problems
        faults.extend(f"trial {t}: {p}" for p in problems)
    return {"trials": trials, "clean": clean, "faults": faults}


def run_trust(cases: list[TrustCase], limit_s: float = 120.0,
              progress: Callable[[TrustOutcome], None] | None = None) -> list[TrustOutcome]:
    """Each trust case as ``avmatch ...`` in its own process, judged against its clean answer."""
    import subprocess

    outs = []
    for case in cases:
        started = time.perf_counter()
        try:
            rc, out, err, peak = _cli_process(case.argv, limit_s)
        except subprocess.TimeoutExpired:
            o = TrustOutcome(case, "hang", f"still running after {limit_s:.0f} s", float("nan"), limit_s)
        else:
            seconds = time.perf_counter() - started
            lines = [line for line in err.splitlines() if line.strip()]
            if "Traceback" in err:
                o = TrustOutcome(case, "traceback", _one_line(err[-300:]), peak, seconds)
            elif rc == 0:
                answer = out
                if case.answer is not None and case.name == "va-metric-search":
                    got = json.loads(out)
                    answer = json.dumps({v: h[0]["audio"] for v, h in got.items()}, sort_keys=True)
                if case.answer is not None and answer != case.answer:
                    o = TrustOutcome(case, "silent-wrong", f"exit 0 with another answer: {_one_line(answer[:200])}",
                                     peak, seconds)
                elif case.expect == "error":
                    o = TrustOutcome(case, "silent-wrong", "exit 0 where the input should be refused", peak, seconds)
                else:
                    o = TrustOutcome(case, "ok", "exit 0, the clean answer", peak, seconds)
            elif rc == 2 and len([line for line in lines if line.startswith("avmatch: error:")]) == 1:
                o = TrustOutcome(case, "error" if case.expect == "error" else "wrong", _one_line(lines[-1]), peak, seconds)
            elif rc == 1 and "internal error" in err:
                o = TrustOutcome(case, "internal", _one_line(err[-300:]), peak, seconds)
            else:
                o = TrustOutcome(case, "wrong", f"exit {rc}: {_one_line(err[-300:])}", peak, seconds)
        outs.append(o)
        if progress:
            progress(o)
    return outs


# ------------------------------------------------- trust: a clip's identity is its content (cause 1, 6)
#
# Issue 10's causes 1 and 6 need a sequence of commands, not one input: match or extract, change the
# files (replace, delete, rename, a second folder with the same names, a name that is not UTF-8),
# run again. Each scenario returns (clean answer, answer after the change, exit status of the run
# after the change), where the clean answer is what a fresh run (fresh cache, fresh corpus) gives on
# the files as they are now. Exit 0 with another answer is a silent wrong answer.
# ``identity_corpus_cases`` adds the manifest side as plain cases of kind "corpus" and "media".


def identity_corpus_cases(root: Path) -> list[Case]:
    """Manifests with source identities (bad ones refused; a clip written from two files read as the
    later file only) and media files whose names are not UTF-8."""
    from avmatch.corpus import write_corpus
    from avmatch.testing.featuregen import make_feature_corpus

    root.mkdir(parents=True, exist_ok=True)
    base = make_feature_corpus(5, video_dim=6, audio_dim=4, min_len=3, max_len=5, seed=0)  # 4 left to train on
    cases: list[Case] = []
    ident = {"size": 10, "mtime_ns": 1, "hash": "00"}
    for name, fault, edit, expect in (
            ("manifest-source-id-text", "a row whose source_id is a word",
             lambda rows: [{**rows[0], "source_id": "fresh"}] + rows[1:], "error"),
            ("manifest-source-id-float", "a row whose source_id size is 1.5",
             lambda rows: [{**rows[0], "source_id": {**ident, "size": 1.5}}] + rows[1:], "error"),
            ("manifest-removal-bad", "a removal line whose clip is an object",
             lambda rows: rows + [{"clip": {"a": 1}, "removed": "gone"}], "error"),
            ("manifest-removal", "a clip taken out by a removal line (valid)",
             lambda rows: rows + [{"clip": rows[0]["clip"], "removed": "its file is gone"}], "ok"),
            ("manifest-two-sources", "one clip's video from one file, its audio from another (valid: the later "
             "write only)", lambda rows: rows[:1] + [{**rows[1], "source": "/elsewhere/y.wav", "modalities": ["audio"],
                                                      "source_id": ident}] + rows[2:], "ok")):
        folder = root / name
        write_corpus(base, folder)
        rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
        cases.append(Case(name, "corpus", folder, fault, expect))
    media = root / "media"
    media.mkdir(exist_ok=True)
    good = Path(os.fsdecode(bytes(media) + b"/caf\xe9-latin1.mp4"))
    make_clip(good, duration_s=1.0, size=(64, 48))
    cases.append(Case(good.name, "media", good, "a good clip whose name is Latin-1, not UTF-8 (valid)", "ok"))
    bad = Path(os.fsdecode(bytes(media) + b"/bad\xff.mp4"))
    bad.write_bytes(b"not a video, and a name that is not UTF-8\n" * 20)
    # failed.csv names it in the visible form (bad\xff.mp4), which the batch check cannot match
    cases.append(Case(bad.name, "media", bad, "a text file named .mp4 whose name is not UTF-8", "error",
                      {"batch": "skip"}))
    return cases


@dataclass(frozen=True)
class Scenario:
    """A sequence of commands around a change of the files; ``run(work, cli)`` returns (clean answer,
    answer after the change, exit status of the command after the change), which runs last.
    ``cli(argv)`` runs ``avmatch ARGV`` and returns (exit status, stdout, stderr)."""

    name: str
    family: str  # "identity" (issue 10, cause 1) or "files" (cause 6: modes, failed.csv)
    fault: str
    run: Callable[[Path, Callable], tuple]


def _pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return sorted((r["video"], r["audio"]) for r in csv.DictReader(f))


def _digest(corpus: Path) -> dict:
    """Every clip of a corpus: the SHA-1 of each modality's features (what a training run would read)."""
    import hashlib

    from avmatch.corpus import load_corpus

    return {c.id: {m: hashlib.sha1(getattr(c, m).tobytes()).hexdigest()[:12] for m in ("video", "audio")
                   if getattr(c, m) is not None} for c in sorted(load_corpus(corpus).clips, key=lambda c: c.id)}


def _decoded(stdout: str) -> int:
    """How many files an ``extract`` run decoded, from its summary line."""
    words = stdout.split("extracted ", 1)[1].split() if "extracted " in stdout else ["-1"]
    return int(words[0])


def _must(cli: Callable, argv: list) -> str:
    rc, out, err = cli([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"setup step failed (exit {rc}): avmatch {' '.join(map(str, argv))}: {err.strip()[-300:]}")
    return out


def _sounds(folder: Path, n: int, first: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        make_audio(folder / f"a{i}.wav", duration_s=1.0, events=(0.1 + 0.15 * i, 0.7))
    return folder


def _match_setup(work: Path, cli: Callable) -> tuple[Path, Path, Path]:
    """A small timing model (trained once per work folder), three silent videos and three sounds."""
    run = work.parent / "sync-run"
    if not (run / "best.pt").exists():
        train = work.parent / "sync-train"
        train.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            make_clip(train / f"t{i}.mp4", duration_s=1.0, events=(0.1 + 0.2 * i,))
        _must(cli, ["extract", train, "-o", work.parent / "sync-feats", "--paired"])
        _must(cli, ["train", work.parent / "sync-feats", "-o", run, "--model", "sync", "--epochs", "1",
                    "--no-histograms"])
    videos = work / "videos"
    videos.mkdir(parents=True)
    for i in range(3):
        make_clip(videos / f"v{i}.mp4", duration_s=1.0, events=(0.1 + 0.15 * i, 0.7), with_audio=False)
    return run, videos, _sounds(work / "audios", 3)


@contextlib.contextmanager
def _cache(path: Path):
    """AVMATCH_CACHE set to ``path`` for the commands inside (a fresh path is a clean run)."""
    old = os.environ.get("AVMATCH_CACHE")
    os.environ["AVMATCH_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("AVMATCH_CACHE", None)
        else:
            os.environ["AVMATCH_CACHE"] = old


def _match_after(work: Path, cli: Callable, change: Callable[[Path], None]) -> tuple:
    run, videos, audios = _match_setup(work, cli)

    def match(name: str) -> int:
        rc, _, _ = cli([str(a) for a in ("match", videos, audios, "--model", run, "-o", work / name, "--no-heatmap")])
        return rc

    with _cache(work / "cache"):
        _must(cli, ["match", videos, audios, "--model", run, "-o", work / "before.csv", "--no-heatmap"])
    change(audios)
    with _cache(work / "clean-cache"):
        _must(cli, ["match", videos, audios, "--model", run, "-o", work / "clean.csv", "--no-heatmap"])
    with _cache(work / "cache"):
        rc = match("after.csv")
    return _pairs(work / "clean.csv"), _pairs(work / "after.csv") if rc == 0 else None, rc


def _replace_and_delete(audios: Path) -> None:
    shutil.copyfile(audios / "a1.wav", audios / "a0.wav")
    (audios / "a2.wav").unlink()


def _now_corrupt(audios: Path) -> None:
    (audios / "a1.wav").write_bytes(b"this sound file was overwritten by text\n" * 30)


def _non_utf8_name(audios: Path) -> None:
    os.rename(audios / "a2.wav", os.fsdecode(bytes(audios) + b"/caf\xe9.wav"))


def _extract_after(work: Path, cli: Callable, change: Callable[[Path], None], answer=_digest) -> tuple:
    """extract SRC; change the files; extract SRC again; the clean answer is a fresh corpus's."""
    src = _sounds(work / "src", 3)
    _must(cli, ["extract", src, "-o", work / "corpus"])
    change(src)
    _must(cli, ["extract", src, "-o", work / "clean"])
    rc, _, _ = cli(["extract", str(src), "-o", str(work / "corpus")])
    return answer(work / "clean"), answer(work / "corpus") if rc == 0 else None, rc


def _overwrite(src: Path) -> None:
    make_audio(src / "a0.wav", duration_s=1.5, events=(0.9,))


def _rename(src: Path) -> None:
    (src / "a0.wav").rename(src / "renamed.wav")


def _two_folders(work: Path, cli: Callable) -> tuple:
    a, b = work / "dirA", work / "dirB"
    a.mkdir(parents=True)
    b.mkdir()
    make_clip(a / "y.mp4", duration_s=1.0, with_audio=False)
    make_audio(b / "y.wav", duration_s=1.0, events=(0.5,))
    _must(cli, ["extract", a, "-o", work / "feats"])
    _must(cli, ["extract", b, "-o", work / "clean"])
    rc, _, _ = cli(["extract", str(b), "-o", str(work / "feats")])
    # what the corpus says clip y is, against what extracting dirB gives it
    return _digest(work / "clean")["y"], _digest(work / "feats")["y"] if rc == 0 else None, rc


def _two_spellings(work: Path, cli: Callable) -> tuple:
    src = _sounds(work / "src", 3)
    (work / "link").symlink_to(src)
    _must(cli, ["extract", src, "-o", work / "corpus"])
    rc, out, _ = cli(["extract", f"{work}/link/", "-o", str(work / "corpus")])
    # the same folder again: nothing to decode, the same corpus
    return (_digest(work / "corpus"), 0), (_digest(work / "corpus"), _decoded(out)) if rc == 0 else None, rc


def _non_utf8_failed(work: Path, cli: Callable) -> tuple:
    """A bad file whose name is not UTF-8: failed.csv must name it as the same bad file named by its
    visible form does."""
    def listed(folder: Path, name: bytes) -> tuple:
        src = _sounds(folder / "src", 1)
        Path(os.fsdecode(bytes(src) + b"/" + name)).write_bytes(b"not sound\n" * 50)
        rc, _, _ = cli(["extract", str(src), "-o", str(folder / "corpus")])
        text = (folder / "corpus" / "failed.csv").read_bytes().decode("utf-8") if rc == 0 else ""
        return rc, sorted((Path(r["file"]).name, r["reason"]) for r in csv.DictReader(io.StringIO(text)))

    _, clean = listed(work / "visible", b"bad\\xff.wav")
    rc, after = listed(work / "raw", b"bad\xff.wav")
    return clean, after if rc == 0 else None, rc


def _umask(work: Path, cli: Callable) -> tuple:
    src = _sounds(work / "src", 2)
    (src / "bad.wav").write_bytes(b"junk" * 100)
    old = os.umask(0o022)
    try:
        rc, _, _ = cli(["extract", str(src), "-o", str(work / "corpus")])
    finally:
        os.umask(old)
    modes = sorted({oct(p.stat().st_mode & 0o777) for p in (work / "corpus").rglob("*") if p.is_file()})
    return [oct(0o644)], modes if rc == 0 else None, rc


def dual_matching_set(folder: Path) -> list:
    """A small dual model trained in ``folder`` (seconds) and 300 shuffled generated clips of each
    modality written as corpora: the arguments ``VIDEOS AUDIOS --model RUN`` of a match."""
    from avmatch.corpus import write_corpus
    from avmatch.testing.featuregen import make_feature_corpus, shuffle_for_matching
    from avmatch.training import TrainConfig, train

    dims = {"video_dim": 32, "audio_dim": 16, "min_len": 6, "max_len": 10}
    train(make_feature_corpus(200, seed=1, **dims), folder / "run", TrainConfig(
        model="dual", epochs=2, batch_size=32, histograms=False, model_options={"hidden": 32, "embed_dim": 16}),
        progress=False)
    videos, audios, _ = shuffle_for_matching(make_feature_corpus(300, seed=2, **dims), seed=3)
    write_corpus(videos, folder / "videos")
    write_corpus(audios, folder / "audios")
    return [str(folder / "videos"), str(folder / "audios"), "--model", str(folder / "run")]


def _two_sharded_matches(work: Path, cli: Callable) -> tuple:
    """Two ``match --shards 2 --shard-dir KEPT`` of one set at once (a local cluster each): every run that
    exits 0 must give the answer of a run with no kept folder; a refused one must say why."""
    import threading

    common = ["match", *dual_matching_set(work), "--mode", "two-stage", "--adapt", "0", "--no-heatmap", "--shards",
              "2", "--cluster"]
    _must(cli, [*common, "-o", work / "clean.csv"])
    runs: list = [None, None]

    def one(i: int) -> None:
        runs[i] = cli([str(a) for a in (*common, "--shard-dir", work / "kept", "-o", work / f"run{i}.csv")])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rc, _, err in runs:
        if rc and "another run is searching these shards" not in err:
            raise RuntimeError(f"a concurrent run failed (exit {rc}): {err.strip()[-300:]}")
    clean = _pairs(work / "clean.csv")
    answers = [_pairs(work / f"run{i}.csv") for i, (rc, _, _) in enumerate(runs) if rc == 0]
    return clean, next((a for a in answers if a != clean), answers[0]), 0


def _failed_history(work: Path, cli: Callable) -> tuple:
    a, b = _sounds(work / "dirA", 1), _sounds(work / "dirB", 1, first=1)
    (a / "badA.wav").write_bytes(b"junk" * 100)
    (b / "badB.wav").write_bytes(b"junk" * 100)
    _must(cli, ["extract", a, "-o", work / "corpus"])
    rc, _, _ = cli(["extract", str(b), "-o", str(work / "corpus")])
    with open(work / "corpus" / "failed.csv", newline="", encoding="utf-8") as f:
        names = sorted(Path(r["file"]).name for r in csv.DictReader(f))
    return ["badA.wav", "badB.wav"], names if rc == 0 else None, rc


def identity_scenarios() -> list[Scenario]:
    """Issue 10's causes 1 and 6 as scenarios (see ``run_scenarios``)."""
    return [
        Scenario("cache-replace-delete", "identity", "match two folders, copy one audio over another, delete a "
                 "third, match again", lambda w, cli: _match_after(w, cli, _replace_and_delete)),
        Scenario("cache-file-now-corrupt", "identity", "match, overwrite an audio file with text, match again",
                 lambda w, cli: _match_after(w, cli, _now_corrupt)),
        Scenario("cache-non-utf8-name", "identity", "match, rename an audio file to a Latin-1 name, match again",
                 lambda w, cli: _match_after(w, cli, _non_utf8_name)),
        Scenario("resume-changed-file", "identity", "extract, write other sound under an extracted name, extract "
                 "again", lambda w, cli: _extract_after(w, cli, _overwrite)),
        Scenario("resume-renamed-file", "identity", "extract, rename a file, extract again (no clip twice)",
                 lambda w, cli: _extract_after(w, cli, _rename)),
        Scenario("two-folders-one-name", "identity", "extract dirA (y.mp4) then dirB (y.wav) into one corpus",
                 _two_folders),
        Scenario("one-folder-two-spellings", "identity", "extract a folder, then the same folder through a link "
                 "with a trailing slash (nothing decoded again)", _two_spellings),
        Scenario("failed-non-utf8-name", "identity", "a bad file whose name is not UTF-8 in a batch",
                 _non_utf8_failed),
        Scenario("umask-022", "files", "extract under umask 022: every file 0644", _umask),
        Scenario("failed-csv-history", "files", "extract dirA (one bad file), then dirB (another): both listed",
                 _failed_history),
        Scenario("two-sharded-matches", "files", "two sharded matches of one set at once, their shards kept in one "
                 "--shard-dir", _two_sharded_matches),
    ]


def run_scenarios(scenarios: list[Scenario], work: str | Path, cli: Callable | None = None) -> list[TrustOutcome]:
    """Each scenario judged like a trust case by its last command (the one after the change): ok (exit
    0 with the clean answer), error (exit 2, one line), silent-wrong (exit 0, another answer),
    internal, traceback. ``cli`` defaults to a process of its own per command (peak memory
    measured); ``avmatch.cli.run_captured`` is faster."""
    import resource
    import traceback

    work = Path(work)
    outs = []
    for sc in scenarios:
        peak, last = [0.0], {}

        def cli_of(argv: list, peak: list = peak, last: dict = last) -> tuple[int, str, str]:  # this scenario's
            if cli is None:
                rc, out, err, mib = _cli_process(argv)
            else:
                (rc, out, err), mib = cli(argv), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            peak[0] = max(peak[0], mib)
            last.update(rc=rc, err=err)
            return rc, out, err

        case = TrustCase(sc.name, sc.family, [], sc.fault, "ok")
        started = time.perf_counter()
        try:
            clean, after, rc = sc.run(work / sc.name, cli_of)
        except Exception:  # noqa: BLE001 - a scenario that breaks is reported, not raised
            outs.append(TrustOutcome(case, "traceback", _one_line(traceback.format_exc()[-300:]), peak[0],
                                     time.perf_counter() - started))
            continue
        seconds, err = time.perf_counter() - started, last.get("err", "")
        lines = [line for line in err.splitlines() if line.startswith("avmatch: error:")]
        if "Traceback" in err:
            o = TrustOutcome(case, "traceback", _one_line(err[-300:]), peak[0], seconds)
        elif rc == 0:
            same = after == clean
            o = TrustOutcome(case, "ok" if same else "silent-wrong",
                             "exit 0, the clean answer" if same else
                             f"exit 0 with {_one_line(str(after))[:200]}, clean {_one_line(str(clean))[:200]}",
                             peak[0], seconds)
        elif rc == 2 and len(lines) == 1:
            o = TrustOutcome(case, "error", _one_line(lines[0]), peak[0], seconds)
        elif rc == 1 and "internal error" in err:
            o = TrustOutcome(case, "internal", _one_line(err[-300:]), peak[0], seconds)
        else:
            o = TrustOutcome(case, "wrong", f"exit {rc}: {_one_line(err[-300:])}", peak[0], seconds)
        outs.append(o)
    return outs
