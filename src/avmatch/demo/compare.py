"""Train several models on one corpus and tabulate them as the report did."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from avmatch.atomic import write_text
from avmatch.checkpoint import load_trained
from avmatch.corpus import Corpus
from avmatch.evaluate import retrieval_metrics
from avmatch.inference import score_matrix
from avmatch.matching import assign
from avmatch.models.base import parameter_table
from avmatch.report import markdown_table
from avmatch.train import TrainConfig, train


def compare(corpus: Corpus, models: list[str], out_dir: str | Path, config: TrainConfig,
            test_fraction: float = 0.3, progress: bool = True) -> list[dict]:
    """Hold out a test split, train each model on the rest, score the test pairs; writes compare.md."""
    out_dir = Path(out_dir)
    train_set, test_set = corpus.paired().split(test_fraction, seed=config.seed + 1)
    videos = [c.video for c in test_set.clips]
    audios = [c.audio for c in test_set.clips]
    rows = []
    for name in models:
        result = train(train_set, out_dir / name, dataclasses.replace(config, model=name), progress=progress)
        trained = load_trained(out_dir / name)
        scores = score_matrix(trained, videos, audios)
        metrics = retrieval_metrics(scores)
        one_to_one = float((assign(scores) == range(len(videos))).mean())
        rows.append({"model": name, "parameters": sum(n for _, n in parameter_table(trained.model)),
                     "top1": metrics["top1"], "top5": metrics["top5"], "one_to_one": one_to_one,
                     "mrr": metrics["mrr"], "epochs": result["epochs"], "train_s": result["train_seconds"]})
    chance = {"model": "chance", "parameters": 0, "top1": 1 / len(videos), "top5": min(1.0, 5 / len(videos)),
              "one_to_one": 1 / len(videos), "mrr": sum(1 / r for r in range(1, len(videos) + 1)) / len(videos),
              "epochs": 0, "train_s": 0.0}
    text = (f"# avmatch compare\n\n{len(train_set.clips)} training clips, {len(test_set.clips)} test pairs "
            f"(top-5 is the course's criterion; top-k, MRR and one-to-one on the models' own scores, not normalised).\n\n" + markdown_table(rows + [chance]))
    write_text(out_dir / "compare.md", text)
    return rows
