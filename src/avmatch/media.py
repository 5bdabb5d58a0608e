"""PyAV decoding: video frames and audio samples as numpy arrays, streamed and resampled; the one
writer of arrays as media files (:func:`write_media`); and the one process pool for media work
(:func:`process_pool`).

Nothing here holds a whole file: frames come out in chunks at a fixed frame rate and size, audio in
chunks of mono float32 at a fixed sample rate. Every problem with a file a user could hit (missing,
empty, not media, corrupt) becomes an :class:`AvmatchError` naming the file.

Time zero of a file is the earliest start of its video and audio streams, so the two streams of one
file stay in sync; for a file with one stream, that stream's start is time zero.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avmatch.atomic import atomic_path
from avmatch.errors import AvmatchError

OPEN_TIMEOUT_S = 20.0  # a local file never needs this; it bounds a stalled network mount or pipe
MAX_BAD_PACKETS = 50  # corrupt packets skipped before the file is called corrupt
MAX_PIXELS = 8192 * 4320  # 8K: a header claiming larger frames is refused before any frame is decoded
MAX_DURATION_S = 12 * 3600.0  # longer media (by its header or its timestamps) is refused: decoding is bounded
TIMESTAMP_SLACK_S = 5.0  # frames this far past the header's duration are corrupt timestamps, skipped
# Two frames further apart than this are a damaged timestamp, not a still picture: filling the gap would
# make hours of frames out of a few bytes (a 1.6 KB mkv whose fourth frame claimed 5 h took 4.4 GB)
MAX_FRAME_GAP_S = 60.0
FPS = 25.0  # write_media's default frame rate (the demo's generated scenes use it)
SAMPLE_RATE = 16000  # ... and its default sample rate

Size = tuple[int, int] | int | None


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a media file. Durations are in seconds from time zero."""

    path: str
    container: str
    has_video: bool
    has_audio: bool
    duration_s: float  # the longer of the two streams (or the container's duration)
    video_duration_s: float | None = None
    audio_duration_s: float | None = None
    fps: float | None = None  # average frame rate; variable-rate video is resampled when decoding
    width: int | None = None  # as displayed, i.e. after rotation
    height: int | None = None
    rotation: int = 0  # degrees counter-clockwise that the player turns the stored picture
    video_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    audio_codec: str | None = None
    start_s: float = 0.0  # time zero in the container's clock


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started fresh by a fork server, not forked from this one: a
    forked child inherits this process's state and can deadlock in it (after torch's threads have run;
    freeing a PyAV filter graph whose slice threads did not come along, seen in CI)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def _check_file(path: str | Path) -> str:
    path = str(path)
    if not os.path.exists(path):
        raise AvmatchError("no such file", path)
    if os.path.isdir(path):
        raise AvmatchError("is a folder, not a media file", path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # reading a pipe or a device may never end
        raise AvmatchError("is not a regular file (a pipe, socket or device); avmatch reads media files", path)
    if os.path.getsize(path) == 0:
        raise AvmatchError("empty file (0 bytes)", path)
    return path


def _first_line(err: BaseException) -> str:
    if isinstance(err, av.FFmpegError) and getattr(err, "strerror", None):
        return str(err.strerror)  # "Invalid data found when processing input", not the C call that said it
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def _check_video_size(stream, path: str) -> None:
    """Refuse a frame size in the header that no real clip has, before a decoder allocates it."""
    w, h = stream.codec_context.width, stream.codec_context.height
    if w and h and w * h > MAX_PIXELS:
        raise AvmatchError(f"its header says frames of {w}x{h} pixels; avmatch decodes at most "
                           f"{MAX_PIXELS / 1e6:.0f} megapixels (8K), so the file is corrupt or not a clip", path)


def _horizon_s(stream, container, start_s: float, path: str) -> float:
    """Latest timestamp (from time zero) a frame of ``stream`` may have: the header's duration plus a
    little, never more than MAX_DURATION_S. Decoding stops growing there whatever the timestamps say."""
    declared = _stream_duration(stream, container, start_s)
    if declared is not None and declared > MAX_DURATION_S:
        raise AvmatchError(f"lasts {_hours(declared)} by its header; avmatch reads media up to "
                           f"{_hours(MAX_DURATION_S)} (cut it first, or the header is corrupt)", path)
    if declared is None or declared <= 0:
        return MAX_DURATION_S
    return min(declared + max(TIMESTAMP_SLACK_S, 0.05 * declared), MAX_DURATION_S)


def _open(path: str | Path):
    path = _check_file(path)
    try:
        return av.open(path, timeout=OPEN_TIMEOUT_S, metadata_errors="replace")
    except (av.error.InvalidDataError, av.error.EOFError):
        raise AvmatchError("not a readable media file (unknown format, or corrupt/truncated)", path) from None
    except (av.FFmpegError, OSError, ValueError) as err:
        if getattr(err, "errno", None) == errno.EIO:  # ffmpeg's answer to a header that stops short
            raise AvmatchError("not a readable media file (its header is truncated or corrupt)", path) from None
        raise AvmatchError(f"cannot open media: {_first_line(err)}", path) from None


def _video_stream(container):
    """The first real video stream: cover art in a music file (an attached picture) is not video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _start_s(container) -> float:
    """Time zero: the earliest start among the video and audio streams."""
    streams = [_video_stream(container), container.streams.audio[0] if container.streams.audio else None]
    starts = [_seconds(s.start_time, s.time_base) for s in streams if s is not None]
    starts = [s for s in starts if s is not None]
    return min(starts) if starts else 0.0


def _stream_duration(stream, container, start_s: float) -> float | None:
    d = _seconds(stream.duration, stream.time_base)
    if d is None and container.duration is not None:
        # Matroska and friends give only the container duration, counted from its own start.
        cstart = (container.start_time or 0) / av.time_base
        d = container.duration / av.time_base + cstart - start_s
    if d is not None:
        own_start = _seconds(stream.start_time, stream.time_base)
        d += (own_start - start_s) if own_start is not None else 0.0
    return max(d, 0.0) if d is not None else None


def _decode(container, streams: list, path: str) -> Iterator[tuple[int, object]]:
    """(stream index, frame) for the given streams in file order, skipping a bounded number of corrupt
    packets. Garbage the demuxer meets after some frames were decoded ends the stream early (a
    truncated file gives what it holds); garbage before any frame is an error."""
    bad = 0
    decoded = False
    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.EOFError):
            return
        except av.FFmpegError as err:
            if decoded:
                return
            raise AvmatchError(f"corrupt media: {_first_line(err)}", path) from None
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                raise AvmatchError(f"corrupt media: more than {MAX_BAD_PACKETS} undecodable packets",
                                   path) from None
            continue
        except av.FFmpegError as err:
            raise AvmatchError(f"cannot decode its {packet.stream.type} stream (corrupt or unsupported data: "
                               f"{_first_line(err)})", path) from None
        for frame in frames:
            decoded = True
            yield packet.stream.index, frame


def probe(path: str | Path) -> MediaInfo:
    """Streams, durations, frame rate, size and sample rate of a media file. Decodes the first frame of
    each stream, so a file that opens but cannot be decoded is reported here, not halfway through."""
    path = _check_file(path)
    with _open(path) as container:
        video = _video_stream(container)
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise AvmatchError("has neither a video nor an audio stream", path)
        start_s = _start_s(container)
        if video is not None:
            _check_video_size(video, path)
        for s in (video, audio):
            if s is not None:
                _horizon_s(s, container, start_s, path)
        info: dict = dict(path=path, container=container.format.name, has_video=video is not None,
                          has_audio=audio is not None, start_s=start_s)
        firsts = _first_frames(container, [s for s in (video, audio) if s is not None], path)
        if video is not None:
            first = firsts[video.index]
            rate = video.average_rate or video.guessed_rate
            rotation = _rotation(first)
            w, h = first.width, first.height
            if rotation % 180:
                w, h = h, w
            info.update(video_duration_s=_stream_duration(video, container, start_s),
                        fps=float(rate) if rate else None, width=w, height=h, rotation=rotation,
                        video_codec=video.codec_context.name)
        if audio is not None:
            info.update(audio_duration_s=_stream_duration(audio, container, start_s),
                        sample_rate=audio.codec_context.sample_rate, channels=audio.codec_context.channels,
                        audio_codec=audio.codec_context.name)
    durations = [d for d in (info.get("video_duration_s"), info.get("audio_duration_s")) if d is not None]
    info["duration_s"] = max(durations) if durations else 0.0
    return MediaInfo(**info)


def _first_frames(container, streams, path: str) -> dict:
    """The first decoded frame of each stream, by stream index."""
    firsts: dict = {}
    for index, frame in _decode(container, streams, path):
        firsts.setdefault(index, frame)
        if len(firsts) == len(streams):
            return firsts
    for s in streams:
        if s.index not in firsts:
            raise AvmatchError(f"corrupt media: its {s.type} stream has no decodable frame", path)
    return firsts


def _rotation(frame) -> int:
    try:
        return int(round((frame.rotation or 0) / 90.0)) * 90 % 360
    except (AttributeError, ValueError, TypeError):
        return 0


def _target_size(size: Size, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the output frames as displayed."""
    if size is None:
        return width, height
    if isinstance(size, int):
        scale = size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return int(size[0]), int(size[1])


def iter_video_frames(path: str | Path, fps: float = 25.0, size: Size = None, gray: bool = False,
                      chunk: int = 64, interpolation: str = "AREA") -> Iterator[np.ndarray]:
    """Video frames at a constant ``fps`` and size, in chunks of uint8 arrays (n, H, W) when ``gray``
    else (n, H, W, 3) RGB.

    ``size`` is (width, height) as displayed, or an int for the short side (aspect kept), or None for
    the stored size. Output frame k shows time k / fps: the latest decoded frame whose presentation
    time is <= k / fps, so variable-frame-rate video comes out evenly spaced. Rotation metadata is
    honoured (multiples of 90 degrees).
    """
    path = _check_file(path)
    if not fps > 0 or chunk < 1:
        raise ValueError(f"fps and chunk must be positive, got fps={fps}, chunk={chunk}")
    fmt = "gray" if gray else "rgb24"
    with _open(path) as container:
        stream = _video_stream(container)
        if stream is None:
            raise AvmatchError("has no video stream", path)
        _check_video_size(stream, path)
        stream.thread_type = "AUTO"
        start_s = _start_s(container)
        horizon = _horizon_s(stream, container, start_s, path)
        step = 1.0 / fps
        k = 0  # next output frame
        buf: list[np.ndarray] = []
        prev = None  # (decoded frame, its array once converted)
        last_t = None
        last_gap = None
        shape = None  # (out_w, out_h, rotation)
        # One reformatter for the whole stream keeps its scaler: a fresh one per frame costs 10x more.
        reformatter = VideoReformatter()

        def convert(frame) -> np.ndarray:
            nonlocal shape
            if shape is None:
                rotation = _rotation(frame)
                w, h = frame.width, frame.height
                if rotation % 180:
                    w, h = h, w
                shape = (*_target_size(size, w, h), rotation)
            out_w, out_h, rotation = shape
            enc_w, enc_h = (out_h, out_w) if rotation % 180 else (out_w, out_h)
            img = reformatter.reformat(frame, enc_w, enc_h, fmt, interpolation=interpolation).to_ndarray()
            if rotation:
                img = np.ascontiguousarray(np.rot90(img, rotation // 90))
            return img

        def emit(item) -> Iterator[np.ndarray]:
            nonlocal buf
            if item[1] is None:
                item[1] = convert(item[0])
            buf.append(item[1])
            if len(buf) >= chunk:
                yield np.stack(buf)
                buf = []

        for _, frame in _decode(container, [stream], path):
            if frame.pts is None:
                t = (last_t + (last_gap or step)) if last_t is not None else 0.0
            else:
                t = float(frame.pts * (frame.time_base or stream.time_base)) - start_s
            if last_t is not None and t <= last_t:  # out of order or duplicate timestamp: keep the first
                continue
            if t > horizon:  # a timestamp past the header's end (a damaged file): filling up to it never ends
                continue
            if last_t is not None:
                last_gap = t - last_t
                if last_gap > MAX_FRAME_GAP_S:
                    raise AvmatchError(f"corrupt timestamps: a frame at {_hours(t)} follows one at {_hours(last_t)}; "
                                       f"avmatch fills gaps of at most {MAX_FRAME_GAP_S:.0f} s", path)
            item = [frame, None]
            # Output times before this frame show the previous one (or this one, before the first frame).
            while k * step < t - 1e-6:
                yield from emit(prev if prev is not None else item)
                k += 1
            prev, last_t = item, t
        if prev is None:
            raise AvmatchError("corrupt media: its video stream has no decodable frame", path)
        duration = prev[0].duration
        last_len = (float(duration * (prev[0].time_base or stream.time_base)) if duration else 0.0) or last_gap or step
        while k * step < last_t + last_len - 1e-6:
            yield from emit(prev)
            k += 1
        if buf:
            yield np.stack(buf)


def read_video(path: str | Path, fps: float = 25.0, size: Size = None, gray: bool = False) -> np.ndarray:
    """All frames at once (see :func:`iter_video_frames`): only for short clips."""
    chunks = list(iter_video_frames(path, fps=fps, size=size, gray=gray))
    return np.concatenate(chunks)


def iter_audio(path: str | Path, sample_rate: int = 16000, chunk_s: float = 10.0) -> Iterator[np.ndarray]:
    """The first audio stream as mono float32 at ``sample_rate``, in chunks of about ``chunk_s``
    seconds. Any channel layout (5.1 too) is down-mixed. Sample 0 is time zero of the file: a stream
    that starts later is preceded by silence."""
    path = _check_file(path)
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    chunk_n = max(1, int(chunk_s * sample_rate))
    frame_n = max(1, min(chunk_n, sample_rate // 10))  # fewer, larger resampled frames: less overhead
    with _open(path) as container:
        if not container.streams.audio:
            raise AvmatchError("has no audio stream", path)
        stream = container.streams.audio[0]
        start_s = _start_s(container)
        horizon = _horizon_s(stream, container, start_s, path)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, frame_size=frame_n)
        # Encoders pad the last packet (AAC: up to 1024 samples). An MP4 track's duration is exact and
        # says where the sound really ends; elsewhere a duration may be a guess from the bit rate.
        exact = "mp4" in container.format.name and stream.duration is not None
        end_s = _stream_duration(stream, container, start_s) if exact else None
        room = round(end_s * sample_rate) if end_s else None  # samples still allowed
        parts: list[np.ndarray] = []
        held = 0
        skip = 0  # samples before time zero still to drop
        first = True

        def take(frames) -> None:
            nonlocal held, skip, room
            for f in frames:
                a = f.to_ndarray().reshape(-1)
                if skip:
                    cut = min(skip, a.size)
                    a, skip = a[cut:], skip - cut
                if room is not None:
                    a = a[:room]
                    room -= a.size
                if a.size:
                    parts.append(a)
                    held += a.size

        def drain(final: bool) -> Iterator[np.ndarray]:
            nonlocal parts, held
            if held >= chunk_n or (final and held):
                whole = np.concatenate(parts) if len(parts) > 1 else parts[0]
                cut = held if final else (held // chunk_n) * chunk_n
                for i in range(0, cut, chunk_n):
                    yield np.ascontiguousarray(whole[i:i + chunk_n], dtype=np.float32)
                parts = [whole[cut:]] if cut < held else []
                held -= cut

        for _, frame in _decode(container, [stream], path):
            if first:
                first = False
                if frame.pts is not None:
                    lead_s = float(frame.pts * (frame.time_base or stream.time_base)) - start_s
                    if lead_s > horizon:
                        raise AvmatchError(f"corrupt media: its first sound is stamped {_hours(lead_s)} in, past the "
                                           "end its header gives", path)
                    lead = round(lead_s * sample_rate)
                    if lead > 0:
                        parts.append(np.zeros(lead, np.float32))
                        held += lead
                        room = None if room is None else max(room - lead, 0)
                    else:
                        skip = -lead
            try:
                take(resampler.resample(frame))
            except ValueError:  # format or rate changed mid-stream: start a fresh resampler
                take(resampler.resample(None))
                resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, frame_size=frame_n)
                take(resampler.resample(frame))
            yield from drain(False)
        if first:
            raise AvmatchError("corrupt media: its audio stream has no decodable frame", path)
        take(resampler.resample(None))
        yield from drain(True)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """The whole audio track as one mono float32 array (see :func:`iter_audio`)."""
    chunks = list(iter_audio(path, sample_rate=sample_rate))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def encode_audio(container, stream, audio: np.ndarray) -> None:
    """Encode mono float audio in [-1, 1] into an open output ``stream`` of ``container`` (the
    encoder's frame size, its sample format: float, or 16-bit for PCM-like encoders) and flush it."""
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    block = stream.codec_context.frame_size or 1024
    rate = stream.codec_context.sample_rate
    for i in range(0, len(audio), block):
        part = np.ascontiguousarray(audio[None, i : i + block], dtype=np.float32)
        if fmt in ("s16", "s16p"):
            part = (np.clip(part, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(part, format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames (float in [0, 1]) as 8-bit pixels."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_media(path: str | Path, frames: np.ndarray | None, audio: np.ndarray | None, fps: float = FPS,
                sample_rate: int = SAMPLE_RATE, audio_codec: str | None = None, audio_bit_rate: int | None = None) -> Path:
    """Write frames ((N, H, W, 3) float in [0, 1]) and/or mono audio to ``path`` (atomically).

    .mp4: H.264 (ultrafast) + AAC; .wav: 16-bit PCM; .m4a: AAC; .flac: FLAC; .mp3: MP3 (LAME);
    .opus: Opus. ``audio_codec`` (``pcm_mulaw`` in a .wav) and ``audio_bit_rate`` (bit/s) override those.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format={".m4a": "mp4", ".mp4": "mp4"}.get(suffix)) as out:
        vstream = astream = None
        if frames is not None:
            if frames.shape[1] % 2 or frames.shape[2] % 2:
                raise ValueError(f"H.264 (4:2:0) needs an even width and height, got {frames.shape[2]}x{frames.shape[1]}")
            vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vstream.height, vstream.width = frames.shape[1:3]
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"preset": "ultrafast", "tune": "zerolatency"}
            vstream.thread_count = 1
        if audio is not None:
            codec = audio_codec or {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame",
                                    ".opus": "libopus"}.get(suffix, "aac")
            astream = out.add_stream(codec, rate=sample_rate)
            astream.layout = "mono"
            if codec == "aac":
                astream.bit_rate = 64000
                astream.options = {"aac_coder": "fast"}
            if codec == "libmp3lame":
                astream.format = "fltp"  # LAME's default, s32p, is not a format encode_audio writes
            if audio_bit_rate:
                astream.bit_rate = audio_bit_rate
        if vstream is not None:
            pixels = to_uint8(frames)
            for i, img in enumerate(pixels):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None:
            encode_audio(out, astream, audio)
    return path
