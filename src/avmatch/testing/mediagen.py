"""Small media files made with PyAV for tests: flashes on screen and tone bursts in the sound track at
known event times, so a test can check that decoding and features keep the timing.

Import from a test or a benchmark as ``from avmatch.testing.mediagen import make_clip, make_audio``.
Generated frames and sound are written to files by :func:`avmatch.media.write_media`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

EVENTS = (0.48, 1.28)  # default event times: on frame boundaries at 25 fps (frames 12 and 32)
FLASH_S = 0.12  # how long a flash / tone burst lasts
TONE_HZ = 1000.0


def has_encoder(name: str) -> bool:
    return name in av.codecs_available


def _frame_image(t: float, width: int, height: int, events: Sequence[float], rng: np.random.Generator,
                 noise: bool) -> np.ndarray:
    img = np.full((height, width, 3), 40, np.uint8)
    img[:, :, 2] = 90  # a bluish background so colour features are not all grey
    if noise:  # a little texture so the encoder sees something other than flat colour
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    img[:height // 8, :width // 8] = (200, 30, 30)  # a red mark top left, to tell orientation
    if any(e <= t < e + FLASH_S for e in events):
        h0, w0 = height // 4, width // 4
        img[h0:height - h0, w0:width - w0] = 250
    return img


def tone_track(duration_s: float, sample_rate: int, events: Sequence[float], offset_s: float = 0.0,
               channels: int = 2, seed: int = 0) -> np.ndarray:
    """(channels, samples) float32: faint noise with a tone burst at each event time + offset_s.
    Each burst starts at once and fades out over 20 ms, so only its start is an onset."""
    n = int(round(duration_s * sample_rate))
    rng = np.random.default_rng(seed)
    mono = (0.003 * rng.standard_normal(n)).astype(np.float32)
    t = np.arange(n) / sample_rate
    for e in events:
        start = e + offset_s
        on = (t >= start) & (t < start + FLASH_S)
        fade = np.clip((start + FLASH_S - t[on]) / 0.02, 0.0, 1.0)
        mono[on] += (0.5 * fade * np.sin(2 * np.pi * TONE_HZ * (t[on] - start))).astype(np.float32)
    return np.repeat(mono[None], channels, axis=0)


def make_clip(path: str | Path, duration_s: float = 2.0, fps: float = 25.0, size: tuple[int, int] = (64, 48),
              with_audio: bool = True, with_video: bool = True, events: Sequence[float] = EVENTS,
              audio_offset_s: float = 0.0, sample_rate: int = 44100, channels: int = 2,
              video_codec: str | None = None, audio_codec: str | None = None,
              frame_times: Sequence[float] | None = None, rotation: int = 0, noise: bool = True,
              audio_duration_s: float | None = None) -> Path:
    """Write a short clip: a bright square flashes at each event time, and a 1 kHz tone burst plays at
    each event time + ``audio_offset_s``. The container follows the suffix (.mp4, .mkv, .webm, ...).

    ``frame_times`` (seconds) gives irregular presentation times for a variable-frame-rate clip;
    ``audio_duration_s`` makes the sound track shorter or longer than the picture.
    Codecs default to H.264/AAC, or VP9/Opus for .webm.
    """
    path = Path(path)
    webm = path.suffix.lower() == ".webm"
    video_codec = video_codec or ("libvpx-vp9" if webm else "libx264")
    audio_codec = audio_codec or ("libopus" if webm else "aac")
    if audio_codec in ("libopus", "opus"):
        sample_rate = 48000
    rng = np.random.default_rng(1)
    width, height = size
    with av.open(str(path), "w") as out:
        vstream = astream = None
        if with_video:
            if frame_times is None:
                vstream = out.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1001))
            else:
                vstream = out.add_stream(video_codec, rate=1000)
                vstream.codec_context.time_base = Fraction(1, 1000)
            vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
            if video_codec == "libx264":
                vstream.options = {"preset": "ultrafast", "tune": "zerolatency"}
            elif "vpx" in video_codec:
                vstream.options = {"deadline": "realtime", "cpu-used": "8"}
            if rotation:
                vstream.set_display_rotation(rotation)
        if with_audio:
            astream = out.add_stream(audio_codec, rate=sample_rate)
            astream.layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        if vstream is not None:
            times = frame_times if frame_times is not None else [k / fps for k in range(int(round(duration_s * fps)))]
            for i, t in enumerate(times):
                frame = av.VideoFrame.from_ndarray(_frame_image(t, width, height, events, rng, noise), format="rgb24")
                if frame_times is not None:
                    frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
                else:
                    frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None:
            _write_audio(out, astream, tone_track(audio_duration_s or duration_s, sample_rate, events,
                                                  audio_offset_s, channels))
    return path


def _write_audio(out, astream, track: np.ndarray) -> None:
    channels, n = track.shape
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
    block = 1024
    for i in range(0, n, block):
        part = np.ascontiguousarray(track[:, i:i + block])
        if fmt in ("s16", "s16p"):
            part = (np.clip(part, -1, 1) * 32767).astype(np.int16)
        elif fmt in ("s32", "s32p"):
            part = (np.clip(part, -1, 1) * 2147483647).astype(np.int32)
        if not fmt.endswith("p"):  # packed formats interleave channels in one row
            part = part.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(part, format=fmt, layout=layout)
        frame.sample_rate, frame.pts = astream.codec_context.sample_rate, i
        out.mux(astream.encode(frame))
    out.mux(astream.encode(None))


def make_audio(path: str | Path, duration_s: float = 2.0, sample_rate: int = 44100, channels: int = 2,
               events: Sequence[float] = EVENTS, offset_s: float = 0.0, codec: str | None = None) -> Path:
    """Write an audio-only file (codec from the suffix: .wav PCM, .flac, .mp3, .m4a AAC, .opus/.ogg Opus)."""
    path = Path(path)
    suffix = path.suffix.lower()
    codec = codec or {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".m4a": "aac",
                      ".opus": "libopus", ".ogg": "libopus", ".mka": "aac"}[suffix]
    if codec in ("libopus", "opus"):
        sample_rate = 48000
    with av.open(str(path), "w") as out:
        astream = out.add_stream(codec, rate=sample_rate)
        astream.layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
        _write_audio(out, astream, tone_track(duration_s, sample_rate, events, offset_s, channels))
    return path


def faststart(src: str | Path, dst: str | Path) -> Path:
    """Remux with the index at the front, so a cut file still opens."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return Path(dst)


