"""``sync``: a timing-aware model on frame-rate features that also says how far the audio is shifted.

Each tower turns every frame into an L2-normalised embedding using about a second of context (dilated
temporal convolutions; ``kernel=1`` makes them per-frame layers, for rows that each hold a whole
second, as the classic extractor's do). A (video, audio) pair is scored at every lag within ``max_lag``
frames: the mean cosine of the overlapping frames. The best lag is the offset estimate; the pair's
score is that lag's agreement less ``lag_contrast`` times the mean over all lags, so a peak that stands
out (timing) counts for more than agreement at every lag (content alone). Training (loss "sync") is
InfoNCE over every other clip at every lag *and* the same clip at the wrong lags, as SyncNet does, so
embeddings learn timing, not only content.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import MatchModel, length_mask, xavier_init


def local_centre(x: Tensor, mask: Tensor, frames: int) -> Tensor:
    """x less its mean over the ``frames`` around each frame (padding excluded): only what changes
    within about that long is kept, so a recording's level and colour (a constant in dB) drop out."""
    pool = lambda y: nn.functional.avg_pool1d(y.transpose(1, 2), frames, 1, frames // 2,  # noqa: E731
                                              count_include_pad=False).transpose(1, 2)[:, : x.shape[1]]
    return (x - pool(x * mask) / pool(mask).clamp(min=1e-6)) * mask


class MapFront(nn.Module):
    """(B, T, D) -> (B, T, D - C*G*G + 2*W): the C maps of G x G cells found at columns
    ``start : start + C*G*G`` go through small space-time convolutions (the same weights at every
    place, so what is learnt about a moving thing holds wherever it is), then a max and a mean over
    the places; the other columns pass through as they are."""

    def __init__(self, start: int, channels: int, grid: int, width: int = 24):
        super().__init__()
        self.start, self.channels, self.grid, self.width = start, channels, grid, width
        self.convs = nn.ModuleList([nn.Conv3d(channels, width, 3, padding=1),
                                    nn.Conv3d(width, width, 3, padding=1, stride=(1, 2, 2))])

    def out_dim(self, in_dim: int) -> int:
        return in_dim - self.channels * self.grid ** 2 + 2 * self.width

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D) with zeros past each clip's end, mask (B, T, 1)."""
        b, t, _ = x.shape
        end = self.start + self.channels * self.grid ** 2
        h = x[..., self.start : end].reshape(b, t, self.channels, self.grid, self.grid).transpose(1, 2)
        keep = mask.view(b, 1, t, 1, 1)
        for conv in self.convs:  # padding frames zeroed after each layer: they look like the conv's own padding
            h = torch.nn.functional.gelu(conv(h)) * keep
        h = h.flatten(3)  # (B, W, T, places)
        pooled = torch.cat([h.amax(-1), h.mean(-1)], 1).transpose(1, 2)  # (B, T, 2W)
        return torch.cat([x[..., : self.start], x[..., end:], pooled], -1)


