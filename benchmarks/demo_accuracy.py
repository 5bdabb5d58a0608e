"""Accuracy of ``avmatch demo`` at its default size, with ablations. Prints numbers only.

    python benchmarks/demo_accuracy.py [-o DIR] [--quick] [--seed 0] [--ablations]

Runs the demo pipeline (generate media -> extract -> train sync -> match -> evaluate) and prints the
one-to-one accuracy, top-1/top-5, the offset error over the correctly matched pairs, the untrained
floor (motion energy vs onset strength), the wall time of each stage and of the whole run.
Targets at the default size (at least 150 test pairs of 4 s clips, offsets in ±1 s): one-to-one
>= 0.90 and offset within ±40 ms for >= 90% of the right pairs. Nothing is asserted, time least of all.

``--ablations`` re-matches the same trained model and features with raw scores instead of the dual
softmax, and with greedy instead of Hungarian assignment, and breaks accuracy down by scene family.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from avmatch.cli import _options
from avmatch.demo import DemoConfig, run_demo


def ablations(out: Path) -> None:
    from avmatch.checkpoint import load_trained
    from avmatch.corpus import load_corpus
    from avmatch.matching import MatchOptions, match_corpora
    from avmatch.metrics import evaluate_pairs
    from avmatch.outputs import read_rows

    trained = load_trained(out / "run")
    videos, audios = load_corpus(out / "features" / "test_videos"), load_corpus(out / "features" / "test_audios")
    print("ablation                          one-to-one  top-1 (normalised)   offset<=40ms")
    for normalisation in ("dual-softmax", "none"):
        for method in ("hungarian", "greedy"):
            pairs = out / "ablations" / f"{normalisation}-{method}.csv"
            pairs.parent.mkdir(exist_ok=True)
            options = MatchOptions(greedy=method == "greedy", normalise=normalisation)
            match_corpora(trained, videos, audios, options).write(pairs, heatmap=False)
            m = evaluate_pairs(pairs, out / "key.csv")
            print(f"  {normalisation:13s} {method:10s}        {m['one_to_one']:.3f}      {m['normalised_top1']:.3f}                "
                  f"{m.get('offset_within_40ms', float('nan')):.3f}")
    scenes_of = {json.loads(line)["file"]: json.loads(line)["family"]
                 for line in (out / "media" / "test_clips" / "scenes.jsonl").read_text().splitlines()}
    family = {r["video"]: scenes_of[r["source"]] for r in read_rows(out / "key.csv", ("video", "source"))}
    key = {r["video"]: r["audio"] for r in read_rows(out / "key.csv")}
    tally: dict[str, list[int]] = {}
    for r in read_rows(out / "pairs.csv"):
        right = tally.setdefault(family[r["video"]], [0, 0])
        right[0] += r["audio"] == key[r["video"]]
        right[1] += 1
    print("by scene family (dual-softmax, hungarian): " +
          ", ".join(f"{f} {r}/{n}" for f, (r, n) in sorted(tally.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=None, help="demo folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--train-clips", type=int, default=None)
    parser.add_argument("--test-clips", type=int, default=None)
    parser.add_argument("--extractor", default="default",
                        help="features to compare, e.g. efficientnet with --option fps=25 --option image_size=64")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extractor option")
    args = parser.parse_args()
    out = Path(args.output or tempfile.mkdtemp(prefix="avmatch-demo-bench-"))
    started = time.perf_counter()
    preset = DemoConfig.quick() if args.quick else DemoConfig()
    preset.extractor, preset.extractor_options = args.extractor, _options(args.option)
    result = run_demo(out, seed=args.seed, config=preset, n_train=args.train_clips, n_test=args.test_clips)
    wall = time.perf_counter() - started
    m, floor = result["metrics"], result["floor"]
    print()
    print(f"demo {'--quick' if args.quick else '(default size)'} seed {args.seed}: {m['pairs']} test pairs, {out}")
    print(f"  one-to-one            {m['one_to_one']:.3f}   (target >= 0.90; chance {1 / m['pairs']:.3f})")
    print(f"  top-1 / top-5         {m['top1']:.3f} / {m['top5']:.3f} on the model's own scores, "
          f"{m['normalised_top1']:.3f} / {m['normalised_top5']:.3f} normalised")
    print(f"  offset within 40 ms   {m.get('offset_within_40ms', float('nan')):.3f}   (of the right pairs; target >= 0.90)")
    print(f"  offset median error   {1000 * m.get('offset_median_s', float('nan')):.1f} ms")
    print(f"  untrained floor       one-to-one {floor['one_to_one']:.3f}, offset within 40 ms {floor['offset_within_40ms']:.3f}")
    print("  stage seconds         " + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_seconds"].items()))
    print(f"  wall time             {wall:.0f} s")
    if args.ablations:
        ablations(out)


if __name__ == "__main__":
    main()