# ---------------------------------------------- shifted test audio, random names

def _noise_pad(audio: np.ndarray, n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """``n`` samples of the track's own background: pieces of its quietest stretch, in random order."""
    if n <= 0:
        return np.zeros(0, np.float32)
    win = max(1, min(len(audio), int(0.2 * sample_rate)))
    hop = max(1, win // 4)
    starts = np.arange(0, max(1, len(audio) - win + 1), hop)
    rms = np.array([np.mean(audio[s : s + win] ** 2) for s in starts])
    quiet = audio[starts[int(rms.argmin())] :][:win]
    if not len(quiet):
        return np.zeros(n, np.float32)
    pieces, have = [], 0
    while have < n:
        piece = np.roll(quiet, int(rng.integers(len(quiet))))
        if rng.random() < 0.5:
            piece = piece[::-1]
        pieces.append(piece)
        have += len(piece)
    return np.concatenate(pieces)[:n].astype(np.float32)


def shift_audio(audio: np.ndarray, offset_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The sound track as it would be if it started ``offset_s`` seconds into the video (negative:
    before it), kept at its length: cut at one end, padded at the other with its own background."""
    k = int(round(offset_s * sample_rate))
    n = len(audio)
    k = max(-n, min(n, k))
    if k >= 0:
        return np.concatenate([audio[k:], _noise_pad(audio, k, rng, sample_rate)])
    return np.concatenate([_noise_pad(audio, -k, rng, sample_rate), audio[: n + k]])


def random_names(rng: np.random.Generator, n: int, prefix: str, taken: set[str]) -> list[str]:
    """``n`` names of ``prefix`` and 8 random hex digits, none in ``taken`` (which gains them)."""
    names: list[str] = []
    while len(names) < n:
        name = prefix + "".join(rng.choice(list("0123456789abcdef"), 8))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names
