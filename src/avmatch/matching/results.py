"""A matching's result: the pairs, the scores they were chosen on and what was measured of each pair.
Its files (pairs.csv, the score matrix beside it, the heat map) are written by :mod:`avmatch.outputs`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, issparse

from avmatch.matching.dense import margins
from avmatch.matching.two_stage import margins_sparse, sparse_lookup
from avmatch.outputs import PAIR_COLUMNS, heatmap_png, write_match


@dataclass
class MatchResult:
    video_ids: list[str]
    audio_ids: list[str]
    scores: np.ndarray | csr_matrix  # (Nv, Na) the matrix the assignment used (normalised);
    chosen: np.ndarray  # (Nv,) audio index per video, -1 = unmatched     # sparse: two-stage candidates
    method: str
    raw_scores: np.ndarray | csr_matrix | None = None  # (Nv, Na) the model's own scores
    offset_s: np.ndarray | None = None  # (Nv,) for timing models
    offset_conf: np.ndarray | None = None
    confidence: np.ndarray | None = None  # (Nv,) dense matching: dense.assignment_confidence
    drift_ppm: np.ndarray | None = None  # (Nv,) clock drift of long pairs (NaN: too short to measure)
    probability: np.ndarray | None = None  # (Nv,) a pair classifier's own sigmoid of its logit for the pair
    sources: dict = field(default_factory=dict)  # {"video" | "audio": {clip id: media file}} where known
    normalisation: str = "dual-softmax"  # what made ``scores`` from the raw scores ("none": they are the raw)
    adapted: list[int] = field(default_factory=list)  # sure pairs of each round of adaptation at match time

    @property
    def sparse(self) -> bool:
        return issparse(self.scores)

    def unmatched_audios(self) -> list[str]:
        """Audio ids no video was given."""
        used = np.zeros(len(self.audio_ids), dtype=bool)
        used[self.chosen[self.chosen >= 0]] = True
        return [self.audio_ids[j] for j in np.flatnonzero(~used)]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(video, audio) per video; audio "" where the video stayed unmatched."""
        return [(v, self.audio_ids[j] if j >= 0 else "") for v, j in zip(self.video_ids, self.chosen, strict=True)]

    def table(self) -> dict[str, np.ndarray]:
        """The rows as columns (``pandas.DataFrame(result.table())`` makes a data frame of them)."""
        rows = self.rows()
        columns = list(rows[0]) if rows else list(PAIR_COLUMNS)
        return {c: np.array([r[c] for r in rows]) for c in columns}

    def to_csv(self, pairs_csv: str | Path, heatmap: bool = True) -> list[Path]:
        """:meth:`write`: pairs.csv with its score file (and heat map) as one set; the paths written."""
        return self.write(pairs_csv, heatmap)

    def rows(self) -> list[dict]:
        """One dict per video: video, audio ("" unmatched), score, margin (and probability for a
        pair classifier, confidence for dense matching, offset_s, offset_conf for a timing model,
        drift_ppm when some pair was long enough to measure it)."""
        if self.sparse:
            m = margins_sparse(self.scores, self.chosen)
            chosen_scores = sparse_lookup(self.scores, np.arange(len(self.chosen)), self.chosen)
        else:
            m = margins(self.scores, self.chosen)
            chosen_scores = np.array([self.scores[i, j] if j >= 0 else np.nan for i, j in enumerate(self.chosen)])
        rows = []
        for i, (vid, j) in enumerate(zip(self.video_ids, self.chosen, strict=True)):
            row = {"video": vid, "audio": self.audio_ids[j] if j >= 0 else "",
                   "score": float(chosen_scores[i]), "margin": float(m[i])}
            if self.probability is not None:
                row["probability"] = float(self.probability[i])
            if self.confidence is not None:
                row["confidence"] = float(self.confidence[i])
            if self.offset_s is not None:
                row["offset_s"] = float(self.offset_s[i])
                row["offset_conf"] = float(self.offset_conf[i])
            if self.drift_ppm is not None:
                row["drift_ppm"] = float(self.drift_ppm[i])
            rows.append(row)
        return rows

    def heatmap(self, path: str | Path, key: dict[str, str] | None = None, places: dict | None = None) -> Path:
        """The heat map of the scores as a PNG at ``path`` (the one :meth:`write` puts beside pairs.csv);
        with ``key`` ({video: its true audio}), each video's true audio on the diagonal and each choice
        marked right or wrong. ``places`` (a dict) is filled with where each video's pair is in the
        picture (:func:`avmatch.outputs.heatmap_png`), so a report can point at it."""
        truth = None
        if key is not None:
            column = {a: j for j, a in enumerate(self.audio_ids)}
            truth = np.array([column.get(key.get(v, ""), -1) for v in self.video_ids])
        return heatmap_png(self.scores, path, self.video_ids, self.audio_ids, self.chosen, truth=truth,
                           probability=self.normalisation == "dual-softmax", places=places)

    def write(self, path: str | Path, heatmap: bool = True, format: str = "csv") -> list[Path]:
        """Write pairs.csv (``format``: one of :data:`avmatch.outputs.FORMATS`), the score matrix beside it
        (``.scores.npz``) and a heat map PNG, as one set (:func:`avmatch.outputs.write_match`); the paths written."""
        return write_match(self, path, heatmap, format)
