"""``avmatch mux``: each silent video written back with the audio found for it, in sync.

Reads a ``pairs.csv`` (``avmatch match``: video, audio, offset_s) or a ``placements.csv``
(``avmatch locate``: clip, recording, start_s) and, for every row with an audio, writes
``OUT/<video id><video's suffix>``: the video stream copied packet for packet (no re-encoding, PyAV
remux) and the audio cut and shifted so that it plays in sync — ``audio(t + shift)`` at video time
``t``, where ``shift`` is ``-offset_s`` for a pair and ``start_s`` for a placement (a row's
``drift_ppm``, when measured, stretches it: ``audio(shift + t * (1 + ppm / 1e6))``); silence where
the audio has nothing — encoded once (AAC; Opus in .webm). Outputs are written atomically.

``OUT/mux.json`` records what made each output (the video's and the audio's content identity, the
shift and the stretch): a rerun keeps an output only while all of that is unchanged and writes it
again otherwise; a file in OUT that mux did not write is never replaced, and OUT may not be (or lie
inside) an input folder. Files that fail are listed in ``OUT/failed.csv``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from avmatch.atomic import atomic_path, write_text
from avmatch.corpus import source_identity
from avmatch.errors import AvmatchError
from avmatch.features.job import find_media
from avmatch.media import encode_audio, iter_audio, probe
from avmatch.outputs import read_rows
from avmatch.progress import bar as progress_bar

AUDIO_CODEC = {".webm": ("libopus", 48000)}  # by container; any other: AAC at the audio's own rate
MAX_DRIFT_PPM = 10_000.0  # 1 %: a recorder's clock is off by at most a few hundred ppm
RECORD = "mux.json"  # what made each output, beside the outputs


@dataclass
class Job:
    video_id: str
    audio_id: str
    shift_s: float  # output audio at video time t is the source audio at t * stretch + shift_s
    stretch: float = 1.0  # 1 + drift: the source's seconds per second of video (a placement's drift_ppm)


def read_jobs(result_csv: str | Path) -> tuple[list[Job], list[str]]:
    """The rows of a pairs.csv or placements.csv that name an audio, as jobs; and the ids of the rows
    that name none (a video left unmatched, a refused take), which have nothing to be written with."""
    path = Path(result_csv)
    rows = read_rows(path, ())
    header = set(rows[0]) if rows else set()
    if not rows:
        return [], []
    if {"clip", "recording", "start_s"} <= header:
        video, audio = "clip", "recording"
        shift = lambda r: float(r["start_s"])  # noqa: E731
    elif {"video", "audio"} <= header:
        video, audio = "video", "audio"
        shift = lambda r: -float(r["offset_s"]) if r.get("offset_s") else 0.0  # noqa: E731
    else:
        raise AvmatchError("is neither a pairs.csv (video, audio, offset_s) nor a placements.csv (clip, recording, "
                           "start_s)", path)
    jobs, skipped = [], []
    for r in rows:
        if not r.get(audio):
            skipped.append(r.get(video) or "")
            continue
        if not r.get(video):
            raise AvmatchError(f"a row names the {audio} {r[audio]!r} but no {video}", path)
        try:
            s = shift(r)
        except ValueError:
            raise AvmatchError(f"the offset of {r[video]!r} is not a number", path) from None
        if not np.isfinite(s):
            raise AvmatchError(f"the offset of {r[video]!r} is not a finite number", path)
        try:
            ppm = float(r.get("drift_ppm") or "nan")
        except ValueError:
            raise AvmatchError(f"the drift_ppm of {r[video]!r} is not a number", path) from None
        if np.isfinite(ppm) and abs(ppm) > MAX_DRIFT_PPM:
            raise AvmatchError(f"the drift_ppm of {r[video]!r} ({ppm:g}) is beyond ±{MAX_DRIFT_PPM:g} ppm", path)
        if np.isinf(ppm):
            raise AvmatchError(f"the drift_ppm of {r[video]!r} is not a finite number", path)
        jobs.append(Job(r[video], r[audio], s, 1.0 + ppm * 1e-6 if np.isfinite(ppm) else 1.0))
    return jobs, skipped


def audio_segment(path: str | Path, start_s: float, duration_s: float, sample_rate: int,
                  stretch: float = 1.0) -> np.ndarray:
    """``duration_s`` of mono audio from ``start_s`` of the file (negative or past its end: silence
    there), decoded as a stream: only what precedes the segment is read, never the whole file.
    ``stretch`` != 1 reads ``duration_s * stretch`` seconds of the file into ``duration_s`` (a
    recorder whose clock drifts against the camera's), by linear interpolation."""
    if stretch != 1.0:
        n = int(round(duration_s * sample_rate))
        src = audio_segment(path, start_s, duration_s * stretch + 2.0 / sample_rate, sample_rate)
        return np.interp(np.arange(n) * stretch, np.arange(len(src)), src).astype(np.float32)
    n = int(round(duration_s * sample_rate))
    first = int(round(start_s * sample_rate))
    out = np.zeros(n, np.float32)
    at = 0  # sample position of the chunk in the file
    for chunk in iter_audio(path, sample_rate):
        lo, hi = max(at, first), min(at + len(chunk), first + n)
        if hi > lo:
            out[lo - first : hi - first] = chunk[lo - at : hi - at]
        at += len(chunk)
        if at >= first + n:
            break
    return out


def mux_one(video: str | Path, audio: str | Path, shift_s: float, out: str | Path, stretch: float = 1.0) -> Path:
    """Write ``out``: ``video``'s video stream copied, with ``audio`` shifted by ``shift_s`` (and
    stretched, see :func:`audio_segment`) as its sound."""
    video, out = Path(video), Path(out)
    info = probe(video)
    if info.video_duration_s is None and info.width is None:
        raise AvmatchError("has no video stream", video)
    audio_info = probe(audio)
    codec, rate = AUDIO_CODEC.get(out.suffix.lower(), ("aac", audio_info.sample_rate or 48000))
    duration_s = info.video_duration_s or info.duration_s
    if audio_info.duration_s is not None and (shift_s >= audio_info.duration_s or shift_s + duration_s * stretch <= 0):
        raise AvmatchError(f"the offset puts the audio ({audio_info.duration_s:.2f} s) wholly outside the video "
                           f"({duration_s:.2f} s, audio from {shift_s:+.2f} s): the track would be silent", audio)
    sound = audio_segment(audio, shift_s, duration_s, rate, stretch)
    with atomic_path(out) as tmp, av.open(str(video)) as src, \
            av.open(str(tmp), "w", format={".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}.get(out.suffix.lower())) as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream(codec, rate=rate)
        aout.layout = "mono"
        for packet in src.demux(vin):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = vout
            dst.mux(packet)
        encode_audio(dst, aout, sound)
    return out


def _inside(folder: Path, other: Path) -> bool:
    folder, other = folder.resolve(), other.resolve()
    return folder == other or other in folder.parents


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        return record if isinstance(record, dict) and isinstance(record.get("outputs"), dict) else {"outputs": {}}
    except (OSError, ValueError):
        return {"outputs": {}}


def mux(result_csv: str | Path, videos: str | Path, audios: str | Path, out_dir: str | Path,
        progress: bool = True) -> dict:
    """Write every video of ``result_csv`` with its audio into ``out_dir``. Returns
    {"written": [...], "kept": [...], "failed": {video id: why}, "skipped": [video ids the result gives no
    audio]}; the failures also go to failed.csv.
    An output is kept only where ``out_dir/mux.json`` says it was made from the same inputs."""
    out_dir = Path(out_dir)
    for folder in (videos, audios):
        if Path(folder).is_dir() and _inside(out_dir, Path(folder)):
            raise AvmatchError(f"is (or lies inside) the input folder {folder}: the outputs would mix with, or "
                               "stand in for, the inputs; give another -o", out_dir)
    jobs, skipped = read_jobs(result_csv)
    video_files = {cid: p for p, cid in find_media([videos])}
    audio_files = {cid: p for p, cid in find_media([audios])}
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / RECORD
    record = _read_record(record_path)
    done: dict = {"written": [], "kept": [], "failed": {}, "skipped": skipped}
    bar = progress_bar(len(jobs), "mux", "file", enabled=progress)
    for job in jobs:
        try:
            if job.video_id not in video_files:
                raise AvmatchError(f"no video file with id {job.video_id!r} under {videos}")
            if job.audio_id not in audio_files:
                raise AvmatchError(f"no audio file with id {job.audio_id!r} under {audios}")
            src, audio = video_files[job.video_id], audio_files[job.audio_id]
            target = out_dir / f"{job.video_id}{src.suffix}"
            had = record["outputs"].get(target.name)
            made_from = {**asdict(job), "video": source_identity(src, (had or {}).get("video")),
                         "audio": source_identity(audio, (had or {}).get("audio"))}
            if target.exists() and had is None:
                raise AvmatchError("is there already and was not written by mux; move it or give another -o", target)
            if target.exists() and had == made_from:
                done["kept"].append(target)
            else:
                done["written"].append(mux_one(src, audio, job.shift_s, target, job.stretch))
                record["outputs"][target.name] = made_from
                write_text(record_path, json.dumps(record, indent=1))
        except (AvmatchError, OSError, av.FFmpegError, ValueError) as err:
            done["failed"][job.video_id] = " ".join(str(err).split())[:300]
        bar.update(1)
    bar.close()
    failed_csv = out_dir / "failed.csv"
    if done["failed"]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["video", "error"])
        writer.writerows(sorted(done["failed"].items()))
        write_text(failed_csv, buf.getvalue())
        record["failed_csv"] = True
    elif record.get("failed_csv"):  # only the failed.csv mux wrote goes
        failed_csv.unlink(missing_ok=True)
        record["failed_csv"] = False
    write_text(record_path, json.dumps(record, indent=1))
    return done
