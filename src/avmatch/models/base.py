"""What every avmatch model is: two encoders and a score.

Inputs are padded batches: ``x`` (B, T, D) float32 and ``lengths`` (B,) int64 (the true number of
rows of each clip; rows past it are padding and must not change the result).

- ``encode_video(x, lengths)`` / ``encode_audio(x, lengths)`` turn clips into representations:
  an embedding (B, E) for embedding models, a sequence (B, T, H) for pair and timing models.
- ``score_pairs(v, a, v_len, a_len)`` -> (B,): the score of the i-th video with the i-th audio.
- ``score_matrix(v, a, v_len, a_len)`` -> (Nv, Na): the score of every video with every audio.
Higher is always "more likely the same clip". ``loss`` names the training objective in
:mod:`avmatch.losses` that suits the score: "bce" (scores are logits), "contrastive" (scores are
negative distances) or "infonce" (scores are temperature-scaled logits over a batch).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class MatchModel(nn.Module):
    loss: str = "bce"
    name: str = ""
    config: dict = {}

    # Most models keep one tower per modality as ``self.video`` / ``self.audio``; others override these.
    def encode_video(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.video(x, lengths)

    def encode_audio(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.audio(x, lengths)

    def score_pairs(self, v: Tensor, a: Tensor, v_len: Tensor, a_len: Tensor) -> Tensor:
        raise NotImplementedError

    def score_matrix(self, v: Tensor, a: Tensor, v_len: Tensor, a_len: Tensor) -> Tensor:
        raise NotImplementedError


class EmbeddingModel(MatchModel):
    """Encoders give L2-normalised embeddings (B, E); the score is a scaled cosine plus a bias.

    With loss "bce" the scale and bias turn cosine into a calibrated logit (SigLIP-style); with
    "infonce" the bias cancels in the softmax and the learned scale is the inverse temperature.
    """

    loss = "bce"

    def __init__(self, init_scale: float = 10.0, init_bias: float = -5.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(init_scale)))))
        self.logit_bias = nn.Parameter(torch.tensor(init_bias))

    def scale(self) -> Tensor:
        return self.logit_scale.clamp(max=4.6052).exp()  # at most 100, as CLIP caps it

    def score_pairs(self, v, a, v_len=None, a_len=None):
        return self.scale() * (v * a).sum(-1) + self.logit_bias

    def score_matrix(self, v, a, v_len=None, a_len=None):
        return self.scale() * v @ a.T + self.logit_bias


class PairModel(MatchModel):
    """Encoders give sequences (B, T, H); a joint head scores each (video, audio) pair."""

    loss = "bce"
    pair_chunk = 4096  # pairs per head call when scoring a full matrix

    def score_matrix(self, v, a, v_len, a_len):
        nv, na = v.shape[0], a.shape[0]
        vi = torch.arange(nv, device=v.device).repeat_interleave(na)
        ai = torch.arange(na, device=a.device).repeat(nv)
        out = torch.empty(nv * na, device=v.device)
        for s in range(0, nv * na, self.pair_chunk):
            i, j = vi[s : s + self.pair_chunk], ai[s : s + self.pair_chunk]
            out[s : s + len(i)] = self.score_pairs(v[i], a[j], v_len[i], a_len[j])
        return out.view(nv, na)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, T) bool, True on real rows."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the real rows of (B, T, D) -> (B, D)."""
    mask = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
    return (x * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)


def last_step(x: Tensor, lengths: Tensor) -> Tensor:
    """The row at position ``length - 1`` of each sequence: (B, T, D) -> (B, D)."""
    idx = (lengths.clamp(min=1) - 1).to(x.device)
    return x[torch.arange(x.shape[0], device=x.device), idx]


def run_rnn(rnn: nn.RNNBase, x: Tensor, lengths: Tensor) -> Tensor:
    """Run a batch_first RNN over padded input, ignoring padding; returns (B, T, H) zero-padded."""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal weights and zero biases for linear, conv and recurrent layers (as the report did)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.RNNBase):
            for pname, p in m.named_parameters():
                if "weight" in pname:
                    nn.init.xavier_normal_(p)
                else:
                    nn.init.zeros_(p)


def parameter_table(model: nn.Module) -> list[tuple[str, int]]:
    """Per-layer parameter counts, as the report tabulated them: (module path, count) rows in
    registration order, one per leaf module that owns parameters and one per parameter held directly
    by a non-leaf module (e.g. ``logit_scale``). The counts sum to the model's total."""
    rows: list[tuple[str, int]] = []
    seen: set[int] = set()  # a shared parameter is counted once, where it first appears
    for mod_name, mod in model.named_modules():
        own = [(n, p) for n, p in mod.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in own)
        if not own:
            continue
        if next(mod.children(), None) is None and mod_name:
            rows.append((mod_name, sum(p.numel() for _, p in own)))
        else:
            rows.extend((f"{mod_name}.{n}" if mod_name else n, p.numel()) for n, p in own)
    return rows
