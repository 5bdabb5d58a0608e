"""``classic``: one row per second in the course's layout, visual T x 1024 and audio T x 128.

The course's features came from Inception-v3 (one frame a second, PCA to 1024) and VGGish (128 per
second of log-mel). This extractor needs no weights: it is a stand-in with the same shapes and rate,
so the report's models (and a run trained on the classic layout) work unchanged on a user's own media.
It does not reproduce those networks' values; retrain on features made by the same extractor.

One row a second would throw away *when* within the second things happen, which is most of what
ties a sound to a picture; so each row also carries the second's timing, tenth by tenth.

Visual: per second, from frames sampled at ``frames_per_s`` (10: one per tenth) and decoded to 32x32
RGB: mean brightness on an 8x8 grid, mean colour on a 4x4 grid, mean and peak motion on a 4x4 grid,
and for every frame of the second its motion energy, its motion on a 2x2 grid, its change of
lighting and its motion onset (the mean and the peak rise of motion over an 8x8 grid: 8 per frame; a
frame's motion is its change to the next frame, so it falls in the same tenth as the audio's onset
there); projected to 1024 values by a fixed random matrix (seeded, so every run and
machine gives the same features) and clipped to [-2, 2] like the course's de-quantised features.
Audio: per second, from 64 log-mel bands (125-7500 Hz, 25 ms windows every 10 ms, as VGGish uses)
scaled by (dB + 50) / 25: mean and spread of 32 bands (neighbours averaged), and for each tenth of the
second its onset strength (the bands' mean rise), its loudness and its onset in four band groups;
then the second's mean and peak onset and loudness.

A second counts when at least half of it is present: T = round(duration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avmatch.features import Extractor, register_extractor
from avmatch.features.frames import GRID_PX, cell_mean, db_scale, luma, motion_scale, signed_scale
from avmatch.features.spectral import LogMel
from avmatch.media import iter_audio, iter_video_frames

PER_FRAME = 1 + 4 + 1 + 2  # motion energy, motion on a 2x2 grid, lighting change, motion onset (mean, peak)
TENTHS = 10  # the audio's timing within each second
ONSET_GROUPS = 4  # band groups whose onsets are kept per tenth


def n_stats(frames_per_s: int) -> int:
    return 64 + 48 + 16 + 16 + PER_FRAME * frames_per_s


def _projection(seed: int, rows: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, dim)) / np.sqrt(rows)).astype(np.float32)


@register_extractor("classic")
class ClassicLayout(Extractor):
    """weight-free stand-in for the course's Inception-v3/VGGish layout: 1 row/s, 1024 | 128"""

    # 2: each row carries its second's timing (per frame / per tenth); 3: a frame's motion is its change
    # to the next frame, in the same tenth as the audio's onset (it was a tenth late), and its motion onset
    version = 3
    recipe = "seconds"  # a model that compares the rows second by second (avmatch.training.RECIPES)
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
        self.projection = _projection(self.seed, n_stats(self.frames_per_s), self.video_dim)  # (stats, 1024)
        self.mel_rows_per_s = 100
        self.logmel = LogMel(self.sample_rate, hop=self.sample_rate / self.mel_rows_per_s,
                             win=int(round(0.025 * self.sample_rate)), n_mels=64, fmin=125.0, fmax=7500.0)

    def params(self) -> dict[str, Any]:
        return {"frames_per_s": self.frames_per_s, "seed": self.seed, "sample_rate": self.sample_rate}

    def video(self, path: str | Path) -> np.ndarray:
        per_s = self.frames_per_s
        rows: list[np.ndarray] = []
        pending: list[np.ndarray] = []  # per-frame statistics of the second being filled
        held = None  # the last frame decoded: its change is to the next frame, not decoded yet
        moved = None  # the motion in each cell of the frame before the first of a chunk
        for rgb in iter_video_frames(path, fps=per_s, size=(GRID_PX, GRID_PX)):  # (n, 32, 32, 3)
            frames = rgb if held is None else np.concatenate([held[None], rgb])
            if len(frames) > 1:
                stats, moved = self._frame_stats(frames, moved)
                pending.extend(stats)
            held = frames[-1]
            while len(pending) >= per_s:
                rows.append(self._pool_video(np.stack(pending[:per_s]), per_s))
                del pending[:per_s]
        if held is not None:  # the clip's last frame: nothing follows it, as if it stood still
            pending.extend(self._frame_stats(np.stack([held, held]), moved)[0])
        total = int(round((len(rows) * per_s + len(pending)) / per_s))
        if len(rows) < total and pending:
            rows.append(self._pool_video(np.stack(pending), per_s))
        if not rows:
            return np.zeros((0, self.video_dim), np.float32)
        stats = np.stack(rows)  # (T, stats)
        return np.clip(stats @ self.projection, -2.0, 2.0).astype(np.float32)  # (T, 1024)

    @staticmethod
    def _frame_stats(frames: np.ndarray, moved: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(n + 1, 32, 32, 3) frames a tenth apart and the motion in each 8x8 cell of the frame before
        the first (None at the start) -> ((n, stats) of all but the last frame, the motion in each cell
        of the n-th). A frame's motion is its change to the next frame, so it falls in the tenth
        [k, k + 1) / 10 s, the same tenth as an onset of the audio there. Its motion onset is the cells'
        rise of motion since the frame before, as the audio's onset is the bands' rise: a camera that
        shakes or a thing that moves steadily hardly rises, a thing struck does."""
        rgb = frames[:-1]
        lit = luma(frames)  # each frame's brightness once, as a frame and as the next one's predecessor
        y = lit[:-1]
        change = lit[1:] - y
        diff = np.abs(change)
        n = len(y)
        cells = motion_scale(cell_mean(diff, 8).reshape(n, 64))
        rise = np.maximum(cells - np.concatenate([cells[:1] if moved is None else moved[None], cells[:-1]]), 0.0)
        return np.concatenate([
            2.0 * cell_mean(y, 8).reshape(n, 64) - 1.0,
            2.0 * cell_mean(rgb.astype(np.float32) / 255.0, 4).reshape(n, 48) - 1.0,
            motion_scale(cell_mean(diff, 4).reshape(n, 16)),
            motion_scale(diff.mean(axis=(1, 2)))[:, None],
            motion_scale(cell_mean(diff, 2).reshape(n, 4)),
            signed_scale(change.mean(axis=(1, 2)))[:, None],
            rise.mean(1, keepdims=True),
            rise.max(1, keepdims=True),
        ], axis=1), cells[-1]  # (n, 64 + 48 + 16 + 1 + 4 + 1 + 2)

    @staticmethod
    def _pool_video(frames: np.ndarray, per_s: int) -> np.ndarray:
        """One second's frames (up to per_s; a short last second is padded with stillness) -> its row."""
        look, colour, motion = frames[:, :64], frames[:, 64:112], frames[:, 112:128]
        timing = np.zeros((per_s, PER_FRAME), np.float32)
        timing[: len(frames)] = frames[:, 128 : 128 + PER_FRAME]
        return np.concatenate([look.mean(0), colour.mean(0), motion.mean(0), motion.max(0), 2.0 * timing.T.reshape(-1)])

    def audio(self, path: str | Path) -> np.ndarray:
        per_s = self.mel_rows_per_s
        rows: list[np.ndarray] = []
        pending = np.zeros((0, 64), np.float32)
        last = None  # the band energies (dB) of the previous second's last tenth, for the first onset
        seen = 0
        for mel_db, _ in self.logmel.rows(iter_audio(path, self.sample_rate)):
            seen += len(mel_db)
            pending = np.concatenate([pending, mel_db.astype(np.float32)])
            while len(pending) >= per_s:
                row, last = self._pool_audio(pending[:per_s], last)
                rows.append(row)
                pending = pending[per_s:]
        if len(rows) < int(round(seen / per_s)) and len(pending):
            rows.append(self._pool_audio(pending, last)[0])
        if not rows:
            return np.zeros((0, self.audio_dim), np.float32)
        return np.stack(rows).astype(np.float32)  # (T, 128)

    def _pool_audio(self, mel_db: np.ndarray, before: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One second of 10 ms band energies in dB (up to 100 rows) -> its 128 values, and the band
        energies of its last tenth (the next second's ``before``). Onsets are rises of each band's
        energy from one tenth to the next (averaged over a tenth, so steady noise hardly rises)."""
        bands = db_scale(mel_db).reshape(len(mel_db), 32, 2).mean(-1)  # (n, 32)
        tenth = np.minimum(np.arange(len(mel_db)) // (self.mel_rows_per_s // TENTHS), TENTHS - 1)
        counts = np.bincount(tenth, minlength=TENTHS)
        energy = np.zeros((TENTHS, 64), np.float64)
        np.add.at(energy, tenth, mel_db)
        energy /= np.maximum(counts, 1)[:, None]
        for k in range(1, TENTHS):  # tenths past a short last second: as the one before (no rise)
            if not counts[k]:
                energy[k] = energy[k - 1]
        prev = np.concatenate([energy[:1] if before is None else before[None], energy[:-1]])
        rise = np.maximum(energy - prev, 0.0) / 10.0  # (TENTHS, 64)
        onset = rise.mean(1)
        groups = rise.reshape(TENTHS, ONSET_GROUPS, -1).mean(-1)  # (TENTHS, 4)
        loudness = db_scale(np.maximum(10.0 * np.log10(np.power(10.0, energy / 10.0).sum(1) + 1e-10), -100.0))
        row = np.concatenate([bands.mean(0), bands.std(0), onset, loudness, groups.T.reshape(-1),
                              [onset.mean(), onset.max(), loudness.mean(), loudness.max()]])
        return row, energy[-1]
