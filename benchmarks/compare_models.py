"""The report's table on a generated feature corpus: every model trained and scored on the same split.

    python benchmarks/compare_models.py [--clips 900] [--test-fraction 0.1] [--epochs 20] [--window 12] [--out DIR]

Generates a classic-shaped corpus (1024-d visual, 128-d audio, one row per second, 20-40 s clips;
see avmatch/synthetic.py), holds out the test pairs, trains each model with the same settings and
prints the Markdown table `avmatch compare` writes: parameters, top-1, top-5, top-5 of 30 (the
course's criterion: within groups of 30 test pairs, on raw scores), one-to-one accuracy, MRR, epochs
and training seconds, with chance beside them. "report" is the report's recipe (``--recipe report``).
Prints what it measured; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from avmatch.demo.compare import compare
from avmatch.demo.synthetic import make_feature_corpus
from avmatch.models import list_models
from avmatch.train import RECIPES

# every model of the report and the text, the report's recipe exactly ("report": its lstm-cnn trained
# its way), and our embedding model
REPORT_MODELS = ["va-metric", "rnn", "lstm", "gru", "cnn", "lstm-tw", "lstm-cnn", "report", "dual"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=900)
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--window", type=float, default=12.0, help="random training window in seconds (0: whole clips)")
    ap.add_argument("--models", default=",".join(REPORT_MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    known = {m.name for m in list_models()} | set(RECIPES)
    assert set(models) <= known, f"unknown models: {set(models) - known}"
    corpus = make_feature_corpus(args.clips, seed=args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="avmatch-compare-"))
    started = time.perf_counter()
    settings = {"epochs": args.epochs, "seed": args.seed, "histograms": False, "window_s": args.window}
    compare(corpus, models, out, settings, test_fraction=args.test_fraction, progress=False)
    print((out / "compare.md").read_text())
    print(f"total {time.perf_counter() - started:.0f} s; runs in {out}")


if __name__ == "__main__":
    main()
