"""The only code that runs a model: clips encoded in length-sorted batches, score matrices, clip
embeddings, per-frame embeddings of clips of any length, pair scores, lag curves and offsets.

Matching (:mod:`avmatch.matching`), training-time validation (:func:`avmatch.training.validate`),
indexing and evaluation sit on these functions and never call a model's methods themselves. A
model is never changed here: a lag range other than the trained one (``max_lag``) is a view of the
model that shares its weights (:func:`at_lag_range`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from avmatch.checkpoint import COUNT_BOUNDS, Trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord
from avmatch.models import capabilities
from avmatch.progress import stage


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



# A timing model searches offsets up to this by default, whatever range it trained with (users' clips are
# shifted by seconds; the shipped model trained within 1.28 s): on 8 s clips shifted by up to 2.5 s the
# shipped recipe went from 0.49 to 0.97 one-to-one (benchmarks/generalise.py, users' media)
DEFAULT_MAX_OFFSET_S = 5.0
# ...and counts a lag only where the two clips overlap by this share of the shorter one: short
# overlaps are noisy, and on 4 s clips they cost more than the wider range gave (0.81 -> 0.705 at 0.5;
# 0.835 at 0.65, the best of 0.5/0.6/0.65/0.7 on the same benchmark's held-out sets)
MATCH_MIN_OVERLAP = 0.65


def lag_range(trained: Trained, max_offset_s: float | None) -> int | None:
    """The lag range in frames that ``max_offset_s`` seconds mean for a timing model (None:
    :data:`DEFAULT_MAX_OFFSET_S`, or none for a model that compares aligned clips only); out of bounds
    is one line."""
    if max_offset_s is None:
        return round(DEFAULT_MAX_OFFSET_S * trained.audio_rate_hz) if getattr(trained.model, "max_lag", 0) else None
    lag = round(max_offset_s * trained.audio_rate_hz) if np.isfinite(max_offset_s) else -1
    if not 1 <= lag <= COUNT_BOUNDS["max_lag"]:
        raise AvmatchError(f"--max-offset {max_offset_s:g} s is {lag} frames at {trained.audio_rate_hz:g} Hz; "
                           f"give 1 to {COUNT_BOUNDS['max_lag']} frames' worth")
    return lag


def at_lag_range(model: nn.Module, max_lag: int | None) -> nn.Module:
    """A timing model as matching runs it: searching ``max_lag`` frames either side (None: as trained),
    a lag counting only where the clips overlap by :data:`MATCH_MIN_OVERLAP` of the shorter. A shallow
    copy that shares every weight and submodule (the loaded model keeps its own settings); any other
    model as it is."""
    if not hasattr(model, "max_lag"):
        return model
    view = copy.copy(model)  # a new attribute table; parameters and submodules are the same objects
    view.max_lag = model.max_lag if max_lag is None else max_lag
    view.min_overlap = MATCH_MIN_OVERLAP
    return view


@torch.no_grad()
def score_matrix(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                 batch_size: int = 256, device: str | torch.device | None = None,
                 max_lag: int | None = None) -> np.ndarray:
    """(Nv, Na) scores of every video against every audio; higher means more likely the same clip.
    ``max_lag``: a timing model's lag range in frames (None: as trained)."""
    model = at_lag_range(trained.model, max_lag)
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


def peak_between_frames(curve: np.ndarray, k: int) -> float:
    """The position of a lag curve's peak at index ``k`` between frames: the vertex of a parabola
    through it and its two neighbours (``k`` itself at an end, or where a neighbour is no real
    agreement, -1 or below: lags without enough overlap)."""
    if 0 < k < len(curve) - 1 and min(curve[k - 1], curve[k + 1]) > -1:
        denom = curve[k - 1] - 2 * curve[k] + curve[k + 1]
        if denom < 0:
            return k + 0.5 * (curve[k - 1] - curve[k + 1]) / denom
    return float(k)


