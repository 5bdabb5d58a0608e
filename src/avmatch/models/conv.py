"""``cnn``: the report's convolutional model, temporal 1-D convolutions per modality.

Each tower is a stack of (Conv1d, batch norm, ReLU, dropout, max-pool by 2) blocks over time, then a
masked mean over the real steps and a projection to an L2-normalised embedding. Padding never leaks:
it is zeroed before every convolution (so it looks like the convolution's own zero padding), batch
norm takes its statistics over real steps only, and pooled lengths are tracked exactly.

:func:`masked_batch_norm` and :func:`pool_lengths` are shared with the pair classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avmatch.models import register_model
from avmatch.models.base import EmbeddingModel, length_mask, masked_mean, xavier_init


def masked_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, mask: Tensor) -> Tensor:
    """Batch norm of ``x`` (B, C, T[, W]) whose statistics, in training, come from real positions only.

    ``mask`` (B, 1, T[, W]) is 1 on real positions. In eval mode the running statistics are used, which
    act per position, so padding cannot leak either way; the module's state is the usual one.
    """
    if not bn.training:
        return bn(x)
    dims = [0, *range(2, x.dim())]
    m = mask.expand_as(x).to(x.dtype)
    n = m.sum(dims).clamp(min=2)  # (C,)
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = (x * m).sum(dims) / n
    var = ((x - mean.view(shape)).pow(2) * m).sum(dims) / n
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked += 1
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.lerp_(mean.detach(), momentum)
            bn.running_var.lerp_((var * n / (n - 1)).detach(), momentum)  # unbiased, as torch stores it
    out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


def pool_lengths(lengths: Tensor) -> Tensor:
    """Lengths after a max-pool of 2 with ``ceil_mode=True``."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class ConvTower(nn.Module):
    """(B, T, D) -> (B, E) L2-normalised embedding from temporal convolutions."""

    def __init__(self, in_dim: int, channels: tuple[int, ...], kernel: int, embed_dim: int, dropout: float):
        super().__init__()
        dims = (in_dim, *channels)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"conv": nn.Conv1d(i, o, kernel, padding=kernel // 2), "norm": nn.BatchNorm1d(o)})
            for i, o in zip(dims, dims[1:], strict=False)
        )
        self.drop = nn.Dropout(dropout)
        self.pool = nn.MaxPool1d(2, ceil_mode=True)
        self.proj = nn.Linear(channels[-1], embed_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        h = x.transpose(1, 2)  # (B, D, T)
        for i, layer in enumerate(self.layers):
            mask = length_mask(lengths, h.shape[2]).unsqueeze(1).to(h.dtype)  # (B, 1, T)
            h = torch.relu(masked_batch_norm(layer["norm"], layer["conv"](h * mask), mask)) * mask
            h = self.drop(h)
            if i < len(self.layers) - 1:
                # after ReLU the padding (0) never beats a real value, so pooling keeps it out
                h, lengths = self.pool(h), pool_lengths(lengths)
        return nn.functional.normalize(self.proj(masked_mean(h.transpose(1, 2), lengths)), dim=-1)


class ConvModel(EmbeddingModel):
    loss = "infonce"

    def __init__(self, video_dim: int, audio_dim: int, channels: tuple[int, ...] = (128, 128, 128),
                 kernel: int = 3, embed_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        channels = tuple(channels)
        self.video = ConvTower(video_dim, channels, kernel, embed_dim, dropout)
        self.audio = ConvTower(audio_dim, channels, kernel, embed_dim, dropout)
        xavier_init(self)



@register_model("cnn", "our design after the report's CNN row (it gives no details): temporal Conv1d + batch norm + max-pool per modality, masked mean, cosine", kind="embedding")
def cnn(video_dim: int, audio_dim: int, **cfg) -> ConvModel:
    return ConvModel(video_dim, audio_dim, **cfg)
