"""``dual``: the text's video embedding, a dual encoder (one tower per modality).

Each tower maps every row through a small MLP, mixes neighbouring rows with residual temporal
convolutions, summarises the clip by the mean and the max over its real rows and projects that to
an L2-normalised ``embed_dim`` vector. Cosine similarity times a learned inverse temperature is the
score; symmetric InfoNCE over the batch is the loss (CLIP's recipe). Embeddings are what
``encode_video`` / ``encode_audio`` return, so they can be exported and searched like any vectors.
It is the default model for per-second feature corpora.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import EmbeddingModel, length_mask, masked_mean, xavier_init


class Tower(nn.Module):
    """(B, T, D) -> (B, E) L2-normalised clip embedding; rows past each length are ignored."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, blocks: int, kernel: int, dropout: float):
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(2 * hidden, embed_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        real = length_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
        mask = real.to(x.dtype)
        h = self.frame(x) * mask  # (B, T, H)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            # zeroed padding looks exactly like the convolution's own zero padding
            h = (h + self.drop(nn.functional.gelu(norm(conv(h.transpose(1, 2)).transpose(1, 2))))) * mask
        peak = h.masked_fill(~real, float("-inf")).amax(1)  # (B, H)
        summary = torch.cat([masked_mean(h, lengths), peak], dim=-1)  # (B, 2H)
        return nn.functional.normalize(self.proj(summary), dim=-1)


class DualEncoder(EmbeddingModel):
    loss = "infonce"

    def __init__(self, video_dim: int, audio_dim: int, hidden: int = 256, embed_dim: int = 128, blocks: int = 2,
                 kernel: int = 3, dropout: float = 0.1, init_scale: float = 1 / 0.07):
        super().__init__(init_scale=init_scale)
        self.video = Tower(video_dim, hidden, embed_dim, blocks, kernel, dropout)
        self.audio = Tower(audio_dim, hidden, embed_dim, blocks, kernel, dropout)
        xavier_init(self)



@register_model("dual", "dual encoder: per-row MLP + residual temporal convs, mean+max pool, cosine, InfoNCE", kind="embedding")
def dual(video_dim: int, audio_dim: int, **cfg) -> DualEncoder:
    return DualEncoder(video_dim, audio_dim, **cfg)
