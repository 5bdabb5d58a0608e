"""One clean sound track in every audio format users bring: codecs, bit rates, telephone band, level, noise.

    >>> from avmatch.testing.formats import FORMATS, reencode
    >>> for name in FORMATS:
    ...     path = reencode("clean.wav", "formats/", name, np.random.default_rng(0))  # formats/clean-<name>.<suffix>

Each :class:`AudioFormat` says how the signal is changed first (band, level, noise; as a phone line
or a recorder would) and then how it is encoded (container, codec, bit rate), with PyAV through
:func:`avmatch.media.write_media`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import scipy.signal
from scipy.signal import butter, resample_poly, sosfilt

from avmatch.errors import AvmatchError
from avmatch.media import probe, read_audio, write_media

Degrade = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, int]]


@dataclass(frozen=True)
class AudioFormat:
    """How to write one format: what happens to the signal, then container (suffix), codec, bit rate."""

    suffix: str
    codec: str
    bit_rate: int | None = None  # bit/s; None: the codec's or write_media's default
    degrade: Degrade | None = None  # (audio, sample_rate, rng) -> (audio, sample_rate)
    about: str = ""


def _gain(db: float) -> Degrade:
    def apply(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        # a recorder clips at full scale; nothing else keeps a loud signal in range
        return np.clip(audio * 10 ** (db / 20), -1.0, 1.0), sample_rate
    return apply


def _telephone(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The 300-3400 Hz telephone band, at the 8 kHz of a phone line."""
    high_hz = min(3400.0, 0.45 * sample_rate)
    band = sosfilt(butter(6, [300.0, high_hz], btype="bandpass", fs=sample_rate, output="sos"), audio)
    g = np.gcd(8000, sample_rate)
    return resample_poly(band, 8000 // g, sample_rate // g), 8000


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS noise with a 1/f power spectrum."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (x / (x.std() + 1e-12)).astype(np.float32)


def _noise(snr_db: float) -> Degrade:
    def apply(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        noisy = audio + rms * 10 ** (-snr_db / 20) * pink_noise(len(audio), rng)
        return np.clip(noisy, -1.0, 1.0), sample_rate
    return apply


def _room(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A microphone across a room: the sound convolved with a reverberant tail (exponentially decaying
    noise, 60 dB down in 0.3-0.9 s, at -3..+6 dB direct-to-reverberant ratio) and a noise floor."""
    x = audio.astype(np.float64)
    t60 = rng.uniform(0.3, 0.9)
    n = int(t60 * sample_rate)
    tail = rng.standard_normal(n) * 10 ** (-3.0 * np.arange(n) / n)  # -60 dB at t60
    tail[: int(0.002 * sample_rate)] = 0.0  # the first reflection comes a little after the direct sound
    drr_db = rng.uniform(-3.0, 6.0)
    tail *= 10 ** (-drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    wet = scipy.signal.fftconvolve(x, tail)[: len(x)]
    y = x + wet
    rms = float(np.sqrt(np.mean(y**2)))
    y = y + rms * 10 ** (-rng.uniform(25.0, 40.0) / 20) * pink_noise(len(y), rng)
    return np.clip(y / max(1.0, np.abs(y).max()), -1.0, 1.0).astype(np.float32), sample_rate


FORMATS: dict[str, AudioFormat] = {
    "wav": AudioFormat(".wav", "pcm_s16le", about="16-bit PCM"),
    "flac": AudioFormat(".flac", "flac", about="lossless FLAC"),
    "mp3-24k": AudioFormat(".mp3", "libmp3lame", 24_000,
                           about="MP3 at 24 kbit/s (PyAV's default at 16 kHz mono; LAME takes 32 at 32-48 kHz)"),
    "mp3-64k": AudioFormat(".mp3", "libmp3lame", 64_000, about="MP3 at 64 kbit/s"),
    "mp3-128k": AudioFormat(".mp3", "libmp3lame", 128_000, about="MP3 at 128 kbit/s"),
    "aac": AudioFormat(".m4a", "aac", about="AAC in an .m4a (MP4), 64 kbit/s"),
    "opus": AudioFormat(".opus", "libopus", 32_000, about="Opus in Ogg at 32 kbit/s"),
    "tel-8k": AudioFormat(".wav", "pcm_mulaw", degrade=_telephone,
                          about="telephone: 300-3400 Hz band, 8 kHz, mu-law WAV"),
    "gain+12": AudioFormat(".wav", "pcm_s16le", degrade=_gain(12.0), about="12 dB louder, clipped at full scale"),
    "gain-12": AudioFormat(".wav", "pcm_s16le", degrade=_gain(-12.0), about="12 dB quieter"),
    "noise": AudioFormat(".wav", "pcm_s16le", degrade=_noise(10.0), about="pink noise added at 10 dB SNR"),
    "room": AudioFormat(".wav", "pcm_s16le", degrade=_room,
                        about="recorded across a room: reverberation (T60 0.3-0.9 s) and a noise floor"),
}


def _format(name: str) -> AudioFormat:
    if name not in FORMATS:
        raise AvmatchError(f"unknown audio format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def _codec_rate(codec: str, sample_rate: int) -> int:
    """``sample_rate`` if the codec takes it, else the nearest higher rate it does (Opus: 8-48 kHz)."""
    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    higher = [r for r in rates if r > sample_rate]
    return min(higher) if higher else max(rates)


def write_format(audio: np.ndarray, sample_rate: int, path_without_suffix: str | Path, name: str,
                 rng: np.random.Generator | None = None) -> Path:
    """Write mono float ``audio`` (in [-1, 1]) in the format ``name`` of :data:`FORMATS` to
    ``path_without_suffix`` + the format's suffix (atomically); returns that path. ``rng`` draws the
    noise of formats that add it (default: seed 0)."""
    fmt = _format(name)
    audio = np.asarray(audio, np.float32)
    path = Path(f"{path_without_suffix}{fmt.suffix}")
    if audio.ndim != 1 or not len(audio) or not np.isfinite(audio).all():
        raise AvmatchError(f"need non-empty, finite mono audio to write as {name}, got shape {audio.shape}", path)
    if fmt.degrade is not None:
        audio, sample_rate = fmt.degrade(audio, sample_rate, rng or np.random.default_rng(0))
    rate = _codec_rate(fmt.codec, sample_rate)
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        audio = resample_poly(audio, rate // g, sample_rate // g)
    return write_media(path, None, np.asarray(audio, np.float32), sample_rate=rate, audio_codec=fmt.codec,
                       audio_bit_rate=fmt.bit_rate)


def reencode(src_path: str | Path, dst_dir: str | Path, name: str, rng: np.random.Generator | None = None) -> Path:
    """The sound of ``src_path`` (any file :func:`avmatch.media.read_audio` decodes, mono at its own
    sample rate) written in the format ``name`` as ``dst_dir/<stem>-<name><suffix>``; returns that path."""
    _format(name)
    sample_rate = probe(src_path).sample_rate
    if not sample_rate:
        raise AvmatchError("has no audio stream", src_path)
    audio = read_audio(src_path, sample_rate)
    return write_format(audio, sample_rate, Path(dst_dir) / f"{Path(src_path).stem}-{name}", name, rng)
