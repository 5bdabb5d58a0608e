"""Adaptation at match time: a timing model fine-tuned on the pairs of the user's own clips that it
is already sure of, then the clips matched again.

Footage of a kind the model never saw is matched less well (held-out kinds of scene: 0.84 one-to-one
against 0.985 after fine-tuning on 400 paired clips, ``benchmarks/generalise.py``), but its surest
pairs are nearly always right (at assignment confidence >= 0.9, 65 of 200 pairs, every one right).
Those pairs, cut to where they overlap at their measured offset, are paired clips of exactly the
user's footage: fine-tuning on them (the :data:`avmatch.training.FINE_TUNE` recipe, a few epochs, in a
temporary folder) teaches the model the look and sound of that footage, and each round the surer
model finds more sure pairs. No label is used. The model passed in is never changed, nor its file.

The same for ``locate``: the clips it placed surely, each with its stretch of the recording, are
the pairs. Only dense matching has the per-pair confidence this needs (two-stage matching is left as
it is), and only a timing model has the offsets that align the pairs.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from avmatch.checkpoint import Trained, load_trained
from avmatch.corpus import Clip, Corpus
from avmatch.errors import AvmatchError
from avmatch.matching import MatchOptions, MatchResult, match_corpora
from avmatch.matching.locate import Placement, locate
from avmatch.models import capabilities
from avmatch.training import ADAPT_FINE_TUNE, recipe, train

ROUNDS = 3  # rounds of match, fine-tune on the sure pairs, match again (benchmarks/generalise.py: 0.84 -> 0.98)
SURE = 0.9  # pairs at least this sure (assignment confidence) teach the model
MIN_PAIRS = 16  # fewer sure pairs than this: too few to fine-tune on, the match stands
MAX_PAIRS = 1000  # at most this many (the surest): the cost of a round stays bounded on large sets
MIN_FRAMES = 8  # a pair overlapping less than this at its offset teaches nothing


def sure_pairs(result, videos: list[Clip], audios: list[Clip], rate_hz: float) -> list[Clip]:
    """The matched pairs of ``result`` at confidence :data:`SURE` or more (the surest
    :data:`MAX_PAIRS`), each cut to the frames where video and audio overlap at the pair's offset."""
    if result.confidence is None or result.offset_s is None:
        return []
    conf = np.where(result.chosen >= 0, np.nan_to_num(result.confidence, nan=-1.0), -1.0)
    order = [i for i in np.argsort(-conf, kind="stable") if conf[i] >= SURE][:MAX_PAIRS]
    out = []
    for i in order:
        v, a = videos[i].video, audios[result.chosen[i]].audio
        lag = int(round(result.offset_s[i] * rate_hz))  # the audio starts this many frames into the video
        v, a = (v[lag:], a) if lag > 0 else (v, a[-lag:])
        n = min(len(v), len(a))
        if n >= MIN_FRAMES:
            out.append(dataclasses.replace(videos[i], id=f"sure/{videos[i].id}", video=v[:n], audio=a[:n], source=""))
    return out


def adapted(trained: Trained, pairs: list[Clip], videos: Corpus, audios: Corpus, seed: int = 0,
            progress: bool = False) -> Trained:
    """``trained`` fine-tuned on ``pairs`` (the :data:`avmatch.training.ADAPT_FINE_TUNE` recipe), in a
    temporary folder that is removed after; the weights of the last epoch (no held-out clips to pick
    an epoch by: the pairs are the model's own answers). ``progress``: the fine-tune's bar."""
    device = next(trained.model.parameters()).device
    corpus = Corpus(pairs, videos.video_rate_hz, audios.audio_rate_hz, dict(videos.extractor), videos.root)
    with tempfile.TemporaryDirectory(prefix="avmatch-adapt-") as tmp:
        start = Path(tmp) / "start.pt"
        trained.save(start)
        config = recipe("", ADAPT_FINE_TUNE, init=str(start), seed=seed, histograms=False,
                        val_fraction=0.0)  # every sure pair teaches: none is held out to pick an epoch by
        train(corpus, Path(tmp) / "run", config, device=device, progress=progress)
        return load_trained(Path(tmp) / "run" / "last.pt", device)


