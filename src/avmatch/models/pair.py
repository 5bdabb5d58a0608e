"""``lstm-cnn``: the report's pair classifier, its best model (86.7% top-5 on the course test set).

Each modality passes through two LSTMs of hidden size 64 with a residual connection
(``h = lstm2(h1) + h1``, ``h1 = lstm1(x)``), giving a (T, 64) sequence per clip. For a pair, the two
sequences side by side form a (T, 128) one-channel image; three 5x5 convolutions (1 -> 4 -> 8 -> 16
channels, each with batch norm, ReLU, dropout and a 2x2 max-pool) read it, a global pool gives 64
numbers and a linear layer the logit (a sigmoid of it is the probability that the pair matches).

Video and audio of a pair can differ in length: the image covers the first ``min(video, audio)``
steps of the pair (the clips are cropped to their common duration, both starting at 0). Rows past
that are zeroed before every convolution, batch norm takes its statistics from real rows only, and
the global pool averages real rows only, so padding never changes a score.

Layout of the 128 columns: with ``interleave=True`` (default) video and audio features alternate
(v0, a0, v1, a1, ...), so every 5x5 window sees both modalities and the convolutions can compare
them from the first layer. ``interleave=False`` puts the 64 audio columns after the 64 video columns
(plain concatenation); then only the windows near the seam see both modalities. Either way the
parameter counts are the report's. ``residual_relu=True`` puts a ReLU after each residual sum, as the
report does (``--recipe report`` sets both; lstm-cnn's own recipe, ``avmatch.training.RECIPES``, the ReLU:
interleaved, the report's training learns far better than concatenated).

The global pool: the mean over the real rows, and over the columns in 4 equal bands, of each of the
16 channels: 16 x 4 = 64 values, which is what the report's linear layer (65 weights) takes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import PairModel, length_mask, run_rnn, xavier_init
from avmatch.models.conv import masked_batch_norm, pool_lengths


class ResidualLSTM(nn.Module):
    """(B, T, D) -> (B, T, H): ``lstm2(h1) + h1`` with ``h1 = lstm1(x)`` (a ReLU of the sum with
    ``relu``, as the report's model has it); zero past each length."""

    def __init__(self, in_dim: int, hidden: int, relu: bool = False):
        super().__init__()
        self.lstm1 = nn.LSTM(in_dim, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)
        self.relu = relu

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h1 = run_rnn(self.lstm1, x, lengths)
        h = run_rnn(self.lstm2, h1, lengths) + h1
        return torch.relu(h) if self.relu else h


class LstmCnnModel(PairModel):
    loss = "bce"
    pair_chunk = 256  # every pair builds a (T, 128) image through three conv layers

    def __init__(self, video_dim: int, audio_dim: int, hidden: int = 64, channels: tuple[int, ...] = (4, 8, 16),
                 kernel: int = 5, bands: int = 4, dropout: float = 0.1, interleave: bool = True,
                 residual_relu: bool = False):
        super().__init__()
        channels = tuple(channels)
        self.interleave = interleave
        self.bands = bands
        self.video = ResidualLSTM(video_dim, hidden, residual_relu)
        self.audio = ResidualLSTM(audio_dim, hidden, residual_relu)
        dims = (1, *channels)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv2d(i, o, kernel, padding=kernel // 2), "norm": nn.BatchNorm2d(o)})
            for i, o in zip(dims, dims[1:], strict=False)
        )
        self.drop = nn.Dropout(dropout)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.head = nn.Linear(channels[-1] * bands, 1)
        xavier_init(self)


    def score_pairs(self, v: Tensor, a: Tensor, v_len: Tensor, a_len: Tensor) -> Tensor:
        """Logit that the i-th video and the i-th audio are the same clip: (B,)."""
        lengths = torch.minimum(v_len, a_len).to(v.device)
        t = int(lengths.max()) if len(lengths) else 1
        v, a = v[:, :t], a[:, :t]  # rows past every pair's common length are never needed
        if self.interleave:
            img = torch.stack([v, a], dim=-1).flatten(2)  # (B, T, 2H): v0, a0, v1, a1, ...
        else:
            img = torch.cat([v, a], dim=-1)  # (B, T, 2H)
        h = img.unsqueeze(1)  # (B, 1, T, 2H)
        for layer in self.layers:
            mask = length_mask(lengths, h.shape[2])[:, None, :, None].to(h.dtype)  # (B, 1, T, 1)
            h = torch.relu(masked_batch_norm(layer["norm"], layer["conv"](h * mask), mask)) * mask
            # ReLU output is >= 0, so the zeroed rows never win the max-pool
            h, lengths = self.pool(self.drop(h)), pool_lengths(lengths)
        mask = length_mask(lengths, h.shape[2])[:, None, :, None].to(h.dtype)
        rows = (h * mask).sum(2) / lengths.clamp(min=1)[:, None, None].to(h.dtype)  # (B, C, W)
        pooled = nn.functional.adaptive_avg_pool1d(rows, self.bands).flatten(1)  # (B, C * bands)
        return self.head(pooled).squeeze(-1)


@register_model("lstm-cnn", "the report's submitted model: residual LSTMs per modality, 3 Conv2d layers over the joined sequences, pair logit",
                kind="pair")
def lstm_cnn(video_dim: int, audio_dim: int, **cfg) -> LstmCnnModel:
    return LstmCnnModel(video_dim, audio_dim, **cfg)
