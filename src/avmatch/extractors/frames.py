"""``default``: weight-free features at the video frame rate, so the timing of events survives.

Row k of both modalities describes the interval [k / fps, (k + 1) / fps) of the file, so an audio
row and a video row with the same index happened at the same time, and an offset in rows is an
offset in frames.

Visual (113 values per frame, decoded straight to 32x32 RGB by ffmpeg's scaler):
  - 64: brightness on an 8x8 grid, in [-1, 1]
  - 32: colour (blue - luma, red - luma) on a 4x4 grid
  - 16: motion energy on a 4x4 grid: mean |brightness change| since the previous frame, log-scaled to [0, 1]
  -  1: global motion energy
Audio (42 values per frame, from 16 kHz mono):
  - 40: log-mel band energies (window of two frames centred on the frame), dB scaled by (dB + 50) / 25
  -  1: onset strength (spectral flux: mean positive rise of the band energies since the previous frame)
  -  1: loudness (frame energy in dB, same scaling as the bands)
Every value uses fixed constants, never statistics of the clip, so features of different clips (and of
parts of one clip) are comparable as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avmatch.extractors import Extractor, register_extractor
from avmatch.extractors.spectral import LogMel
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


@register_extractor("default")
class FrameRateFeatures(Extractor):
    """weight-free frame-rate features: low-res appearance + motion grid | log-mel + onset (25 Hz)"""

    version = 1
    video_dim = 64 + 32 + 16 + 1
    audio_dim = 40 + 1 + 1

    def __init__(self, fps: float = 25.0, sample_rate: int = 16000):
        if not 0 < fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {fps}")
        self.fps = float(fps)
        self.sample_rate = int(sample_rate)
        self.video_rate_hz = self.audio_rate_hz = self.fps
        self.n_mels = 40
        hop = self.sample_rate / self.fps
        self.logmel = LogMel(self.sample_rate, hop=hop, win=int(round(2 * hop)), n_mels=self.n_mels,
                             fmin=50.0, fmax=min(8000.0, self.sample_rate / 2))

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
            diff = np.abs(y - before)  # (n, 32, 32); the first frame of a file has no motion
            motion = motion_scale(cell_mean(diff, 4).reshape(n, 16))
            total = motion_scale(diff.mean(axis=(1, 2)))[:, None]
            rows.append(np.concatenate([look, 2.0 * colour, motion, total], axis=1))
            prev = y[-1]
        return np.concatenate(rows).astype(np.float32)  # (T, 113)

    def audio(self, path: str | Path) -> np.ndarray:
        rows = []
        last = None  # band energies of the previous row, for the onset strength
        for mel_db, energy_db in self.logmel.rows(iter_audio(path, self.sample_rate)):
            before = np.concatenate([mel_db[:1] if last is None else last[None], mel_db[:-1]])
            onset = np.maximum(mel_db - before, 0.0).mean(axis=1, keepdims=True) / 10.0
            rows.append(np.concatenate([db_scale(mel_db), onset, db_scale(energy_db)[:, None]], axis=1))
            last = mel_db[-1]
        if not rows:
            return np.zeros((0, self.audio_dim), np.float32)
        return np.concatenate(rows).astype(np.float32)  # (T, 42)