def _check_rounds(rounds: int) -> None:
    if not 0 <= rounds <= 10:
        raise AvmatchError(f"--adapt {rounds}: give 0 (no adaptation) to 10 rounds")


def match_adapted(trained: Trained, videos: Corpus, audios: Corpus, options: MatchOptions | None = None,
                  rounds: int = ROUNDS, progress: bool = False,
                  retriever: Trained | None = None) -> MatchResult:
    """:func:`avmatch.matching.match_corpora` (``options`` and ``retriever`` are its own), then up to
    ``rounds`` times: the model fine-tuned on the pairs of the last match it is sure of, and everything
    matched again by it. Each round starts from ``trained`` again (taught by the last round's surer
    pairs), so a round's mistakes are not built upon. ``result.adapted``: the sure pairs of each round.
    ``progress``: each round's fine-tune shows its bar."""
    _check_rounds(rounds)
    result, taught = match_corpora(trained, videos, audios, options, retriever), []
    if not capabilities(trained.model).timing:
        return result
    v_clips = [c for c in videos.clips if c.video is not None]
    a_clips = [c for c in audios.clips if c.audio is not None]
    for _ in range(rounds):
        pairs = sure_pairs(result, v_clips, a_clips, trained.audio_rate_hz)
        if len(pairs) < MIN_PAIRS:
            break
        taught.append(len(pairs))
        taught_model = adapted(trained, pairs, videos, audios, progress=progress)
        result = match_corpora(taught_model, videos, audios, options, retriever)
    result.adapted = taught
    return result


def placed_pairs(placements: list[Placement], clips: Corpus, recordings: Corpus, rate_hz: float,
                 reverse: bool) -> list[Clip]:
    """The clips placed at confidence :data:`SURE` or more (the surest :data:`MAX_PAIRS`), each with
    the stretch of its recording it was placed on, as paired clips (video, audio)."""
    short, long = ("audio", "video") if reverse else ("video", "audio")
    c_by = {c.id: getattr(c, short) for c in clips.clips}
    r_by = {c.id: getattr(c, long) for c in recordings.clips}
    sure = sorted((p for p in placements if p.recording and p.confidence >= SURE), key=lambda p: -p.confidence)
    out = []
    for p in sure[:MAX_PAIRS]:
        x, k = c_by[p.clip], int(round(p.start_s * rate_hz))
        y = r_by[p.recording][k : k + len(x)]
        if len(y) >= MIN_FRAMES:
            out.append(Clip(f"sure/{p.clip}", *((y, x[: len(y)]) if reverse else (x[: len(y)], y))))
    return out


def locate_adapted(trained: Trained, clips: Corpus, recordings: Corpus, rounds: int = ROUNDS, reverse: bool = False,
                   **options) -> list[Placement]:
    """:func:`avmatch.matching.locate.locate` (``options`` are its own), then up to ``rounds`` times:
    the model fine-tuned on the clips it placed surely and every clip placed again by it; each
    placement's ``adapted_on`` says how many taught the model of the last round."""
    _check_rounds(rounds)
    placements = locate(trained, clips, recordings, reverse=reverse, **options)
    videos, audios = (recordings, clips) if reverse else (clips, recordings)
    for _ in range(rounds):
        pairs = placed_pairs(placements, clips, recordings, trained.audio_rate_hz, reverse)
        if len(pairs) < MIN_PAIRS:
            break
        placements = locate(adapted(trained, pairs, videos, audios, progress=options.get("progress", False)), clips,
                            recordings, reverse=reverse, **options)
        for p in placements:
            p.adapted_on = len(pairs)
    return placements
