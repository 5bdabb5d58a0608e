"""Generated feature corpora in the classic layout (1024 visual | 128 audio columns, one row a second).

Two shapes (``avmatch make-features --shape``): "course" (:func:`make_course_corpus`, the default), shaped
like the course's features of real videos, whose picture and sound share what the clip is about as
well as when things happen; and "timing" (:func:`make_feature_corpus`), described here:

Each clip has a hidden sequence of events (sparse bursts of a few latent "sources") plus a clip-wide
content vector. The visual features see the events and the content through one fixed random
projection, the audio features through another, a fraction of a second later (a random delay),
and each modality also carries its own private, unshared nuisance signal and noise. A model has to
learn the two projections and the timing to tell clips apart; chance top-1 is 1/N.

The "world" (the projections) depends on ``world_seed`` only, so corpora made with different seeds
but the same world and dims are train and test data of one task.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from avmatch.atomic import write_text
from avmatch.corpus import Clip, Corpus, dequantize, quantize

LATENT = 16  # hidden sources
PRIVATE = 8  # nuisance dims seen by one modality only


def _world(video_dim: int, audio_dim: int, world_seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([world_seed, video_dim, audio_dim])
    return {"video": rng.standard_normal((LATENT + PRIVATE, video_dim)) / np.sqrt(LATENT + PRIVATE),
            "audio": rng.standard_normal((LATENT + PRIVATE, audio_dim)) / np.sqrt(LATENT + PRIVATE)}


def _events(t: int, rng: np.random.Generator) -> np.ndarray:
    """(t, LATENT): sparse bursts of the hidden sources that decay over a couple of rows."""
    z = (rng.random((t, LATENT)) < 0.12) * rng.uniform(0.5, 1.5, (t, LATENT))
    out = np.zeros_like(z)
    acc = np.zeros(LATENT)
    for i in range(t):
        acc = 0.5 * acc + z[i]
        out[i] = acc
    return out


def make_feature_corpus(n: int, video_dim: int = 1024, audio_dim: int = 128, min_len: int = 20,
                        max_len: int = 40, seed: int = 0, world_seed: int = 0, noise: float = 0.6,
                        max_delay: int = 1) -> Corpus:
    """``n`` paired clips of ``min_len``..``max_len`` rows (one row per second, classic-style)."""
    if n < 1 or not 1 <= min_len <= max_len:
        raise ValueError(f"need n >= 1 and 1 <= min_len <= max_len, got {n}, {min_len}, {max_len}")
    world = _world(video_dim, audio_dim, world_seed)
    rng = np.random.default_rng(seed)
    clips = []
    width = len(str(n - 1))
    for i in range(n):
        t = int(rng.integers(min_len, max_len + 1))
        delay = int(rng.integers(0, max_delay + 1))
        content = rng.normal(0.0, 0.7, LATENT)  # what the clip is about, seen by both modalities
        events = _events(t + delay, rng) + content
        seen = {"video": events[delay:], "audio": events[: t]}  # audio lags the picture by `delay` rows
        feats = {}
        for m, dim in (("video", video_dim), ("audio", audio_dim)):
            private = np.cumsum(rng.normal(0, 0.4, (t, PRIVATE)), axis=0) + rng.normal(0, 1.0, PRIVATE)
            x = np.concatenate([seen[m], private], axis=1) @ world[m]
            feats[m] = np.tanh(x + noise * rng.standard_normal((t, dim))).astype(np.float32)
        clips.append(Clip(f"clip{i:0{width}d}", feats["video"], feats["audio"], source="generated"))
    return Corpus(clips, 1.0, 1.0, {"name": "synthetic", "version": 1,
                                    "params": {"world_seed": world_seed, "noise": noise}})


TOPICS = 64  # the course-shaped world's kinds of content (a clip mixes 1-3 of them)
SHAPES = ("course", "timing")  # make-features --shape: the generators below


def make_course_corpus(n: int, video_dim: int = 1024, audio_dim: int = 128, rows: int = 120, seed: int = 0,
                       world_seed: int = 0, content: float = 1.0, timing: float = 1.0, private: float = 1.0,
                       noise: float = 0.5, max_delay: int = 1) -> Corpus:
    """``n`` paired clips shaped like the course's features: ``rows`` rows of one second (120, as the
    course's 120 s), 1024 visual and 128 audio columns stored as YouTube-8M's uint8 codes over [-2, 2]
    (the values here are the de-quantised codes, as :func:`avmatch.corpus.load_array` reads them back).

    The course's clips were real videos, so what is seen and what is heard share *content* as well as
    timing. Each clip mixes 1-3 of ``TOPICS`` kinds of content (Dirichlet weights) that both modalities
    see, each through its own fixed projection, changing a little at each of 1-4 shots; per-second
    events (sparse bursts, as :func:`make_feature_corpus`) that both see, the sound up to ``max_delay``
    rows late; and what one modality alone sees (a per-clip look or recording, a slow drift, noise).
    ``content``, ``timing`` and ``private`` weigh the three parts (each of unit size before its weight);
    ``content=0`` leaves timing alone to link the two, ``timing=0`` content alone."""
    if n < 1 or rows < 1:
        raise ValueError(f"need n >= 1 and rows >= 1, got {n}, {rows}")
    world = _world(video_dim, audio_dim, world_seed)
    topic_rng = np.random.default_rng([world_seed, 7])
    topics = topic_rng.standard_normal((TOPICS, LATENT))  # each kind of content, in the shared latent space
    rng = np.random.default_rng(seed)
    clips = []
    width = len(str(n - 1))
    for i in range(n):
        kinds = rng.choice(TOPICS, int(rng.integers(1, 4)), replace=False)
        mix = rng.dirichlet(np.ones(len(kinds))) @ topics[kinds]  # (LATENT,)
        cuts = np.sort(rng.choice(np.arange(1, rows), min(rows - 1, int(rng.integers(0, 4))), replace=False))
        shots = np.split(np.arange(rows), cuts)
        seen_content = np.concatenate([np.tile(mix + 0.3 * rng.standard_normal(LATENT), (len(s), 1)) for s in shots])
        delay = int(rng.integers(0, max_delay + 1))
        events = _events(rows + delay, rng)
        events = (events - events.mean()) / (events.std() + 1e-6)
        seen = {"video": events[delay:], "audio": events[:rows]}  # the sound lags the picture by `delay` rows
        feats = {}
        for m, dim in (("video", video_dim), ("audio", audio_dim)):
            own = rng.standard_normal(PRIVATE) + np.cumsum(rng.normal(0, 0.08, (rows, PRIVATE)), axis=0)
            shared = np.concatenate([content * seen_content + timing * seen[m], private * own], axis=1)
            x = shared @ world[m] + noise * rng.standard_normal((rows, dim))
            feats[m] = dequantize(quantize(2.0 * np.tanh(x / 2.0)))
        clips.append(Clip(f"clip{i:0{width}d}", feats["video"], feats["audio"], source="generated"))
    return Corpus(clips, 1.0, 1.0, {"name": "synthetic", "version": 2,
                                    "params": {"shape": "course", "world_seed": world_seed, "content": content,
                                               "timing": timing, "private": private, "noise": noise}})


def shuffle_for_matching(corpus: Corpus, seed: int = 0) -> tuple[Corpus, Corpus, list[tuple[str, str]]]:
    """Split paired clips into silent videos and audios under random names in random order.

    Returns (videos, audios, key) where key lists (video id, audio id) of the true pairs.
    """
    rng = np.random.default_rng(seed)
    paired = corpus.paired().clips
    width = max(4, len(str(len(paired))))
    v_names = [f"v{k:0{width}d}" for k in rng.permutation(len(paired))]
    a_names = [f"a{k:0{width}d}" for k in rng.permutation(len(paired))]
    videos = [Clip(v_names[i], video=c.video, source=c.source) for i, c in enumerate(paired)]
    audios = [Clip(a_names[i], audio=c.audio, source=c.source) for i, c in enumerate(paired)]
    key = sorted(zip(v_names, a_names, strict=True))
    order_v, order_a = rng.permutation(len(videos)), rng.permutation(len(audios))
    return (corpus._with([videos[i] for i in order_v]), corpus._with([audios[i] for i in order_a]), key)


def write_key(key: list[tuple], path: str | Path, columns: tuple[str, ...] = ("video", "audio")) -> Path:
    """The answer key as CSV (``video,audio`` and any further columns given)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(key)
    write_text(path, buf.getvalue())
    return Path(path)


