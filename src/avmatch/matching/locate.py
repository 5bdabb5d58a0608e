"""Place short clips inside long recordings: which recording each silent clip belongs to, and where.

A timing model gives per-frame embeddings of both modalities in one space
(:func:`avmatch.inference.frame_embeddings`). A clip of T frames placed at frame ``k`` of a recording
agrees with it by the mean cosine of its frames with the recording's frames ``k .. k + T - 1``: the
score the model was trained to peak at the right lag. That is computed for every ``k`` of every
recording at once as a cross-correlation, by FFT, summed over the embedding dimensions in the
frequency domain (one inverse transform per clip and block, not one per dimension); the recording is
cut into overlapping blocks (overlap-save), so memory grows with its length only through its
transforms, computed once for all clips.

Whether the best place is believable is a question about all the other places: nearly every ``k``
is wrong, so the scores at all of them (of every recording) are the clip's own null. The peak is
written as a robust z-score against them (median, 1.4826 x MAD), and its ``confidence`` is the
probability that no wrong place would reach it, were the null normal: ``(1 - sf(z)) ** M`` over the
M places searched. A clip whose best place does not stand out from chance is refused (``recording``
empty) rather than forced onto the nearest recording: ``min_confidence``. Clips of one camera may not
overlap in time: settled surest first, a clip whose best place a surer take of its camera holds
gets its next best free place (of its few best) or is refused.

``reverse``: short audio snippets inside long silent videos, the same search with the roles swapped.
Clips must lie wholly inside a recording; drift over long takes is not modelled (yet).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from avmatch.atomic import write_text
from avmatch.checkpoint import Trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.inference import check_fits, frame_embeddings
from avmatch.progress import bar as progress_bar

MIN_CONFIDENCE = 0.5  # placements less sure than this are refused
MIN_FRAMES = 8  # a clip this short has no timing to place it by
CANDIDATES = 5  # best places kept per clip, for when a surer clip of its camera took the best


@dataclass
class Placement:
    clip: str
    recording: str  # "" when refused
    start_s: float  # where the clip's first frame falls in the recording (the best place, even if refused)
    end_s: float
    score: float  # mean cosine of the clip's frames with the recording's there
    z: float  # the score against the clip's scores at every other place, robust z
    confidence: float  # probability that no wrong place would score as high (normal null)
    best_recording: str  # the best place's recording, refused or not


class RecordingIndex:
    """The FFTs of the recordings' per-frame embeddings in overlapping blocks, computed once."""

    def __init__(self, recordings: list[np.ndarray], longest_clip: int, block: int = 0):
        self.lengths = [len(r) for r in recordings]
        self.block = block or int(2 ** np.ceil(np.log2(max(4096, 4 * longest_clip))))
        self.hop = self.block - longest_clip + 1  # places k = start .. start + hop - 1 are exact in each block
        self.spans = []  # (recording, first place) per block
        spectra = []
        for r, x in enumerate(recordings):
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            for start in range(0, len(x), self.hop):
                piece = t[start : start + self.block]
                spectra.append(torch.fft.rfft(piece, n=self.block, dim=0))  # (F, E)
                self.spans.append((r, start))
        self.spectra = torch.stack(spectra) if spectra else torch.zeros(0)  # (C, F, E) complex64

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


def _refine(curve: np.ndarray, k: int) -> float:
    """The peak between frames: a parabola through it and its two neighbours."""
    if 0 < k < len(curve) - 1:
        denom = curve[k - 1] - 2 * curve[k] + curve[k + 1]
        if denom < 0:
            return k + 0.5 * (curve[k - 1] - curve[k + 1]) / denom
    return float(k)


def locate(trained: Trained, clips: Corpus, recordings: Corpus, min_confidence: float = MIN_CONFIDENCE,
           reverse: bool = False, progress: bool = False, camera: str | None | bool = None) -> list[Placement]:
    """Place every clip (silent video; audio with ``reverse``) of ``clips`` in the recordings (audio;
    silent video with ``reverse``) of ``recordings``. One :class:`Placement` per clip, in clip order.

    Clips of one camera (by default the folder in their id; ``camera``: a regular expression whose
    match in the id names it; False: no cameras) cannot overlap in time on one recording."""
    short, long = ("audio", "video") if reverse else ("video", "audio")
    c_clips = [c for c in clips.clips if getattr(c, short) is not None]
    r_clips = [c for c in recordings.clips if getattr(c, long) is not None]
    if not c_clips:
        raise AvmatchError(f"no clip with {'audio' if reverse else 'visual'} features to place", clips.root)
    if not r_clips:
        raise AvmatchError(f"no recording with {'visual' if reverse else 'audio'} features to search", recordings.root)
    if not 0.0 <= min_confidence <= 1.0:
        raise AvmatchError(f"--min-confidence must be in [0, 1], got {min_confidence:g}")
    check_fits(trained, clips, short)
    check_fits(trained, recordings, long)
    too_short = [c.id for c in c_clips if len(getattr(c, short)) < MIN_FRAMES]
    if too_short:
        raise AvmatchError(f"{len(too_short)} clip(s) shorter than {MIN_FRAMES} frames, too short to place by timing: "
                           f"{', '.join(too_short[:5])}", clips.root)
    rate = trained.audio_rate_hz
    clip_emb = frame_embeddings(trained, [getattr(c, short) for c in c_clips], short)
    rec_emb = frame_embeddings(trained, [getattr(c, long) for c in r_clips], long)
    index = RecordingIndex(rec_emb, max(len(e) for e in clip_emb))
    options = []  # per clip: its best places, best first
    bar = progress_bar(len(c_clips), "locate", "clip", enabled=progress)
    for emb in clip_emb:
        options.append(_best_places(index.place_scores(emb), len(emb), rate))
        bar.update(1)
    bar.close()
    return _choose(c_clips, r_clips, clip_emb, options, rate, min_confidence, camera)


