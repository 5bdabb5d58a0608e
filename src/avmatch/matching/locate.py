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
z, and its ``confidence`` is the chance that its lead over the next best place is more than a wrong
place's would be, judged from the gaps between the clip's next best places (its own null, see
:func:`_best_places`). A clip whose best place does not stand out is refused (``recording`` empty)
rather than forced onto the nearest recording: ``min_confidence``. Clips of one camera may not
overlap in time: settled surest first, a clip whose best place a surer take of its camera holds
gets its next best free place (of its few best) or is refused.

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

MIN_CONFIDENCE = 0.9  # placements less sure than this are refused
MIN_FRAMES = 8  # a clip this short has no timing to place it by
CANDIDATES = 5  # best places kept per clip, for when a surer clip of its camera took the best
NULL_PEAKS = 16  # best places kept per recording (the top of the clip's null)
NULL_GAPS = 15  # gaps below the top that measure the scale of the null's tail
NULL_SPACING_S = 2.0  # places this far apart (or a clip's length, if shorter) are separate peaks
DRIFT_MIN_S = 60.0  # clips this long get their drift measured (shorter: too little to measure it by)
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
    confidence: float  # how unlike a wrong place's the best place's lead over the next is (see _best_places)
    best_recording: str  # the best place's recording, refused or not
    drift_ppm: float = float("nan")  # recording clock against the clip's, for clips of DRIFT_MIN_S or more
    why: str = ""  # why a clip was refused: "not sure", "camera CAM busy there" (see _choose), "longer than every recording"
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
    longest = max(len(e) for e in clip_emb)
    peaks = [[] for _ in c_clips]  # per clip: the best few places of every recording
    groups = _groups([len(getattr(r, long)) for r in r_clips], group_frames)
    bar = progress_bar(len(c_clips) * len(groups), "locate", "clip", enabled=progress)
    for first, stop in groups:  # recordings a group at a time: memory is one group's, however long the archive
        with stage("embed recordings + transform"):
            index = RecordingIndex(frame_embeddings(trained, [getattr(r, long) for r in r_clips[first:stop]], long),
                                   longest)
        with stage("search every place"):
            for found, emb in zip(peaks, clip_emb, strict=True):
                found.extend(_peaks(index.place_scores(emb), len(emb), rate, first))
                bar.update(1)
        del index
    bar.close()
    with stage("choose places, confidence"):
        options = [_best_places(found) for found in peaks]
        placements = _choose(c_clips, r_clips, clip_emb, options, rate, min_confidence, camera)
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
    reach = min(frames, int(NULL_SPACING_S * rate))  # places nearer than this share the peak
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


def _best_places(tops: list[tuple], keep: int = CANDIDATES) -> list[tuple]:
    """The clip's ``keep`` best places of its :func:`_peaks` over all recordings, as (recording
    index, start_s, score, z, confidence), best first; [] if it fits in no recording.

    confidence: how unlike a wrong place's the best place's lead over the next is. The best few wrong
    places of a clip are the top of its null; by the Renyi representation of the top order statistics
    of a null with an exponential tail, their gaps times their rank are independent exponentials of
    one scale, estimated from the gaps below the top, so P(a wrong place leads by g or more) =
    exp(-g / scale) and confidence = 1 - that; each clip calibrates itself, whatever its null."""
    if not tops:
        return []
    tops = sorted(tops, reverse=True)
    z = np.array([t[0] for t in tops])
    gaps = z[:-1] - z[1:]  # gaps[i]: lead of place i over place i + 1
    ranks = np.arange(1, len(gaps) + 1)
    below = (gaps * ranks)[1:NULL_GAPS + 1]  # the null's own gaps nearest the top, scaled by rank (not the top one)
    scale = float(below.mean()) if len(below) >= 3 else float("nan")
    out = []
    for i, (zi, peak, r, start) in enumerate(tops[:keep]):
        lead = gaps[i] * (i + 1) if i < len(gaps) else 0.0
        confidence = float(1.0 - np.exp(-lead / scale)) if np.isfinite(scale) and scale > 0 else 0.0
        out.append((r, start, peak, zi, confidence))
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


def _choose(c_clips, r_clips, clip_emb, options, rate, min_confidence, camera) -> list[Placement]:
    """Each clip at its best place, or refused: below ``min_confidence``, or where a surer clip of the
    same camera already sits there (one camera cannot film two takes at once). A clip is never moved
    to another place: a place that is not the best has no confidence of its own to trust (its lead is
    over worse places only). Clips are settled surest first."""
    taken: dict[tuple[str, int], list[tuple[float, float, str]]] = {}  # (camera, recording) -> spans placed
    out: dict[int, Placement] = {}
    surest_first = sorted(range(len(c_clips)), key=lambda i: -(options[i][0][4] if options[i] else 0.0))
    for i in surest_first:
        c, duration = c_clips[i], len(clip_emb[i]) / rate
        if not options[i]:
            out[i] = Placement(c.id, "", float("nan"), float("nan"), float("nan"), float("nan"), 0.0, "",
                               why="longer than every recording")
            continue
        cam = _camera(c.id, camera) if camera is not False else ""
        r, start, peak, z, confidence = options[i][0]
        busy = [other for s0, end, other in taken.get((cam, r), []) if start < end and s0 < start + duration] if cam else []
        why = "not sure" if confidence < min_confidence else f"camera {cam} busy there ({busy[0]})" if busy else ""
        if not why and cam:
            taken.setdefault((cam, r), []).append((start, start + duration, c.id))
        out[i] = Placement(c.id, "" if why else r_clips[r].id, start, start + duration, peak, z, confidence,
                           r_clips[r].id, why=why)
    return [out[i] for i in range(len(c_clips))]
