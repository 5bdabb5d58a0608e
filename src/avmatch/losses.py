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
