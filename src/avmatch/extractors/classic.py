"""``classic``: one row per second in the course's layout, visual T x 1024 and audio T x 128.

The course's features came from Inception-v3 (one frame a second, PCA to 1024) and VGGish (128 per
second of log-mel). This extractor needs no weights: it is a stand-in with the same shapes and rate,
so the report's models (and a run trained on the classic layout) work unchanged on a user's own media.
It does not reproduce those networks' values; retrain on features made by the same extractor.

Visual: per second, from frames sampled at ``frames_per_s`` and decoded to 32x32 RGB, the mean and
spread of brightness on an 8x8 grid, mean colour on a 4x4 grid, and mean and peak motion on a 4x4
grid (210 statistics), projected to 1024 values by a fixed random matrix (seeded, so every run and
machine gives the same features) and clipped to [-2, 2] like the course's de-quantised features.
Audio: per second, mean and standard deviation of 64 log-mel bands (125-7500 Hz, 25 ms windows every
10 ms, as VGGish uses), scaled by (dB + 50) / 25.

A second counts when at least half of it is present: T = round(duration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avmatch.extractors import Extractor, register_extractor
from avmatch.extractors.frames import GRID_PX, cell_mean, db_scale, luma, motion_scale
from avmatch.extractors.spectral import LogMel
from avmatch.media import iter_audio, iter_video_frames

N_STATS = 64 + 64 + 48 + 16 + 16 + 2


def _projection(seed: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N_STATS, dim)) / np.sqrt(N_STATS)).astype(np.float32)


@register_extractor("classic")
class ClassicLayout(Extractor):
    """weight-free stand-in for the course's Inception-v3/VGGish layout: 1 row/s, 1024 | 128"""

    version = 1
    video_rate_hz = 1.0
    audio_rate_hz = 1.0
    video_dim = 1024
    audio_dim = 128

    def __init__(self, frames_per_s: int = 10, seed: int = 0, sample_rate: int = 16000):
        if not 1 <= frames_per_s <= 240:
            raise ValueError(f"frames_per_s must be in [1, 240], got {frames_per_s}")
        if not 4000 <= sample_rate <= 96000:
            raise ValueError(f"sample_rate must be in [4000, 96000], got {sample_rate}")
        self.frames_per_s, self.seed, self.sample_rate = int(frames_per_s), int(seed), int(sample_rate)
        self.projection = _projection(self.seed, self.video_dim)  # (210, 1024)
        self.mel_rows_per_s = 100
        self.logmel = LogMel(self.sample_rate, hop=self.sample_rate / self.mel_rows_per_s,
                             win=int(round(0.025 * self.sample_rate)), n_mels=64, fmin=125.0, fmax=7500.0)

    def params(self) -> dict[str, Any]:
        return {"frames_per_s": self.frames_per_s, "seed": self.seed, "sample_rate": self.sample_rate}

    def video(self, path: str | Path) -> np.ndarray:
        per_s = self.frames_per_s
        rows: list[np.ndarray] = []
        pending: list[np.ndarray] = []  # per-frame statistics of the second being filled
        prev = None
        for rgb in iter_video_frames(path, fps=per_s, size=(GRID_PX, GRID_PX)):  # (n, 32, 32, 3)
            y = luma(rgb)
            n = len(y)
            before = np.concatenate([y[:1] if prev is None else prev[None], y[:-1]])
            diff = np.abs(y - before)
            frame_stats = np.concatenate([
                2.0 * cell_mean(y, 8).reshape(n, 64) - 1.0,
                2.0 * cell_mean(rgb.astype(np.float32) / 255.0, 4).reshape(n, 48) - 1.0,
                motion_scale(cell_mean(diff, 4).reshape(n, 16)),
                motion_scale(diff.mean(axis=(1, 2)))[:, None],
            ], axis=1)  # (n, 64 + 48 + 16 + 1)
            prev = y[-1]
            pending.extend(frame_stats)
            while len(pending) >= per_s:
                rows.append(self._pool_video(np.stack(pending[:per_s])))
                del pending[:per_s]
        total = int(round((len(rows) * per_s + len(pending)) / per_s))
        if len(rows) < total and pending:
            rows.append(self._pool_video(np.stack(pending)))
        if not rows:
            return np.zeros((0, self.video_dim), np.float32)
        stats = np.stack(rows)  # (T, 210)
        return np.clip(stats @ self.projection, -2.0, 2.0).astype(np.float32)  # (T, 1024)

    @staticmethod
    def _pool_video(frames: np.ndarray) -> np.ndarray:
        look, colour, motion, total = frames[:, :64], frames[:, 64:112], frames[:, 112:128], frames[:, 128]
        return np.concatenate([look.mean(0), 4.0 * look.std(0), colour.mean(0), motion.mean(0),
                               motion.max(0), [total.mean(), total.max()]])

    def audio(self, path: str | Path) -> np.ndarray:
        per_s = self.mel_rows_per_s
        rows: list[np.ndarray] = []
        pending = np.zeros((0, 64), np.float32)
        seen = 0
        for mel_db, _ in self.logmel.rows(iter_audio(path, self.sample_rate)):
            seen += len(mel_db)
            pending = np.concatenate([pending, db_scale(mel_db)])
            while len(pending) >= per_s:
                rows.append(self._pool_audio(pending[:per_s]))
                pending = pending[per_s:]
        if len(rows) < int(round(seen / per_s)) and len(pending):
            rows.append(self._pool_audio(pending))
        if not rows:
            return np.zeros((0, self.audio_dim), np.float32)
        return np.stack(rows).astype(np.float32)  # (T, 128)

    @staticmethod
    def _pool_audio(mel: np.ndarray) -> np.ndarray:
        return np.concatenate([mel.mean(0), mel.std(0)])
