"""Matching videos to audios: the dense path (:mod:`.dense`), the two-stage path for large sets
(:mod:`.two_stage`, with the FAISS index of :mod:`.index`) and the result (:mod:`.results`; its files
are written by :mod:`avmatch.outputs`).

:func:`match_corpora` picks the path as its :class:`MatchOptions` (:mod:`.options`) say, and for a
timing model estimates each matched pair's offset.
"""

from __future__ import annotations

import numpy as np

from avmatch.checkpoint import Trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.inference import check_fits, estimate_offsets, frame_embeddings, lag_range
from avmatch.losses import objective
from avmatch.matching.dense import assign, assignment_confidence, margins, match_dense, normalise
from avmatch.matching.locate import DRIFT_MIN_S, drift
from avmatch.matching.options import DENSE_MAX, MODES, MatchOptions
from avmatch.matching.results import MatchResult
from avmatch.matching.two_stage import DEFAULT_CANDIDATES, match_two_stage, sparse_lookup
from avmatch.models import capabilities
from avmatch.progress import stage

__all__ = ["DENSE_MAX", "MODES", "MatchOptions", "MatchResult", "assign", "margins", "match_corpora", "normalise"]


def match_corpora(trained: Trained, videos: Corpus, audios: Corpus, options: MatchOptions | None = None,
                  retriever: Trained | None = None) -> MatchResult:
    """Score every video clip of ``videos`` against every audio clip of ``audios``, normalise the
    scores, assign, and (timing models) estimate each matched pair's offset, as ``options`` say
    (None: the defaults of :class:`MatchOptions`).

    Mode "dense" scores all pairs; "two-stage" scores only each video's top candidates, retrieved
    with an embedding model (``retriever``, by default the trained model) from a FAISS index; "auto"
    is dense up to ``options.dense_max`` squared pairs (:meth:`MatchOptions.mode_for`); with shards
    the index is cut into that many, searched as Dask tasks. Dense matching gives each pair a
    confidence (:func:`~avmatch.matching.dense.assignment_confidence`); with ``min_confidence`` a
    video whose pair is less sure than that stays unmatched rather than forced onto an audio. A
    matched pair of a timing model at least ``DRIFT_MIN_S`` long gets its offset measured at several
    points and the drift between the two clocks (``drift_ppm``), as
    :func:`~avmatch.matching.locate.locate` does. (:func:`avmatch.adapt.match_adapted` adapts the
    model to the clips first.)"""
    options = options or MatchOptions()
    v_clips = [c for c in videos.clips if c.video is not None]
    a_clips = [c for c in audios.clips if c.audio is not None]
    if not v_clips:
        raise AvmatchError("no clip with visual features to match", videos.root)
    if not a_clips:
        raise AvmatchError("no clip with audio features to match", audios.root)
    check_fits(trained, videos, "video")
    check_fits(trained, audios, "audio")
    if retriever is not None:
        check_fits(retriever, videos, "video")
        check_fits(retriever, audios, "audio")
    timing = capabilities(trained.model).timing
    max_lag = lag_range(trained, options.max_offset_s) if timing else None
    videos_x, audios_x = [c.video for c in v_clips], [c.audio for c in a_clips]
    two_stage = options.mode_for(len(v_clips), len(a_clips)) == "two-stage"
    if options.shards and not two_stage:  # (a cluster comes only with shards)
        raise AvmatchError(f"--shards/--cluster cut the index of two-stage matching; {len(v_clips)} x {len(a_clips)} "
                           "pairs are matched densely, with no index (--mode two-stage to use one)")
    method = "greedy" if options.greedy else "hungarian"
    if two_stage:
        sharding = ({"shards": options.shards, "cluster": options.cluster or "", "workers": options.workers,
                     "workdir": options.shard_dir} if options.shards else {})
        k = options.candidates or DEFAULT_CANDIDATES
        scores, raw, chosen = match_two_stage(trained, videos_x, audios_x, method, options.normalise, k,
                                              retriever, options.retrieval, max_lag, **sharding)
    else:
        scores, raw, chosen = match_dense(trained, videos_x, audios_x, method, options.normalise, max_lag)
    result = MatchResult([c.id for c in v_clips], [c.id for c in a_clips], scores, chosen, method, raw,
                         normalisation=options.normalise)
    result.sources = {"video": {c.id: c.source for c in v_clips if c.source},
                      "audio": {c.id: c.source for c in a_clips if c.source}}
    if objective(trained.model.loss).logits:  # a pair classifier: its own probability that the pair matches
        rows = np.arange(len(chosen))
        logit = sparse_lookup(raw, rows, chosen) if result.sparse else raw[rows, np.maximum(chosen, 0)]
        result.probability = np.where(chosen >= 0, 1 / (1 + np.exp(-np.asarray(logit, float))), np.nan)
    if not result.sparse:
        result.confidence = assignment_confidence(raw, chosen, temperature=trained.temperature)
        if options.min_confidence:  # abstain: a video whose best is not sure enough stays unmatched
            chosen[~(result.confidence >= options.min_confidence)] = -1
            result.confidence[chosen < 0] = np.nan
            if result.probability is not None:
                result.probability[chosen < 0] = np.nan
    elif options.min_confidence:
        raise AvmatchError("--min-confidence needs dense matching (--mode dense): two-stage matching scores "
                           "only candidates, so it has no confidence to judge by")
    # a timing model that compares the clips aligned only (a lag range of 0) has no offset to give
    if timing and (trained.model.max_lag if max_lag is None else max_lag) > 0:
        with stage("offsets"):
            _offsets(trained, result, v_clips, a_clips, chosen, max_lag)
    return result


def _offsets(trained: Trained, result: MatchResult, v_clips: list, a_clips: list, chosen: np.ndarray,
             max_lag: int | None) -> None:
    """Each matched pair's offset (a timing model), and for long pairs the drift between the clocks."""
    matched = np.flatnonzero(chosen >= 0)
    off, conf = estimate_offsets(trained, [v_clips[i].video for i in matched],
                                 [a_clips[chosen[i]].audio for i in matched], max_lag=max_lag)
    result.offset_s = np.full(len(v_clips), np.nan)
    result.offset_conf = np.full(len(v_clips), np.nan)
    result.offset_s[matched], result.offset_conf[matched] = off, conf
    long_pairs = [i for i in matched if min(len(v_clips[i].video), len(a_clips[chosen[i]].audio))
                  >= DRIFT_MIN_S * trained.audio_rate_hz]
    if long_pairs:  # long takes: the offset at several points, and the clocks' drift between them
        result.drift_ppm = np.full(len(v_clips), np.nan)
        v_emb = frame_embeddings(trained, [v_clips[i].video for i in long_pairs], "video")
        a_emb = frame_embeddings(trained, [a_clips[chosen[i]].audio for i in long_pairs], "audio")
        rate = trained.audio_rate_hz
        for i, ve, ae in zip(long_pairs, v_emb, a_emb, strict=True):
            start_s, ppm = drift(ve, ae, -result.offset_s[i] * rate, rate)
            if np.isfinite(ppm):
                result.offset_s[i], result.drift_ppm[i] = -start_s, ppm

