"""The on-disk feature corpus: clips of visual and/or audio feature sequences.

In memory a corpus is a list of :class:`Clip` plus the rates and the extractor that made it.
On disk (avmatch's own format) it is a folder with ``manifest.jsonl`` and one ``.npy`` per clip and
modality. :func:`load_corpus` also reads the course's classic layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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
        """A repeatable random (train, val) split of the clips."""
        order = np.random.default_rng(seed).permutation(len(self.clips))
        n_val = max(1, int(round(len(self.clips) * val_fraction))) if val_fraction > 0 else 0
        val = sorted(order[:n_val].tolist())
        train = sorted(order[n_val:].tolist())
        return self._with([self.clips[i] for i in train]), self._with([self.clips[i] for i in val])

    def _with(self, clips: list[Clip]) -> Corpus:
        return Corpus(clips, self.video_rate_hz, self.audio_rate_hz, dict(self.extractor), self.root)
