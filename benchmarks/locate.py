"""Locate: short silent clips placed inside long recordings. Prints what it measured; asserts nothing.

    python benchmarks/locate.py [-o DIR [--reuse]] [--recordings 16] [--minutes 0.67,5] [--clips-per-recording 8]
                                [--decoys 16] [--models default[,RUN,...]] [--tune 400] [--sources a,b] [--adapt 1]
                                [--single 16] [--drift-minutes 10 --drift-ppm 150] [--scale-hours 100 --scale-clips 1000]

Accuracy: ``--recordings`` long scenes (40 s to 5 minutes by default; the issue's four kinds first:
bouncing-ball impacts, a blinking lamp, a lit keyboard, a face speaking real recorded voices, then
drums, lips, an eSpeak face, a pendulum) are rendered; their sound becomes a recording, in turn wav,
flac, mp3 (24 kbit/s), AAC (.m4a) and Opus, and silent clips of 4-10 s are cut from their pictures at
random places. Decoys are clips of scenes of the same families that were never recorded. Each model
of ``--models`` locates them all at the default ``--min-confidence``; printed per model: the share of
placeable clips placed right (right recording, start within 40 ms) and whose best place is right,
the share of decoys refused, calibration (of the placements given confidence >= 0.9, the share
right; by confidence band; the calibration error over ten bands), what other thresholds would give,
per family and per format. A model trained without some families and voices (generalise.py's
``run-unseen``) with ``--sources`` naming voices it never heard is the zero-shot case. ``--tune N``
(default 400) adds the fine-tuned case: ``avmatch train``'s defaults (the shipped model, fine-tuned) on
N paired 4 s clips of the same families, other scenes than the recordings'.

With ``--adapt N`` (default 1) each model also locates with ``locate --adapt N``: the model fine-tuned
on the takes it placed surely, then every take placed again.

Long offsets: one take of up to 60 s cut from each recording's picture; ``avmatch match`` pairs the
takes with the recordings with ``--max-offset`` as long as the longest recording (an FFT search over
minutes of lag): the share paired right and whose offset is within 40 ms.

A new user's first try (``--single N``, default 16): one recording of 40 s, three 6 s takes cut from it
and one take of a scene nobody recorded, located on their own, N times (the families in turn): the
takes placed right and the unrecorded takes refused. So few places are little null to judge a place
by: locate searches shuffled copies of each take as well (see ``matching/locate.py``).

Drift: takes of ``--drift-minutes`` from recorders whose clocks run ``--drift-ppm`` fast, as fast
backwards and half as fast; the drift locate measures against the truth.

Scale: the recordings' features tiled (with a little noise, so no two copies are identical) to
``--scale-hours`` of audio in 20 recordings, and ``--scale-clips`` clips located in them: seconds and
the peak memory of a process that only loads the model and the features and locates (extraction
excluded). It measures time and memory, not accuracy (the tiles repeat).

Targets (issue 23): takes placed right >= 0.95 and decoys refused >= 0.95 at the default threshold;
of placements at confidence >= 0.9, >= 0.98 right; calibration error <= 0.05; 1,000 takes in 100 h of
recordings in <= 30 minutes and <= 4 GiB on 2 CPU cores; drift within 5 ppm on 10-minute takes at 150 ppm.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

# the four kinds first (impacts, a lamp, a keyboard, a face with real recorded voices), then others
FAMILIES = [("scenes", "bounce"), ("scenes", "lamps"), ("worlds", "keys"), ("scenes", "voices"),
            ("worlds", "drums"), ("worlds", "talk"), ("scenes", "speech"), ("worlds", "pendulum")]
FORMATS = [(".wav", None, None), (".flac", None, None), (".mp3", None, 24000), (".m4a", None, None),
           (".opus", None, None)]


def generate(root: Path, n_rec: int, minutes: tuple[float, float], per_rec: int, n_decoys: int, seed: int) -> dict:
    from avmatch.demo import scenes, worlds
    from avmatch.media import write_media

    gens = {"scenes": scenes, "worlds": worlds}
    rng = np.random.default_rng(seed)
    truth = {}
    for r in range(n_rec):
        gen, family = FAMILIES[r % len(FAMILIES)]
        minutes_r = float(rng.uniform(*minutes))
        scene = gens[gen].make_scene([seed, r], family, duration_s=60.0 * minutes_r, size=(64, 64))
        suffix, codec, bit_rate = FORMATS[r % len(FORMATS)]
        name = f"rec{r:02d}"
        write_media(root / "recordings" / f"{name}{suffix}", None, scene.audio, sample_rate=scene.sample_rate,
                    audio_codec=codec, audio_bit_rate=bit_rate)
        for j in range(per_rec):
            dur = float(rng.uniform(4.0, 10.0))
            first = int(rng.integers(0, len(scene.frames) - int(dur * scene.fps)))
            clip = f"{name}-c{j:02d}"
            write_media(root / "clips" / f"{clip}.mp4", scene.frames[first : first + int(dur * scene.fps)], None)
            truth[clip] = {"recording": name, "start_s": first / scene.fps, "family": f"{gen}:{family}",
                           "format": suffix.lstrip(".") + (f"-{bit_rate // 1000}k" if bit_rate else "")}
        take = min(60.0, 0.5 * len(scene.frames) / scene.fps)  # one long take per recording, for match
        first = int(rng.integers(0, len(scene.frames) - int(take * scene.fps)))
        write_media(root / "takes" / f"{name}-take.mp4", scene.frames[first : first + int(take * scene.fps)], None)
        truth[f"{name}-take"] = {"recording": name, "start_s": first / scene.fps, "take": True}
        print(f"  {name}: {gen}:{family}, {minutes_r:.1f} min, {suffix}", flush=True)
    for d in range(n_decoys):
        gen, family = FAMILIES[d % len(FAMILIES)]
        scene = gens[gen].make_scene([seed + 1, 1000 + d], family, duration_s=float(rng.uniform(4.0, 10.0)), size=(64, 64))
        write_media(root / "clips" / f"decoy{d:02d}.mp4", scene.frames, None)
        truth[f"decoy{d:02d}"] = {"recording": "", "family": f"{gen}:{family}", "format": ""}
    return truth


def tune(root: Path, n: int, seed: int, start: str = "") -> Path:
    """``n`` paired 4 s clips of FAMILIES (seeds apart from the recordings'), extracted, and the shipped
    model (or the run ``start``: ``--init``) fine-tuned on them by ``avmatch train``'s defaults, as a
    user with paired clips of these kinds of scene would; returns the run folder."""
    import subprocess
    import sys

    from avmatch.demo import scenes, worlds
    from avmatch.features.job import extract

    run = root / ("tuned" if not start else f"tuned-from-{Path(start).name}")
    if (run / "best.pt").is_file():
        return run
    gens = {"scenes": scenes, "worlds": worlds}
    for k, gen in enumerate(gens if not (root / "feats" / "tune" / "manifest.jsonl").is_file() else ()):
        families = [f for g, f in FAMILIES if g == gen]
        gens[gen].make_corpus(root / "tune" / gen, n // 2 + (n % 2) * (1 - k), 4.0, seed + 7, (64, 64),
                              first=5_000_000 * (k + 1), families=families, workers=2)
    extract([root / "tune"], root / "feats" / "tune", "default", workers=2, paired=True, progress=False)
    done = subprocess.run([sys.executable, "-m", "avmatch", "train", str(root / "feats" / "tune"), "-o", str(run),
                           *(("--init", start) if start else ())], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"avmatch train failed: {done.stderr[-400:]}")
    print(done.stdout.strip(), flush=True)
    return run


def on_time(found_s: float, true_s: float) -> bool:
    """A place (or offset) right to within 40 ms of the truth (and a float's rounding)."""
    return abs(found_s - true_s) <= 0.040 + 1e-9


def generate_single(root: Path, trials: int, seed: int) -> dict:
    """A new user's first try, ``trials`` times (the families in turn): one recording of 40 s, three
    6 s takes cut from it and one take of a scene nobody recorded, in a folder of their own."""
    from avmatch.demo import scenes, worlds
    from avmatch.media import write_media

    gens = {"scenes": scenes, "worlds": worlds}
    rng = np.random.default_rng(seed + 2)
    truth = {}
    for t in range(trials):
        gen, family = FAMILIES[t % len(FAMILIES)]
        scene = gens[gen].make_scene([seed + 2, t], family, duration_s=40.0, size=(64, 64))
        folder = root / "single" / f"trial{t:02d}"
        write_media(folder / "recordings" / "day.wav", None, scene.audio, sample_rate=scene.sample_rate)
        takes = {}
        for j in range(3):
            first = int(rng.integers(0, len(scene.frames) - int(6 * scene.fps)))
            write_media(folder / "takes" / f"t{j}.mp4", scene.frames[first : first + int(6 * scene.fps)], None)
            takes[f"t{j}"] = first / scene.fps
        other = gens[gen].make_scene([seed + 3, t], family, duration_s=6.0, size=(64, 64))
        write_media(folder / "takes" / "other.mp4", other.frames, None)
        truth[f"trial{t:02d}"] = {"family": f"{gen}:{family}", "takes": takes}
    return truth


def single_runs(model, root: Path, truth: dict) -> dict:
    """Each trial of :func:`generate_single` located on its own, at the default threshold."""
    right, refused, families = 0, 0, {}
    for trial, v in truth.items():
        folder = root / "single" / trial
        placed = {p.clip: p for p in model.locate(folder / "takes", folder / "recordings")}
        ok = sum(placed[k].recording == "day" and on_time(placed[k].start_s, s) for k, s in v["takes"].items())
        right += ok
        refused += not placed["other"].recording
        families.setdefault(v["family"], []).append(ok / len(v["takes"]))
    return {"trials": len(truth), "takes placed right": right / (3 * len(truth)),
            "unrecorded refused": refused / len(truth),
            "placed right by family": {f: float(np.mean(x)) for f, x in sorted(families.items())}}


DRIFT_FAMILIES = [("scenes", "bounce"), ("worlds", "keys"), ("scenes", "voices")]


def generate_drift(root: Path, minutes: float, ppm: float, seed: int) -> dict:
    """Takes of ``minutes`` cut from scenes whose recorder's clock runs ``ppm`` fast, slow and half as
    fast: a sound at scene time s lies at recording time s * (1 + ppm * 1e-6)."""
    from avmatch.demo import scenes, worlds
    from avmatch.media import write_media

    gens = {"scenes": scenes, "worlds": worlds}
    truth = {}
    for i, ((gen, family), rate_ppm) in enumerate(zip(DRIFT_FAMILIES, (ppm, -ppm, ppm / 2), strict=True)):
        scene = gens[gen].make_scene([seed, 5000 + i], family, duration_s=60.0 * minutes + 30.0, size=(64, 64))
        k = 1 + rate_ppm * 1e-6
        audio = np.interp(np.arange(int(len(scene.audio) * k)) / k, np.arange(len(scene.audio)), scene.audio)
        write_media(root / "drift" / "recordings" / f"d{i}.flac", None, audio.astype(np.float32),
                    sample_rate=scene.sample_rate)
        first = int(15.0 * scene.fps)
        write_media(root / "drift" / "takes" / f"d{i}.mp4", scene.frames[first : first + int(60 * minutes * scene.fps)],
                    None, fps=scene.fps)
        truth[f"d{i}"] = {"recording": f"d{i}", "start_s": 15.0 * k, "ppm": rate_ppm, "family": f"{gen}:{family}"}
    return truth


def accuracy(placements, truth: dict) -> dict:
    truth = {k: v for k, v in truth.items() if not v.get("take")}
    placeable = {k: v for k, v in truth.items() if v["recording"]}
    by = {p.clip: p for p in placements}
    right = {k: by[k].recording == v["recording"] and on_time(by[k].start_s, v["start_s"])
             for k, v in placeable.items()}
    decoys = [k for k, v in truth.items() if not v["recording"]]
    conf = np.array([by[k].confidence for k in truth])
    ok = np.array([right.get(k, not by[k].recording) for k in truth])  # a decoy is right when refused
    sure = conf >= 0.9
    best_right = {k: by[k].best_recording == v["recording"] and on_time(by[k].start_s, v["start_s"])
                  for k, v in placeable.items()}  # the best place, whether placed or refused
    bands = {}
    for lo, hi in ((0.0, 0.5), (0.5, 0.9), (0.9, 0.99), (0.99, 1.01)):
        m = (conf >= lo) & (conf < hi)
        # a placement in the band is right if placed right; a decoy's best place is always wrong
        bands[f"{lo:g}-{min(hi, 1):g}"] = {"n": int(m.sum()), "best place right": float(
            np.mean([best_right.get(k, False) for k, keep in zip(truth, m, strict=True) if keep])) if m.any() else None}
    # calibration error: |mean confidence - share whose best place is right| over ten bands, weighted by
    # their counts (a decoy's best place is never right)
    best_ok = np.array([best_right.get(k, False) for k in truth])
    edges = np.minimum(np.floor(conf * 10), 9)
    ece = sum((edges == b).sum() / len(conf) * abs(conf[edges == b].mean() - best_ok[edges == b].mean())
              for b in range(10) if (edges == b).any())
    out = {"placeable": len(placeable), "placed right": float(np.mean(list(right.values()))),
           "best place right": float(np.mean(list(best_right.values()))), "calibration error": round(float(ece), 3),
           "decoys": len(decoys), "decoys refused": float(np.mean([not by[k].recording for k in decoys])) if decoys else None,
           "right among confidence >= 0.9": float(ok[sure].mean()) if sure.any() else None, "n confidence >= 0.9": int(sure.sum()),
           "by confidence band": bands}
    for thr in (0.5, 0.9, 0.99):  # what other --min-confidence values would have given
        placed = {k: by[k].confidence >= thr for k in truth}
        out[f"at min-confidence {thr:g}"] = {
            "placed right": float(np.mean([placed[k] and best_right[k] for k in placeable])),
            "decoys refused": float(np.mean([not placed[k] for k in decoys])) if decoys else None}
    for key in ("family", "format"):
        groups = sorted({v[key] for v in placeable.values()})
        out[f"placed right by {key}"] = {g: float(np.mean([right[k] for k, v in placeable.items() if v[key] == g]))
                                         for g in groups}
    return out


def scale_worker(model: str, recordings: str, clips: str, hours: float, n_clips: int, queue) -> None:
    """In a fresh process: tile the recordings' features to ``hours``, locate ``n_clips`` clips."""
    import dataclasses

    import avmatch
    from avmatch.corpus import load_corpus
    from avmatch.matching.locate import locate

    m = avmatch.load(model)
    recs, cl = load_corpus(recordings), load_corpus(clips)
    rng = np.random.default_rng(0)
    base = np.concatenate([c.audio for c in recs.clips if c.audio is not None])
    n = int(hours * 3600 * recs.audio_rate_hz)
    per = max(1, n // 20)  # 20 recordings of hours / 20 each
    tiled = []
    for i in range(20):
        reps = np.resize(base, (per, base.shape[1])).astype(np.float32)
        reps += rng.normal(0, 0.02, reps.shape).astype(np.float32)
        tiled.append(dataclasses.replace(recs.clips[0], id=f"long{i:02d}", audio=reps, video=None))
    long = recs._with(tiled)
    clips = [c for c in cl.clips if c.video is not None]  # as many as asked: the clips again, each copy noised
    chosen = cl._with([dataclasses.replace(c, id=f"{c.id}~{i}", video=c.video + rng.normal(0, 0.02, c.video.shape)
                                           .astype(np.float32)) for i, c in ((i, clips[i % len(clips)])
                                                                           for i in range(n_clips))])
    from avmatch.progress import recording_stages

    t0 = time.perf_counter()
    with recording_stages() as stages:
        placements = locate(m.trained, chosen, long)
    seconds = time.perf_counter() - t0
    queue.put({"hours": round(sum(len(c.audio) for c in tiled) / recs.audio_rate_hz / 3600, 2), "clips": len(placements),
               "seconds": round(seconds, 1),  # a stage resets the peak as it starts: the run's is the largest stage's
               "peak_rss_mib": max([peak_mib()] + [round(st["peak_mib"]) for st in stages.values()]),
               "stages": {name: {k: round(v, 1) for k, v in st.items()} for name, st in stages.items()}})


def peak_mib() -> int:
    """This process's peak resident memory: VmHWM (ru_maxrss would keep the parent's peak across the
    spawn's exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--recordings", type=int, default=16)
    ap.add_argument("--minutes", default="0.67,5", help="recording length range in minutes")
    ap.add_argument("--clips-per-recording", type=int, default=8)
    ap.add_argument("--decoys", type=int, default=16)
    ap.add_argument("--scale-hours", type=float, default=100.0, help="0: skip the scaling run")
    ap.add_argument("--models", default="default", help="models compared on the same media: default, runs, .pt files")
    ap.add_argument("--adapt", type=int, default=1, help="also locate --adapt N (0: not)")
    ap.add_argument("--tune", type=int, default=400,
                    help="also the shipped model fine-tuned by avmatch train's defaults on this many paired 4 s clips "
                         "of the same families (0: not)")
    ap.add_argument("--tune-from", default="", metavar="RUN",
                    help="--tune starts from this run (avmatch train --init RUN) instead of the shipped model")
    ap.add_argument("--scale-clips", type=int, default=1000, help="clips located in --scale-hours of recordings")
    ap.add_argument("--single", type=int, default=16,
                    help="trials of one 40 s recording with three takes cut from it and one unrecorded take (0: skip)")
    ap.add_argument("--drift-minutes", type=float, default=10.0, help="takes this long from drifting recorders; 0: skip")
    ap.add_argument("--drift-ppm", type=float, default=150.0, help="how fast the recorders' clocks run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", default=None,
                    help="recorded-voice sources the faces speak (AVMATCH_RECORDING_SOURCES), e.g. ones a model never heard")
    ap.add_argument("--reuse", action="store_true", help="with -o: the media and features already there (no generating)")
    args = ap.parse_args()
    if args.sources:
        import os

        os.environ["AVMATCH_RECORDING_SOURCES"] = args.sources
    import avmatch
    from avmatch.features.job import extract

    root = Path(args.output or tempfile.mkdtemp(prefix="avmatch-locate-"))
    started = time.perf_counter()
    lo, hi = (float(x) for x in args.minutes.split(","))
    print(f"generating {args.recordings} recordings of {lo:g}-{hi:g} min, {args.clips_per_recording} clips each, "
          f"{args.decoys} decoys into {root}")
    if args.reuse and (root / "truth.json").is_file():  # the media and features of an earlier run in -o DIR
        truth = json.loads((root / "truth.json").read_text())
    else:
        truth = generate(root, args.recordings, (lo, hi), args.clips_per_recording, args.decoys, args.seed)
        (root / "truth.json").write_text(json.dumps(truth))
    gen_s = time.perf_counter() - started
    t0 = time.perf_counter()
    for part in ("recordings", "clips", "takes"):  # resumable: features already made are kept
        extract([root / part], root / "feats" / part, "default", workers=2, progress=False)
    ext_s = time.perf_counter() - t0
    result = {"generate_s": round(gen_s, 1), "extract_s": round(ext_s, 1), "models": {}}
    from avmatch.corpus import load_corpus

    recs = load_corpus(root / "feats" / "recordings")
    result["audio_minutes"] = round(sum(len(c.audio) for c in recs.clips) / recs.audio_rate_hz / 60, 1)
    takes = {k: v for k, v in truth.items() if v.get("take")}
    longest_s = max(len(c.audio) for c in recs.clips) / recs.audio_rate_hz
    models = args.models.split(",")
    if args.tune:
        t0 = time.perf_counter()
        models.append(str(tune(root, args.tune, args.seed, args.tune_from)))
        result["tune_s"] = round(time.perf_counter() - t0, 1)
    for name in models:  # every model on the same media
        model = avmatch.load(name)
        t0 = time.perf_counter()
        placements = model.locate(root / "feats" / "clips", root / "feats" / "recordings")
        got = {"locate_s": round(time.perf_counter() - t0, 1), **accuracy(placements, truth)}
        if args.adapt:  # locate --adapt N: the model adapted on the takes it placed surely, then all placed again
            t0 = time.perf_counter()
            placements = model.locate(root / "feats" / "clips", root / "feats" / "recordings", adapt=args.adapt)
            got[f"adapt {args.adapt}"] = {"locate_s": round(time.perf_counter() - t0, 1),
                                          "taught by": max(p.adapted_on for p in placements),
                                          **accuracy(placements, truth)}
        t0 = time.perf_counter()
        matched = model.match(root / "feats" / "takes", root / "feats" / "recordings", max_offset_s=longest_s)
        rows = {r["video"]: r for r in matched.rows()}
        paired = [rows[k]["audio"] == v["recording"] for k, v in takes.items()]
        in_time = [rows[k]["audio"] == v["recording"] and on_time(-rows[k]["offset_s"], v["start_s"])
                   for k, v in takes.items()]
        got["match long takes"] = {"takes": len(takes), "max_offset_s": round(longest_s, 1),
                                   "paired right": float(np.mean(paired)), "offset within 40 ms": float(np.mean(in_time)),
                                   "seconds": round(time.perf_counter() - t0, 1)}
        if args.single:
            if not (root / "single" / "truth.json").is_file():
                (root / "single").mkdir(parents=True, exist_ok=True)
                (root / "single" / "truth.json").write_text(json.dumps(generate_single(root, args.single, args.seed)))
            t0 = time.perf_counter()
            got["single recording"] = {**single_runs(model, root, json.loads((root / "single" / "truth.json").read_text())),
                                       "seconds": round(time.perf_counter() - t0, 1)}
        if args.drift_minutes > 0:
            if not (root / "drift" / "truth.json").is_file():
                (root / "drift" / "truth.json").write_text(json.dumps(generate_drift(root, args.drift_minutes,
                                                                                      args.drift_ppm, args.seed)))
            drift_truth = json.loads((root / "drift" / "truth.json").read_text())
            t0 = time.perf_counter()
            placed = {p.clip: p for p in model.locate(root / "drift" / "takes", root / "drift" / "recordings",
                                                      min_confidence=0.0)}
            got["drift"] = {"take_minutes": args.drift_minutes, "seconds": round(time.perf_counter() - t0, 1), "takes": {
                k: {"true_ppm": v["ppm"], "measured_ppm": round(placed[k].drift_ppm, 2),
                    "error_ppm": round(placed[k].drift_ppm - v["ppm"], 2), "placed right": placed[k].best_recording == k
                    and abs(placed[k].start_s - v["start_s"]) <= 0.040, "family": v["family"]}
                for k, v in drift_truth.items()}}
        result["models"][name] = got
        print(f"{name}: " + json.dumps(got, indent=2), flush=True)
    if args.scale_hours > 0:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=scale_worker, args=(args.models.split(",")[0], str(root / "feats" / "recordings"),
                                                   str(root / "feats" / "clips"), args.scale_hours, args.scale_clips, q))
        p.start()
        scale = q.get()
        p.join()
        print("scale: " + json.dumps(scale))
        result["scale"] = scale
    (root / "locate.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {root / 'locate.json'} ({time.perf_counter() - started:.0f} s in all)")
    if not args.output:
        shutil.rmtree(root, ignore_errors=True)
