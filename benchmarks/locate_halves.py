"""Would a take's two halves tell recorded takes from unrecorded ones? (issue 23; measured, not kept)

    python benchmarks/locate_halves.py DIR MODEL [MODEL ...]

DIR is a folder ``benchmarks/locate.py -o DIR`` made (its features and truth.json). Each take is placed
whole and as its two halves, every place of every recording searched (``locate`` with no threshold and
no cameras). The halves *agree* when both land on the whole take's recording, a half apart within 80 ms,
at the whole take's start within 80 ms. Printed per model: how often the halves agree for takes placed
right and for takes of unrecorded scenes, then placed right and unrecorded refused under the confidence
threshold alone and under "(halves agree and confidence >= A) or confidence >= B". Asserts nothing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import avmatch
from avmatch.corpus import Clip, load_corpus
from avmatch.matching.locate import locate

TOLERANCE_S = 0.08  # halves agree within this
RIGHT_S = 0.040  # a placement is right within this of the truth (as locate.py judges)


def judged(root: Path, name: str) -> dict:
    clips = load_corpus(root / "feats" / "clips")
    recs = load_corpus(root / "feats" / "recordings")
    truth = json.loads((root / "truth.json").read_text())
    halves = [Clip(c.id + part, x) for c in clips.clips
              for part, x in (("#a", c.video[: len(c.video) // 2]), ("#b", c.video[len(c.video) // 2 :]))]
    model = avmatch.load(name)
    whole = {p.clip: p for p in locate(model.trained, clips, recs, min_confidence=0.0, camera=False)}
    half = {p.clip: p for p in locate(model.trained, replace(clips, clips=halves), recs, min_confidence=0.0,
                                      camera=False)}
    recorded, right, conf, agree = [], [], [], []
    for c in clips.clips:
        t, w, a, b = truth[c.id], whole[c.id], half[c.id + "#a"], half[c.id + "#b"]
        half_s = (len(c.video) // 2) / clips.video_rate_hz
        recorded.append(bool(t["recording"]))
        right.append(bool(t["recording"]) and w.best_recording == t["recording"]
                     and abs(w.start_s - t["start_s"]) <= RIGHT_S)
        conf.append(w.confidence)
        agree.append(a.best_recording == b.best_recording == w.best_recording
                     and abs(b.start_s - a.start_s - half_s) <= TOLERANCE_S and abs(a.start_s - w.start_s) <= TOLERANCE_S)
    return {k: np.array(v) for k, v in
            {"recorded": recorded, "right": right, "confidence": conf, "agree": agree}.items()}


def main(root: Path, models: list[str]) -> None:
    for name in models:
        j = judged(root, name)
        real, decoy = j["recorded"], ~j["recorded"]
        print(f"{name}: {real.sum()} recorded takes, {decoy.sum()} of unrecorded scenes; halves agree for "
              f"{j['agree'][real & j['right']].mean():.3f} of the takes placed right, "
              f"{j['agree'][decoy].mean():.3f} of the unrecorded")
        for a, b in ((None, 0.9), (None, 0.95), (None, 0.99), (0.5, 0.95), (0.5, 0.99), (0.0, 0.99)):
            placed = j["confidence"] >= b
            rule = f"confidence >= {b}"
            if a is not None:
                placed |= j["agree"] & (j["confidence"] >= a)
                rule = f"(agree and confidence >= {a}) or {rule}"
            print(f"  {rule:52s} placed right {np.mean(placed[real] & j['right'][real]):.3f}   "
                  f"unrecorded refused {1 - placed[decoy].mean():.3f} ({int(placed[decoy].sum())} placed)")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