@torch.no_grad()
def estimate_offsets(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                     batch_size: int = 64, max_lag: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Offset of each (video, audio) pair in seconds (positive: the audio starts that many seconds
    into the video) and its confidence (peak agreement minus the median over all lags).

    Needs a timing model (:func:`avmatch.models.capabilities`); the peak is refined between frames
    (:func:`peak_between_frames`). ``max_lag``: lag range in frames (None: as trained).
    """
    model = at_lag_range(trained.model, max_lag)
    was_training = model.training
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
            lag = peak_between_frames(c, k) - model.max_lag  # video row t meets audio row t + lag
            offsets.append(-lag / rate)
            valid = c[c > -1]
            confs.append(float(c[k] - np.median(valid)) if len(valid) else 0.0)
    model.train(was_training)
    return np.array(offsets), np.array(confs)


@torch.no_grad()
def frame_embeddings(trained: Trained, arrays: list[np.ndarray], modality: str, chunk: int = 4096,
                     margin: int = 64) -> list[np.ndarray]:
    """A timing model's per-frame embeddings (T_i, E) float32 of each clip, however long: a long
    clip is encoded in pieces of ``chunk`` frames with ``margin`` frames of context either side (more
    than the towers' reach), so memory stays bounded and the result is the whole clip's."""
    model = trained.model
    if not capabilities(model).timing:
        raise AvmatchError(f"model {model.name!r} has no per-frame embeddings: locating clips needs a timing model "
                           "(such as sync, or the shipped default)")
    device = next(model.parameters()).device
    encode = model.encode_video if modality == "video" else model.encode_audio
    was_training = model.training
    model.eval()
    out = []
    try:
        for x in arrays:
            x = trained.standardise(x, modality)
            parts = []
            for s in range(0, max(1, len(x)), chunk):
                lo, hi = max(0, s - margin), min(len(x), s + chunk + margin)
                piece, length = pad_batch([x[lo:hi]], device)
                e = encode(piece, length)[0].float().cpu().numpy()
                parts.append(e[s - lo : s - lo + min(chunk, len(x) - s)])
            out.append(np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))
    finally:
        model.train(was_training)
    return out


def is_embedding_model(trained: Trained) -> bool:
    """Whether the model's score is a scaled cosine of its clip embeddings (the registry says)."""
    return capabilities(trained.model).embedding


def retrieval_metric(trained: Trained) -> str:
    """How a model's clip embeddings are compared: "l2" for a model that scores a pair by minus the
    Euclidean distance of its (unnormalised) embeddings (va-metric), else "ip" (cosine)."""
    return capabilities(trained.model).metric


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
    with stage(f"embed {modality}"):
        return _clip_embeddings(trained, arrays, modality, batch_size, device)


def _clip_embeddings(trained: Trained, arrays: list[np.ndarray], modality: str, batch_size: int,
                     device: str | torch.device | None) -> np.ndarray:
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
                if not capabilities(model).timing:
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


@torch.no_grad()
def model_pair_scores(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                      pairs_per_batch: int = 1024, max_lag: int | None = None):
    """A pair scorer ``(video_rows, audio_rows) -> scores`` by the trained model's own ``score_pairs``
    (for pair and timing models), a batch of pairs at a time, each clip in a batch encoded once."""
    model = at_lag_range(trained.model, max_lag)
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


def check_fits(trained: Trained, corpus: Corpus, modality: str) -> None:
    """Refuse (one line) features of one modality that the run was not trained on: other dims, another
    rate (offsets and lags would be off by the ratio) or another extractor."""
    name = "visual" if modality == "video" else "audio"
    made = ExtractorRecord.from_dict(corpus.extractor)
    dim = corpus.video_dim if modality == "video" else corpus.audio_dim
    want = trained.model.config[f"{modality}_dim"]
    if dim is not None and dim != want:
        raise AvmatchError(f"{name} features have {dim} dims but the model was trained on {want} "
                           f"(extractor {made.name!r} vs {trained.extractor.name!r})",
                           corpus.root)
    rate = corpus.video_rate_hz if modality == "video" else corpus.audio_rate_hz
    want_rate = trained.video_rate_hz if modality == "video" else trained.audio_rate_hz
    if dim is not None and not np.isclose(rate, want_rate, rtol=1e-6, atol=0):
        raise AvmatchError(f"{name} features at {rate:g} Hz but the model was trained on {want_rate:g} Hz; "
                           "extract them with the run's extractor settings", corpus.root)
    differs = trained.extractor.mismatch(made)
    if dim is not None and differs:
        raise AvmatchError(f"{name} features were made with {differs}: features of another extractor do "
                           "not fit the model", corpus.root)

