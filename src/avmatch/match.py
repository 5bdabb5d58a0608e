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


def normalise(scores: np.ndarray, method: str = "dual-softmax") -> np.ndarray:
    """Make scores comparable across rows and columns before assigning.

    Raw scores are not calibrated: some audios score high against every video ("hubs"). With
    "dual-softmax" a pair's score is its log-probability among its row plus among its column, so a
    hub's column is discounted (as LoFTR and CLIP retrieval do). "none" keeps the raw scores.
    """
    if method == "none":
        return scores
    if method != "dual-softmax":
        raise AvmatchError(f"unknown score normalisation {method!r}; use dual-softmax or none")
    from scipy.special import log_softmax

    safe = np.where(np.isfinite(scores), scores, np.nan)
    floor = np.nanmin(safe) - 1.0 if np.isfinite(safe).any() else 0.0
    safe = np.nan_to_num(safe, nan=floor).astype(np.float64)
    return log_softmax(safe, axis=1) + log_softmax(safe, axis=0)


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


@torch.no_grad()
def estimate_offsets(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Offset of each (video, audio) pair in seconds (positive: the audio starts that many seconds
    into the video) and its confidence (peak agreement minus the median over all lags).

    Needs a timing model (one with ``lag_curve``); the peak is refined between frames by fitting
    a parabola through it and its two neighbours.
    """
    model = trained.model
    model.eval()
    device = next(model.parameters()).device
    rate = trained.audio_rate_hz
    offsets, confs = [], []
    for s in range(0, len(videos), batch_size):
        v, v_len = pad_batch([trained.standardise(x, "video") for x in videos[s : s + batch_size]], device)
        a, a_len = pad_batch([trained.standardise(x, "audio") for x in audios[s : s + batch_size]], device)
        curve = model.lag_curve(model.encode_video(v, v_len), model.encode_audio(a, a_len), v_len, a_len).cpu().numpy()
        for c in curve:
            k = int(c.argmax())
            frac = 0.0
            if 0 < k < len(c) - 1 and min(c[k - 1], c[k + 1]) > -1:
                denom = c[k - 1] - 2 * c[k] + c[k + 1]
                frac = 0.5 * (c[k - 1] - c[k + 1]) / denom if denom < 0 else 0.0
            lag = k + frac - model.max_lag  # video row t meets audio row t + lag
            offsets.append(-lag / rate)
            valid = c[c > -1]
            confs.append(float(c[k] - np.median(valid)) if len(valid) else 0.0)
    return np.array(offsets), np.array(confs)


@dataclass
class MatchResult:
    video_ids: list[str]
    audio_ids: list[str]
    scores: np.ndarray  # (Nv, Na) the matrix the assignment used (normalised)
    chosen: np.ndarray  # (Nv,) audio index per video, -1 = unmatched
    method: str
    raw_scores: np.ndarray | None = None  # (Nv, Na) the model's own scores
    offset_s: np.ndarray | None = None  # (Nv,) for timing models
    offset_conf: np.ndarray | None = None

    def rows(self) -> list[dict]:
        m = margins(self.scores, self.chosen)
        rows = []
        for i, (vid, j) in enumerate(zip(self.video_ids, self.chosen, strict=True)):
            row = {"video": vid, "audio": self.audio_ids[j] if j >= 0 else "",
                   "score": float(self.scores[i, j]) if j >= 0 else float("nan"), "margin": float(m[i])}
            if self.offset_s is not None:
                row["offset_s"] = float(self.offset_s[i])
                row["offset_conf"] = float(self.offset_conf[i])
            rows.append(row)
        return rows

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
            raw = self.scores if self.raw_scores is None else self.raw_scores
            np.savez(tmp, scores=self.scores, raw_scores=raw, video_ids=np.array(self.video_ids),
                     audio_ids=np.array(self.audio_ids))
        if heatmap:
            from avmatch.report import heatmap_png

            written.append(pairs_csv.with_suffix(".heatmap.png"))
            heatmap_png(self.scores, written[-1], self.video_ids, self.audio_ids, self.chosen)
        return written


def scores_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".scores.npz")


def match_corpora(trained: Trained, videos: Corpus, audios: Corpus, method: str = "hungarian",
                  normalisation: str = "dual-softmax", max_offset_s: float | None = None) -> MatchResult:
    """Score every video clip of ``videos`` against every audio clip of ``audios``, normalise the
    scores, assign, and (timing models) estimate each matched pair's offset."""
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
    timing = hasattr(trained.model, "lag_curve")
    if timing and max_offset_s is not None:
        trained.model.max_lag = max(1, round(max_offset_s * trained.audio_rate_hz))
    raw = score_matrix(trained, [c.video for c in v_clips], [c.audio for c in a_clips])
    scores = normalise(raw, normalisation)
    chosen = assign(scores, method)
    result = MatchResult([c.id for c in v_clips], [c.id for c in a_clips], scores, chosen, method, raw)
    if timing:
        matched = np.flatnonzero(chosen >= 0)
        off, conf = estimate_offsets(trained, [v_clips[i].video for i in matched],
                                     [a_clips[chosen[i]].audio for i in matched])
        result.offset_s = np.full(len(v_clips), np.nan)
        result.offset_conf = np.full(len(v_clips), np.nan)
        result.offset_s[matched], result.offset_conf[matched] = off, conf
    return result
