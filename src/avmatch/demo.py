"""``avmatch demo``: build a small corpus, train, match a shuffled test set, evaluate, report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from avmatch.atomic import write_text
from avmatch.checkpoint import load_trained
from avmatch.corpus import write_corpus
from avmatch.evaluate import evaluate_pairs
from avmatch.match import match_corpora
from avmatch.report import html_report
from avmatch.synthetic import make_feature_corpus, shuffle_for_matching, write_key
from avmatch.train import TrainConfig, train


def run_demo(out_dir: str | Path, quick: bool = False, seed: int = 0) -> dict:
    out = Path(out_dir)
    started = time.perf_counter()
    n_train, n_test = (120, 40) if quick else (600, 150)
    corpus = make_feature_corpus(n_train + n_test, seed=seed)
    train_set, test_set = corpus.split(n_test / (n_train + n_test), seed=seed)
    videos, audios, key = shuffle_for_matching(test_set, seed=seed)
    for name, c in (("train", train_set), ("test_videos", videos), ("test_audios", audios)):
        write_corpus(c, out / name)
    write_key(key, out / "key.csv")
    print(f"[1/4] generated {len(train_set.clips)} training clips and {len(key)} shuffled test pairs in {out}")

    config = TrainConfig(model="dual", epochs=15 if quick else 40, seed=seed, batch_size=64)
    result = train(train_set, out / "run", config)
    print(f"[2/4] trained {config.model}: validation top-1 {result['val_top1']:.3f} ({result['train_seconds']:.0f} s)")

    match = match_corpora(load_trained(out / "run"), videos, audios)
    match.write(out / "pairs.csv")
    metrics = evaluate_pairs(out / "pairs.csv", out / "key.csv")
    print(f"[3/4] matched: one-to-one {metrics['one_to_one']:.3f}, top-1 {metrics['top1']:.3f}, "
          f"top-5 {metrics['top5']:.3f} (chance top-1 {1 / len(key):.3f})")

    truth = dict(key)
    pairs = [{**r, "right": truth.get(r["video"]) == r["audio"]} for r in match.rows()]
    summary = [{"test pairs": len(key), "one-to-one": metrics["one_to_one"], "top-1": metrics["top1"],
                "top-5": metrics["top5"], "chance top-1": 1 / len(key), "seconds": round(time.perf_counter() - started, 1)}]
    html_report(out / "report.html", "avmatch demo", summary, pairs, out / "pairs.heatmap.png")
    write_text(out / "demo.json", json.dumps({**summary[0], "metrics": metrics}, indent=2, default=str))
    print(f"[4/4] report: {out / 'report.html'}")
    return metrics