class FrameTower(nn.Module):
    """(B, T, D) -> (B, T, E) per-frame embeddings; padding frames come out as zeros."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, dropout: float, centre: int = 0,
                 front: MapFront | None = None, kernel: int = 5):
        super().__init__()
        self.centre = centre  # frames of local centring of the input; 0: none
        self.front = front
        in_dim = front.out_dim(in_dim) if front is not None else in_dim
        self.inp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU())
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2 * d, dilation=d)
                                   for d in (1, 2, 4))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in self.convs)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, embed_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        if self.centre:
            x = local_centre(x, mask, self.centre)
        if self.front is not None:
            x = self.front(x * mask, mask)
        h = self.inp(x) * mask
        for conv, norm in zip(self.convs, self.norms, strict=True):
            # zeroing the padding after every layer makes it look exactly like the conv's own padding
            h = (h + self.drop(torch.nn.functional.gelu(norm(conv(h.transpose(1, 2)).transpose(1, 2))))) * mask
        return torch.nn.functional.normalize(self.out(h), dim=-1) * mask


class SyncModel(MatchModel):
    loss = "sync"

    def __init__(self, video_dim: int, audio_dim: int, hidden: int = 128, embed_dim: int = 64,
                 max_lag: int = 50, dropout: float = 0.1, init_scale: float = 10.0, lag_contrast: float = 0.75,
                 audio_centre: int = 0, video_maps: list[int] | None = None, video_centre: int = 0,
                 kernel: int = 5):
        super().__init__()
        # video_maps [start, channels, grid]: the video features hold that many grid x grid maps from
        # column start (an extractor's Extractor.video_maps; training fills it in), read by
        # convolutions rather than one weight per cell; None: no maps
        front = MapFront(*video_maps) if video_maps else None
        if front is not None and (len(video_maps) != 3 or min(video_maps[1:]) < 1 or video_maps[0] < 0
                                  or video_maps[0] + video_maps[1] * video_maps[2] ** 2 > video_dim):
            raise ValueError(f"video_maps {video_maps} ([start column, maps, grid]) do not fit {video_dim} video columns")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and at least 1 (frames each convolution reads), got {kernel}")
        # video_centre > 0 centres the video input over that many frames: what changes, not how it looks
        self.video = FrameTower(video_dim, hidden, embed_dim, dropout, centre=video_centre, front=front,
                                kernel=kernel)
        # audio_centre > 0 centres the audio input over that many frames (odd): level-invariant by design
        self.audio = FrameTower(audio_dim, hidden, embed_dim, dropout, centre=audio_centre, kernel=kernel)
        self.max_lag = max_lag  # frames searched either side; overridable at match time
        # a pair's score is its best lag's agreement minus lag_contrast times the mean over all lags:
        # a peak that stands out is timing evidence; agreement at every lag is only similar content
        self.lag_contrast = lag_contrast
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(init_scale))))
        xavier_init(self)


    # a lag counts where the clips overlap by this share of the shorter (training; matching asks more:
    # avmatch.inference.MATCH_MIN_OVERLAP)
    min_overlap = 0.5

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=4.6052).exp()

    def _lag_counts(self, v_len: Tensor, a_len: Tensor, t: int, pairwise: bool) -> tuple[Tensor, Tensor]:
        """Frames both clips have at each lag, (B, L) or (Nv, Na, L), and whether that overlap counts
        (at least half the shorter clip, so a lucky sliver cannot win)."""
        lags = torch.arange(-self.max_lag, self.max_lag + 1, device=v_len.device)  # (L,)
        if pairwise:
            lv, la = v_len.float()[:, None], a_len.float()[:, None]  # (B, 1)
        else:
            lv, la = v_len.float()[:, None, None], a_len.float()[None, :, None]  # (Nv, 1, 1), (1, Na, 1)
        count = (torch.minimum(lv, la - lags) - (-lags).clamp(min=0)).clamp(min=0)
        count = torch.where(lags.abs() < t, count, torch.zeros_like(count))
        return count, count >= torch.minimum(lv, la).mul(self.min_overlap).clamp(min=1)

    def _lag_sums(self, v: Tensor, a: Tensor, pairwise: bool) -> Tensor:
        """Sum over t of v[t] . a[t + lag] for every lag: (B, L) pairwise, else (Nv, Na, L).

        Within a few hundred lags the audio is padded by max_lag frames each side and cut into one
        window per lag, so the whole thing is one matrix product (no loop over lags); a longer range
        (an offset of minutes) is a cross-correlation by FFT, whose cost hardly grows with the range."""
        t = max(v.shape[1], a.shape[1])
        k = self.max_lag
        if 2 * k + 1 >= self.FFT_FROM_LAGS:
            return self._lag_sums_fft(v, a, pairwise)
        v = nn.functional.pad(v, (0, 0, 0, t - v.shape[1]))  # (Nv, t, E)
        a = nn.functional.pad(a, (0, 0, k, k + t - a.shape[1]))  # (Na, t + 2k, E)
        windows = a.unfold(1, t, 1).transpose(2, 3)  # (Na, L, t, E): window l is a[l - k : l - k + t]
        if pairwise:
            return torch.einsum("bte,blte->bl", v, windows)
        nv, na, n_lags = v.shape[0], a.shape[0], windows.shape[1]
        flat = windows.reshape(na * n_lags, -1)  # (Na * L, t * E)
        return (v.reshape(nv, -1) @ flat.T).view(nv, na, n_lags)

    FFT_FROM_LAGS = 257  # lag ranges this wide or wider are searched by FFT

    def _lag_sums_fft(self, v: Tensor, a: Tensor, pairwise: bool) -> Tensor:
        """What :meth:`_lag_sums` gives, by FFT: the correlation of v with a at lag m is
        irfft(conj(V) . A)[m mod n], summed over the embedding in the frequency domain."""
        tv, ta, k = v.shape[1], a.shape[1], self.max_lag
        n = 1 << (tv + ta - 1).bit_length()  # no wrap-around: every lag with overlap has its own index
        spec_v = torch.fft.rfft(v.float(), n=n, dim=1).conj()  # (Nv, F, E)
        spec_a = torch.fft.rfft(a.float(), n=n, dim=1)  # (Na, F, E)
        if pairwise:
            corr = torch.fft.irfft((spec_v * spec_a).sum(-1), n=n, dim=1)  # (B, n)
        else:
            corr = torch.fft.irfft(spec_v.transpose(0, 1) @ spec_a.permute(1, 2, 0), n=n, dim=0)  # (n, Nv, Na)
            corr = corr.permute(1, 2, 0)  # (Nv, Na, n)
        lags = torch.arange(-k, k + 1, device=v.device)
        overlap = (lags > -tv) & (lags < ta)  # lags beyond both clips: nothing overlaps there
        out = corr[..., lags % n] * overlap
        return out.to(v.dtype)

    def _lag_scores(self, v, a, v_len, a_len, pairwise: bool) -> tuple[Tensor, Tensor]:
        """Mean cosine of v[t] with a[t + lag] over the frames both clips have, -1 where the overlap
        is too short, and where it is long enough. Each (B, L) pairwise, else (Nv, Na, L)."""
        sums = self._lag_sums(v, a, pairwise)
        count, valid = self._lag_counts(v_len, a_len, max(v.shape[1], a.shape[1]), pairwise)
        return torch.where(valid, sums / count.clamp(min=1), torch.full_like(sums, -1.0)), valid

    def lag_matrix(self, v, a, v_len, a_len) -> Tensor:
        """(Nv, Na, L) agreement of every video with every audio at every lag (training)."""
        return self._lag_scores(v, a, v_len, a_len, False)[0]

    def lag_curve(self, v, a, v_len, a_len) -> Tensor:
        """(B, L) agreement of the i-th video with the i-th audio at every lag (offsets)."""
        return self._lag_scores(v, a, v_len, a_len, True)[0]

    def _peak_score(self, curve: Tensor, valid: Tensor) -> Tensor:
        """(..., L) lag curves -> (...) scaled scores: the peak, less lag_contrast times the curve's mean."""
        mean = (curve * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        return self.scale() * (curve.amax(-1) - self.lag_contrast * mean)

    def score_pairs(self, v, a, v_len, a_len):
        return self._peak_score(*self._lag_scores(v, a, v_len, a_len, True))

    def score_matrix(self, v, a, v_len, a_len):
        # blocks of audios keep the (block, L, t, E) windows, or the FFT's spectra, and the (Nv, block, L)
        # scores small
        n_lags, t = 2 * self.max_lag + 1, max(v.shape[1], a.shape[1])
        if n_lags >= self.FFT_FROM_LAGS:
            per_audio = v.shape[0] * (5 * (v.shape[1] + a.shape[1]) + 4 * n_lags) + a.shape[1] * a.shape[2] * 4
        else:
            per_audio = n_lags * (t * v.shape[2] + v.shape[0])
        block = max(1, (1 << 24) // per_audio)
        return torch.cat([self._peak_score(*self._lag_scores(v, a[s : s + block], v_len, a_len[s : s + block], False))
                          for s in range(0, a.shape[0], block)], 1)


@register_model("sync", "timing-aware: per-frame embeddings scored at every lag (SyncNet-style); gives offsets",
                kind="timing", reads_maps=True)
def sync(video_dim: int, audio_dim: int, **cfg) -> SyncModel:
    return SyncModel(video_dim, audio_dim, **cfg)
