"""From features to a matching: the score matrix, the one-to-one assignment, margins, outputs.

Scores come from one batched pass: every clip is encoded once, then the model scores all pairs
(one matrix product for embedding models, a chunked head for pair models). No Python loop over pairs.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix, issparse
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


def encoded_batches(encode, arrays: list[np.ndarray], batch_size: int, device,
                    prepare=lambda x: x) -> Iterator[tuple[np.ndarray, Tensor, Tensor]]:
    """(input positions, encodings, lengths) for the clips in length-sorted batches (little padding).

    ``prepare`` turns each array into model input batch by batch, so only one batch is ever copied."""
    order = np.argsort([len(a) for a in arrays], kind="stable")
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        x, x_len = pad_batch([prepare(arrays[i]) for i in rows], device)
        yield rows, encode(x, x_len), x_len


def _encode_all(encode, arrays: list[np.ndarray], batch_size: int, device, prepare) -> tuple[Tensor, Tensor]:
    """Every clip encoded, in the input order: embedding models give (N, E); sequence models give
    (N, T_max, H), zero-padded."""
    order, parts, lengths = [], [], []
    for rows, e, x_len in encoded_batches(encode, arrays, batch_size, device, prepare):
        order.append(rows)
        parts.append(e)
        lengths.append(x_len)
    if parts[0].dim() == 3:  # sequences: pad every batch to the longest clip
        t_max = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0, 0, t_max - p.shape[1])) for p in parts]
    inverse = torch.from_numpy(np.argsort(np.concatenate(order))).to(device)
    return torch.cat(parts)[inverse], torch.cat(lengths)[inverse]


@torch.no_grad()
def score_matrix(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                 batch_size: int = 256, device: str | torch.device | None = None) -> np.ndarray:
    """(Nv, Na) scores of every video against every audio; higher means more likely the same clip."""
    model = trained.model
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    v, v_len = _encode_all(model.encode_video, videos, batch_size, device, lambda x: trained.standardise(x, "video"))
    a, a_len = _encode_all(model.encode_audio, audios, batch_size, device, lambda x: trained.standardise(x, "audio"))
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

    if scores.size == 0:
        return np.zeros(scores.shape)
    safe = np.where(np.isfinite(scores), scores, np.nan)
    floor = np.nanmin(safe) - 1.0 if np.isfinite(safe).any() else 0.0
    safe = np.nan_to_num(safe, nan=floor).astype(np.float64)
    return log_softmax(safe, axis=1) + log_softmax(safe, axis=0)


def _real_scores(scores: np.ndarray, summed: bool = True) -> np.ndarray:
    """Scores ready to assign: a NaN or inf score ranks below every real one; when ``summed``, huge
    scores are scaled down (a positive factor changes no assignment) so that sums of them stay finite."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros_like(scores)
    peak = np.abs(scores[finite]).max()
    if summed and peak > 1e150:
        scores = scores / peak
    if not finite.all():
        lo, hi = scores[finite].min(), scores[finite].max()
        with np.errstate(over="ignore"):  # unscaled extremes may give -inf: still below lo
            scores = np.where(finite, scores, lo - max(1.0, hi - lo, abs(lo)))  # strictly below lo
    return scores


