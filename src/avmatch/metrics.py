"""Metrics of a matching against the true key: top-k, one-to-one accuracy, mean reciprocal rank.

Rankings are measured on two score matrices, and every output says which (:data:`SCORES`):
``top1``, ``top5``, ``mrr`` rank the model's own (raw) scores, the course's measure; ``normalised_top1``
... rank the scores after the matching's normalisation (dual softmax by default), which can
differ. One-to-one accuracy is the assignment's, made on the normalised scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from avmatch.errors import AvmatchError
from avmatch.outputs import check_same_run, csv_cell, heatmap_png, load_scores, read_rows, scores_path

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


def _named_as(key_rows: list[dict], videos: set[str], audios: set[str]) -> list[dict]:
    """The key's rows with file names turned into the clip ids the pairs use: a key may name the files
    as the user has them (``v1.mp4``, ``a7.flac``) where ``pairs.csv`` names clips (``v1``, ``a7``).
    ``videos``: the pairs' videos; ``audios``: the audios they chose."""
    from avmatch.features.job import MEDIA_SUFFIXES

    ids = {"video": videos, "audio": audios}

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


def read_key(key: str | Path | dict[str, str]) -> tuple[list[dict], str | Path | None]:
    """A key's rows (columns video, audio[, offset_s]) and the file they came from: a CSV (or JSON) file,
    refused when it is a pairs file (the arguments swapped), or a {video: audio} dict (no file: None)."""
    if isinstance(key, dict):
        return [{"video": str(v).strip(), "audio": str(a).strip()} for v, a in key.items()], None
    rows = read_rows(key)
    if rows and {"score", "margin"} <= set(rows[0]):
        raise AvmatchError("is a pairs file written by avmatch match (it has score and margin columns), not a key; "
                           "the arguments are: avmatch evaluate PAIRS --key KEY", key)
    return rows, key


def _key(rows: list[dict], where: str | Path | None, videos: list[str], chosen: set[str],
         pairs_name: str) -> tuple[dict[str, str], dict[str, float] | None]:
    """The key as {video: audio} (file names turned into the pairs' clip ids, one-to-one, every row with
    an audio) and, when it has an ``offset_s`` column, {video: offset_s}; refused when empty or when it
    names none of ``videos`` (every video "unmatched" would be a wrong answer, not a score)."""
    rows = _named_as(rows, set(videos), chosen)
    by_video = _one_per_video(rows, where, audio_once=True)
    if any(not r.get("audio") for r in rows):
        raise AvmatchError("a row names no audio", where)
    # a NaN offset would make every offset metric NaN: refused where it is
    offsets = {v: _seconds(r, where) for v, r in by_video.items() if "offset_s" in r} \
        if rows and "offset_s" in rows[0] else None
    key = {v: r["audio"] for v, r in by_video.items()}
    if not key:
        raise AvmatchError("key is empty", where)
    if videos and not set(videos) & set(key):
        raise AvmatchError(f"names none of the videos of {pairs_name} (the key has e.g. {next(iter(key))!r}, the "
                           f"pairs {min(videos)!r})", where)
    return key, offsets


def evaluate_matching(video_ids: Sequence[str], audio_ids: Sequence[str], chosen: np.ndarray, key: dict[str, str], *,
                      key_offset_s: dict[str, float] | None = None, offset_s: np.ndarray | None = None,
                      confidence: np.ndarray | None = None, scores=None, raw_scores=None) -> dict:
    """Metrics of a matching given as arrays against a key ({video: audio id}, checked as :func:`evaluate_pairs`
    checks a key file): ``chosen`` (Nv,) is each video's audio, an index into ``audio_ids`` (-1: unmatched);
    ``offset_s`` and ``confidence`` (Nv,) each pair's (NaN: none); ``key_offset_s`` the key's offsets; ``scores``
    (Nv, Na) (dense, or sparse candidates) the normalised scores the matching chose on and ``raw_scores`` the
    model's own (default: ``scores``). The keys are :func:`evaluate_pairs`'s."""
    index = {v: i for i, v in enumerate(video_ids)}
    audio = {v: audio_ids[j] if j >= 0 else "" for v, j in zip(video_ids, chosen, strict=True)}
    wrong = [{"video": v, "chosen": audio.get(v, ""), "true": a} for v, a in sorted(key.items()) if audio.get(v, "") != a]
    out: dict = {"pairs": len(key), "one_to_one": 1.0 - len(wrong) / len(key), "wrong": wrong,
                 "not_in_key": sorted(set(video_ids) - set(key))}
    if confidence is not None:
        judged = [v for v in key if audio.get(v) and np.isfinite(confidence[index[v]])]
        if judged:
            trust = reliability(np.array([confidence[index[v]] for v in judged]),
                                np.array([audio[v] == key[v] for v in judged]))
            out.update({f"confidence_{k}": v for k, v in trust.items() if v == v})  # no NaN: none at >= 0.9
    right = [v for v, a in key.items() if audio.get(v) == a]
    if key_offset_s is not None and offset_s is not None and right \
            and all(v in key_offset_s and np.isfinite(offset_s[index[v]]) for v in right):
        err = np.array([abs(float(offset_s[index[v]]) - key_offset_s[v]) for v in right])
        out.update(offset_mae_s=float(err.mean()), offset_median_s=float(np.median(err)),
                   offset_within_40ms=float((err <= 0.040 + 1e-9).mean()))
    if scores is not None:
        from scipy.sparse import issparse

        raw = scores if raw_scores is None else raw_scores
        col = {a: j for j, a in enumerate(audio_ids)}
        truth = np.array([col.get(key.get(v, ""), -1) for v in video_ids])
        out.update(labelled_metrics(raw, scores, truth))
        within = None if issparse(raw) else top5_within(raw, truth)
        if within is not None:
            out[f"top5_within_{GROUP}"] = within
    return out


