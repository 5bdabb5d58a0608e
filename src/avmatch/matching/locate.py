"""Place short clips inside long recordings: which recording each silent clip belongs to, and where.

A timing model gives per-frame embeddings of both modalities in one space
(:func:`avmatch.inference.frame_embeddings`). A clip of T frames placed at frame ``k`` of a recording
agrees with it by the mean cosine of its frames with the recording's frames ``k .. k + T - 1``: the
score the model was trained to peak at the right lag. That is computed for every ``k`` of every
recording at once as a cross-correlation, by FFT, summed over the embedding dimensions in the
frequency domain (one inverse transform per clip and block, not one per dimension); the recording is
cut into overlapping blocks (overlap-save), their transforms computed once for all clips, and the
recordings are searched a group at a time (``GROUP_FRAMES``), keeping each clip's best few places of
every recording, so memory is one group's however many hours the recordings hold.

Whether the best place is believable is a question about the other places: nearly every ``k`` is
wrong. Each place is written as a robust z-score against the other places of its recording
(median, 1.4826 x MAD: a scene like the clip's scores high all along its recording, and only a
place that stands out from the rest of it is timing evidence); the best place is the one of highest
z, and its lead over the next best place is measured in units of the gaps between the clip's next
best places (its own null, see :func:`_best_place`): a wrong best place's lead is then a standard
exponential. The ``confidence`` is the chance that the best place is right given that lead, from a
two-group model fitted to the leads of all the clips located together (:func:`lead_confidences`),
so that it is a probability: of placements at confidence 0.9 or more, at least nine in ten are right.
Where the recordings are too short to hold a null (a few minutes), shuffled copies of the clip are
searched too and their places complete it (:func:`_surrogates`). A clip
whose best place is less likely right than ``min_confidence`` is refused (``recording`` empty)
rather than forced onto the nearest recording. Clips of one camera may not overlap in time:
settled surest first, a clip whose best place a surer take of its camera holds is refused.

``reverse``: short audio snippets inside long silent videos, the same search with the roles swapped.
Clips must lie wholly inside a recording. A clip of a minute or more has its drift measured: its
stretches placed again near where the whole clip sits, a line through them (:func:`drift`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avmatch.checkpoint import Trained
from avmatch.corpus import Corpus
from avmatch.errors import ArgumentError, AvmatchError
from avmatch.inference import check_fits, frame_embeddings, peak_between_frames
from avmatch.matching.dense import check_min_confidence
from avmatch.progress import bar as progress_bar
from avmatch.progress import stage

MIN_CONFIDENCE = 0.5  # placements less likely right than wrong are refused
UNLIKE = 0.1  # a refused clip less likely right than this: "nothing recorded resembles it" rather than "not sure"
MIN_FRAMES = 8  # a clip this short has no timing to place it by
NULL_PEAKS = 16  # best places kept per recording (the top of the clip's null)
NULL_GAPS = 15  # gaps below the top that measure the scale of the null's tail
NULL_MIN = 64  # a clip whose recordings give its null fewer separate places than this gets surrogates too
SURROGATES = 16  # at most this many shuffled copies of a clip searched as its null (see _surrogates)
NULL_SPACING_S = 2.0  # places this far apart (or a clip's length, if shorter) are separate peaks
DRIFT_MIN_S = 60.0  # clips this long get their drift measured (shorter: too little to measure it by)
# the two-group model's prior (lead_confidences), worth PRIOR_CLIPS clips: half the clips recorded, a
# right place's lead gamma-distributed with mean 10 and variance 50 null gaps (benchmarks/locate.py's
# fitted ones: means 9-12, shapes 3-5); a run of many clips outweighs it
PRIOR_RECORDED, PRIOR_LEAD_MEAN, PRIOR_LEAD_VAR, PRIOR_CLIPS = 0.5, 10.0, 50.0, 2.0
GROUP_FRAMES = 1 << 20  # recordings searched this many frames at a time (11.6 h at 25 Hz; 64-dim embeddings
# and their transforms: about 0.6 GiB)


@dataclass
class Placement:
    clip: str
    recording: str  # "" when refused
    start_s: float  # where the clip's first frame falls in the recording (the best place, even if refused)
    end_s: float
    score: float  # mean cosine of the clip's frames with the recording's there
    z: float  # the score against the clip's scores at the other places of its recording, robust z
    confidence: float  # the chance the best place is right, from its lead over the next (see lead_confidences)
    best_recording: str  # the best place's recording, refused or not
    drift_ppm: float = float("nan")  # recording clock against the clip's, for clips of DRIFT_MIN_S or more
    why: str = ""  # why refused: "not sure", "nothing recorded resembles it", "camera CAM busy there" (see _choose),
    # "longer than every recording"
    recording_s: float = float("nan")  # best_recording's length in seconds (the report draws its whole timeline)
    adapted_on: int = 0  # sure placements the model was adapted on before this one (locate's adapt)


class RecordingIndex:
    """The FFTs of the recordings' per-frame embeddings in overlapping blocks, computed once."""

    def __init__(self, recordings: list[np.ndarray], longest_clip: int, block: int = 0):
        self.lengths = [len(r) for r in recordings]
        self.block = block or int(2 ** np.ceil(np.log2(max(4096, 4 * longest_clip))))
        self.hop = self.block - longest_clip + 1  # places k = start .. start + hop - 1 are exact in each block
        self.spans = [(r, start) for r, x in enumerate(recordings) for start in range(0, len(x), self.hop)]
        dim = recordings[0].shape[1] if recordings else 0
        # (C, F, E) complex64, filled in place: no second copy of the largest thing locate holds
        self.spectra = torch.empty((len(self.spans), self.block // 2 + 1, dim), dtype=torch.complex64)
        for c, (r, start) in enumerate(self.spans):
            piece = torch.from_numpy(np.ascontiguousarray(recordings[r][start : start + self.block], dtype=np.float32))
            self.spectra[c] = torch.fft.rfft(piece, n=self.block, dim=0)

    def place_scores(self, clip: np.ndarray) -> list[np.ndarray]:
        """For each recording, the clip's mean cosine at every place k (the clip wholly inside)."""
        t = len(clip)
        v = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
        spec = torch.fft.rfft(v, n=self.block, dim=0).conj()  # (F, E): correlation, not convolution
        out = [np.full(max(0, n - t + 1), -np.inf, np.float32) for n in self.lengths]
        for s in range(0, len(self.spans), 64):  # blocks of blocks bound the memory of one product
            prod = torch.einsum("cfe,fe->cf", self.spectra[s : s + 64], spec)
            corr = torch.fft.irfft(prod, n=self.block, dim=1).numpy() / t  # (c, block): place k at index k
            for (r, start), row in zip(self.spans[s : s + 64], corr, strict=True):
                n = min(self.hop, len(out[r]) - start)
                if n > 0:
                    out[r][start : start + n] = row[:n]
        return out


def locate(trained: Trained, clips: Corpus, recordings: Corpus, min_confidence: float = MIN_CONFIDENCE,
           reverse: bool = False, progress: bool = False, camera: str | None | bool = None,
           group_frames: int = GROUP_FRAMES) -> list[Placement]:
    """Place every clip (silent video; audio with ``reverse``) of ``clips`` in the recordings (audio;
    silent video with ``reverse``) of ``recordings``. One :class:`Placement` per clip, in clip order.

    Clips of one camera (by default the folder in their id; ``camera``: a regular expression whose
    match in the id names it; False: no cameras) cannot overlap in time on one recording. The recordings
    are searched ``group_frames`` frames at a time (their embeddings and transforms are the memory).
    (:func:`avmatch.adapt.locate_adapted` adapts the model to the clips first.)"""
    short, long = ("audio", "video") if reverse else ("video", "audio")
    c_clips = [c for c in clips.clips if getattr(c, short) is not None]
    r_clips = [c for c in recordings.clips if getattr(c, long) is not None]
    if not c_clips:
        raise AvmatchError(f"no clip with {'audio' if reverse else 'visual'} features to place", clips.root)
    if not r_clips:
        raise AvmatchError(f"no recording with {'visual' if reverse else 'audio'} features to search", recordings.root)
    check_min_confidence(min_confidence)
    if isinstance(camera, str):
        check_camera(camera)
    check_fits(trained, clips, short)
    check_fits(trained, recordings, long)
    too_short = [c.id for c in c_clips if len(getattr(c, short)) < MIN_FRAMES]
    if too_short:
        raise AvmatchError(f"{len(too_short)} clip(s) shorter than {MIN_FRAMES} frames, too short to place by timing: "
                           f"{', '.join(too_short[:5])}", clips.root)
    rate = trained.audio_rate_hz
    with stage("embed clips"):
        clip_emb = frame_embeddings(trained, [getattr(c, short) for c in c_clips], short)
    lengths = [len(getattr(r, long)) for r in r_clips]
    places = [_places(len(emb), lengths, rate) for emb in clip_emb]
    surrogates = [_surrogates(emb, n, rate, seed=i) for i, (emb, n) in enumerate(zip(clip_emb, places, strict=True))]
    peaks, nulls = _search(trained, [getattr(r, long) for r in r_clips], long, clip_emb, surrogates, rate,
                           group_frames, progress)
    with stage("choose places, confidence"):
        best = [_best_place(found, null, n * (1 + len(x)))
                for found, null, n, x in zip(peaks, nulls, places, surrogates, strict=True)]
        confidence = lead_confidences(np.array([b[4] if b else np.nan for b in best]))
        best = [b and (*b[:4], c) for b, c in zip(best, confidence, strict=True)]
        placements = _choose(c_clips, r_clips, clip_emb, best, rate, min_confidence, camera)
    by_id = {r.id: k for k, r in enumerate(r_clips)}
    for p in placements:
        if p.best_recording:
            p.recording_s = len(getattr(r_clips[by_id[p.best_recording]], long)) / rate
    embedded = {}  # the recordings long takes were placed on, embedded again once each
    for p, emb in zip(placements, clip_emb, strict=True):
        if p.recording and len(emb) >= DRIFT_MIN_S * rate:
            if p.recording not in embedded:
                embedded[p.recording] = frame_embeddings(trained, [getattr(r_clips[by_id[p.recording]], long)], long)[0]
            p.start_s, p.drift_ppm = drift(emb, embedded[p.recording], p.start_s * rate, rate)
            p.end_s = p.start_s + len(emb) / rate * (1 + p.drift_ppm * 1e-6)
    return placements


def _search(trained: Trained, recordings: list[np.ndarray], modality: str, clip_emb: list[np.ndarray],
            surrogates: list[list[np.ndarray]], rate: float, group_frames: int, progress: bool
            ) -> tuple[list[list[tuple]], list[list[tuple]]]:
    """Every place of every recording (features of ``modality``) for each clip and each of its
    surrogates: per clip, the :func:`_peaks` of the clip (over all recordings) and of its surrogates.
    The recordings are embedded and transformed ``group_frames`` frames at a time: memory is one
    group's, however long the archive."""
    longest = max(len(e) for e in clip_emb)
    peaks = [[] for _ in clip_emb]
    nulls = [[] for _ in clip_emb]
    groups = _groups([len(r) for r in recordings], group_frames)
    bar = progress_bar(len(clip_emb) * len(groups), "locate", "clip", enabled=progress)
    for first, stop in groups:
        with stage("embed recordings + transform"):
            index = RecordingIndex(frame_embeddings(trained, recordings[first:stop], modality), longest)
        with stage("search every place"):
            for found, null, emb, shuffled in zip(peaks, nulls, clip_emb, surrogates, strict=True):
                found.extend(_peaks(index.place_scores(emb), len(emb), rate, first))
                for x in shuffled:
                    null.extend(_peaks(index.place_scores(x), len(x), rate, first))
                bar.update(1)
        del index
    bar.close()
    return peaks, nulls


def _groups(lengths: list[int], frames: int) -> list[tuple[int, int]]:
    """(first, stop) runs of consecutive recordings of about ``frames`` frames in all (at least one each)."""
    out, first, total = [], 0, 0
    for i, n in enumerate(lengths):
        total += n
        if total >= frames:
            out.append((first, i + 1))
            first, total = i + 1, 0
    if first < len(lengths):
        out.append((first, len(lengths)))
    return out


def drift(clip: np.ndarray, recording: np.ndarray, start: float, rate: float, search_s: float = 2.0) -> tuple[float, float]:
    """(start_s, drift_ppm) of a long clip placed at frame ``start`` of a recording whose clock runs
    at another rate: each 30 s stretch of the clip (at least 4 stretches) is placed again within
    ``search_s`` of where the first placement puts it, and a line through those places gives the
    start and the rate (ppm: how many microseconds the recording gains per second of the clip). More
    stretches, a surer slope: each place is good to a few ms, and a 10-minute take has 20."""
    n = len(clip)
    pieces = max(4, n // int(30 * rate))
    piece = min(n // pieces, int(30 * rate))  # up to 30 s of frames each
    reach = int(search_s * rate)
    where, found = [], []
    for a in np.linspace(0, n - piece, pieces).astype(int):
        expect = int(round(start)) + a
        lo, hi = max(0, expect - reach), min(len(recording) - piece, expect + reach)
        if hi <= lo:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(recording[lo : hi + piece], piece, axis=0)  # (L, E, piece)
        curve = np.einsum("te,let->l", clip[a : a + piece], windows) / piece
        k = int(np.argmax(curve))
        where.append(a)
        found.append(lo + peak_between_frames(curve, k))
    if len(where) < 2:
        return start / rate, float("nan")
    slope, intercept = np.polyfit(np.array(where, float), np.array(found), 1)
    return float(intercept / rate), float((slope - 1.0) * 1e6)


def _peaks(curves: list[np.ndarray], frames: int, rate: float, first: int = 0) -> list[tuple]:
    """The ``NULL_PEAKS`` best places of each recording (separate peaks, ``NULL_SPACING_S`` apart) as
    (z, score, recording index + ``first``, start_s). z: the place's score against the other places of
    its recording (robust z): a scene like the clip's scores high at every place of its recording, and
    only a place that stands out from the rest of that recording is timing evidence."""
    tops = []
    reach = _reach(frames, rate)
    for r, curve in enumerate(curves):
        if not len(curve) or not np.isfinite(curve).any():
            continue
        centre = float(np.median(curve))
        spread = 1.4826 * float(np.median(np.abs(curve - centre))) + 1e-6
        left = curve.copy()
        for _ in range(min(NULL_PEAKS, len(left))):
            k = int(np.argmax(left))
            if not np.isfinite(left[k]):
                break
            tops.append(((float(curve[k]) - centre) / spread, float(curve[k]), r + first,
                         peak_between_frames(curve, k) / rate))
            left[max(0, k - reach + 1) : k + reach] = -np.inf
    return tops


def _reach(frames: int, rate: float) -> int:
    """How near two places of a clip of ``frames`` frames are when they share one peak, in frames:
    ``NULL_SPACING_S``, or the clip's length if shorter."""
    return min(frames, int(NULL_SPACING_S * rate))


def _places(frames: int, lengths: list[int], rate: float) -> int:
    """About how many separate places (peaks :func:`_reach` apart, see :func:`_peaks`) a clip of
    ``frames`` frames has in recordings of ``lengths`` frames: the size of its null."""
    reach = _reach(frames, rate)
    return sum(max(0, n - frames + 1) // (2 * reach - 1) + (n >= frames) for n in lengths)


def _surrogates(clip: np.ndarray, places: int, rate: float, seed: int) -> list[np.ndarray]:
    """Where the recordings hold too few ``places`` to be a clip's null (under ``NULL_MIN``: a minute
    of recording has about 28 for a 5 s clip), copies of the clip with its frames in shuffled blocks
    of about a second, no block in its own place: the clip's own look and movement with its timing
    broken, so every place of theirs is wrong, and searched as the clip is they give its null the
    places the recordings lack (up to ``SURROGATES`` copies). Otherwise none."""
    if places >= NULL_MIN or places == 0:
        return []
    frames = len(clip)
    blocks = int(min(max(4, frames // max(1, int(rate))), frames))
    rng = np.random.default_rng(seed)
    cuts = np.linspace(0, frames, blocks + 1).astype(int)
    out = []
    for _ in range(min(SURROGATES, -(-NULL_MIN // places))):
        order = rng.permutation(blocks)
        while (order == np.arange(blocks)).any():  # a derangement: no block where it was
            order = rng.permutation(blocks)
        out.append(np.concatenate([clip[cuts[b] : cuts[b + 1]] for b in order]))
    return out


def _best_place(tops: list[tuple], null: list[tuple], population: int) -> tuple | None:
    """The clip's best place of its :func:`_peaks` over all recordings, as (recording index, start_s,
    score, z, lead); None if it fits in no recording. ``null``: its surrogates' peaks (all wrong);
    ``population``: how many separate places those peaks are the top of (:func:`_places`).

    lead: the best place's lead in z over the next, in units of the null's gaps. The best few wrong
    places of a clip are the top of its null; by the Renyi representation of the top order statistics
    of a null with an exponential tail, their gaps times their rank are independent exponentials of
    one scale, estimated from the gaps below the top (``NULL_GAPS`` of them, at most a quarter of the
    places: beyond the tail the gaps widen); so if the best place is wrong too, its lead over the next
    divided by that scale is a standard exponential (nearly: the scale is estimated), whatever the
    clip's null (nan: too few places to tell, under 12; see also :func:`_surrogates`)."""
    if not tops:
        return None
    tops = sorted(tops, reverse=True)
    z = np.array([tops[0][0]] + sorted([t[0] for t in tops[1:]] + [t[0] for t in null], reverse=True))
    gaps = (z[:-1] - z[1:]) * np.arange(1, len(z))  # gaps[i]: lead of place i over place i + 1, times i + 1
    gaps[:1] = np.maximum(gaps[:1], 0.0)  # a surrogate's place above the best: no lead
    # the null's own gaps nearest the top (not the top one), from its tail only: a quarter of the places
    below = gaps[1 : 1 + min(NULL_GAPS, population // 4)]
    lead = float(gaps[0] / below.mean()) if len(below) >= 3 and below.mean() > 0 else float("nan")
    zi, peak, r, start = tops[0]
    return r, start, peak, zi, lead


def lead_confidences(leads: np.ndarray, iterations: int = 500) -> np.ndarray:
    """The chance that each clip's best place is right, given its :func:`_best_place` lead, from the
    leads of all the clips located together (empirical Bayes). Two groups: a wrong best place's lead
    is a standard exponential (known, by construction); a right one's is gamma-distributed, its mean
    and variance and the share of clips in it fitted to the run by expectation-maximisation, with the
    prior (``PRIOR_*``) worth ``PRIOR_CLIPS`` clips, so that one clip alone is judged by the prior and
    hundreds by themselves. Then confidence = P(right group | lead), a probability (1 - P(a wrong
    place leads this much) would let one unrecorded take in ten through 0.9). nan lead: 0."""
    from scipy import special, stats

    leads = np.asarray(leads, dtype=np.float64)
    known = np.isfinite(leads)
    x = np.maximum(leads[known], 0.0)
    share, mean, var = PRIOR_RECORDED, PRIOR_LEAD_MEAN, PRIOR_LEAD_VAR

    def right_given(x):  # in log odds: a lead of thousands (a degenerate null) underflows neither density
        shape, scale = max(mean * mean / var, 1.0), var / mean
        odds = np.log(share / (1.0 - share)) + stats.gamma.logpdf(x, shape, scale=scale) + x
        return special.expit(odds)

    for _ in range(iterations):
        w = right_given(x)
        weight = w.sum() + PRIOR_CLIPS
        new = ((w.sum() + PRIOR_CLIPS * PRIOR_RECORDED) / (len(x) + PRIOR_CLIPS),
               (w @ x + PRIOR_CLIPS * PRIOR_LEAD_MEAN) / weight)
        new_var = max((w @ (x - new[1]) ** 2 + PRIOR_CLIPS * PRIOR_LEAD_VAR) / weight, 1e-3)
        done = abs(new[0] - share) < 1e-7 and abs(new[1] - mean) < 1e-6 and abs(new_var - var) < 1e-6
        (share, mean), var = new, new_var
        if done:
            break
    out = np.zeros(len(leads))
    out[known] = right_given(x)
    return out


def check_camera(pattern: str) -> None:
    """A ``--camera`` pattern that is no regular expression: one line, before any work."""
    _camera("", pattern)


def _camera(clip_id: str, pattern: str | None) -> str:
    """The camera a clip came from: the folder its id names (``cam1/take3`` -> ``cam1``), or with
    ``pattern`` (a regular expression) its first match in the id; "" for none."""
    if pattern:
        import re

        try:
            found = re.search(pattern, clip_id)
        except re.error as err:
            raise ArgumentError(f"--camera {pattern!r} is not a regular expression ({err})") from None
        return found.group(0) if found else ""
    return clip_id.rpartition("/")[0]


def _choose(c_clips, r_clips, clip_emb, best, rate, min_confidence, camera) -> list[Placement]:
    """Each clip at its best place ((recording index, start_s, score, z, confidence) or None), or
    refused: below ``min_confidence``, or where a surer clip of the same camera already sits there
    (one camera cannot film two takes at once). A clip is never moved to another place: a place that
    is not the best has no confidence of its own to trust (its lead is over worse places only).
    Clips are settled surest first."""
    taken: dict[tuple[str, int], list[tuple[float, float, str]]] = {}  # (camera, recording) -> spans placed
    out: dict[int, Placement] = {}
    surest_first = sorted(range(len(c_clips)), key=lambda i: -(best[i][4] if best[i] else 0.0))
    for i in surest_first:
        c, duration = c_clips[i], len(clip_emb[i]) / rate
        if not best[i]:
            out[i] = Placement(c.id, "", float("nan"), float("nan"), float("nan"), float("nan"), 0.0, "",
                               why="longer than every recording")
            continue
        cam = _camera(c.id, camera) if camera is not False else ""
        r, start, peak, z, confidence = best[i]
        busy = [other for s0, end, other in taken.get((cam, r), []) if start < end and s0 < start + duration] if cam else []
        why = ("" if confidence >= min_confidence else "not sure" if confidence >= UNLIKE
               else "nothing recorded resembles it")
        why = why or (f"camera {cam} busy there ({busy[0]})" if busy else "")
        if not why and cam:
            taken.setdefault((cam, r), []).append((start, start + duration, c.id))
        out[i] = Placement(c.id, "" if why else r_clips[r].id, start, start + duration, peak, z, confidence,
                           r_clips[r].id, why=why)
    return [out[i] for i in range(len(c_clips))]
