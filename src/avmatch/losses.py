"""Training objectives. Each returns a dict of named terms; the training loop sums them.

They take scores as the models define them (higher = more alike): logits for "bce", negative
distances for "contrastive", a (B, B) logit matrix whose diagonal holds the true pairs for "infonce".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
