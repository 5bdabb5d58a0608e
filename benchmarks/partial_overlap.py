"""Abstention when the piles only partly overlap: precision and recall of the pairs kept. Prints; asserts nothing.

    python benchmarks/partial_overlap.py [-o DIR] [--clips 250] [--orphans 50] [--model default]

Paired 4 s clips of every family of both scene generators become a test set as a user has one
(silent videos, audio files under random names, offsets up to +-1 s). Then ``--orphans`` audios are
deleted (their videos have no audio in the pile) and as many videos of other pairs (their audios have
no video): with the defaults 200 videos, 200 audios, 150 true pairs. ``avmatch match`` (the shipped
model unless ``--model``: in-family here, every family was in its training) assigns one-to-one and gives
each pair a confidence; for each ``--min-confidence`` it prints the pairs kept, precision (kept pairs
that are right), recall (true pairs kept and right), and the share of orphan videos left unmatched;
and, on the same files before any deletion, the confidence's reliability (of pairs at >= 0.9 the share
right; expected calibration error over 10 bins). Target (issue 13): precision high at 0.9 with most
true pairs kept; orphans refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from avmatch.metrics import reliability


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--clips", type=int, default=250, help="paired clips, spread over every family")
    ap.add_argument("--orphans", type=int, default=50, help="audios deleted, and as many videos of other pairs")
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from generalise import all_families, make_media

    import avmatch
    from avmatch.demo import scenes

    root = Path(args.output or tempfile.mkdtemp(prefix="avmatch-overlap-"))
    started = time.perf_counter()
    families = all_families()
    per = -(-args.clips // len(families))
    family_of = make_media(root / "media", families, 0, per, args.seed, 2)
    clips = sorted((root / "media" / "test_clips").rglob("*.mp4"))[: args.clips]
    key_path = scenes.make_test_set(clips, root / "test", seed=args.seed, max_offset_s=1.0)
    with open(key_path, newline="") as f:
        key = {r["video"]: r for r in csv.DictReader(f)}
    print(f"{len(key)} pairs of {len(families)} families made in {time.perf_counter() - started:.0f} s", flush=True)
    model = avmatch.load(args.model)

    full = model.match(root / "test" / "videos", root / "test" / "audios")
    rows = {r["video"]: r for r in full.rows()}
    right_full = np.array([rows[v]["audio"] == key[v]["audio"] for v in key])
    full_conf = np.array([rows[v]["confidence"] for v in key])
    measured = reliability(full_conf, right_full)
    result = {"model": args.model, "full overlap": {
        "pairs": int(len(full_conf)), "confidence >= 0.9": measured["n_sure"], "right among them": measured["right_when_sure"],
        "right overall": float(np.mean(right_full)), "expected calibration error": round(measured["ece"], 3)}}

    rng = random.Random(args.seed)
    order = sorted(key)
    rng.shuffle(order)
    no_audio, no_video = order[: args.orphans], order[args.orphans : 2 * args.orphans]
    for v in no_audio:
        (root / "test" / "audios" / f"{key[v]['audio']}.wav").unlink()
    for v in no_video:
        (root / "test" / "videos" / f"{v}.mp4").unlink()
    partial = model.match(root / "test" / "videos", root / "test" / "audios")
    rows = {r["video"]: r for r in partial.rows()}
    true_pairs = [v for v in key if v not in no_audio and v not in no_video]
    conf = {v: r["confidence"] for v, r in rows.items()}
    right = {v: r["audio"] == key[v]["audio"] for v, r in rows.items()}
    result["partial overlap"] = {"videos": len(rows), "audios": len(partial.audio_ids), "true pairs": len(true_pairs)}
    for t in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99):
        kept = [v for v in rows if conf[v] >= t]
        result["partial overlap"][f"min-confidence {t:g}"] = {
            "kept": len(kept), "precision": round(float(np.mean([right[v] for v in kept])), 3) if kept else None,
            "recall": round(sum(right[v] for v in kept if v in true_pairs) / len(true_pairs), 3),
            "orphan videos refused": round(float(np.mean([conf[v] < t for v in no_audio])), 3)}
    by_family = {}
    for v in rows:
        fam = family_of.get(key[v]["source"], "?")
        by_family.setdefault(fam, []).append(v)
    result["partial overlap, min-confidence 0.9, by family"] = {
        f: {"videos": len(vs), "precision": round(float(np.mean([right[v] for v in vs if conf[v] >= 0.9])), 3)
            if any(conf[v] >= 0.9 for v in vs) else None,
            "orphans refused": round(float(np.mean([conf[v] < 0.9 for v in vs if v in no_audio])), 3)
            if any(v in no_audio for v in vs) else None} for f, vs in sorted(by_family.items())}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    (root / "partial_overlap.json").write_text(json.dumps(result, indent=2))
    if not args.output:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
