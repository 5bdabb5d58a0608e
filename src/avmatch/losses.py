"""Training objectives. Each returns a dict of named terms; the training loop sums them.

They take scores as the models define them (higher = more alike): logits for "bce", negative
distances for "contrastive", a (B, B) logit matrix whose diagonal holds the true pairs for "infonce".
A model names its objective (``model.loss``); :data:`LOSSES` maps that name to what one training
step computes from the batch's encodings, so the training loop never picks a loss itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avmatch.errors import AvmatchError


def pair_bce(pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
    """Binary cross-entropy on matched (label 1) and mismatched (label 0) pair logits, each class
    weighted equally however many negatives are drawn per positive."""
    return {
        "bce_pos": F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) / 2,
        "bce_neg": F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)) / 2,
    }


def contrastive_margin(pos: Tensor, neg: Tensor, margin: float = 1.0) -> dict[str, Tensor]:
    """The course starter's loss on Euclidean distances d = -score: d² for matches, max(0, m - d)² else."""
    d_pos, d_neg = -pos, -neg
    return {
        "contrastive_pos": d_pos.pow(2).mean() / 2,
        "contrastive_neg": F.relu(margin - d_neg).pow(2).mean() / 2,
    }


def info_nce(logits: Tensor) -> dict[str, Tensor]:
    """Symmetric InfoNCE over a (B, B) logit matrix whose diagonal holds the true pairs."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return {
        "infonce_v2a": F.cross_entropy(logits, target) / 2,
        "infonce_a2v": F.cross_entropy(logits.T, target) / 2,
    }


def sync_nce(lag_logits: Tensor, target_lag: Tensor) -> dict[str, Tensor]:
    """InfoNCE over every (clip, lag) candidate: the true one is the same clip at its true lag.

    ``lag_logits`` (B, B, L): video i against audio j at lag index l; ``target_lag`` (B,): the lag
    index at which video i meets its own audio. Negatives are the other clips at every lag and the
    same clip at every wrong lag, so the scores must get the timing right, not only the content.
    """
    b, _, n_lags = lag_logits.shape
    target = torch.arange(b, device=lag_logits.device) * n_lags + target_lag
    return {
        "sync_v2a": F.cross_entropy(lag_logits.reshape(b, -1), target) / 2,
        "sync_a2v": F.cross_entropy(lag_logits.transpose(0, 1).reshape(b, -1), target) / 2,
    }


@dataclass
class Batch:
    """What an objective knows of one training step besides the encodings."""

    shifts: list[int]  # per clip: audio rows its window starts late (timing models)
    negatives: int  # mismatched pairs per matched pair (pair objectives)
    rng: np.random.Generator  # draws the negatives
    own: Tensor | None = None  # under DDP: the rows whose pairs this process scores; None: all


def _sync_terms(model: nn.Module, ev: Tensor, ea: Tensor, v_len: Tensor, a_len: Tensor, batch: Batch) -> dict:
    # audio window starts `shift` rows late, so video row t meets audio row t - shift
    target = torch.tensor([model.max_lag - s for s in batch.shifts], device=ev.device)
    return sync_nce(model.scale() * model.lag_matrix(ev, ea, v_len, a_len), target)


def _infonce_terms(model: nn.Module, ev: Tensor, ea: Tensor, v_len: Tensor, a_len: Tensor, batch: Batch) -> dict:
    return info_nce(model.score_matrix(ev, ea, v_len, a_len))


def _pair_terms(loss: Callable[[Tensor, Tensor], dict]):
    """A pair objective: each clip's own pair against ``negatives`` mismatched ones drawn in the batch."""

    def terms(model: nn.Module, ev: Tensor, ea: Tensor, v_len: Tensor, a_len: Tensor, batch: Batch) -> dict:
        b = ev.shape[0]
        if batch.own is None:
            pos = model.score_pairs(ev, ea, v_len, a_len)
            own = torch.arange(b)
        else:
            own = batch.own
            pos = model.score_pairs(ev[own], ea[own], v_len[own], a_len[own])
        # each negative pairs video i with the audio of clip (i + shift) mod B, never its own
        offsets = batch.rng.choice(np.arange(1, b), size=min(batch.negatives, b - 1), replace=False)
        idx = torch.cat([(own + int(s)) % b for s in offsets]).to(ev.device)
        vi = own.to(ev.device).repeat(len(offsets))
        neg = model.score_pairs(ev[vi], ea[idx], v_len[vi], a_len[idx])
        return loss(pos, neg)

    return terms


@dataclass(frozen=True)
class Objective:
    terms: Callable[..., dict]  # (model, ev, ea, v_len, a_len, batch) -> named loss terms
    pairwise: bool = False  # scores each clip's own pair and drawn negatives (under DDP: a share per process)
    logits: bool = False  # the model's scores are logits: a sigmoid makes them probabilities


LOSSES: dict[str, Objective] = {
    "sync": Objective(_sync_terms),
    "infonce": Objective(_infonce_terms),
    "bce": Objective(_pair_terms(pair_bce), pairwise=True, logits=True),
    "contrastive": Objective(_pair_terms(contrastive_margin), pairwise=True),
}


def validation_loss(scores: np.ndarray, name: str) -> float:
    """The matching loss on a validation set's (N, N) score matrix (row i's own audio is column i):
    for a pair classifier, BCE with matched (diagonal) and mismatched pairs weighted equally; for the
    others, symmetric cross-entropy over the matrix (InfoNCE over the clips). Comparable across epochs
    of one run, not across objectives."""
    s = torch.as_tensor(np.nan_to_num(scores, nan=-1e4, posinf=1e4, neginf=-1e4), dtype=torch.float64)
    if objective(name).logits:
        eye = torch.eye(len(s), dtype=torch.bool)
        terms = pair_bce(s[eye], s[~eye]) if len(s) > 1 else pair_bce(s[eye], s[eye][:0])
    else:
        terms = info_nce(s)
    return float(sum(t for t in terms.values() if torch.isfinite(t)))


def objective(name: str) -> Objective:
    """The objective a model names (``model.loss``), by exact name."""
    if name not in LOSSES:
        raise AvmatchError(f"unknown loss {name!r}; one of: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