def write_feature_task(out: str | Path, clips: int, test: int = 0, video_dim: int = 1024, audio_dim: int = 128,
                       seed: int = 0, shape: str = "course", **knobs) -> dict[str, Path]:
    """A generated feature corpus of ``clips`` paired clips in ``out`` and, with ``test`` > 0, a test set
    of as many other clips of the same world beside it: ``out/test/videos`` (silent), ``out/test/audios``
    (under other random names, in another order) and ``out/test/key.csv`` (the true pairs): what
    ``avmatch match`` and ``avmatch evaluate --key`` take. ``shape`` picks the generator (``SHAPES``:
    "course", :func:`make_course_corpus`, stored as uint8 codes; "timing", :func:`make_feature_corpus`);
    ``knobs`` go to it. Returns the paths written."""
    from avmatch.corpus import write_corpus

    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: give one of {', '.join(SHAPES)}")
    make = make_course_corpus if shape == "course" else make_feature_corpus

    def made(n: int, made_seed: int) -> Corpus:
        corpus = make(n, video_dim=video_dim, audio_dim=audio_dim, seed=made_seed, **knobs)
        if shape == "course":  # written as the codes they are: a quarter of the float32 bytes
            corpus = corpus._with([Clip(c.id, quantize(c.video), quantize(c.audio), c.source) for c in corpus.clips])
        return corpus

    out = Path(out)
    write_corpus(made(clips, seed), out)
    written = {"train": out}
    if test > 0:
        videos, audios, key = shuffle_for_matching(made(test, seed + 1_000_003), seed)
        write_corpus(videos, out / "test" / "videos")
        write_corpus(audios, out / "test" / "audios")
        written.update(videos=out / "test" / "videos", audios=out / "test" / "audios",
                       key=write_key(key, out / "test" / "key.csv"))
    return written
