"""``default``: weight-free features at the video frame rate, so the timing of events survives.

Row k of both modalities describes the interval [k / fps, (k + 1) / fps) of the file, so an audio
row and a video row with the same index happened at the same time, and an offset in rows is an
offset in frames.

Visual (610 values per frame, decoded straight to 32x32 RGB by ffmpeg's scaler):
  -  64: brightness on an 8x8 grid, in [-1, 1]
  -  32: colour (blue - luma, red - luma) on a 4x4 grid
  - 256: signed brightness change since the previous frame on a 16x16 grid, less the frame's mean
         change (a light turned up everywhere is not motion), log-compressed with its sign
  - 256: motion energy on a 16x16 grid: mean |brightness change| in each cell, log-scaled to [0, 1]
  -   1: the frame's mean signed brightness change (lighting)
  -   1: global motion energy (last column)
  The 16x16 maps say *which* of several small objects moved (a 4x4 grid cannot); the model learns
  what to make of them.
Audio (42 values per frame, from 16 kHz mono):
  - 40: log-mel band energies (window of two frames centred on the frame), dB scaled by (dB + 50) / 25
  -  1: onset strength (spectral flux: mean positive rise of the band energies since the previous frame)
  -  1: loudness (dB of the summed band power, same scaling as the bands)
  Onset and loudness are computed from the bands alone, so :meth:`augment_audio` can change the bands
  (codec band limits, level, equalisation, noise) and recompute them exactly as the extractor would.
Every value uses fixed constants, never statistics of the clip, so features of different clips (and of
parts of one clip) are comparable as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avmatch.errors import AvmatchError
from avmatch.features import Extractor, register_extractor
from avmatch.features.spectral import LogMel, mel_centres_hz
from avmatch.media import iter_audio, iter_video_frames

GRID_PX = 32  # frames are decoded at GRID_PX x GRID_PX
MOTION_GAIN = 100.0  # log1p(gain * mean |change|) / log1p(gain): small motion still registers


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float32 brightness in [0, 1]."""
    return rgb.astype(np.float32) @ np.array([0.299 / 255, 0.587 / 255, 0.114 / 255], np.float32)


