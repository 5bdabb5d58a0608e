"""Train several models on one corpus and tabulate them as the report did."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avmatch.atomic import write_text
from avmatch.checkpoint import load_trained
from avmatch.corpus import Corpus
from avmatch.inference import score_matrix
from avmatch.matching import assign
from avmatch.metrics import GROUP, retrieval_metrics, top5_within
from avmatch.models.base import parameter_table
from avmatch.options import parse_options
from avmatch.report import markdown_table
from avmatch.training import recipe, train

COURSE_TEST = GROUP


def top5_of_30(scores: np.ndarray) -> float | None:
    """The report's measure on raw scores of aligned pairs (the diagonal): :func:`avmatch.metrics.top5_within`."""
    return top5_within(scores)


def model_entries(text: str) -> list[str]:
    """The entries of a ``--models`` list: comma-separated, or ';'-separated when an entry has several
    options ("report:interleave=true,hidden=8;lstm-cnn")."""
    return [m.strip() for m in text.split(";" if ";" in text else ",") if m.strip()]


def _entry(entry: str) -> tuple[str, dict]:
    """"report:interleave=true,hidden=32" -> ("report", {"interleave": True, "hidden": 32})."""
    name, _, given = entry.partition(":")
    return name, parse_options(filter(None, given.split(",")), f"model {entry!r}: options are KEY=VALUE")


def run_dir(out_dir: str | Path, entry: str) -> Path:
    """The folder :func:`compare` trains a model entry ("report:interleave=true") in."""
    return Path(out_dir) / entry.replace(":", "+").replace(",", "+")


INPUTS = {"global": False, "clip": True}  # input normalisation -> TrainConfig.centre_clips


def compare(corpus: Corpus, models: list[str], out_dir: str | Path, settings: dict | None = None,
            test_fraction: float = 0.3, progress: bool = True, test: Corpus | None = None,
            groups: dict[str, str] | None = None, inputs: tuple[str, ...] = ("global",)) -> list[dict]:
    """Hold out a test split, train each model on the rest, score the test pairs; writes compare.md.

    ``models``: model names, or named recipes such as "report" (``avmatch.training.RECIPES``), each
    optionally with model options over its own ("report:interleave=true"); each trains with its own
    recipe under ``settings`` (TrainConfig fields: epochs, seed, ...). ``test``:
    test pairs of their own (e.g. families never trained on); then all of ``corpus`` trains. ``groups``
    {test clip id: group} (e.g. its scene family) adds each model's one-to-one within each group.
    ``inputs``: the input normalisations (``INPUTS``: global z-scores, per-clip centring) every model
    is offered; with several, each model trains once with each and keeps the one of the better
    validation top-1 (never the test's), named in the table's "input" column."""
    out_dir = Path(out_dir)
    settings = dict(settings or {})
    if test is None:
        train_set, test_set = corpus.paired().split(test_fraction, seed=settings.get("seed", 0) + 1)
    else:
        train_set, test_set = corpus.paired(), test.paired()
    videos = [c.video for c in test_set.clips]
    audios = [c.audio for c in test_set.clips]
    clip_group = np.array([(groups or {}).get(c.id, "") for c in test_set.clips])
    rows = []
    for name in models:
        base, options = _entry(name)
        tried = {}
        for how in inputs:
            config = recipe(base, **{**settings, "centre_clips": INPUTS[how],
                                     "model_options": {**settings.get("model_options", {}), **options}})
            run = run_dir(out_dir, name if len(inputs) == 1 else f"{name}+{how}")
            tried[how] = (train(train_set, run, config, progress=progress), run)
        how = max(tried, key=lambda k: tried[k][0]["val_top1"])
        result, run = tried[how]
        trained = load_trained(run)
        scores = score_matrix(trained, videos, audios)
        metrics = retrieval_metrics(scores)
        right = assign(scores) == np.arange(len(videos))
        per_group = {f"one_to_one {g}": float(right[clip_group == g].mean()) for g in sorted(set(clip_group) - {""})}
        rows.append({"model": name, "input": how + (" (val " + " / ".join(f"{k} {tried[k][0]['val_top1']:.2f}" for k in inputs)
                                                 + ")" if len(inputs) > 1 else ""),
                     "parameters": sum(n for _, n in parameter_table(trained.model)),
                     "top1": metrics["top1"], "top5": metrics["top5"], "top5_of_30": top5_of_30(scores),
                     "one_to_one": float(right.mean()),
                     "mrr": metrics["mrr"], "epochs": result["epochs"], "train_s": result["train_seconds"], **per_group})
    chance = {"model": "chance", "input": "", "parameters": 0, "top1": 1 / len(videos), "top5": min(1.0, 5 / len(videos)),
              "top5_of_30": 5 / COURSE_TEST if len(videos) >= COURSE_TEST else None,
              "one_to_one": 1 / len(videos), "mrr": sum(1 / r for r in range(1, len(videos) + 1)) / len(videos),
              "epochs": 0, "train_s": 0.0}
    text = (f"# avmatch compare\n\n{len(train_set.clips)} training clips, {len(test_set.clips)} test pairs "
            f"(top-5 of 30 is the course's criterion: each video's audio among 5 best of a group of 30 test pairs, "
            f"averaged over the groups; top-k, MRR and one-to-one over all test pairs; all on the models' own "
            f"scores, not normalised).\n\n" + markdown_table(rows + [chance]))
    write_text(out_dir / "compare.md", text)
    return rows
