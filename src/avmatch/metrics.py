"""Metrics of a matching against the true key: top-k, one-to-one accuracy, mean reciprocal rank.

Rankings are measured on two score matrices, and every output says which (:data:`SCORES`):
``top1``, ``top5``, ``mrr`` rank the model's own (raw) scores, the course's measure; ``normalised_top1``
... rank the scores after the matching's normalisation (dual softmax by default), which can
differ. One-to-one accuracy is the assignment's, made on the normalised scores."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from avmatch.errors import AvmatchError

SCORES = {"": "the model's own scores (as the report ranked them)",
          "normalised_": "the scores after the matching's normalisation (what the assignment used)"}
GROUP = 30  # the report ranked each video's audio among 30 test pairs: top-5 within 30 (chance 5/30)


def top5_within(scores: np.ndarray, truth: np.ndarray | None = None, group: int = GROUP) -> float | None:
    """The report's measure: top-5 of each video's true audio among the true audios of its group of
    ``group`` test pairs (the first ``group`` videos with a known audio, the next ...), averaged over the
    groups; None with fewer pairs than one group. ``truth`` as in :func:`retrieval_metrics`."""
    truth = np.arange(scores.shape[0]) if truth is None else np.asarray(truth)
    known = np.flatnonzero(truth >= 0)
    groups = [known[s : s + group] for s in range(0, len(known) - group + 1, group)]
    if not groups:
        return None
    return float(np.mean([retrieval_metrics(scores[np.ix_(rows, truth[rows])])["top5"] for rows in groups]))


def labelled_metrics(raw, normalised, truth: np.ndarray) -> dict:
    """Retrieval metrics of both score matrices (dense, or sparse candidates), keys prefixed as
    :data:`SCORES` says: ``top1`` on the raw scores, ``normalised_top1`` on the normalised ones."""
    from scipy.sparse import issparse

    out: dict[str, float] = {}
    for prefix, scores in zip(SCORES, (raw, normalised), strict=True):
        metrics = candidate_retrieval_metrics if issparse(scores) else retrieval_metrics
        out.update({prefix + k: v for k, v in metrics(scores, truth).items() if k != "n"})
    return out


def ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true column in each row (ties count against the truth)."""
    true_scores = scores[np.arange(len(truth)), truth]
    return (scores >= true_scores[:, None]).sum(1)