def cell_mean(x: np.ndarray, cells: int) -> np.ndarray:
    """(n, H, W, ...) -> (n, cells, cells, ...) means over equal blocks."""
    n, h, w = x.shape[:3]
    return x.reshape(n, cells, h // cells, cells, w // cells, *x.shape[3:]).mean(axis=(2, 4))


def motion_scale(diff: np.ndarray) -> np.ndarray:
    return np.log1p(MOTION_GAIN * diff) / np.log1p(MOTION_GAIN)


def db_scale(db: np.ndarray) -> np.ndarray:
    return (db + 50.0) / 25.0


def check_sample_rate(sample_rate: int) -> int:
    """An audio sample rate an extractor can honour (a checkpoint or a user may ask for anything)."""
    if not 4000 <= sample_rate <= 96000:
        raise AvmatchError(f"extractor option sample_rate must be in [4000, 96000] Hz, got {sample_rate}")
    return int(sample_rate)


def signed_scale(diff: np.ndarray) -> np.ndarray:
    return np.sign(diff) * motion_scale(np.abs(diff))


MEL_BANDS = 40
DB_OF_FLOOR = -100.0  # dB the spectral code gives to digital silence (spectral.DB_FLOOR)


def mel_features(mel_db: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
    """(n, 40) band energies in dB -> (n, 42) audio features: scaled bands, onset strength, loudness.

    ``before`` is the row preceding the first (None at the start of a file: the first onset is 0)."""
    prev = np.concatenate([mel_db[:1] if before is None else before[None], mel_db[:-1]])
    onset = np.maximum(mel_db - prev, 0.0).mean(axis=1, keepdims=True) / 10.0
    loudness = 10.0 * np.log10(np.power(10.0, mel_db / 10.0).sum(axis=1, keepdims=True) + 1e-10)
    return np.concatenate([db_scale(mel_db), onset, db_scale(np.maximum(loudness, DB_OF_FLOOR))], axis=1)


@register_extractor("default")
class FrameRateFeatures(Extractor):
    """weight-free frame-rate features: appearance + 16x16 motion maps | log-mel + onset (25 Hz)"""

    version = 2
    video_dim = 64 + 32 + 256 + 256 + 1 + 1
    video_maps = (96, 2, 16)  # the signed and the absolute motion map, 16x16 each, from column 96
    audio_dim = MEL_BANDS + 1 + 1

    def __init__(self, fps: float = 25.0, sample_rate: int = 16000):
        if not 0 < fps <= 240:
            raise AvmatchError(f"extractor option fps must be in (0, 240], got {fps}")
        self.fps = float(fps)
        self.sample_rate = check_sample_rate(sample_rate)
        self.video_rate_hz = self.audio_rate_hz = self.fps
        hop = self.sample_rate / self.fps
        self.fmax = min(8000.0, self.sample_rate / 2)
        self.logmel = LogMel(self.sample_rate, hop=hop, win=int(round(2 * hop)), n_mels=MEL_BANDS,
                             fmin=50.0, fmax=self.fmax)

    def params(self) -> dict[str, Any]:
        return {"fps": self.fps, "sample_rate": self.sample_rate}

    def video(self, path: str | Path) -> np.ndarray:
        rows = []
        prev = None  # brightness of the last frame of the previous chunk
        for rgb in iter_video_frames(path, fps=self.fps, size=(GRID_PX, GRID_PX)):  # (n, 32, 32, 3)
            y = luma(rgb)  # (n, 32, 32)
            n = len(y)
            look = 2.0 * cell_mean(y, 8).reshape(n, 64) - 1.0
            cells = cell_mean(rgb.astype(np.float32) / 255.0, 4)  # (n, 4, 4, 3)
            y4 = cell_mean(y, 4)[..., None]
            colour = np.concatenate([cells[..., 2:3] - y4, cells[..., 0:1] - y4], axis=-1).reshape(n, 32)
            before = np.concatenate([y[:1] if prev is None else prev[None], y[:-1]])
            change = y - before  # (n, 32, 32); the first frame of a file has no motion
            lighting = change.mean(axis=(1, 2))  # (n,)
            signed = signed_scale(cell_mean(change, 16).reshape(n, 256) - lighting[:, None])
            moving = motion_scale(cell_mean(np.abs(change), 16).reshape(n, 256))
            total = motion_scale(np.abs(change).mean(axis=(1, 2)))[:, None]
            rows.append(np.concatenate([look, 2.0 * colour, signed, moving, signed_scale(lighting)[:, None], total],
                                       axis=1))
            prev = y[-1]
        return np.concatenate(rows).astype(np.float32)  # (T, 610)

    def audio(self, path: str | Path) -> np.ndarray:
        rows = []
        last = None  # band energies of the previous row, for the onset strength
        for mel_db, _energy_db in self.logmel.rows(iter_audio(path, self.sample_rate)):
            rows.append(mel_features(mel_db, last))
            last = mel_db[-1]
        if not rows:
            return np.zeros((0, self.audio_dim), np.float32)
        return np.concatenate(rows).astype(np.float32)  # (T, 42)

    def augment_audio(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the same sound looks like through another microphone, codec or room, for training.

        Works on the features of one clip (T, 42): it changes the band energies as a low-bit-rate
        codec (bands above a cut-off at the floor), a telephone line (no lows, no highs), a quieter or
        louder recorder (a level shift), another microphone (a smooth tilt across bands) or a noisier
        room (noise added in power) would, then recomputes onset and loudness from the bands."""
        mel_db = x[:, :MEL_BANDS].astype(np.float64) * 25.0 - 50.0  # undo db_scale
        centres = mel_centres_hz(MEL_BANDS, 50.0, self.fmax)
        # in the order sound meets them: microphone, recorder level, room noise, then the channel
        if rng.random() < 0.5:  # microphone colour: a smooth random tilt of up to +-8 dB across the bands
            mel_db += np.interp(np.linspace(0, 1, MEL_BANDS), [0, 0.5, 1], rng.uniform(-8.0, 8.0, 3))
        mel_db += rng.uniform(-12.0, 12.0)  # recorder level
        if rng.random() < 0.4:  # background noise of some colour, added in power
            noise_db = rng.uniform(-65.0, -30.0) + rng.uniform(-6.0, 6.0) * np.linspace(-1, 1, MEL_BANDS)
            noise_db = noise_db + rng.normal(0.0, 2.0, mel_db.shape)
            mel_db = 10.0 * np.log10(np.power(10.0, mel_db / 10.0) + np.power(10.0, noise_db / 10.0))
        floor = rng.uniform(-100.0, -75.0)
        if rng.random() < 0.5:  # codec or bandwidth limit: mp3 at 24 kbit/s keeps ~5.8 kHz, 8 kHz audio 4 kHz
            cut = centres > rng.uniform(2800.0, 7500.0)
            mel_db[:, cut] = floor + rng.normal(0.0, 1.0, (len(mel_db), int(cut.sum())))
        if rng.random() < 0.2:  # telephone: no lows either
            mel_db[:, centres < rng.uniform(150.0, 400.0)] = floor
        mel_db = np.maximum(mel_db, DB_OF_FLOOR)
        return mel_features(mel_db).astype(np.float32)
