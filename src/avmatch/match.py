"""From features to a matching: the score matrix, the one-to-one assignment, margins, outputs.

Scores come from one batched pass: every clip is encoded once, then the model scores all pairs
(one matrix product for embedding models, a chunked head for pair models). No Python loop over pairs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from avmatch.atomic import atomic_path, write_text
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError

if TYPE_CHECKING:
    from avmatch.checkpoint import Trained


def pad_batch(arrays: list[np.ndarray], device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Clips (T_i, D) -> padded (B, T_max, D) float32 tensor and (B,) lengths."""
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.long)
    out = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out.to(device), lengths.to(device)


def _encode_all(encode, arrays: list[np.ndarray], batch_size: int, device) -> tuple[Tensor, Tensor]:
    """Encode clips in length-sorted batches (little padding); results in the input order.

    Embedding models give (N, E); sequence models give (N, T_max, H), zero-padded.
    """
    order = np.argsort([len(a) for a in arrays], kind="stable")
    parts, lengths = [], []
    for s in range(0, len(order), batch_size):
        x, x_len = pad_batch([arrays[i] for i in order[s : s + batch_size]], device)
        parts.append(encode(x, x_len))
        lengths.append(x_len)
    if parts[0].dim() == 3:  # sequences: pad every batch to the longest clip
        t_max = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0, 0, t_max - p.shape[1])) for p in parts]
    inverse = torch.from_numpy(np.argsort(order)).to(device)
    return torch.cat(parts)[inverse], torch.cat(lengths)[inverse]


@torch.no_grad()
def score_matrix(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                 batch_size: int = 256, device: str | torch.device | None = None) -> np.ndarray:
    """(Nv, Na) scores of every video against every audio; higher means more likely the same clip."""
    model = trained.model
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    v, v_len = _encode_all(model.encode_video, [trained.standardise(x, "video") for x in videos], batch_size, device)
    a, a_len = _encode_all(model.encode_audio, [trained.standardise(x, "audio") for x in audios], batch_size, device)
    rows = max(1, (1 << 22) // max(1, len(audios)))  # bound the memory of one block of the matrix
    out = torch.cat([model.score_matrix(v[s : s + rows], a, v_len[s : s + rows], a_len)
                     for s in range(0, len(videos), rows)])
    model.train(was_training)
    return out.float().cpu().numpy()


def assign(scores: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """The audio index chosen for each video (-1 where a one-to-one assignment leaves it unmatched).

    "hungarian": the one-to-one assignment that maximises the total score (scipy's
    linear_sum_assignment); with more videos than audios some videos stay unmatched.
    "greedy": each video's best audio, which may repeat.
    """
    finite = np.isfinite(scores)
    if not finite.all():  # a NaN or inf score ranks below every real one
        scores = np.where(finite, scores, scores[finite].min() - 1.0 if finite.any() else 0.0)
    if method == "greedy":
        return scores.argmax(1)
    if method != "hungarian":
        raise AvmatchError(f"unknown assignment method {method!r}; use hungarian or greedy")
    rows, cols = linear_sum_assignment(scores, maximize=True)
    chosen = np.full(scores.shape[0], -1, dtype=np.int64)
    chosen[rows] = cols
    return chosen


def margins(scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Score of the chosen audio minus the best other audio's score in the same row (NaN if unmatched)."""
    out = np.full(len(chosen), np.nan)
    if scores.shape[1] < 2:
        return out
    for i, j in enumerate(chosen):
        if j >= 0:
            others = np.delete(scores[i], j)
            out[i] = scores[i, j] - others.max()
    return out


@dataclass
class MatchResult:
    video_ids: list[str]
    audio_ids: list[str]
    scores: np.ndarray  # (Nv, Na)
    chosen: np.ndarray  # (Nv,) audio index per video, -1 = unmatched
    method: str

    def rows(self) -> list[dict]:
        m = margins(self.scores, self.chosen)
        return [
            {"video": vid, "audio": self.audio_ids[j] if j >= 0 else "",
             "score": float(self.scores[i, j]) if j >= 0 else float("nan"), "margin": float(m[i])}
            for i, (vid, j) in enumerate(zip(self.video_ids, self.chosen, strict=True))
        ]

    def write(self, pairs_csv: str | Path, heatmap: bool = True) -> list[Path]:
        """Write pairs.csv, the score matrix beside it (``.scores.npz``) and a heat map PNG."""
        pairs_csv = Path(pairs_csv)
        buf = io.StringIO()
        rows = self.rows()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["video", "audio", "score", "margin"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        write_text(pairs_csv, buf.getvalue())
        written = [pairs_csv, scores_path(pairs_csv)]
        with atomic_path(written[1]) as tmp:
            np.savez(tmp, scores=self.scores, video_ids=np.array(self.video_ids), audio_ids=np.array(self.audio_ids))
        if heatmap:
            from avmatch.report import heatmap_png

            written.append(pairs_csv.with_suffix(".heatmap.png"))
            heatmap_png(self.scores, written[-1], self.video_ids, self.audio_ids, self.chosen)
        return written


def scores_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".scores.npz")


def match_corpora(trained: Trained, videos: Corpus, audios: Corpus, method: str = "hungarian") -> MatchResult:
    """Score every video clip of ``videos`` against every audio clip of ``audios`` and assign."""
    v_clips = [c for c in videos.clips if c.video is not None]
    a_clips = [c for c in audios.clips if c.audio is not None]
    if not v_clips:
        raise AvmatchError("no clip with visual features to match", videos.root)
    if not a_clips:
        raise AvmatchError("no clip with audio features to match", audios.root)
    cfg = trained.model.config
    for name, corpus, dim, want in (("visual", videos, videos.video_dim, cfg["video_dim"]),
                                    ("audio", audios, audios.audio_dim, cfg["audio_dim"])):
        if dim != want:
            raise AvmatchError(f"{name} features have {dim} dims but the model was trained on {want} "
                               f"(extractor {corpus.extractor.get('name')!r} vs {trained.extractor.get('name')!r})", corpus.root)
    scores = score_matrix(trained, [c.video for c in v_clips], [c.audio for c in a_clips])
    return MatchResult([c.id for c in v_clips], [c.id for c in a_clips], scores, assign(scores, method), method)