def evaluate_result(result, key: str | Path | dict[str, str]) -> dict:
    """:func:`evaluate_matching` of a :class:`avmatch.matching.MatchResult` against a key (a file, or a
    {video: audio} dict), with no file written. Its offsets and confidences are judged as pairs.csv
    holds them (6 significant digits), so a result scores what its written set scores."""
    rows, where = read_key(key)
    chosen = {result.audio_ids[j] for j in result.chosen if j >= 0}
    key, key_offsets = _key(rows, where, list(result.video_ids), chosen, "the result")
    return evaluate_matching(result.video_ids, result.audio_ids, result.chosen, key, key_offset_s=key_offsets,
                             offset_s=_as_written(result.offset_s), confidence=_as_written(result.confidence),
                             scores=result.scores, raw_scores=result.raw_scores)


def _as_written(values: np.ndarray | None) -> np.ndarray | None:
    """Values as a CSV file holds them and reads them back: 6 significant digits, NaN as NaN."""
    return None if values is None else np.array([float(csv_cell(float(x)) or "nan") for x in values])


def evaluate_pairs(pairs_csv: str | Path, key_csv: str | Path | dict[str, str],
                   heatmap: str | Path | None = None) -> dict:
    """Compare a ``pairs.csv`` written by ``avmatch match`` with a key (columns ``video,audio``; or a
    {video: audio} dict): :func:`evaluate_matching` of the pairs read back.

    One-to-one accuracy comes from the pairs; top-k and MRR from the score matrix saved beside them
    (from the candidates of a two-stage match: lower bounds, see :func:`candidate_retrieval_metrics`),
    once it is known to be of the same run (:func:`avmatch.outputs.check_same_run`); when the key has
    ``offset_s``, the offset error over the correctly matched pairs. Top-k and MRR come twice, on
    the raw and on the normalised scores (:data:`SCORES`). A key must be one-to-one; so
    must the pairs, unless the run matched greedily. With a ``confidence`` column, how far it can be
    trusted (:func:`reliability`: ``confidence_ece``, ``confidence_n_sure``, ``confidence_right_when_sure``).
    ``heatmap``: also draw the score matrix there with each video's true audio on the diagonal and
    the wrong choices marked (dense scores only)."""
    npz = scores_path(pairs_csv)
    run = check_same_run(pairs_csv, npz) if npz.exists() or npz.is_symlink() else {}
    pairs = _one_per_video(read_rows(pairs_csv), pairs_csv, audio_once=run.get("method") != "greedy")
    matched = {v: r for v, r in pairs.items() if r.get("audio")}
    key_rows, where = read_key(key_csv)
    key, key_offsets = _key(key_rows, where, list(pairs), {r["audio"] for r in matched.values()},
                            Path(pairs_csv).name)
    offsets = {v: _seconds(r, pairs_csv) for v, r in matched.items() if "offset_s" in r}
    confidence = {v: _confidence(r, pairs_csv) for v, r in matched.items() if v in key and r.get("confidence")}
    if run:
        scores, vids, aids = load_scores(npz)
        raw = load_scores(npz, raw=True)[0]
    else:
        scores = raw = None
        vids, aids = list(pairs), sorted({r["audio"] for r in matched.values()})
    col = {a: j for j, a in enumerate(aids)}
    chosen = np.array([col.get(matched[v]["audio"], -1) if v in matched else -1 for v in vids], dtype=int)
    out = evaluate_matching(vids, aids, chosen, key, key_offset_s=key_offsets, scores=scores, raw_scores=raw,
                            offset_s=np.array([offsets.get(v, np.nan) for v in vids]),
                            confidence=np.array([confidence.get(v, np.nan) for v in vids]))
    if heatmap is not None:
        if not run:
            raise AvmatchError(f"no score matrix beside it ({npz.name}) to draw", pairs_csv)
        _judged_heatmap(heatmap, npz, scores, vids, aids, chosen, key)
    return out


def _judged_heatmap(path, npz, scores, vids: list[str], aids: list[str], chosen: np.ndarray,
                    key: dict[str, str]) -> None:
    from scipy.sparse import issparse

    if issparse(scores):
        raise AvmatchError("a two-stage match keeps only candidate scores: no heat map to draw", npz)
    with np.load(npz, allow_pickle=False) as z:
        normalisation = str(z["normalisation"]) if "normalisation" in z else "dual-softmax"
    col = {a: j for j, a in enumerate(aids)}
    truth = np.array([col.get(key.get(v, ""), -1) for v in vids])
    heatmap_png(scores, path, vids, aids, chosen, truth=truth, probability=normalisation == "dual-softmax")
