"""``sync``: a timing-aware model on frame-rate features that also says how far the audio is shifted.

Each tower turns every frame into an L2-normalised embedding using about a second of context
(dilated temporal convolutions). A (video, audio) pair is scored at every lag within ``max_lag``
frames: the mean cosine of the overlapping frames. The pair's score is the best lag's, and that lag
is the offset estimate. Training (loss "sync") is InfoNCE over every other clip at every lag *and*
the same clip at the wrong lags, as SyncNet does, so embeddings learn timing, not only content.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import MatchModel, length_mask, xavier_init


class FrameTower(nn.Module):
    """(B, T, D) -> (B, T, E) per-frame embeddings; padding frames come out as zeros."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, dropout: float):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU())
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 5, padding=2 * d, dilation=d) for d in (1, 2, 4))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in self.convs)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, embed_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        h = self.inp(x) * mask
        for conv, norm in zip(self.convs, self.norms, strict=True):
            # zeroing the padding after every layer makes it look exactly like the conv's own padding
            h = (h + self.drop(torch.nn.functional.gelu(norm(conv(h.transpose(1, 2)).transpose(1, 2))))) * mask
        return torch.nn.functional.normalize(self.out(h), dim=-1) * mask


class SyncModel(MatchModel):
    loss = "sync"

    def __init__(self, video_dim: int, audio_dim: int, hidden: int = 128, embed_dim: int = 64,
                 max_lag: int = 50, dropout: float = 0.1):
        super().__init__()
        self.video = FrameTower(video_dim, hidden, embed_dim, dropout)
        self.audio = FrameTower(audio_dim, hidden, embed_dim, dropout)
        self.max_lag = max_lag  # frames searched either side; overridable at match time
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # exp(2.3) ≈ 10
        xavier_init(self)

    def encode_video(self, x, lengths):
        return self.video(x, lengths)

    def encode_audio(self, x, lengths):
        return self.audio(x, lengths)

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=4.6052).exp()

    def lags(self) -> range:
        return range(-self.max_lag, self.max_lag + 1)

    def _lag_terms(self, v, a, v_len, a_len, pairwise: bool):
        """For each lag l: mean cosine of v[t] with a[t + l] over the frames both clips have.

        Yields (l, scores): (B,) for pairwise, else (Nv, Na). Overlaps shorter than half the
        shorter clip score -1, so a lucky sliver cannot win.
        """
        t = max(v.shape[1], a.shape[1])
        v = nn.functional.pad(v, (0, 0, 0, t - v.shape[1]))
        a = nn.functional.pad(a, (0, 0, 0, t - a.shape[1]))
        if pairwise:
            lv, la = v_len.float(), a_len.float()
        else:
            lv, la = v_len.float()[:, None], a_len.float()[None, :]
        min_overlap = torch.minimum(lv, la).mul(0.5).clamp(min=1)
        for lag in self.lags():
            if abs(lag) >= t:
                count = torch.zeros_like(lv + la)
                s = torch.zeros_like(count)
            else:
                vs = v[:, max(0, -lag) : t - max(0, lag)]
                as_ = a[:, max(0, lag) : t - max(0, -lag)]
                s = (vs * as_).sum((1, 2)) if pairwise else torch.einsum("ite,jte->ij", vs, as_)
                count = (torch.minimum(lv, la - lag) - max(0, -lag)).clamp(min=0)
            yield lag, torch.where(count >= min_overlap, s / count.clamp(min=1), torch.full_like(s, -1.0))

    def lag_matrix(self, v, a, v_len, a_len) -> Tensor:
        """(Nv, Na, L) agreement of every video with every audio at every lag (training)."""
        return torch.stack([s for _, s in self._lag_terms(v, a, v_len, a_len, False)], -1)

    def lag_curve(self, v, a, v_len, a_len) -> Tensor:
        """(B, L) agreement of the i-th video with the i-th audio at every lag (offsets)."""
        return torch.stack([s for _, s in self._lag_terms(v, a, v_len, a_len, True)], -1)

    def score_pairs(self, v, a, v_len, a_len):
        return self.scale() * self.lag_curve(v, a, v_len, a_len).amax(-1)

    def score_matrix(self, v, a, v_len, a_len):
        best = None
        for _, s in self._lag_terms(v, a, v_len, a_len, False):  # running max: no (Nv, Na, L) tensor
            best = s if best is None else torch.maximum(best, s)
        return self.scale() * best


@register_model("sync", "timing-aware: per-frame embeddings scored at every lag (SyncNet-style); gives offsets", timing=True)
def sync(video_dim: int, audio_dim: int, **cfg) -> SyncModel:
    return SyncModel(video_dim, audio_dim, **cfg)
