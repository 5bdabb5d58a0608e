"""Recurrent models: the course starter's baseline and the report's LSTM variants.

- ``va-metric``: the starter's metric model. A two-layer LSTM per modality, its last hidden state, a
  linear layer shared by both modalities, Euclidean distance, contrastive loss with margin 1.
- ``rnn``: the text's plain (tanh) RNN, the baseline the gated cells improve on; otherwise as ``lstm``.
- ``lstm`` / ``gru``: a stacked gated RNN per modality, pooled over time (mean or last state), projected
  to an L2-normalised embedding; cosine times a learned scale, InfoNCE.
- ``lstm-tw``: the report's LSTM with time weighting: a learned score per step, softmax over the real
  steps, and the weighted sum of the LSTM outputs as the clip's summary.

Gated cells guard against vanishing gradients; the training loop clips the gradient norm against
exploding ones (the text's advice; on by default, ``clip_grad``) and logs it (``grad/norm`` in
TensorBoard), so ``rnn`` beside ``lstm`` and ``gru`` shows the difference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import (
    EmbeddingModel,
    MatchModel,
    last_step,
    length_mask,
    masked_mean,
    run_rnn,
    xavier_init,
)

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # nn.RNN: tanh


def _rnn(cell: str, in_dim: int, hidden: int, layers: int, dropout: float) -> nn.RNNBase:
    return _CELLS[cell](in_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)


class MetricModel(MatchModel):
    """The starter's baseline: score = minus the Euclidean distance of the two embeddings."""

    loss = "contrastive"

    def __init__(self, video_dim: int, audio_dim: int, hidden: int = 128, layers: int = 2, embed_dim: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.video_rnn = _rnn("lstm", video_dim, hidden, layers, dropout)
        self.audio_rnn = _rnn("lstm", audio_dim, hidden, layers, dropout)
        self.proj = nn.Linear(hidden, embed_dim)  # shared by both modalities, as in the starter
        xavier_init(self)

    def encode_video(self, x, lengths):
        return self.proj(last_step(run_rnn(self.video_rnn, x, lengths), lengths))  # (B, E)

    def encode_audio(self, x, lengths):
        return self.proj(last_step(run_rnn(self.audio_rnn, x, lengths), lengths))

    # the small epsilon keeps the gradient of the distance finite when two embeddings coincide
    def score_pairs(self, v, a, v_len=None, a_len=None):
        return -((v - a).pow(2).sum(-1) + 1e-8).sqrt()

    def score_matrix(self, v, a, v_len=None, a_len=None):
        d2 = v.pow(2).sum(-1)[:, None] + a.pow(2).sum(-1)[None, :] - 2 * v @ a.T  # (Nv, Na), no (Nv, Na, E)
        return -(d2.clamp(min=0) + 1e-8).sqrt()


class RecurrentTower(nn.Module):
    """(B, T, D) -> (B, E) L2-normalised: stacked RNN, pooled over real steps, projected."""

    def __init__(self, cell: str, in_dim: int, hidden: int, layers: int, embed_dim: int, pool: str,
                 dropout: float):
        super().__init__()
        if pool not in ("mean", "last", "attention"):
            raise ValueError(f"pool must be 'mean', 'last' or 'attention', not {pool!r}")
        self.pool = pool
        self.rnn = _rnn(cell, in_dim, hidden, layers, dropout)
        if pool == "attention":
            # the report's time weighting: one learned relevance score per step
            self.attn = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, embed_dim)

    def time_weights(self, h: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, H) -> (B, T) softmax weights over the real steps; padding gets exactly 0."""
        logits = self.attn(h).squeeze(-1)
        logits = logits.masked_fill(~length_mask(lengths, h.shape[1]), float("-inf"))
        return torch.softmax(logits, dim=1)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h = run_rnn(self.rnn, x, lengths)  # (B, T, H), zero past each length
        if self.pool == "mean":
            s = masked_mean(h, lengths)
        elif self.pool == "last":
            s = last_step(h, lengths)
        else:
            s = (self.time_weights(h, lengths).unsqueeze(-1) * h).sum(1)
        return nn.functional.normalize(self.proj(self.drop(s)), dim=-1)


class RecurrentModel(EmbeddingModel):
    loss = "infonce"

    def __init__(self, video_dim: int, audio_dim: int, cell: str = "lstm", hidden: int = 128, layers: int = 2,
                 embed_dim: int = 64, pool: str = "mean", dropout: float = 0.1):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, not {cell!r}")
        self.video = RecurrentTower(cell, video_dim, hidden, layers, embed_dim, pool, dropout)
        self.audio = RecurrentTower(cell, audio_dim, hidden, layers, embed_dim, pool, dropout)
        xavier_init(self)



@register_model("va-metric", "baseline of the course the report was written for: 2-layer LSTM per modality, last "
                "state, shared linear, Euclidean",
                kind="pair", metric="l2")
def va_metric(video_dim: int, audio_dim: int, **cfg) -> MetricModel:
    return MetricModel(video_dim, audio_dim, **cfg)


@register_model("lstm", "our design after the report's LSTM row: stacked LSTM per modality, masked mean over time, cosine embedding",
                kind="embedding")
def lstm(video_dim: int, audio_dim: int, cell: str = "lstm", **cfg) -> RecurrentModel:
    return RecurrentModel(video_dim, audio_dim, cell=cell, **cfg)


@register_model("gru", "stacked GRU per modality (fewer parameters than LSTM), masked mean, cosine embedding",
                kind="embedding")
def gru(video_dim: int, audio_dim: int, cell: str = "gru", **cfg) -> RecurrentModel:
    return RecurrentModel(video_dim, audio_dim, cell=cell, **cfg)


@register_model("rnn", "plain tanh RNN per modality (no gates: what LSTM and GRU improve on), masked mean, "
                "cosine embedding",
                kind="embedding")
def rnn(video_dim: int, audio_dim: int, cell: str = "rnn", **cfg) -> RecurrentModel:
    return RecurrentModel(video_dim, audio_dim, cell=cell, **cfg)


@register_model("lstm-tw", "our design after the report's time-weighted LSTM row: learned attention over the real steps, cosine embedding",
                kind="embedding")
def lstm_tw(video_dim: int, audio_dim: int, cell: str = "lstm", pool: str = "attention", **cfg) -> RecurrentModel:
    return RecurrentModel(video_dim, audio_dim, cell=cell, pool=pool, **cfg)