def _best_places(curves: list[np.ndarray], frames: int, rate: float, keep: int = CANDIDATES) -> list[tuple]:
    """The clip's ``keep`` best places, at least a clip's length apart on one recording, as
    (recording index, start_s, score, z, confidence), best first; [] if it fits in no recording."""
    pooled = np.concatenate([x[np.isfinite(x)] for x in curves])
    if not len(pooled):
        return []
    centre = float(np.median(pooled))
    spread = 1.4826 * float(np.median(np.abs(pooled - centre))) + 1e-6
    tops = []  # the best few of each recording, then the best of all
    for r, curve in enumerate(curves):
        curve = curve.copy()
        for _ in range(min(keep, len(curve))):
            k = int(np.argmax(curve))
            if not np.isfinite(curve[k]):
                break
            tops.append((float(curve[k]), r, _refine(curves[r], k) / rate))
            curve[max(0, k - frames + 1) : k + frames] = -np.inf  # places that would overlap this one
    out = []
    for peak, r, start in sorted(tops, reverse=True)[:keep]:
        z = (peak - centre) / spread
        confidence = float(np.exp(len(pooled) * np.log1p(-min(norm.sf(z), 1 - 1e-12))))
        out.append((r, start, peak, z, confidence))
    return out


def _camera(clip_id: str, pattern: str | None) -> str:
    """The camera a clip came from: the folder its id names (``cam1/take3`` -> ``cam1``), or with
    ``pattern`` (a regular expression) its first match in the id; "" for none."""
    if pattern:
        import re

        found = re.search(pattern, clip_id)
        return found.group(0) if found else ""
    return clip_id.rpartition("/")[0]


def _choose(c_clips, r_clips, clip_emb, options, rate, min_confidence, camera) -> list[Placement]:
    """Each clip's place: its best, unless a surer clip of the same camera already sits there (one
    camera cannot film two takes at once), then its next best that does not overlap; refused below
    ``min_confidence``. Clips are settled surest first."""
    taken: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (camera, recording) -> spans placed
    out: dict[int, Placement] = {}
    surest_first = sorted(range(len(c_clips)), key=lambda i: -(options[i][0][4] if options[i] else 0.0))
    for i in surest_first:
        c, duration = c_clips[i], len(clip_emb[i]) / rate
        if not options[i]:  # longer than every recording
            out[i] = Placement(c.id, "", float("nan"), float("nan"), float("nan"), float("nan"), 0.0, "")
            continue
        cam = _camera(c.id, camera) if camera is not False else ""
        chosen = options[i][0]
        if cam:
            free = [o for o in options[i] if o[4] >= min_confidence and not any(
                o[1] < end and start < o[1] + duration for start, end in taken.get((cam, o[0]), []))]
            chosen = free[0] if free else options[i][0]
        r, start, peak, z, confidence = chosen
        placed = confidence >= min_confidence and (not cam or not any(
            start < end and s0 < start + duration for s0, end in taken.get((cam, r), [])))
        if placed and cam:
            taken.setdefault((cam, r), []).append((start, start + duration))
        out[i] = Placement(c.id, r_clips[r].id if placed else "", start, start + duration, peak, z, confidence,
                           r_clips[r].id)
    return [out[i] for i in range(len(c_clips))]


FIELDS = ("clip", "recording", "start_s", "end_s", "score", "z", "confidence", "best_recording")


def placements_text(placements: list[Placement]) -> str:
    """placements.csv as text, sorted by clip id."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(FIELDS)
    for p in sorted(placements, key=lambda p: p.clip):
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in (getattr(p, f) for f in FIELDS)])
    return buf.getvalue()


def write_placements(placements: list[Placement], path: str | Path) -> Path:
    """Write placements.csv atomically."""
    write_text(path, placements_text(placements))
    return Path(path)
