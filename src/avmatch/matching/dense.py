"""Dense matching: the full (Nv, Na) score matrix, normalised, assigned one-to-one, with margins.

Scores come from one batched pass (:func:`avmatch.inference.score_matrix`): every clip is encoded
once, then the model scores all pairs. No Python loop over pairs.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from avmatch.checkpoint import Trained
from avmatch.errors import AvmatchError
from avmatch.inference import score_matrix

NORMALISATIONS = ("dual-softmax", "none")  # what :func:`normalise` can do to the scores
ASSIGNMENTS = ("hungarian", "greedy")  # how :func:`assign` turns scores into pairs


def check_normalisation(method: str) -> str:
    """A score normalisation that :func:`normalise` knows, or one line."""
    if method not in NORMALISATIONS:
        raise AvmatchError(f"unknown score normalisation {method!r}; use {' or '.join(NORMALISATIONS)}")
    return method


def check_assignment(method: str) -> str:
    """An assignment method that :func:`assign` knows, or one line."""
    if method not in ASSIGNMENTS:
        raise AvmatchError(f"unknown assignment method {method!r}; use {' or '.join(ASSIGNMENTS)}")
    return method


def normalise(scores: np.ndarray, method: str = "dual-softmax") -> np.ndarray:
    """Make scores comparable across rows and columns before assigning.

    Raw scores are not calibrated: some audios score high against every video ("hubs"). With
    "dual-softmax" a pair's score is its log-probability among its row plus among its column, so a
    hub's column is discounted (as LoFTR and CLIP retrieval do). "none" keeps the raw scores.
    """
    if check_normalisation(method) == "none":
        return scores
    from scipy.special import log_softmax

    if scores.size == 0:
        return np.zeros(scores.shape)
    safe = np.where(np.isfinite(scores), scores, np.nan)
    floor = np.nanmin(safe) - 1.0 if np.isfinite(safe).any() else 0.0
    safe = np.nan_to_num(safe, nan=floor).astype(np.float64)
    return log_softmax(safe, axis=1) + log_softmax(safe, axis=0)


def _real_scores(scores: np.ndarray, summed: bool = True) -> np.ndarray:
    """Scores ready to assign: a NaN or inf score ranks below every real one; when ``summed``, huge
    scores are scaled down (a positive factor changes no assignment) so that sums of them stay finite."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if not finite.any():
        return np.zeros_like(scores)
    peak = np.abs(scores[finite]).max()
    if summed and peak > 1e150:
        scores = scores / peak
    if not finite.all():
        lo, hi = scores[finite].min(), scores[finite].max()
        with np.errstate(over="ignore"):  # unscaled extremes may give -inf: still below lo
            scores = np.where(finite, scores, lo - max(1.0, hi - lo, abs(lo)))  # strictly below lo
    return scores


def assign(scores: np.ndarray, method: str = "hungarian") -> np.ndarray:
    """The audio index chosen for each video (-1 where a one-to-one assignment leaves it unmatched).

    "hungarian": the one-to-one assignment that maximises the total score (scipy's
    linear_sum_assignment); with more videos than audios some videos stay unmatched.
    "greedy": each video's best audio, which may repeat.
    """
    check_assignment(method)
    scores = _real_scores(scores, summed=method != "greedy")
    if method == "greedy":
        if scores.shape[1] == 0:  # no audio at all: every video stays unmatched
            return np.full(scores.shape[0], -1, dtype=np.int64)
        return scores.argmax(1)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    chosen = np.full(scores.shape[0], -1, dtype=np.int64)
    chosen[rows] = cols
    return chosen


def margins(scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Score of the chosen audio minus the best other audio's score in the same row (NaN if unmatched)."""
    out = np.full(len(chosen), np.nan)
    if scores.shape[1] < 2:
        return out
    with np.errstate(invalid="ignore"):  # inf - inf: a NaN margin says "no telling"
        for i, j in enumerate(chosen):
            if j >= 0:
                others = np.delete(scores[i], j)
                out[i] = scores[i, j] - others.max()
    return out



def check_min_confidence(value: float) -> float:
    """A --min-confidence a matching or a placement can honour: a probability."""
    if not 0.0 <= value <= 1.0:
        raise AvmatchError(f"--min-confidence must be in [0, 1], got {value:g}")
    return value


def assignment_confidence(raw: np.ndarray, chosen: np.ndarray, iterations: int = 30,
                          temperature: float = 1.0) -> np.ndarray:
    """Each video's confidence in its chosen audio: the probability the assignment gives the pair
    once the model's scores (logits) are balanced so that every clip of the smaller set has exactly
    one partner and every clip of the larger set at most one (Sinkhorn's iterations with capacities,
    in the log domain). A video whose
    audio every other video also wants gets less than its row's softmax would say. NaN where
    unmatched. ``temperature`` divides the scores first (:func:`fit_temperature`). What it is worth
    is measured, not assumed (the demo reports its reliability)."""
    from scipy.special import logsumexp

    s = _real_scores(raw, summed=False) / temperature  # NaN and inf below every real score
    nv, na = s.shape
    f, g = np.zeros(nv), np.zeros(na)
    for _ in range(iterations):  # the smaller side sums to exactly 1 per clip, the larger to at most 1
        if nv <= na:
            f = -logsumexp(s + g[None, :], axis=1)
            g = np.minimum(0.0, -logsumexp(s + f[:, None], axis=0))
        else:
            g = -logsumexp(s + f[:, None], axis=0)
            f = np.minimum(0.0, -logsumexp(s + g[None, :], axis=1))
    out = np.full(nv, np.nan)
    rows = np.flatnonzero(chosen >= 0)
    out[rows] = np.exp(s[rows, chosen[rows]] + f[rows] + g[chosen[rows]])
    return out


def fit_temperature(raw: np.ndarray) -> float:
    """The temperature that makes :func:`assignment_confidence` honest on pairs whose answer is known
    (``raw``: a square score matrix, the true pairs on its diagonal, e.g. a run's validation clips):
    the one, on a grid from 0.05 to 20, that gives the true pairs the highest mean log-probability
    when every video is assigned its true audio (on the first 400 pairs at most: the fit is cheap and
    settled by then). Temperature scaling (Guo et al. 2017) is chosen because it keeps the order of
    every score, so it changes what the confidence says, never the assignment."""
    raw = np.asarray(raw)[:400, :400]
    truth = np.arange(len(raw))
    grid = np.geomspace(0.05, 20.0, 81)
    with np.errstate(divide="ignore"):
        nll = [-np.log(np.clip(assignment_confidence(raw, truth, temperature=t), 1e-12, 1.0)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def match_dense(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray], method: str = "hungarian",
                normalisation: str = "dual-softmax", max_lag: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score every video against every audio, normalise, assign: (normalised scores, raw scores,
    chosen audio per video, -1 = unmatched). ``max_lag``: a timing model's lag range (None: as trained)."""
    raw = score_matrix(trained, videos, audios, max_lag=max_lag)
    scores = normalise(raw, normalisation)
    return scores, raw, assign(scores, method)
