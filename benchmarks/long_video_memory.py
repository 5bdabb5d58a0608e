"""Peak memory of extracting one long video with the ``default`` extractor. Prints numbers only.

    python benchmarks/long_video_memory.py [--minutes 120] [--size 160x120] [--keep PATH]

Writes a long synthetic video (H.264 ultrafast + AAC, encoded frame by frame, so writing it holds no
more than a frame), then extracts it in a child process (a fresh interpreter: its peak RSS is the
extraction's alone) and reports the child's peak resident memory and the time. Target: < 1 GiB for
two hours. The child prints its own peak after each step, to tell which step needs the memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 44100

CHILD = r"""
import json, resource, sys, time
from avmatch.features import get_extractor
from avmatch.media import probe

path, name = sys.argv[1], sys.argv[2]
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
out = {"start_mib": peak()}
extractor = get_extractor(name)
t = time.perf_counter(); info = probe(path); out["probe_s"] = time.perf_counter() - t
t = time.perf_counter(); video = extractor.video(path)
out.update(video_s=time.perf_counter() - t, video_shape=list(video.shape), video_mib=video.nbytes / 2**20,
           after_video_mib=peak())
del video
t = time.perf_counter(); audio = extractor.audio(path)
out.update(audio_s=time.perf_counter() - t, audio_shape=list(audio.shape), audio_mib=audio.nbytes / 2**20,
           after_audio_mib=peak())
print(json.dumps(out))
"""


def write_long_video(path: Path, minutes: float, size: tuple[int, int], fps: int = 25, seed: int = 0) -> float:
    """A moving square and a flash every few seconds, a tone burst with each flash, over faint noise.
    Frame by frame and block by block: memory stays flat whatever the length. Returns seconds written."""
    rng = np.random.default_rng(seed)
    width, height = size
    n_frames = int(round(minutes * 60 * fps))
    base = np.full((height, width, 3), (40, 40, 90), np.uint8)
    block = 1024
    noise = (0.003 * rng.standard_normal((16, block))).astype(np.float32)  # reused noise blocks
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(int(0.12 * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)
    events = np.cumsum(rng.uniform(1.0, 4.0, int(minutes * 60) + 2))  # seconds, one every 1-4 s
    event_frames = set(np.round(events * fps).astype(int).tolist())
    with av.open(str(path), "w") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        astream = out.add_stream("aac", rate=SAMPLE_RATE)
        astream.layout = "stereo"
        fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
        audio_pts = 0
        flash_left = 0
        next_event = 0
        for i in range(n_frames):
            img = base.copy()
            x = (i * 2) % max(1, width - 16)
            img[height // 3:height // 3 + 16, x:x + 16] = (200, 30, 30)
            if i in event_frames:
                flash_left = 3
            if flash_left:
                img[height // 4:-height // 4, width // 4:-width // 4] = 250
                flash_left -= 1
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(vstream.encode(frame))
            while audio_pts < (i + 1) * SAMPLE_RATE / fps:  # keep the sound track level with the picture
                mono = noise[(audio_pts // block) % len(noise)].copy()
                t0 = audio_pts / SAMPLE_RATE
                while next_event < len(events) and events[next_event] + 0.12 < t0:
                    next_event += 1
                if next_event < len(events):
                    start = int(round(events[next_event] * SAMPLE_RATE)) - audio_pts
                    lo, hi = max(start, 0), min(start + len(tone), block)
                    if lo < hi:
                        mono[lo:hi] += tone[lo - start:hi - start]
                stereo = np.repeat(mono[None], 2, axis=0)
                if not fmt.endswith("p"):
                    stereo = stereo.T.reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo), format=fmt, layout="stereo")
                aframe.sample_rate, aframe.pts = SAMPLE_RATE, audio_pts
                aframe.time_base = Fraction(1, SAMPLE_RATE)
                out.mux(astream.encode(aframe))
                audio_pts += block
        out.mux(vstream.encode(None))
        out.mux(astream.encode(None))
    return n_frames / fps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT")
    parser.add_argument("--extractor", default="default")
    parser.add_argument("--keep", default=None, help="write the video here and keep it (reused if it exists)")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))

    root = Path(tempfile.mkdtemp(prefix="avmatch-long-"))
    try:
        path = Path(args.keep) if args.keep else root / "long.mp4"
        if not path.exists():
            t = time.perf_counter()
            seconds = write_long_video(path, args.minutes, size)
            print(f"wrote {seconds / 60:.0f} min at {size[0]}x{size[1]} ({path.stat().st_size / 2**20:.0f} MiB) "
                  f"in {time.perf_counter() - t:.0f} s; writer peak RSS "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(path), args.extractor], capture_output=True,
                              text=True)
        wall = time.perf_counter() - t
        if done.returncode:
            print(done.stderr.strip()[-2000:])
            raise SystemExit(f"extraction failed with status {done.returncode}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mib = usage.ru_maxrss / 1024
        print(f"extract ({args.extractor}): {wall:.0f} s wall, {usage.ru_utime + usage.ru_stime:.0f} CPU s "
              f"(video {child['video_s']:.0f} s, audio {child['audio_s']:.0f} s)")
        print(f"features: video {child['video_shape']} ({child['video_mib']:.0f} MiB), "
              f"audio {child['audio_shape']} ({child['audio_mib']:.0f} MiB)")
        print(f"child peak RSS: {peak_mib:.0f} MiB (after imports {child['start_mib']:.0f}, after video "
              f"{child['after_video_mib']:.0f}, after audio {child['after_audio_mib']:.0f})  target < 1024 MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
