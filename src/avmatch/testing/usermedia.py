"""Test pairs shaped like what users bring: other frame rates (24-30 fps, and variable), frame sizes
from 320x180 to 1920x1080, stereo at 44.1/48 kHz, mp4/mkv/webm/avi/mov, offsets of several seconds.
Made from the scene generators, as media files.

    >>> key = make_user_test_set(scenes.make_scene, families, "users/", n=40, seed=0)

Each pair: a silent video (``users/videos/<v>.<container>``) rendered at its own frame rate and at
``size``, written at 1, 2, 4 or 6 times that width and height (``SCALES``; every 4th video with 15% of
its frames dropped, each leaving a gap in time: a variable frame rate),
and its sound shifted by up to ``max_offset_s`` and written as stereo (the two channels differ a little,
as two microphones do) at 44.1 or 48 kHz in a common audio format (``users/audios/<a>.<suffix>``).
``key.csv`` has ``video,audio,offset_s,source,family,fps,container,size,audio_format``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

from avmatch.atomic import atomic_path, write_text
from avmatch.media import process_pool, to_uint8
from avmatch.testing.mediagen import random_names, shift_audio

# container suffix -> (video codec, pixel format)
CONTAINERS = {".mp4": ("libx264", "yuv420p"), ".mkv": ("libx264", "yuv420p"), ".webm": ("libvpx", "yuv420p"),
              ".avi": ("mpeg4", "yuv420p"), ".mov": ("libx264", "yuv420p")}
MUXERS = {".mkv": "matroska"}  # container suffix -> PyAV format, where the suffix is not its name
FRAME_RATES = (24.0, 25.0, 30000 / 1001, 30.0)
SCALES = (1, 2, 4, 6)  # frame sizes, as multiples of the rendered size: 320x180 -> 640x360, 1280x720, 1920x1080
VFR_EVERY = 4  # every 4th video (not .avi, whose timestamps are a frame count) drops frames: variable frame rate
VFR_DROP = 0.15  # share of frames dropped from a variable-frame-rate video, each leaving a gap in time
# audio suffix -> (codec, sample rate)
AUDIO = {".wav": ("pcm_s16le", 48000), ".m4a": ("aac", 44100), ".flac": ("flac", 48000), ".mp3": ("libmp3lame", 44100)}


def write_video(path: str | Path, frames: np.ndarray, fps: float, scale: int = 1,
                keep: np.ndarray | None = None) -> Path:
    """Silent video of ``frames`` ((N, H, W, 3) float in [0, 1]) in the container ``path``'s suffix names,
    each frame ``scale`` times as wide and high (nearest pixel); with ``keep`` (a mask over the frames)
    only those frames, each at its own time: a variable frame rate."""
    path = Path(path)
    codec, pix_fmt = CONTAINERS[path.suffix.lower()]
    keep = np.ones(len(frames), bool) if keep is None else keep
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=MUXERS.get(path.suffix.lower(), path.suffix.lstrip("."))) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1] * scale, frames.shape[2] * scale
        stream.pix_fmt = pix_fmt
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        else:
            stream.bit_rate = 1_500_000
        for i in np.flatnonzero(keep):
            img = to_uint8(frames[i])
            if scale > 1:
                img = img.repeat(scale, axis=0).repeat(scale, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(i)  # a dropped frame leaves its time empty: the frame before lasts longer
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_stereo(path: str | Path, audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> Path:
    """``audio`` (mono at ``sample_rate``) as two slightly different channels (panned, one 0-0.5 ms
    later) at the rate and in the codec of ``path``'s suffix."""
    path = Path(path)
    codec, rate = AUDIO[path.suffix.lower()]
    g = np.gcd(rate, sample_rate)
    x = resample_poly(audio.astype(np.float64), rate // g, sample_rate // g)
    lag = int(rng.uniform(0.0, 0.0005) * rate)
    pan = rng.uniform(0.6, 1.0)
    left, right = x, np.concatenate([np.zeros(lag), x[: len(x) - lag]]) * pan
    stereo = np.clip(np.stack([left, right]), -1.0, 1.0).astype(np.float32)  # (2, n)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format={".m4a": "mp4"}.get(path.suffix.lower())) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "stereo"
        if codec in ("aac", "libmp3lame"):
            stream.bit_rate = 128_000
        if codec == "libmp3lame":
            stream.format = "fltp"
        fmt = stream.codec_context.format.name
        block = stream.codec_context.frame_size or 1024
        for i in range(0, stereo.shape[1], block):
            part = stereo[:, i : i + block]
            if fmt == "s16":  # packed 16-bit: (1, n * 2) interleaved
                data = (part.T.reshape(1, -1) * 32767).astype(np.int16)
            elif fmt == "s16p":
                data = (part * 32767).astype(np.int16)
            elif fmt == "flt":
                data = np.ascontiguousarray(part.T.reshape(1, -1))
            else:
                data = np.ascontiguousarray(part)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _make_pair(make: Callable, family: str, seed: list[int], duration_s: float, size: tuple[int, int], fps: float,
               offset_s: float, video: str, audio: str, scale: int = 1, vfr: bool = False) -> None:
    scene = make(seed, family=family, duration_s=duration_s, size=size, fps=fps)
    rng = np.random.default_rng(seed)
    keep = None
    if vfr:
        keep = rng.random(len(scene.frames)) >= VFR_DROP
        keep[0] = True
    write_video(video, scene.frames, fps, scale, keep)
    write_stereo(audio, shift_audio(scene.audio, offset_s, scene.sample_rate, rng), scene.sample_rate, rng)


def make_user_test_set(makers: dict[str, Callable], families: list[str], out_dir: str | Path, n: int, seed: int = 0,
                       max_offset_s: float = 2.5, duration_s: float = 8.0, size: tuple[int, int] = (320, 180),
                       workers: int = 1) -> Path:
    """``n`` pairs spread over ``families`` ("generator:family", each generator's ``make_scene`` in
    ``makers``), cycling through frame rates, containers and audio formats; returns key.csv's path."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "audios").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 4421])
    taken: set[str] = set()
    v_names, a_names = random_names(rng, n, "v", taken), random_names(rng, n, "a", taken)
    offsets = rng.uniform(-max_offset_s, max_offset_s, n)
    containers, audio_suffixes = list(CONTAINERS), list(AUDIO)
    jobs, rows = [], []
    for k in range(n):
        name = families[k % len(families)]
        gen, fam = name.split(":")
        fps = FRAME_RATES[(k // len(families)) % len(FRAME_RATES)]
        container = containers[k % len(containers)]
        suffix = audio_suffixes[(k // 2) % len(audio_suffixes)]
        scale = SCALES[(k // 3) % len(SCALES)]
        vfr = k % VFR_EVERY == VFR_EVERY - 1 and container != ".avi"
        video, audio = out / "videos" / f"{v_names[k]}{container}", out / "audios" / f"{a_names[k]}{suffix}"
        jobs.append((makers[gen], fam, [seed, 7_000_000 + k], duration_s, size, fps, float(offsets[k]), str(video),
                     str(audio), scale, vfr))
        rows.append({"video": v_names[k], "audio": a_names[k], "offset_s": f"{offsets[k]:.4f}", "source": f"user{k}",
                     "family": name, "fps": f"{fps:.3f}" + (" vfr" if vfr else ""), "container": container.lstrip("."),
                     "size": f"{size[0] * scale}x{size[1] * scale}",
                     "audio_format": f"{suffix.lstrip('.')} {AUDIO[suffix][1] // 1000:g} kHz stereo"})
    if workers > 1:
        with process_pool(workers) as pool:
            list(pool.map(_make_pair, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            _make_pair(*job)
    rows.sort(key=lambda r: r["video"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "key.csv", buf.getvalue())
    return out / "key.csv"