def retrieval_metrics(scores: np.ndarray, truth: np.ndarray | None = None, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Top-k and MRR of video->audio (rows) and audio->video (columns) retrieval.

    ``truth[i]`` is the column of video i's audio; by default the diagonal (square matrices).
    Keys: ``top1``, ``top5`` (video->audio, the course's criterion), ``mrr``, ``a2v_top1`` ...
    """
    truth = np.arange(scores.shape[0]) if truth is None else np.asarray(truth)
    known = truth >= 0
    scores, truth = scores[known], truth[known]
    out: dict[str, float] = {"n": int(len(truth))}
    if not len(truth):
        return out
    r = ranks(scores, truth)
    # audio -> video: the truth's row among the rows of the known pairs
    r_a2v = ranks(scores[:, truth].T, np.arange(len(truth)))
    for k in ks:
        out[f"top{k}"] = float((r <= k).mean())
        out[f"a2v_top{k}"] = float((r_a2v <= k).mean())
    out["mrr"] = float((1.0 / r).mean())
    out["a2v_mrr"] = float((1.0 / r_a2v).mean())
    return out


def candidate_retrieval_metrics(scores, truth: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict:
    """:func:`retrieval_metrics` (video -> audio) on a sparse (Nv, Na) matrix of each video's
    candidate scores (two-stage matching). A truth that is no candidate ranks last: it misses every
    top-k and adds 0 to the MRR, so both are lower bounds. ``in_candidates``: the share of videos
    whose audio is among their candidates (the recall of the retrieval)."""
    from avmatch.matching.two_stage import sparse_lookup

    truth = np.asarray(truth)
    known = np.flatnonzero(truth >= 0)
    out: dict[str, float] = {"n": int(len(known))}
    if not len(known):
        return out
    scores = scores.tocsr()
    true_scores = sparse_lookup(scores, known, truth[known])  # NaN: not a candidate
    rows = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
    at = np.full(scores.shape[0], np.nan)
    at[known] = true_scores
    at_least = (scores.data >= at[rows]).astype(float)  # ties count against the truth
    r = np.bincount(rows, at_least, minlength=scores.shape[0])[known]
    r[np.isnan(true_scores)] = np.inf
    for k in ks:
        out[f"top{k}"] = float((r <= k).mean())
    out["mrr"] = float((1.0 / r).mean())
    out["in_candidates"] = float(np.isfinite(r).mean())
    return out


def read_pairs(path: str | Path, required: tuple[str, ...] = ("video", "audio")) -> list[dict]:
    """The rows of a CSV file as dicts, names and values stripped of spaces (a UTF-8 BOM and spaces
    after commas, as spreadsheets write them, change nothing); a regular file only."""
    from avmatch.atomic import regular

    path = regular(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise AvmatchError(f"CSV lacks column(s) {', '.join(missing)} (has: {', '.join(header)})", path)
            return [dict(zip(header, (v.strip() for v in row), strict=False)) for row in reader if any(v.strip() for v in row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise AvmatchError(f"not a readable UTF-8 CSV file ({type(err).__name__}: {str(err)[:100]})", path) from None


def _one_per_video(rows: list[dict], path: str | Path, audio_once: bool) -> dict[str, dict]:
    """Rows by video; a video listed twice (and, with ``audio_once``, an audio given to two videos)
    is refused: which of the two would count is anyone's guess."""
    by_video: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for r in rows:
        video, audio = r.get("video") or "", r.get("audio") or ""
        if not video:
            raise AvmatchError("a row names no video", path)
        if video in by_video:
            raise AvmatchError(f"video {video!r} is listed twice", path)
        if audio_once and audio and audio in owner:
            raise AvmatchError(f"audio {audio!r} is given to two videos ({owner[audio]!r} and {video!r}): not "
                               "one-to-one", path)
        by_video[video] = r
        owner[audio] = video
    return by_video


def _named_as(key_rows: list[dict], pairs: dict[str, dict]) -> list[dict]:
    """The key's rows with file names turned into the clip ids the pairs use: a key may name the files
    as the user has them (``v1.mp4``, ``a7.flac``) where ``pairs.csv`` names clips (``v1``, ``a7``)."""
    from avmatch.features.job import MEDIA_SUFFIXES

    ids = {"video": set(pairs), "audio": {r.get("audio") for r in pairs.values() if r.get("audio")}}

    def as_id(name: str, column: str) -> str:
        stem, dot, suffix = name.rpartition(".")
        if name in ids[column] or not dot or f".{suffix.lower()}" not in MEDIA_SUFFIXES:
            return name
        return stem if stem in ids[column] else name

    return [{**r, **{c: as_id(r[c], c) for c in ("video", "audio") if r.get(c)}} for r in key_rows]


def _confidence(row: dict, path: str | Path) -> float:
    """A row's confidence: a probability, or NaN (none given)."""
    try:
        value = float(row["confidence"])
    except (TypeError, ValueError):
        raise AvmatchError(f"confidence of video {row.get('video')!r} is not a number: {row.get('confidence')!r}",
                           path) from None
    if not (np.isnan(value) or 0.0 <= value <= 1.0):
        raise AvmatchError(f"confidence of video {row.get('video')!r} is {row.get('confidence')!r}, not a probability "
                           "from 0 to 1", path)
    return value


def _seconds(row: dict, path: str | Path) -> float:
    try:
        value = float(row["offset_s"])
    except (TypeError, ValueError):
        raise AvmatchError(f"offset_s of video {row.get('video')!r} is not a number: {row.get('offset_s')!r}", path) from None
    if not np.isfinite(value):
        raise AvmatchError(f"offset_s of video {row.get('video')!r} is {row.get('offset_s')!r}, not a finite number", path)
    return value


def reliability(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> dict:
    """How far the pairs' confidences can be trusted: expected calibration error (the gap between
    confidence and the share right, averaged over ten confidence bins, weighted by their pairs) and
    the share right among pairs of confidence >= 0.9; pairs without a confidence (NaN) are left out."""
    confidence, right = np.asarray(confidence, float), np.asarray(right, bool)
    known = np.isfinite(confidence)
    conf, ok = confidence[known], right[known].astype(float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = sum(abs(conf[which == b].mean() - ok[which == b].mean()) * (which == b).mean() for b in range(bins)
              if (which == b).any())
    sure = conf >= 0.9
    return {"ece": float(ece), "n_sure": int(sure.sum()),
            "right_when_sure": float(ok[sure].mean()) if sure.any() else float("nan")}


def evaluate_pairs(pairs_csv: str | Path, key_csv: str | Path, heatmap: str | Path | None = None) -> dict:
    """Compare a ``pairs.csv`` written by ``avmatch match`` with a key (columns ``video,audio``).

    One-to-one accuracy comes from the pairs; top-k and MRR from the score matrix saved beside them
    (from the candidates of a two-stage match: lower bounds, see :func:`candidate_retrieval_metrics`),
    once it is known to be of the same run (:func:`avmatch.matching.results.check_same_run`); when the key has
    ``offset_s``, the offset error over the correctly matched pairs. Top-k and MRR come twice, on
    the raw and on the normalised scores (:data:`SCORES`). A key must be one-to-one; so
    must the pairs, unless the run matched greedily. With a ``confidence`` column, how far it can be
    trusted (:func:`reliability`: ``confidence_ece``, ``confidence_n_sure``, ``confidence_right_when_sure``).
    ``heatmap``: also draw the score matrix there with each video's true audio on the diagonal and
    the wrong choices marked (dense scores only)."""
    from scipy.sparse import issparse

    from avmatch.matching import check_same_run, load_scores, scores_path

    npz = scores_path(pairs_csv)
    run = check_same_run(pairs_csv, npz) if npz.exists() or npz.is_symlink() else {}
    pairs = _one_per_video(read_pairs(pairs_csv), pairs_csv, audio_once=run.get("method") != "greedy")
    key_rows = read_pairs(key_csv)
    if key_rows and {"score", "margin"} <= set(key_rows[0]):
        raise AvmatchError("is a pairs file written by avmatch match (it has score and margin columns), not a key; "
                           "the arguments are: avmatch evaluate PAIRS --key KEY", key_csv)
    key_rows = _named_as(key_rows, pairs)
    key_by_video = _one_per_video(key_rows, key_csv, audio_once=True)
    if any(not r.get("audio") for r in key_rows):
        raise AvmatchError("a row names no audio", key_csv)
    key = {v: r["audio"] for v, r in key_by_video.items()}
    for rows, where in ((key_rows, key_csv), ([r for r in pairs.values() if r.get("audio")], pairs_csv)):
        for r in rows:  # a NaN offset would make every offset metric NaN: refused where it is
            if "offset_s" in r:
                _seconds(r, where)
    unknown = sorted(set(pairs) - set(key))
    if not key:
        raise AvmatchError("key is empty", key_csv)
    if pairs and not set(pairs) & set(key):  # every video "unmatched" would be a wrong answer, not a score
        raise AvmatchError(f"names none of the videos of {Path(pairs_csv).name} (the key has e.g. "
                           f"{next(iter(key))!r}, the pairs {next(iter(pairs))!r})", key_csv)
    wrong = [{"video": v, "chosen": pairs[v]["audio"] if v in pairs else "", "true": a}
             for v, a in sorted(key.items()) if v not in pairs or pairs[v]["audio"] != a]
    out: dict = {"pairs": len(key), "one_to_one": 1.0 - len(wrong) / len(key), "wrong": wrong,
                 "not_in_key": unknown}
    rows = [pairs[v] for v in key if pairs.get(v, {}).get("audio") and pairs[v].get("confidence")]
    if rows:
        conf = np.array([_confidence(r, pairs_csv) for r in rows])
        trust = reliability(conf, np.array([r["audio"] == key[r["video"]] for r in rows]))
        out.update({f"confidence_{k}": v for k, v in trust.items() if v == v})  # no NaN: none at >= 0.9
    right_rows = [r for r in key_rows if r["audio"] and pairs.get(r["video"], {}).get("audio") == r["audio"]]
    if key_rows and "offset_s" in key_rows[0] and all(pairs[r["video"]].get("offset_s") for r in right_rows):
        err = np.array([abs(_seconds(pairs[r["video"]], pairs_csv) - _seconds(r, key_csv)) for r in right_rows])
        if len(err):
            out.update(offset_mae_s=float(err.mean()), offset_median_s=float(np.median(err)),
                       offset_within_40ms=float((err <= 0.040 + 1e-9).mean()))
    if run:
        scores, vids, aids = load_scores(npz)
        col = {a: j for j, a in enumerate(aids)}
        truth = np.array([col.get(key.get(v, ""), -1) for v in vids])
        raw = load_scores(npz, raw=True)[0]
        out.update(labelled_metrics(raw, scores, truth))
        within = None if issparse(raw) else top5_within(raw, truth)
        if within is not None:
            out[f"top5_within_{GROUP}"] = within
        if heatmap is not None:
            _judged_heatmap(heatmap, npz, scores, vids, aids, pairs, truth)
    elif heatmap is not None:
        raise AvmatchError(f"no score matrix beside it ({npz.name}) to draw", pairs_csv)
    return out


def _judged_heatmap(path, npz, scores, vids: list[str], aids: list[str], pairs: dict, truth: np.ndarray) -> None:
    from scipy.sparse import issparse

    from avmatch.matching.results import heatmap_png

    if issparse(scores):
        raise AvmatchError("a two-stage match keeps only candidate scores: no heat map to draw", npz)
    with np.load(npz, allow_pickle=False) as z:
        normalisation = str(z["normalisation"]) if "normalisation" in z else "dual-softmax"
    col = {a: j for j, a in enumerate(aids)}
    chosen = np.array([col.get(pairs.get(v, {}).get("audio", ""), -1) for v in vids])
    heatmap_png(scores, path, vids, aids, chosen, truth=truth, probability=normalisation == "dual-softmax")