def assign(scores: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """The audio index chosen for each video (-1 where a one-to-one assignment leaves it unmatched).

    "hungarian": the one-to-one assignment that maximises the total score (scipy's
    linear_sum_assignment); with more videos than audios some videos stay unmatched.
    "greedy": each video's best audio, which may repeat.
    """
    scores = _real_scores(scores, summed=method != "greedy")
    if method == "greedy":
        if scores.shape[1] == 0:  # no audio at all: every video stays unmatched
            return np.full(scores.shape[0], -1, dtype=np.int64)
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
    with np.errstate(invalid="ignore"):  # inf - inf: a NaN margin says "no telling"
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
    scores: np.ndarray | csr_matrix  # (Nv, Na) the matrix the assignment used (normalised);
    chosen: np.ndarray  # (Nv,) audio index per video, -1 = unmatched     # sparse: two-stage candidates
    method: str
    raw_scores: np.ndarray | csr_matrix | None = None  # (Nv, Na) the model's own scores
    offset_s: np.ndarray | None = None  # (Nv,) for timing models
    offset_conf: np.ndarray | None = None

    @property
    def sparse(self) -> bool:
        return issparse(self.scores)

    def unmatched_audios(self) -> list[str]:
        """Audio ids no video was given."""
        used = np.zeros(len(self.audio_ids), dtype=bool)
        used[self.chosen[self.chosen >= 0]] = True
        return [self.audio_ids[j] for j in np.flatnonzero(~used)]

    def rows(self) -> list[dict]:
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
            if self.offset_s is not None:
                row["offset_s"] = float(self.offset_s[i])
                row["offset_conf"] = float(self.offset_conf[i])
            rows.append(row)
        return rows

    def write(self, pairs_csv: str | Path, heatmap: bool = True) -> list[Path]:
        """Write pairs.csv, the score matrix beside it (``.scores.npz``) and a heat map PNG, as one set.

        A two-stage (sparse) result stores its candidate scores in CSR form (``data``, ``indices``,
        ``indptr``, ``shape``; read back with :func:`load_scores`) and has no heat map.

        The set is one unit: the previous run's files go first, then the heat map, the score matrix
        (which records a run id and the SHA-256 of the pairs.csv and heat map of its set) and last
        pairs.csv. A kill or a full disk midway leaves an incomplete set that readers refuse
        (:func:`check_same_run`), never pairs of one run beside scores of another."""
        pairs_csv = Path(pairs_csv)
        buf = io.StringIO()
        rows = self.rows()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["video", "audio", "score", "margin"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        text = buf.getvalue()
        npz, png = scores_path(pairs_csv), heatmap_path(pairs_csv)
        for path in (pairs_csv, npz, png):
            remove_stale_temps(path)
            path.unlink(missing_ok=True)
        written = [pairs_csv, npz]
        png_digest = ""
        if heatmap and not self.sparse:
            from avmatch.report import heatmap_png

            heatmap_png(self.scores, png, self.video_ids, self.audio_ids, self.chosen)
            png_digest = file_sha256(png)
            written.append(png)
        ids = {"video_ids": np.array(self.video_ids), "audio_ids": np.array(self.audio_ids),
               "run_id": np.array(uuid.uuid4().hex), "method": np.array(self.method),
               "pairs_sha256": np.array(hashlib.sha256(text.encode()).hexdigest()),
               "heatmap_sha256": np.array(png_digest)}
        with atomic_path(npz) as tmp:
            raw = self.scores if self.raw_scores is None else self.raw_scores
            if self.sparse:
                raw = raw.tocsr()
                np.savez(tmp, data=self.scores.data, indices=self.scores.indices, indptr=self.scores.indptr,
                         shape=np.array(self.scores.shape), raw_data=raw.data, **ids)
            else:
                np.savez(tmp, scores=self.scores, raw_scores=raw, **ids)
        write_text(pairs_csv, text)  # last: with it the set is complete
        return written


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files a killed writer of ``path`` left (:func:`avmatch.atomic.atomic_path`'s naming)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        stale.unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scores_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".scores.npz")


def heatmap_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".heatmap.png")


def _npz_text(z, key: str) -> str:
    if key not in z.files:
        return ""
    value = z[key]
    return str(value) if value.ndim == 0 and value.dtype.kind == "U" else ""


def check_same_run(pairs_csv: str | Path, npz_path: str | Path) -> dict:
    """The run id and method recorded in a score matrix, once it is known to belong to the same
    ``avmatch match`` run as ``pairs_csv`` (its recorded SHA-256 is that file's): else one line."""
    npz_path = regular(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            recorded = {k: _npz_text(z, k) for k in ("run_id", "method", "pairs_sha256")}
    except Exception as err:  # noqa: BLE001 - zip, key and pickle errors read the same to a user
        raise AvmatchError(f"not a score matrix written by avmatch match ({_why(err)})", npz_path) from None
    if not recorded["pairs_sha256"]:
        raise AvmatchError(f"records no run id, so nothing ties it to {Path(pairs_csv).name} (written by an "
                           "older avmatch?); rerun avmatch match, or remove it to evaluate the pairs alone", npz_path)
    if file_sha256(pairs_csv) != recorded["pairs_sha256"]:
        raise AvmatchError(f"{Path(pairs_csv).name} is not the pairs file of this score matrix (from another run, "
                           "a match stopped midway, or edited since); rerun avmatch match, or remove the score "
                           "matrix to evaluate the pairs alone", npz_path)
    return recorded


def regular(path: str | Path) -> Path:
    """``path`` if it is a regular file; a pipe or a device (reading it could wait forever) is refused."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise AvmatchError("is not a regular file (a folder, a pipe or a device)", path)
    if not path.exists():
        raise AvmatchError("no such file", path)
    return path


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}{': ' + text[0][:120] if text else ''}"


def load_scores(npz_path: str | Path) -> tuple[np.ndarray | csr_matrix, list[str], list[str]]:
    """The score matrix written beside a pairs.csv (dense, or sparse candidates) and its ids.
    Never unpickles; a damaged or foreign file is a one-line error."""
    npz_path = regular(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            if "indptr" in z:
                scores = csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            else:
                scores = np.asarray(z["scores"], dtype=np.float64)
            video_ids, audio_ids = [str(v) for v in z["video_ids"]], [str(a) for a in z["audio_ids"]]
    except Exception as err:  # noqa: BLE001 - zip, key, pickle and shape errors read the same to a user
        raise AvmatchError(f"not a score matrix written by avmatch match ({_why(err)})", npz_path) from None
    if scores.ndim != 2 or scores.shape != (len(video_ids), len(audio_ids)):
        raise AvmatchError(f"score matrix of shape {scores.shape} does not fit its {len(video_ids)} video and "
                           f"{len(audio_ids)} audio ids", npz_path)
    return scores, video_ids, audio_ids


def _same_extractor(run: dict, corpus: dict) -> str:
    """'' when features made as ``corpus`` records fit a run trained on features made as ``run``
    records, else what differs."""
    from avmatch.extractors import _REGISTRY

    if not run.get("name") or not corpus.get("name"):
        return ""
    for key in ("name", "version"):
        if key in run and key in corpus and run[key] != corpus[key]:
            return f"extractor {key} {corpus[key]!r}, the run's is {run[key]!r}"
    files = getattr(_REGISTRY.get(run["name"]), "file_options", ())
    mine, theirs = run.get("params", {}), corpus.get("params", {})
    for key in sorted(set(mine) & set(theirs) - set(files)):
        if mine[key] != theirs[key]:
            return f"extractor option {key}={theirs[key]!r}, the run's is {mine[key]!r}"
    digests = (sorted(run.get("weights_sha1", {}).values()), sorted(corpus.get("weights_sha1", {}).values()))
    if "weights_sha1" in run and "weights_sha1" in corpus and digests[0] != digests[1]:
        return f"network file SHA-1 {', '.join(digests[1]) or 'none'}, the run's is {', '.join(digests[0]) or 'none'}"
    return ""


def check_fits(trained: Trained, corpus: Corpus, modality: str) -> None:
    """Refuse (one line) features of one modality that the run was not trained on: other dims, another
    rate (offsets and lags would be off by the ratio) or another extractor."""
    name = "visual" if modality == "video" else "audio"
    dim = corpus.video_dim if modality == "video" else corpus.audio_dim
    want = trained.model.config[f"{modality}_dim"]
    if dim is not None and dim != want:
        raise AvmatchError(f"{name} features have {dim} dims but the model was trained on {want} "
                           f"(extractor {corpus.extractor.get('name')!r} vs {trained.extractor.get('name')!r})",
                           corpus.root)
    rate = corpus.video_rate_hz if modality == "video" else corpus.audio_rate_hz
    want_rate = trained.video_rate_hz if modality == "video" else trained.audio_rate_hz
    if dim is not None and not np.isclose(rate, want_rate, rtol=1e-6, atol=0):
        raise AvmatchError(f"{name} features at {rate:g} Hz but the model was trained on {want_rate:g} Hz; "
                           "extract them with the run's extractor settings", corpus.root)
    differs = _same_extractor(trained.extractor, corpus.extractor)
    if dim is not None and differs:
        raise AvmatchError(f"{name} features were made with {differs}: features of another extractor do "
                           "not fit the model", corpus.root)


def match_corpora(trained: Trained, videos: Corpus, audios: Corpus, method: str = "hungarian",
                  normalisation: str = "dual-softmax", max_offset_s: float | None = None, mode: str = "auto",
                  candidates: int | None = None, retriever: Trained | None = None, retrieval: str = "flat",
                  dense_max: int | None = None) -> MatchResult:
    """Score every video clip of ``videos`` against every audio clip of ``audios``, normalise the
    scores, assign, and (timing models) estimate each matched pair's offset.

    ``mode`` "dense" scores all pairs; "two-stage" scores only each video's top-``candidates``
    audios, retrieved with an embedding model (``retriever``, by default the trained model) from a
    FAISS index of kind ``retrieval``; "auto" is dense up to ``dense_max`` x ``dense_max`` pairs
    (defaults: DEFAULT_CANDIDATES, DENSE_MAX)."""
    v_clips = [c for c in videos.clips if c.video is not None]
    a_clips = [c for c in audios.clips if c.audio is not None]
    if not v_clips:
        raise AvmatchError("no clip with visual features to match", videos.root)
    if not a_clips:
        raise AvmatchError("no clip with audio features to match", audios.root)
    check_fits(trained, videos, "video")
    check_fits(trained, audios, "audio")
    if retriever is not None:
        check_fits(retriever, videos, "video")
        check_fits(retriever, audios, "audio")
    timing = hasattr(trained.model, "lag_curve")
    if timing and max_offset_s is not None:
        from avmatch.checkpoint import COUNT_BOUNDS

        lag = round(max_offset_s * trained.audio_rate_hz) if np.isfinite(max_offset_s) else -1
        if not 1 <= lag <= COUNT_BOUNDS["max_lag"]:
            raise AvmatchError(f"--max-offset {max_offset_s:g} s is {lag} frames at {trained.audio_rate_hz:g} Hz; "
                               f"give 1 to {COUNT_BOUNDS['max_lag']} frames' worth")
        trained.model.max_lag = lag
    if choose_mode(len(v_clips), len(a_clips), mode, dense_max or DENSE_MAX) == "two-stage":
        result = match_two_stage(trained, [c.video for c in v_clips], [c.audio for c in a_clips],
                                 [c.id for c in v_clips], [c.id for c in a_clips], method, normalisation,
                                 candidates or DEFAULT_CANDIDATES, retriever, retrieval)
    else:
        raw = score_matrix(trained, [c.video for c in v_clips], [c.audio for c in a_clips])
        scores = normalise(raw, normalisation)
        chosen = assign(scores, method)
        result = MatchResult([c.id for c in v_clips], [c.id for c in a_clips], scores, chosen, method, raw)
    chosen = result.chosen
    if timing:
        matched = np.flatnonzero(chosen >= 0)
        off, conf = estimate_offsets(trained, [v_clips[i].video for i in matched],
                                     [a_clips[chosen[i]].audio for i in matched])
        result.offset_s = np.full(len(v_clips), np.nan)
        result.offset_conf = np.full(len(v_clips), np.nan)
        result.offset_s[matched], result.offset_conf[matched] = off, conf
    return result


# ================================================================================================
# Two-stage matching for large sets
#
# Dense matching scores all Nv x Na pairs. Above DENSE_MAX x DENSE_MAX pairs ``match_corpora``
# instead (1) embeds every clip once and retrieves each video's top-K audios with a FAISS index
# (exact by default; avmatch.index), (2) scores only those Nv*K candidates with the trained model
# (for an embedding model the retrieval score is the score), (3) normalises the candidate scores,
# assigns one-to-one on the sparse candidate graph and matches the videos and audios it leaves over
# among themselves. Nothing of size Nv x Na is ever allocated: the candidate scores are a
# scipy.sparse matrix with about K entries a row.
# ================================================================================================

DENSE_MAX = 5000  # mode "auto": dense exact matching up to DENSE_MAX x DENSE_MAX pairs
DEFAULT_CANDIDATES = 10  # K, audios retrieved per video
OUTSIDE_SAMPLE = 1024  # clips sampled to estimate the softmax mass outside the candidates
MODES = ("auto", "dense", "two-stage")
_BLOCK = 1 << 24  # entries of one dense block (64 MiB of float32) in chunked products
_MAX_ROUNDS = 8  # leftover rounds before giving up on the last few
_DENSE_LEFTOVER = 1 << 22  # leftover pairs matched densely (2048 x 2048)


def choose_mode(n_videos: int, n_audios: int, mode: str = "auto", dense_max: int = DENSE_MAX) -> str:
    """"dense" or "two-stage": as asked, or for "auto" dense up to ``dense_max`` squared pairs."""
    if mode not in MODES:
        raise AvmatchError(f"unknown matching mode {mode!r}; use one of: {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "dense" if n_videos * n_audios <= dense_max * dense_max else "two-stage"


def is_embedding_model(trained: Trained) -> bool:
    from avmatch.models.base import EmbeddingModel

    return isinstance(trained.model, EmbeddingModel)


def retrieval_metric(trained: Trained) -> str:
    """How a model's clip embeddings are compared: "l2" for a model that scores a pair by minus the
    Euclidean distance of its (unnormalised) embeddings (va-metric), else "ip" (cosine)."""
    from avmatch.models.recurrent import MetricModel

    return "l2" if isinstance(trained.model, MetricModel) else "ip"


def embedding_score_params(trained: Trained) -> tuple[float, float]:
    """(scale, bias) that turn a cosine of two clip embeddings into the model's score; (1, 0) for
    models whose score is not a function of the clip embeddings (the cosine itself is reported)."""
    if is_embedding_model(trained):
        return float(trained.model.scale().detach()), float(trained.model.logit_bias.detach())
    return 1.0, 0.0


@torch.no_grad()
def clip_embeddings(trained: Trained, arrays: list[np.ndarray], modality: str, batch_size: int = 256,
                    device: str | torch.device | None = None) -> np.ndarray:
    """(N, E) float32 embedding of each clip, encoded in length-sorted batches: L2-normalised, except
    for a distance model's (:func:`retrieval_metric` "l2"), whose raw embeddings its score compares.

    Embedding models give theirs; timing models (per-frame embeddings in one space for both
    modalities) give the renormalised mean frame, good enough to retrieve candidates. Pair models
    have no shared space: retrieve with an embedding model (``retriever``) instead.
    """
    from avmatch.models.base import masked_mean

    model = trained.model
    device = device or next(model.parameters()).device
    encode = model.encode_video if modality == "video" else model.encode_audio
    dim = len(trained.video_mean if modality == "video" else trained.audio_mean)
    empty = not arrays
    arrays = arrays or [np.zeros((1, dim), np.float32)]  # encode one blank clip to learn E
    was_training = model.training
    model.eval()
    out = None
    try:
        for rows, e, x_len in encoded_batches(encode, arrays, batch_size, device,
                                              lambda x: trained.standardise(x, modality)):
            if e.dim() == 3:  # (B, T, H) per-frame
                if not hasattr(model, "lag_curve"):
                    raise AvmatchError(f"model {model.name!r} scores pairs and has no clip embedding to index or retrieve "
                                       "with; use an embedding model (such as dual) for that: match --retriever RUN, "
                                       "or match densely: --mode dense")
                e = torch.nn.functional.normalize(masked_mean(e, x_len), dim=-1)
            e = e.float().cpu().numpy()
            if out is None:
                out = np.empty((len(arrays), e.shape[1]), np.float32)
            out[rows] = e
    finally:
        model.train(was_training)
    return out[:0] if empty else out


def top_k_candidates(video_emb: np.ndarray, audio_emb: np.ndarray, k: int = DEFAULT_CANDIDATES,
                     kind: str = "flat", **index_options) -> tuple[np.ndarray, np.ndarray]:
    """Each video's ``k`` nearest audios by cosine (or by distance with ``metric="l2"``): (Nv, K)
    cosines (squared distances), best first, and (Nv, K) audio indices (-1 past the last audio).
    ``kind`` picks the FAISS index (exact "flat", or "ivf"/"hnsw")."""
    from avmatch.index import build_index, search

    index = build_index(audio_emb, kind, **index_options)
    return search(index, video_emb, k)


def embedding_pair_scores(video_emb: np.ndarray, audio_emb: np.ndarray, scale: float = 1.0, bias: float = 0.0):
    """A pair scorer ``(video_rows, audio_rows) -> scores`` for the score ``scale * cosine + bias``."""

    def score(vi: np.ndarray, ai: np.ndarray) -> np.ndarray:
        out = np.empty(len(vi), np.float64)
        step = max(1, _BLOCK // max(1, video_emb.shape[1]))
        for s in range(0, len(vi), step):
            v, a = video_emb[vi[s : s + step]], audio_emb[ai[s : s + step]]
            out[s : s + step] = scale * np.einsum("ij,ij->i", v, a).astype(np.float64) + bias
        return out

    return score


@torch.no_grad()
def model_pair_scores(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                      pairs_per_batch: int = 1024):
    """A pair scorer ``(video_rows, audio_rows) -> scores`` by the trained model's own ``score_pairs``
    (for pair and timing models), a batch of pairs at a time, each clip in a batch encoded once."""
    model = trained.model
    device = next(model.parameters()).device

    def encoded(clips: list[np.ndarray], rows: np.ndarray, modality: str):
        uniq, inverse = np.unique(rows, return_inverse=True)
        x, x_len = pad_batch([trained.standardise(clips[j], modality) for j in uniq], device)
        e = model.encode_video(x, x_len) if modality == "video" else model.encode_audio(x, x_len)
        at = torch.from_numpy(inverse.reshape(-1)).to(device)
        return e[at], x_len[at]

    @torch.no_grad()
    def score(vi: np.ndarray, ai: np.ndarray) -> np.ndarray:
        out = np.empty(len(vi), np.float64)
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(vi), pairs_per_batch):
                v, v_len = encoded(videos, vi[s : s + pairs_per_batch], "video")
                a, a_len = encoded(audios, ai[s : s + pairs_per_batch], "audio")
                out[s : s + len(v)] = model.score_pairs(v, a, v_len, a_len).double().cpu().numpy()
        finally:
            model.train(was_training)
        return out

    return score


def candidate_matrix(video_rows: np.ndarray, audio_rows: np.ndarray, values: np.ndarray,
                     shape: tuple[int, int]) -> csr_matrix:
    """Sparse (Nv, Na) scores from (video, audio, score) triples (pairs with audio -1 are dropped).
    Every triple is an explicit entry, whatever its score (zero included)."""
    video_rows, audio_rows = np.asarray(video_rows), np.asarray(audio_rows)
    keep = audio_rows >= 0
    video_rows, audio_rows = video_rows[keep], audio_rows[keep]
    values = np.asarray(values, dtype=np.float64)[keep]
    order = np.lexsort((audio_rows, video_rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(video_rows, minlength=shape[0]))])
    return csr_matrix((values[order], audio_rows[order], indptr), shape=shape)


def _log_mass(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """log sum exp along ``dim`` that is -inf (not NaN) where every entry is -inf."""
    return torch.nan_to_num(torch.logsumexp(scores, dim), nan=-np.inf)


def outside_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, cand_idx: np.ndarray, scale: float = 1.0,
                     bias: float = 0.0, sample: int = OUTSIDE_SAMPLE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """log of the softmax mass ``sum exp(score)`` that falls outside the candidates: (Nv,) over each
    video's non-candidate audios (:func:`row_log_mass`) and (Na,) over each audio's non-candidate
    videos (:func:`column_log_mass`). Exact when ``sample`` covers every clip; with it the sparse dual
    softmax equals the dense one on the candidates."""
    return (row_log_mass(video_emb, audio_emb, cand_idx, scale, bias, sample, seed),
            column_log_mass(video_emb, audio_emb, scale, bias, sample, seed + 1, cand_idx))


def row_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, cand_idx: np.ndarray, scale: float = 1.0,
                 bias: float = 0.0, sample: int = OUTSIDE_SAMPLE, seed: int = 0) -> np.ndarray:
    """(Nv,) log of each video's softmax mass over the audios that are not its candidates
    (``cand_idx`` (Nv, K), -1: none): estimated from ``sample`` random audios and scaled up."""
    nv, na = len(video_emb), len(audio_emb)
    V, A = torch.from_numpy(np.ascontiguousarray(video_emb)), torch.from_numpy(np.ascontiguousarray(audio_emb))
    cand = torch.from_numpy(np.asarray(cand_idx, dtype=np.int64))
    pick = np.sort(np.random.default_rng(seed).choice(na, min(sample, na), replace=False))
    slot = torch.full((na + 1,), -1, dtype=torch.long)  # audio -> its column in the sample; slot[-1] for "none"
    slot[torch.from_numpy(pick)] = torch.arange(len(pick))
    sampled = A[torch.from_numpy(pick)]
    out = torch.empty(nv, dtype=torch.float64)
    step = max(1, _BLOCK // max(1, len(pick)))
    for s in range(0, nv, step):
        block = (scale * (V[s : s + step] @ sampled.T) + bias).double()  # (b, m)
        hit = slot[cand[s : s + step]]  # (b, K)
        r, c = torch.nonzero(hit >= 0, as_tuple=True)
        block[r, hit[r, c]] = -np.inf
        out[s : s + step] = _log_mass(block, 1) + np.log(na / len(pick))
    return out.numpy()


def column_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, scale: float = 1.0, bias: float = 0.0,
                    sample: int = OUTSIDE_SAMPLE, seed: int = 0, cand_idx: np.ndarray | None = None,
                    k: int = DEFAULT_CANDIDATES) -> np.ndarray:
    """(Na,) log of each audio's softmax mass over the videos, outside their candidates: estimated
    from ``sample`` random videos, each with its candidates (``cand_idx``, or else its own top-``k``
    audios) left out, and scaled up.

    Without candidates it is the "bulk" of each column: large for a hub audio, one that scores
    high against videos in general, and not inflated by the one video an audio belongs to."""
    nv, na = len(video_emb), len(audio_emb)
    V, A = torch.from_numpy(np.ascontiguousarray(video_emb)), torch.from_numpy(np.ascontiguousarray(audio_emb))
    pick = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(nv, min(sample, nv), replace=False)))
    out = torch.full((na,), -np.inf, dtype=torch.float64)
    step = max(1, _BLOCK // max(1, na))
    for s in range(0, len(pick), step):
        rows = pick[s : s + step]
        block = (scale * (V[rows] @ A.T) + bias).double()  # (b, Na)
        if cand_idx is not None:
            cand = torch.from_numpy(np.asarray(cand_idx[rows.numpy()], dtype=np.int64))
        else:
            cand = torch.topk(block, min(k, na), dim=1).indices
        r, c = torch.nonzero(cand >= 0, as_tuple=True)
        block[r, cand[r, c]] = -np.inf
        out = torch.logaddexp(out, _log_mass(block, 0))
    return torch.nan_to_num(out + np.log(nv / len(pick)), nan=-np.inf).numpy()


def _group_log_mass(values: np.ndarray, groups: np.ndarray, n: int, rest: np.ndarray | None) -> np.ndarray:
    """log sum exp of ``values`` per group (n groups), plus each group's mass ``rest`` (log)."""
    top = np.full(n, -np.inf)
    np.maximum.at(top, groups, values)
    if rest is not None:
        top = np.maximum(top, rest)
    top = np.where(np.isfinite(top), top, 0.0)
    mass = np.bincount(groups, np.exp(values - top[groups]), minlength=n)
    if rest is not None:
        mass += np.exp(rest - top)
    with np.errstate(divide="ignore"):
        return np.log(mass) + top


def _rows_of(scores: csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))


def log_normalisers(scores: csr_matrix, row_rest: np.ndarray | None = None,
                    col_rest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Nv,) and (Na,) log softmax denominators of the rows and columns of a sparse score matrix:
    over its entries plus, where given, the log mass outside them."""
    values = _real_scores(scores.data, summed=False)
    return (_group_log_mass(values, _rows_of(scores), scores.shape[0], row_rest),
            _group_log_mass(values, scores.indices, scores.shape[1], col_rest))


def normalise_sparse(scores: csr_matrix, method: str = "dual-softmax", row_rest: np.ndarray | None = None,
                     col_rest: np.ndarray | None = None) -> csr_matrix:
    """:func:`normalise` on the candidate entries of a sparse score matrix.

    A candidate's score becomes its log-probability among its row plus among its column. The
    softmax sums run over the candidates plus, where given, the (log) mass outside them
    (:func:`outside_log_mass`), so a hub audio is discounted as in the dense case; without
    ``row_rest``/``col_rest`` they run over the candidates alone (a hub is then the audio that is a
    candidate of many videos).
    """
    if method == "none":
        return scores
    if method != "dual-softmax":
        raise AvmatchError(f"unknown score normalisation {method!r}; use dual-softmax or none")
    row_lse, col_lse = log_normalisers(scores, row_rest, col_rest)
    values = _real_scores(scores.data, summed=False)
    norm = (values - row_lse[_rows_of(scores)]) + (values - col_lse[scores.indices])
    return csr_matrix((norm, scores.indices.copy(), scores.indptr.copy()), shape=scores.shape)


def greedy_one_to_one(scores: csr_matrix) -> np.ndarray:
    """One-to-one by descending score: in rounds, every free video proposes its best free audio and
    every audio keeps its best proposer. Used where no full matching exists on the candidate graph."""
    values = _real_scores(scores.data, summed=False)
    order = np.argsort(-values, kind="stable")
    rows, cols = _rows_of(scores)[order], scores.indices[order]
    chosen = np.full(scores.shape[0], -1, dtype=np.int64)
    taken = np.zeros(scores.shape[1], dtype=bool)
    while True:
        alive = (chosen[rows] < 0) & ~taken[cols]
        if not alive.any():
            return chosen
        rows, cols = rows[alive], cols[alive]
        _, first = np.unique(rows, return_index=True)  # each free video's best free audio
        proposals = np.sort(first)  # back in descending score order
        _, win = np.unique(cols[proposals], return_index=True)  # each audio's best proposer
        win = proposals[win]
        chosen[rows[win]] = cols[win]
        taken[cols[win]] = True


def assign_sparse(scores: csr_matrix, method: str = "hungarian") -> np.ndarray:
    """:func:`assign` on a sparse candidate graph: the audio index for each video, -1 = unmatched.

    "hungarian": the one-to-one assignment of maximum total score on the candidate graph (scipy's
    min_weight_full_bipartite_matching, LAPJVsp). A video may stay unmatched, at the worth of its
    weakest candidate (with exact retrieval no audio outside its candidates scores higher), so a
    full matching always exists; should the solver still find none, a greedy one-to-one is used.
    "greedy": each video's best candidate, which may repeat.
    """
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    nv, na = scores.shape
    chosen = np.full(nv, -1, dtype=np.int64)
    if scores.nnz == 0:
        return chosen
    values = _real_scores(scores.data)
    rows = _rows_of(scores)
    if method == "greedy":
        order = np.lexsort((-values, rows))
        firsts = order[np.concatenate([[True], rows[order][1:] != rows[order][:-1]])]
        chosen[rows[firsts]] = scores.indices[firsts]
        return chosen
    if method != "hungarian":
        raise AvmatchError(f"unknown assignment method {method!r}; use hungarian or greedy")
    weight = values - values.min() + 1.0  # the solver wants non-zero weights
    weakest = np.ones(nv)
    counts = np.diff(scores.indptr)
    weakest[counts > 0] = np.minimum.reduceat(weight, scores.indptr[:-1][counts > 0])
    unmatched = weakest - 1e-9 * (weight.max() + 1.0)  # just below the weakest candidate, still > 0
    graph = csr_matrix((np.concatenate([weight, unmatched]),
                        (np.concatenate([rows, np.arange(nv)]), np.concatenate([scores.indices, na + np.arange(nv)]))),
                       shape=(nv, na + nv))
    try:
        r, c = min_weight_full_bipartite_matching(graph, maximize=True)
    except ValueError:
        return greedy_one_to_one(scores)
    real = c < na
    chosen[r[real]] = c[real]
    return chosen


def sparse_lookup(scores: csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Scores at (rows[i], cols[i]), NaN where that pair is no entry (or cols[i] < 0)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    if not scores.has_sorted_indices:
        scores = scores.sorted_indices()
    keys = _rows_of(scores).astype(np.int64) * scores.shape[1] + scores.indices
    ok = cols >= 0
    if not len(keys) or not ok.any():
        return out
    want = rows[ok] * scores.shape[1] + cols[ok]
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = keys[pos] == want
    vals = np.full(len(want), np.nan)
    vals[found] = scores.data[pos[found]]
    out[ok] = vals
    return out


def margins_sparse(scores: csr_matrix, chosen: np.ndarray) -> np.ndarray:
    """:func:`margins` over the candidates: the chosen audio's score minus the best other candidate's."""
    nv = scores.shape[0]
    values = _real_scores(scores.data, summed=False)
    counts = np.diff(scores.indptr)
    order = np.lexsort((-values, _rows_of(scores)))  # per row, best first
    first = scores.indptr[:-1]
    best, second = np.full(nv, np.nan), np.full(nv, np.nan)
    best[counts >= 1] = values[order[first[counts >= 1]]]
    second[counts >= 2] = values[order[first[counts >= 2] + 1]]
    own = sparse_lookup(csr_matrix((values, scores.indices, scores.indptr), shape=scores.shape), np.arange(nv), chosen)
    return np.where(own >= best, own - second, own - best)


def match_sparse(video_emb: np.ndarray, audio_emb: np.ndarray, pair_scores, k: int = DEFAULT_CANDIDATES,
                 method: str = "hungarian", normalisation: str = "dual-softmax", kind: str = "flat",
                 outside: tuple[float, float] | None = None, outside_sample: int = OUTSIDE_SAMPLE,
                 _round: int = 0, **index_options
                 ) -> tuple[csr_matrix, csr_matrix, np.ndarray]:
    """Two-stage matching: retrieve each video's top-``k`` audios by the cosine of (Nv, E) and (Na, E)
    embeddings, score them with ``pair_scores(video_rows, audio_rows)``, normalise, assign.

    Returns (normalised scores, raw scores, chosen audio per video, -1 = unmatched); the sparse
    matrices hold the candidates and every chosen pair. ``outside`` = (scale, bias) when the pair
    score is ``scale * cosine + bias``: the dual softmax then also counts the mass outside the
    candidates (:func:`row_log_mass`, :func:`column_log_mass`, from ``outside_sample`` clips), and
    retrieval ranks by the dual softmax too (the cosine less each audio's column mass, so hub audios
    do not crowd out the candidates); else it runs over the candidates alone. With "hungarian", the
    videos and audios the candidate graph leaves over are matched among themselves (densely once
    they are few, else by another two-stage round).
    """
    if normalisation not in ("dual-softmax", "none"):
        raise AvmatchError(f"unknown score normalisation {normalisation!r}; use dual-softmax or none")
    if method not in ("hungarian", "greedy"):
        raise AvmatchError(f"unknown assignment method {method!r}; use hungarian or greedy")
    nv, na = len(video_emb), len(audio_emb)
    dual = normalisation == "dual-softmax" and outside is not None and outside_sample > 0
    if dual:  # retrieve in dual-softmax order: scale * cosine minus the audio's column bulk
        bulk = column_log_mass(video_emb, audio_emb, *outside, sample=outside_sample, k=k)
        bulk = np.where(np.isfinite(bulk), bulk, bulk[np.isfinite(bulk)].min(initial=0.0))
        _, idx = top_k_candidates(np.hstack([outside[0] * video_emb, np.ones((nv, 1), np.float32)]),
                                  np.hstack([audio_emb, -bulk[:, None].astype(np.float32)]), k, kind, **index_options)
    else:
        _, idx = top_k_candidates(video_emb, audio_emb, k, kind, **index_options)
    vi = np.repeat(np.arange(nv), idx.shape[1])
    raw = candidate_matrix(vi, idx.ravel(), np.zeros(idx.size), (nv, na))
    raw.data = pair_scores(_rows_of(raw), raw.indices)
    # the column bulk left out each sampled video's own top-k: its candidates, near enough
    rest = (row_log_mass(video_emb, audio_emb, idx, *outside, sample=outside_sample), bulk) if dual else (None, None)
    scores = normalise_sparse(raw, normalisation, *rest)
    chosen = assign_sparse(scores, method)
    if method != "hungarian":
        return scores, raw, chosen

    # the leftovers: matched among themselves, then added to the candidate matrices
    used = np.zeros(na, dtype=bool)
    used[chosen[chosen >= 0]] = True
    lv, la = np.flatnonzero(chosen < 0), np.flatnonzero(~used)
    if not len(lv) or not len(la) or _round >= _MAX_ROUNDS:
        return scores, raw, chosen
    if len(lv) * len(la) <= _DENSE_LEFTOVER:
        sub_raw = pair_scores(np.repeat(lv, len(la)), np.tile(la, len(lv))).reshape(len(lv), len(la))
        sub = assign(normalise(sub_raw, normalisation))
    else:
        sub = match_sparse(video_emb[lv], audio_emb[la], lambda v, a: pair_scores(lv[v], la[a]), k, method,
                           normalisation, kind, outside, outside_sample, _round + 1, **index_options)[2]
    got = sub >= 0
    fv, fa = lv[got], la[sub[got]]
    chosen[fv] = fa
    fs = fn = pair_scores(fv, fa)
    if normalisation == "dual-softmax":  # the same row and column denominators, now counting the new pair
        row_lse, col_lse = log_normalisers(raw, *rest)
        fn = 2 * fs - np.logaddexp(row_lse[fv], fs) - np.logaddexp(col_lse[fa], fs)
    rows, cols = np.concatenate([_rows_of(raw), fv]), np.concatenate([raw.indices, fa])
    raw = candidate_matrix(rows, cols, np.concatenate([raw.data, fs]), (nv, na))
    scores = candidate_matrix(rows, cols, np.concatenate([scores.data, fn]), (nv, na))
    return scores, raw, chosen


def match_embeddings(video_emb: np.ndarray, audio_emb: np.ndarray, k: int = DEFAULT_CANDIDATES,
                     scale: float = 1.0, bias: float = 0.0, method: str = "hungarian",
                     normalisation: str = "dual-softmax", kind: str = "flat", outside_sample: int = OUTSIDE_SAMPLE,
                     **index_options) -> tuple[csr_matrix, csr_matrix, np.ndarray]:
    """:func:`match_sparse` for an embedding model: the pair score is ``scale * cosine + bias``.
    ``outside_sample`` = 0 normalises over the candidates alone."""
    return match_sparse(video_emb, audio_emb, embedding_pair_scores(video_emb, audio_emb, scale, bias), k, method,
                        normalisation, kind, (scale, bias), outside_sample, **index_options)


def match_two_stage(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray], video_ids: list[str],
                    audio_ids: list[str], method: str = "hungarian", normalisation: str = "dual-softmax",
                    k: int = DEFAULT_CANDIDATES, retriever: Trained | None = None, kind: str = "flat") -> MatchResult:
    """Match clips by retrieving each video's top-``k`` audios with an embedding model (``retriever``,
    by default the trained model) and scoring only those with the trained model."""
    finder = retriever or trained
    if retriever is not None:
        for name, want, have in (("visual", trained.model.config["video_dim"], retriever.model.config["video_dim"]),
                                 ("audio", trained.model.config["audio_dim"], retriever.model.config["audio_dim"])):
            if want != have:
                raise AvmatchError(f"retriever takes {have}-dim {name} features but the model takes {want}")
    video_emb = clip_embeddings(finder, videos, "video")
    audio_emb = clip_embeddings(finder, audios, "audio")
    if finder is trained and is_embedding_model(trained):  # the retrieval score is the score
        scale, bias = embedding_score_params(trained)
        scores, raw, chosen = match_embeddings(video_emb, audio_emb, k, scale, bias, method, normalisation, kind)
    else:
        scores, raw, chosen = match_sparse(video_emb, audio_emb, model_pair_scores(trained, videos, audios), k,
                                           method, normalisation, kind, metric=retrieval_metric(finder))
    return MatchResult(list(video_ids), list(audio_ids), scores, chosen, method, raw)
